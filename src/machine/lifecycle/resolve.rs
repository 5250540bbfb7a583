//! `up`'s resolve step: what the plan needs from the world, read, never
//! changed (except that a real `up` fetches a missing box into the cache):
//! the boxes (cached or where to fetch them), the host's KVM facts, the
//! storage pool, the management and private networks (found, or the subnet
//! a new one gets) and each machine's domain state. Its result, typed, goes
//! into the pure [`crate::machine::project_plan::plan_project`].

use std::collections::HashMap;
use std::path::PathBuf;

use super::{box_spec, Env, LifecycleError};
use crate::boxes::{self, BoxSpec, InstalledBox};
use crate::host::accel::KvmFacts;
use crate::machine::project_plan::{ManagementNet, NetworkDoc, PlanInputs, ResolvedBox};
use crate::machine::{netplan, plan};
use crate::project::config::{self, Config, Machine};
use crate::virt::network::NetworkSpec;
use crate::virt::storage::POOL_NAME;

/// Whether a box missing from the cache is fetched (`up`) or only named in
/// the plan (`up --dry-run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fetch {
    Yes,
    No,
}

/// Reads what the plan of `machines` needs.
pub(super) fn resolve(
    env: &Env,
    config: &Config,
    machines: &[Machine],
    fetch: Fetch,
) -> Result<PlanInputs, LifecycleError> {
    let facts = KvmFacts::read();
    // Extra networks and forwarded ports are checked before anything is made.
    let groups = crate::machine::net_apply::preflight(env, &config.machines(), machines)?;

    let (pool_path, pool_exists) = match env.hv.pool_path(POOL_NAME)? {
        Some(p) => (p, true),
        None => (env.pool_dir.clone(), false),
    };

    // Boxes, once per distinct box, before any machine.
    let specs: Vec<BoxSpec> = machines.iter().map(|m| box_spec(env.project, m)).collect();
    let mut found: HashMap<&BoxSpec, ResolvedBox> = HashMap::new();
    for spec in &specs {
        if found.contains_key(spec) {
            continue;
        }
        let installed = match fetch {
            Fetch::Yes => Ok(boxes::ensure(env.store, spec, env.out)?),
            Fetch::No => boxes::find_cached(env.store, spec)?,
        };
        let resolved = match installed {
            Ok(b) => resolved_box(env, &b)?,
            Err(from) => ResolvedBox::Missing { from },
        };
        found.insert(spec, resolved);
    }
    let existing_bases = if pool_exists {
        env.hv.volume_names(POOL_NAME)?
    } else {
        Vec::new()
    };

    let network = management_network(env, config)?;
    let also_taken: Vec<(String, config::Subnet)> = if network.doc.is_new() {
        vec![(format!("network {}", network.name), network.subnet)]
    } else {
        Vec::new()
    };
    let private = crate::machine::net_apply::resolve_private_networks(env, &groups, &also_taken)?;
    let states = machines
        .iter()
        .map(|m| {
            env.hv
                .domain_state(&plan::domain_name(env.project, &m.name.0))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let accel = machines
        .iter()
        .map(|m| crate::remote::choose_accel(env.hv, m.accel, &facts))
        .collect();
    Ok(PlanInputs {
        accel,
        machines: machines.to_vec(),
        boxes: specs.iter().map(|s| found[s].clone()).collect(),
        states,
        facts,
        pool_path,
        pool_exists,
        existing_bases,
        network,
        private,
    })
}

/// A cached box as the plan sees it (architecture checked).
fn resolved_box(env: &Env, b: &InstalledBox) -> Result<ResolvedBox, LifecycleError> {
    crate::machine::arch::check_box(b)?;
    env.out.detail(
        None,
        format!("box {} {} at {}", b.name, b.version, b.dir.display()),
    );
    let mut extra_disks = Vec::new();
    for d in b.disks()?.iter().skip(1) {
        let src: PathBuf = b.dir.join(&d.path);
        let size = crate::boxes::store::check_image(&b.name, &src)?;
        extra_disks.push((src, size));
    }
    Ok(ResolvedBox::Cached {
        installed: b.clone(),
        content_id: b.content_id()?,
        extra_disks,
    })
}

/// The project's NAT network: the one libvirt has, or a new one on a subnet
/// that overlaps no libvirt network, no host route and no private network
/// of the project.
fn management_network(env: &Env, config: &Config) -> Result<ManagementNet, LifecycleError> {
    let name = plan::network_name(env.project);
    if let Some(xml) = env.hv.network_xml(&name)? {
        let facts = netplan::read_network(&xml);
        if let Some(subnet) = facts.subnets.first().copied() {
            return Ok(ManagementNet {
                name,
                subnet,
                hosts: facts.hosts,
                doc: NetworkDoc::Existing(xml),
            });
        }
    }
    let mut taken: Vec<config::Subnet> = env
        .hv
        .all_network_xml()?
        .iter()
        .flat_map(|x| netplan::read_network(x).subnets)
        .collect();
    // Subnets the project's private networks are given stay free for them.
    if let Ok(groups) = crate::machine::nics::private_groups(&config.machines()) {
        taken.extend(groups.iter().filter_map(|g| g.subnet));
    }
    if !crate::remote::is_remote(env.hv.uri()) {
        taken.extend(netplan::read_routes(
            &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
        ));
    }
    let subnet = match config.network.subnet {
        Some(s) => s,
        None => netplan::choose_subnet(&taken).ok_or(LifecycleError::NoSubnet)?,
    };
    let spec = NetworkSpec {
        name: name.clone(),
        bridge: plan::bridge_name(env.project),
        subnet,
        hosts: Vec::new(),
        forward: crate::project::net_config::Forward::Nat,
        dhcp_range: true,
    };
    Ok(ManagementNet {
        name,
        subnet,
        hosts: Vec::new(),
        doc: NetworkDoc::New(spec),
    })
}
