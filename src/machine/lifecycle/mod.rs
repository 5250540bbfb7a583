//! The lifecycle commands, `up`, `halt`, `destroy`, `status`, one file each:
//! idempotent, parallel across machines, and rolled back on failure or
//! Ctrl-C (what a run created, it removes; what existed before, it leaves).
//! This file holds what they share: [`Env`], [`LifecycleError`], the
//! per-machine [`Failure`] and how machines are selected, run in parallel
//! and their failures collected.

use std::path::{Path, PathBuf};

use super::cancel;
use super::project::{Project, ProjectError};
use super::provision::ProvisionError;
use crate::boxes::{BoxError, BoxSpec, BoxStore};
use crate::output::Reporter;
use crate::project::config::{Config, Machine};
use crate::virt::{Hypervisor, VirtError};

mod destroy;
mod halt;
mod hosts;
mod ready;
mod resolve;
mod status;
mod up;

pub use destroy::destroy;
pub use halt::halt;
pub use hosts::{for_each_host, spans_hosts, HostRuns, IfDown, Run, ROUTING_NOTE};
pub use status::{not_created, status, MachineStatus};
pub use up::{plan_up, reload, up, up_with, UpOptions};

/// The user kvmdrive logs in as (Vagrant's convention).
pub const SSH_USER: &str = "vagrant";

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Virt(#[from] VirtError),
    #[error(transparent)]
    Box(#[from] BoxError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error("no machine named `{name}` in this project (machines: {known})")]
    UnknownMachine { name: String, known: String },
    #[error("no provisioner named `{name}` on the selected machines")]
    UnknownProvisioner { name: String },
    #[error("{failed} of {total} machine(s) failed: {names}")]
    MachinesFailed {
        failed: usize,
        total: usize,
        names: String,
    },
    #[error("no free /24 subnet for the project's network")]
    NoSubnet,
    #[error(transparent)]
    Net(#[from] super::nics::NetPlanError),
    #[error("forwarded port of `{machine}`: cannot listen on {addr}: {reason}")]
    PortInUse {
        machine: String,
        addr: String,
        reason: String,
    },
    #[error("interrupted; what this run created was removed")]
    Cancelled,
    #[error(transparent)]
    Arch(#[from] super::arch::ArchError),
    #[error("host {uri} does not answer: {message}")]
    HostDown { uri: String, message: String },
    #[error("on host {uri}: {source}")]
    OnHost {
        uri: String,
        source: Box<LifecycleError>,
    },
    #[error("could not remove {left}")]
    NotRemoved { left: String },
    #[error("no answer from {hosts}: nothing was done")]
    Unreachable { hosts: String },
    #[error("not done for {left}: the host does not answer")]
    NotReached { left: String },
    #[error("{failed} of {total} host(s) failed: {hosts}")]
    HostsFailed {
        failed: usize,
        total: usize,
        hosts: String,
    },
    #[error(transparent)]
    Placement(#[from] super::placement::PlacementError),
}

impl LifecycleError {
    pub fn hint(&self) -> Option<String> {
        match self {
            LifecycleError::Virt(e) => e.hint(),
            LifecycleError::Box(e) => e.hint(),
            LifecycleError::Project(e) => e.hint(),
            LifecycleError::UnknownMachine { .. } => Some("see `kvmdrive status`".into()),
            LifecycleError::UnknownProvisioner { .. } => Some(
                "`--provision-with` takes provisioner names (their `name`) or kinds (shell, file, ansible)"
                    .into(),
            ),
            LifecycleError::NoSubnet => Some("set `network: {subnet: ...}` in kvmdrive.yml".into()),
            LifecycleError::Arch(e) => Some(e.hint()),
            LifecycleError::Net(e) => e.hint(),
            LifecycleError::HostDown { .. } => Some(
                "nothing was created on any host; bring the host back (or take it out of `hosts:`) and run `up` again"
                    .into(),
            ),
            LifecycleError::OnHost { source, .. } => source.hint(),
            LifecycleError::NotRemoved { .. } => Some(
                "run `kvmdrive destroy` again when the host answers; what was reachable is gone"
                    .into(),
            ),
            LifecycleError::Unreachable { .. } => Some(
                "nothing was changed on any host; bring the host back (or take it out of `hosts:`) and run the command again"
                    .into(),
            ),
            LifecycleError::NotReached { .. } => Some(
                "the hosts that answered are done; run the command again for these machines when their host answers"
                    .into(),
            ),
            LifecycleError::Placement(e) => Some(e.hint()),
            LifecycleError::PortInUse { .. } => Some(
                "pick another `host` port in forwarded_ports (see `ss -ltnp` for who holds it)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// Why one machine failed, with what the user can do about it.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl From<VirtError> for Failure {
    fn from(e: VirtError) -> Self {
        Failure {
            hint: e.hint(),
            message: e.to_string(),
        }
    }
}

impl From<ProvisionError> for Failure {
    fn from(e: ProvisionError) -> Self {
        Failure {
            hint: e.hint(),
            message: e.to_string(),
        }
    }
}

impl From<ProjectError> for Failure {
    fn from(e: ProjectError) -> Self {
        Failure {
            hint: e.hint(),
            message: e.to_string(),
        }
    }
}

pub(crate) fn failure(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        hint: None,
    }
}

/// What every lifecycle command works with.
pub struct Env<'a> {
    pub hv: &'a Hypervisor,
    pub project: &'a Project,
    pub out: &'a Reporter,
    pub store: &'a BoxStore,
    /// Directory of kvmdrive's storage pool when it has to be created.
    pub pool_dir: PathBuf,
}

/// Default directory of the storage pool (`KVMDRIVE_POOL_DIR` overrides).
pub fn default_pool_dir() -> PathBuf {
    std::env::var_os("KVMDRIVE_POOL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/libvirt/images/kvmdrive"))
}

/// The machines named (all when `names` is empty), in config order.
pub fn select(config: &Config, names: &[String]) -> Result<Vec<Machine>, LifecycleError> {
    let all = config.machines();
    for n in names {
        if !all.iter().any(|m| &m.name.0 == n) {
            return Err(LifecycleError::UnknownMachine {
                name: n.clone(),
                known: all
                    .iter()
                    .map(|m| m.name.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(all
        .into_iter()
        .filter(|m| names.is_empty() || names.contains(&m.name.0))
        .collect())
}

/// What a machine asks of the box cache; a relative `.box` path is taken
/// relative to the project directory, not to wherever kvmdrive runs.
pub(crate) fn box_spec(project: &Project, m: &Machine) -> BoxSpec {
    let is_relative_path = m.box_name.ends_with(".box")
        && !Path::new(&m.box_name).is_absolute()
        && !m.box_name.contains("://");
    BoxSpec {
        name: if is_relative_path {
            project.dir.join(&m.box_name).display().to_string()
        } else {
            m.box_name.clone()
        },
        version: m.box_version.as_ref().map(ToString::to_string),
        url: m.box_url.clone(),
        architecture: m.box_architecture.clone(),
        checksum: m.box_checksum.as_ref().map(|c| c.hex.clone()),
        checksum_type: m.box_checksum.as_ref().map(|c| c.kind.to_string()),
    }
}

/// Runs `f` for every item on its own thread and returns the results in order.
pub(super) fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|it| s.spawn(|| f(it))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("machine threads do not panic"))
            .collect()
    })
}

/// Reports per-machine failures and turns them into one error.
pub(super) fn collect<T>(
    out: &Reporter,
    results: Vec<(String, Result<T, Failure>)>,
) -> Result<Vec<T>, LifecycleError> {
    let total = results.len();
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (name, r) in results {
        match r {
            Ok(v) => ok.push(v),
            Err(f) => {
                out.step(Some(&name), format!("error: {}", f.message));
                if let Some(h) = f.hint {
                    out.step(Some(&name), format!("hint: {h}"));
                }
                failed.push(name);
            }
        }
    }
    if cancel::is_cancelled() {
        return Err(LifecycleError::Cancelled);
    }
    if failed.is_empty() {
        Ok(ok)
    } else {
        Err(LifecycleError::MachinesFailed {
            failed: failed.len(),
            total,
            names: failed.join(", "),
        })
    }
}

/// libvirt's log of the qemu process of a domain.
pub(super) fn qemu_log(domain: &str) -> PathBuf {
    PathBuf::from(format!("/var/log/libvirt/qemu/{domain}.log"))
}

/// The last `n` lines of a text file ("" when unreadable).
pub(super) fn read_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Domains of this project that libvirt still has (found by metadata).
pub(super) fn remaining_domains(
    env: &Env,
) -> Result<Vec<crate::virt::hypervisor::OwnedDomain>, VirtError> {
    Ok(env
        .hv
        .owned_domains()?
        .into_iter()
        .filter(|d| d.project == env.project.id)
        .collect())
}
