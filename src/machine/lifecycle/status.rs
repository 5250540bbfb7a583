//! `status`: the state of every configured machine from libvirt and what
//! `up` recorded (address, user, key, extra NICs); without project state
//! libvirt is not asked at all ([`not_created`], which the `kvmdrive` front
//! binary uses without linking libvirt).

use std::path::PathBuf;

use super::LifecycleError;
use crate::machine::plan;
use crate::machine::project::Project;
use crate::project::config::Config;
use crate::virt::hypervisor::DomainState;
use crate::virt::Hypervisor;

/// One line of `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MachineStatus {
    pub name: String,
    /// `not_created`, `running`, `shutoff`, `paused`, ...
    pub state: String,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    /// Extra NICs: network name, MAC and address.
    pub networks: Vec<crate::machine::nics::NicAddress>,
    /// The libvirt URI of the host the machine is on (None: not created).
    pub host: Option<String>,
}

impl MachineStatus {
    /// A machine in `state` on `host`, with what its record says.
    pub(super) fn new(
        project: &Project,
        name: String,
        state: String,
        host: Option<String>,
    ) -> Result<MachineStatus, LifecycleError> {
        let record = if state == "not_created" {
            None
        } else {
            project.record(&name)?
        };
        Ok(MachineStatus {
            state,
            address: record.as_ref().map(|r| r.address.clone()),
            port: record.as_ref().map(|r| r.port),
            user: record.as_ref().map(|r| r.user.clone()),
            networks: record
                .as_ref()
                .map(|r| r.networks.clone())
                .unwrap_or_default(),
            identity_file: record.map(|r| r.identity_file),
            host,
            name,
        })
    }
}

/// The state of every configured machine. Without `hv` (nothing was ever
/// brought up here) libvirt is not even asked: see [`not_created`].
pub fn status(
    hv: Option<&Hypervisor>,
    project: &Project,
    config: &Config,
) -> Result<Vec<MachineStatus>, LifecycleError> {
    let Some(hv) = hv else {
        return Ok(not_created(config));
    };
    if !config.hosts.is_empty() {
        return super::hosts::status(hv, project, config);
    }
    config
        .machines()
        .into_iter()
        .map(|m| {
            let name = m.name.0;
            let state = hv
                .domain_state(&plan::domain_name(project, &name))?
                .map_or("not_created", DomainState::as_str);
            let host = (state != "not_created").then(|| hv.uri().to_owned());
            MachineStatus::new(project, name, state.to_owned(), host)
        })
        .collect()
}

/// Every configured machine as `not_created`: the status of a project with
/// no state, known without libvirt.
pub fn not_created(config: &Config) -> Vec<MachineStatus> {
    config
        .machines()
        .into_iter()
        .map(|m| MachineStatus {
            name: m.name.0,
            state: "not_created".to_owned(),
            address: None,
            port: None,
            user: None,
            identity_file: None,
            networks: Vec::new(),
            host: None,
        })
        .collect()
}
