//! `up`: the selected machines made (missing), started (stopped) or left
//! alone (running), in parallel: the storage pool, the boxes' base volumes,
//! the project's network and DHCP reservations, then per machine its disks,
//! the domain (with the CPU fallback order and the KVM-to-TCG retry) and the
//! wait until it answers on SSH. A failure removes what this run created.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::ready::{wait_ready, ReadyError};
use super::{
    box_spec, collect, failure, parallel, qemu_log, read_tail, remaining_domains, select, Env,
    Failure, LifecycleError,
};
use crate::boxes::{self, BoxError, BoxSpec, InstalledBox};
use crate::host::accel::{self, KvmFacts};
use crate::machine::cancel;
use crate::machine::netplan;
use crate::machine::plan::{self, MachinePlan};
use crate::machine::project::MachineRecord;
use crate::machine::provision::{self, ProvisionPolicy};
use crate::project::config::{self, Config, Machine};
use crate::virt::domain::{Accel, CpuSpec};
use crate::virt::hypervisor::DomainState;
use crate::virt::network::{DhcpHost, NetworkSpec};
use crate::virt::storage::{PoolSpec, POOL_NAME};
use crate::virt::VirtError;

/// The project's network as found or made by this run.
struct NetState {
    name: String,
    subnet: config::Subnet,
    hosts: Vec<DhcpHost>,
    created_now: bool,
}

/// Brings the selected machines up: missing ones are made, stopped ones
/// started, running ones left alone; all in parallel.
pub fn up(
    env: &Env,
    config: &Config,
    names: &[String],
) -> Result<Vec<MachineRecord>, LifecycleError> {
    up_with(env, config, names, UpOptions::default())
}

/// What `up` does beyond bringing machines up.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpOptions {
    /// When to run provisioners (default: at a machine's first `up`).
    pub provision: ProvisionPolicy,
}

/// [`up`] with options (`--provision`, `--no-provision`).
pub fn up_with(
    env: &Env,
    config: &Config,
    names: &[String],
    opts: UpOptions,
) -> Result<Vec<MachineRecord>, LifecycleError> {
    let machines = select(config, names)?;
    for m in &machines {
        crate::machine::arch::check(&m.box_name, m.box_architecture.as_deref())?;
    }
    let _lock = env.project.lock()?;
    if env.hv.uri().starts_with("qemu:///system") {
        // Cheap host checks (a few ms) that explain slow or failing starts.
        for finding in crate::host::quick_preflight() {
            env.out.warn(None, finding.one_line());
        }
    }
    let mut network_created = false;
    let outcome = up_locked(env, config, &machines, &mut network_created, opts);
    if outcome.is_err() && remaining_domains(env)?.is_empty() {
        // Nothing of this project is left: leave no network or state behind.
        if network_created {
            env.hv.remove_network(&plan::network_name(env.project))?;
        }
        crate::machine::net_apply::remove_unused(env, &[])?;
        env.project.remove_state()?;
    }
    outcome
}

fn up_locked(
    env: &Env,
    config: &Config,
    machines: &[Machine],
    network_created: &mut bool,
    opts: UpOptions,
) -> Result<Vec<MachineRecord>, LifecycleError> {
    let facts = KvmFacts::read();
    // Extra networks and forwarded ports are checked before anything is made.
    let groups = crate::machine::net_apply::preflight(env, &config.machines(), machines)?;

    let pool_dir = env.hv.ensure_pool(&PoolSpec {
        name: POOL_NAME.into(),
        path: env.pool_dir.clone(),
    })?;
    crate::fault::point("up.pool-ready");

    // Boxes and their base volumes, once per distinct box, before any machine.
    let specs: Vec<BoxSpec> = machines.iter().map(|m| box_spec(env.project, m)).collect();
    let mut bases: HashMap<&BoxSpec, (PathBuf, u64)> = HashMap::new();
    // A v2 box's further disks (bases beside the first), per box.
    let mut box_disks: HashMap<&BoxSpec, Vec<(PathBuf, u64)>> = HashMap::new();
    for spec in &specs {
        if bases.contains_key(spec) {
            continue;
        }
        let installed = boxes::ensure(env.store, spec, env.out)?;
        crate::machine::arch::check_box(&installed)?;
        env.out.detail(
            None,
            format!(
                "box {} {} at {}",
                installed.name,
                installed.version,
                installed.dir.display()
            ),
        );
        let base = ensure_base_volume(env, &pool_dir, &installed)?;
        box_disks.insert(
            spec,
            crate::machine::disks::ensure_box_bases(env.hv, &installed, &base)?,
        );
        bases.insert(spec, (base, installed.virtual_size));
    }

    // Host-wide: concurrent `up`s choose and define their subnets one at a time.
    let net_lock = crate::machine::host_lock::network(env.hv.uri())?;
    let mut net = ensure_network(env, config)?;
    crate::fault::point("up.network-started");
    *network_created = net.created_now;
    let mut private = crate::machine::net_apply::ensure_private_networks(env, &groups)?;
    drop(net_lock);
    let mut plans = Vec::new();
    for (m, spec) in machines.iter().zip(&specs) {
        let choice = accel::choose(m.accel, &facts);
        let (base, size) = &bases[spec];
        let plan =
            MachinePlan::new(env.project, m, base, *size, choice).with_box_disks(&box_disks[spec]);
        let ip = netplan::assign_ip(&net.subnet, &net.hosts, &plan.mac)
            .ok_or(LifecycleError::NoSubnet)?;
        if !net
            .hosts
            .iter()
            .any(|h| h.mac.eq_ignore_ascii_case(&plan.mac))
        {
            let host = DhcpHost {
                mac: plan.mac.clone(),
                name: m.name.0.clone(),
                ip,
            };
            env.hv.add_dhcp_host(&net.name, &host.to_xml())?;
            crate::fault::point("up.dhcp-reserved");
            net.hosts.push(host);
        }
        let nics = crate::machine::net_apply::reserve(env, &mut private, &plan)?;
        plans.push((plan, ip, nics));
    }
    if let Some((p, _, _)) = plans.first() {
        if p.accel.accel == Accel::Tcg {
            env.out.step(None, p.accel.reason.clone());
        }
    }

    let results = parallel(&plans, |(plan, ip, nics)| {
        // Folders and provisioners run once the machine answers; their
        // failure leaves the machine up.
        let r = bring_up(env, plan, *ip, nics).and_then(|rec| {
            provision::finish_up(env, &plan.machine, &rec, opts.provision)?;
            Ok(rec)
        });
        (plan.machine.name.0.clone(), r)
    });
    collect(env.out, results)
}

/// Copies the box image into the pool once per box content (later `up`s only
/// make overlays on it) and returns its path. The name carries the box's
/// content id: a rebuilt box gets a new base volume, and machines made from
/// the old one keep theirs (base volumes are never removed by kvmdrive).
fn ensure_base_volume(
    env: &Env,
    pool_dir: &Path,
    b: &InstalledBox,
) -> Result<PathBuf, LifecycleError> {
    let name = plan::base_volume_name(&b.name, &b.version, &b.content_id()?);
    let path = pool_dir.join(&name);
    if path.exists() {
        return Ok(path);
    }
    env.out.step(
        None,
        format!(
            "importing box {} {} into storage pool {POOL_NAME}",
            b.name, b.version
        ),
    );
    let io = |e: std::io::Error| BoxError::Io {
        context: format!(
            "cannot copy {} to {}",
            b.image.display(),
            pool_dir.display()
        ),
        source: e,
    };
    crate::machine::base_import::import(&b.image, pool_dir, &path).map_err(io)?;
    env.hv.refresh_pool(POOL_NAME)?;
    Ok(path)
}

fn ensure_network(env: &Env, config: &Config) -> Result<NetState, LifecycleError> {
    let name = plan::network_name(env.project);
    if let Some(xml) = env.hv.network_xml(&name)? {
        let facts = netplan::read_network(&xml);
        if let Some(subnet) = facts.subnets.first().copied() {
            env.hv.ensure_network(&name, &xml)?;
            return Ok(NetState {
                name,
                subnet,
                hosts: facts.hosts,
                created_now: false,
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
    taken.extend(netplan::read_routes(
        &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
    ));
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
    env.out
        .step(None, format!("creating network {name} ({subnet})"));
    env.hv.ensure_network(&name, &spec.to_xml())?;
    Ok(NetState {
        name,
        subnet,
        hosts: Vec::new(),
        created_now: true,
    })
}

/// What one `up` made for a machine, so a failure can remove exactly that.
#[derive(Default)]
struct Created {
    overlay: bool,
    domain: bool,
    /// Extra disks (see `machine::disks`).
    disks: bool,
}

fn bring_up(
    env: &Env,
    plan: &MachinePlan,
    ip: Ipv4Addr,
    nics: &[crate::machine::nics::NicAddress],
) -> Result<MachineRecord, Failure> {
    let mut created = Created::default();
    let result = bring_up_inner(env, plan, ip, nics, &mut created);
    if result.is_err() && (created.domain || created.overlay || created.disks) {
        let name = Some(plan.machine.name.0.as_str());
        env.out.step(name, "removing what this run created");
        if created.domain {
            if let Err(e) = env.hv.remove_domain(&plan.domain) {
                env.out.warn(name, format!("could not remove domain: {e}"));
            }
        }
        if created.overlay {
            if let Err(e) = env.hv.delete_volume(POOL_NAME, &plan.overlay.name) {
                env.out.warn(name, format!("could not remove disk: {e}"));
            }
        }
        if created.disks {
            if let Err(e) = crate::machine::disks::remove(env.hv, &plan.domain) {
                env.out
                    .warn(name, format!("could not remove extra disks: {e}"));
            }
        }
        let _ = env.project.forget(&plan.machine.name.0);
    }
    if cancel::is_cancelled() && result.is_err() {
        return Err(failure("interrupted"));
    }
    result
}

fn bring_up_inner(
    env: &Env,
    plan: &MachinePlan,
    ip: Ipv4Addr,
    nics: &[crate::machine::nics::NicAddress],
    created: &mut Created,
) -> Result<MachineRecord, Failure> {
    let name = plan.machine.name.0.as_str();
    let out = |msg: String| env.out.step(Some(name), msg);
    let mut accel = plan.accel.accel;
    match env.hv.domain_state(&plan.domain)? {
        None => {
            // A disk without a domain is what an interrupted run leaves: start afresh.
            env.hv.delete_volume(POOL_NAME, &plan.overlay.name)?;
            let disk = env.hv.create_volume(POOL_NAME, &plan.overlay.to_xml())?;
            created.overlay = true;
            out(format!(
                "created disk {} (linked clone of the box)",
                plan.overlay.name
            ));
            created.disks = true;
            for d in crate::machine::disks::create(env.hv, plan)? {
                out(format!("created disk {d}"));
            }
            accel = define_and_start(env, plan, &disk, accel, created)?;
        }
        Some(DomainState::Running) => out("already running".into()),
        Some(state) => {
            if state != DomainState::Shutoff {
                env.hv.destroy_domain(&plan.domain)?;
            }
            out(format!("starting ({})", state.as_str()));
            env.hv
                .start_domain(&plan.domain)
                .map_err(|e| start_failure(e, &plan.domain))?;
            crate::fault::point("up.domain-started");
        }
    }
    loop {
        match wait_ready(env, plan, ip, accel) {
            Err(ReadyError::KvmFailed)
                if plan.machine.accel == config::Accel::Auto && accel == Accel::Kvm =>
            {
                out("KVM cannot run this guest here (KVM internal error in the qemu log): retrying under TCG".into());
                env.hv.destroy_domain(&plan.domain)?;
                let disk = env
                    .hv
                    .volume_path(POOL_NAME, &plan.overlay.name)?
                    .ok_or_else(|| failure("the machine's disk disappeared"))?;
                accel = define_and_start(env, plan, &disk, Accel::Tcg, created)?;
            }
            Err(ReadyError::KvmFailed) => {
                return Err(Failure {
                    message: "KVM cannot run this guest (KVM internal error in the qemu log)"
                        .into(),
                    hint: Some("set `accel: tcg` (or `auto`) in kvmdrive.yml".into()),
                })
            }
            Err(ReadyError::Failed(f)) => return Err(f),
            Ok(mut record) => {
                record.networks = nics.to_vec();
                crate::machine::net_apply::after_ready(env, plan, &record).map_err(failure)?;
                env.project.save_record(&record)?;
                out(format!(
                    "ready: ssh {}@{} ({})",
                    record.user,
                    record.address,
                    accel_label(accel)
                ));
                return Ok(record);
            }
        }
    }
}

fn accel_label(a: Accel) -> &'static str {
    match a {
        Accel::Kvm => "KVM",
        Accel::Tcg => "TCG",
    }
}

/// Defines the domain and starts it, retrying with a safer CPU mode when a
/// mode fails to start. Returns the accelerator in use.
fn define_and_start(
    env: &Env,
    plan: &MachinePlan,
    disk: &Path,
    accel: Accel,
    created: &mut Created,
) -> Result<Accel, Failure> {
    let name = Some(plan.machine.name.0.as_str());
    let candidates = plan::cpu_candidates(&plan.machine, accel);
    for (i, cpu) in candidates.iter().enumerate() {
        let xml = plan
            .domain_spec(env.project, disk, accel, cpu.clone())
            .to_xml();
        env.hv.define_domain(&xml)?;
        crate::fault::point("up.domain-defined");
        created.domain = true;
        env.out.step(
            name,
            format!("starting ({}, cpu {})", accel_label(accel), cpu_label(cpu)),
        );
        match env.hv.start_domain(&plan.domain) {
            Ok(()) => {
                crate::fault::point("up.domain-started");
                return Ok(accel);
            }
            Err(e) => match candidates.get(i + 1) {
                Some(next) if looks_like_cpu_problem(&e.to_string()) => {
                    env.out.warn(
                        name,
                        format!(
                            "cpu {} failed to start ({e}); retrying with {}",
                            cpu_label(cpu),
                            cpu_label(next)
                        ),
                    );
                    // The next definition gets a new UUID: libvirt refuses it
                    // while the failed one is still defined under this name.
                    env.hv.remove_domain(&plan.domain)?;
                }
                _ => return Err(start_failure(e, &plan.domain)),
            },
        }
    }
    unreachable!("cpu_candidates is never empty")
}

fn cpu_label(cpu: &CpuSpec) -> String {
    match cpu {
        CpuSpec::HostPassthrough => "host-passthrough".into(),
        CpuSpec::HostModel => "host-model".into(),
        CpuSpec::Model(m) => m.clone(),
    }
}

fn looks_like_cpu_problem(msg: &str) -> bool {
    msg.contains("MSR") || msg.to_ascii_lowercase().contains("cpu")
}

fn start_failure(e: VirtError, domain: &str) -> Failure {
    let log = read_tail(&qemu_log(domain), 5);
    let mut message = e.to_string();
    if !log.is_empty() {
        message.push_str(&format!(
            "\nqemu log ({}):\n{log}",
            qemu_log(domain).display()
        ));
    }
    Failure {
        hint: e.hint(),
        message,
    }
}
