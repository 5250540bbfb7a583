//! `up`: the selected machines made (missing), started (stopped) or left
//! alone (running), in parallel: the storage pool, the boxes' base volumes,
//! the project's network and DHCP reservations, then per machine its disks,
//! the domain (with the CPU fallback order and the KVM-to-TCG retry) and the
//! wait until it answers on SSH. A failure removes what this run created.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::ready::{wait_ready, Boot, ReadyError};
use super::resolve::{resolve, Fetch};
use super::{
    box_spec, collect, failure, parallel, qemu_log, read_tail, remaining_domains, select, Env,
    Failure, LifecycleError,
};
use crate::boxes::{self, BoxError, InstalledBox};
use crate::machine::cancel;
use crate::machine::plan::{self, MachinePlan};
use crate::machine::project::MachineRecord;
use crate::machine::project_plan::{cpu_label, plan_project, ProjectPlan, ResolvedBox};
use crate::machine::provision::{self, ProvisionPolicy};
use crate::project::config::{self, Config, Machine};
use crate::virt::domain::Accel;
use crate::virt::hypervisor::DomainState;
use crate::virt::network::DhcpHost;
use crate::virt::storage::{PoolSpec, POOL_NAME};
use crate::virt::VirtError;

/// Brings the selected machines up: missing ones are made, stopped ones
/// started, running ones left alone; all in parallel.
pub fn up(
    env: &Env,
    config: &Config,
    names: &[String],
) -> Result<Vec<MachineRecord>, LifecycleError> {
    up_with(env, config, names, UpOptions::default())
}

/// `reload`: the selected machines halted, then brought up again. With
/// several `hosts:`, nothing is halted unless every host answers (`up`
/// needs them all).
pub fn reload(
    env: &Env,
    config: &Config,
    names: &[String],
    opts: UpOptions,
) -> Result<Vec<MachineRecord>, LifecycleError> {
    let machines = select(config, names)?;
    if config.hosts.0.len() > 1 {
        let check = |_: &Env, _: &[Machine]| Ok::<_, LifecycleError>(());
        super::for_each_host(
            env,
            config,
            &machines,
            super::IfDown::RefuseAny,
            super::Run::Sequential,
            check,
        )
        .1?;
    }
    super::halt(env, config, names, false)?;
    up_with(env, config, names, opts)
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
    if !config.hosts.is_empty() {
        return super::hosts::up(env, config, &machines, opts);
    }
    let _lock = env.project.lock()?;
    if env.hv.uri().starts_with("qemu:///system") {
        // Cheap host checks (a few ms) that explain slow or failing starts.
        for finding in crate::host::quick_preflight() {
            env.out.warn(None, finding.one_line());
        }
    }
    let outcome = up_on_host(env, config, &machines, opts);
    if outcome.is_err() && remaining_domains(env)?.is_empty() {
        // Nothing of this project is left: leave no state behind.
        env.project.remove_state()?;
    }
    outcome
}

/// `up` of `machines` on the host of `env` (the project lock is held): a
/// failure that leaves none of the project's machines on this host removes
/// the networks this run made there.
pub(super) fn up_on_host(
    env: &Env,
    config: &Config,
    machines: &[Machine],
    opts: UpOptions,
) -> Result<Vec<MachineRecord>, LifecycleError> {
    let mut network_created = false;
    let outcome = up_locked(env, config, machines, &mut network_created, opts);
    if outcome.is_err() && remaining_domains(env)?.is_empty() {
        if network_created {
            env.hv.remove_network(&plan::network_name(env.project))?;
        }
        crate::machine::net_apply::remove_unused(env, &[])?;
    }
    outcome
}

/// The plan `up` would apply, changing nothing (`up --dry-run`): no lock,
/// no state directory, no pool, volume or network, no box download.
pub fn plan_up(
    env: &Env,
    config: &Config,
    names: &[String],
) -> Result<ProjectPlan, LifecycleError> {
    let machines = select(config, names)?;
    for m in &machines {
        crate::machine::arch::check(&m.box_name, m.box_architecture.as_deref())?;
    }
    let inputs = resolve(env, config, &machines, Fetch::No)?;
    plan_project(env.project, &inputs)
}

fn up_locked(
    env: &Env,
    config: &Config,
    machines: &[Machine],
    network_created: &mut bool,
    opts: UpOptions,
) -> Result<Vec<MachineRecord>, LifecycleError> {
    // Downloads first, outside the host-wide lock below.
    let mut fetched = Vec::new();
    for spec in machines.iter().map(|m| box_spec(env.project, m)) {
        if !fetched.contains(&spec) {
            boxes::ensure(env.store, &spec, env.out)?;
            fetched.push(spec);
        }
    }
    // Host-wide: concurrent `up`s choose their subnets (resolve) and define
    // their networks (below) one at a time.
    let net_lock = crate::machine::host_lock::network(env.hv.uri())?;
    let inputs = resolve(env, config, machines, Fetch::Yes)?;
    let plan = plan_project(env.project, &inputs)?;

    let pool_dir = env.hv.ensure_pool(&PoolSpec {
        name: POOL_NAME.into(),
        path: env.pool_dir.clone(),
    })?;
    crate::fault::point("up.pool-ready");
    // Base volumes, once per distinct box, before any machine.
    let mut imported: Vec<&PathBuf> = Vec::new();
    for b in &inputs.boxes {
        // A real `up` fetched every box in resolve: none is missing here.
        let ResolvedBox::Cached { installed, .. } = b else {
            continue;
        };
        if imported.contains(&&installed.dir) {
            continue;
        }
        imported.push(&installed.dir);
        let base = ensure_base_volume(env, &pool_dir, installed)?;
        crate::machine::disks::ensure_box_bases(env.hv, installed, &base)?;
    }

    for n in &plan.networks {
        if n.create {
            env.out.step(
                None,
                if n.kind == "management" {
                    format!("creating network {} ({})", n.name, n.subnet)
                } else {
                    format!(
                        "creating private network {} ({}, {})",
                        n.name,
                        n.subnet,
                        if n.xml.contains("<forward") {
                            "nat"
                        } else {
                            "isolated"
                        }
                    )
                },
            );
        }
        let defined = env.hv.ensure_network(&n.name, &n.xml)?;
        crate::fault::point("up.network-started");
        env.out.trace(None, format!("network {} active", n.name));
        if n.kind == "management" {
            *network_created = n.create;
        }
        // A network defined now from the plan's document has them already.
        let in_definition = defined && n.create;
        for r in &n.reservations {
            if !in_definition {
                let host = DhcpHost {
                    mac: r.mac.clone(),
                    name: r.name.clone(),
                    ip: r.ip,
                };
                env.hv.add_dhcp_host(&n.name, &host.to_xml())?;
            }
            crate::fault::point("up.dhcp-reserved");
        }
        if !in_definition && !n.reservations.is_empty() {
            env.out
                .trace(None, format!("DHCP reservations added to {}", n.name));
        }
    }
    drop(net_lock);
    env.out.trace(None, "pool, base volumes and networks ready");
    if let Some(m) = plan.machines.first() {
        if m.plan.accel.accel == Accel::Tcg {
            env.out.step(None, m.accel_reason.clone());
        }
    }

    // `box prune` reads the records of every registered project.
    if let Err(e) = boxes::projects::register(&env.store.home, &env.project.state_dir) {
        env.out.warn(
            None,
            format!("cannot register the project for `box prune`: {e}"),
        );
    }
    // Each machine's record names its cached box, so `box prune` keeps it.
    let box_dirs: HashMap<&str, &Path> = inputs
        .machines
        .iter()
        .zip(&inputs.boxes)
        .filter_map(|(m, b)| match b {
            ResolvedBox::Cached { installed, .. } => {
                Some((m.name.0.as_str(), installed.dir.as_path()))
            }
            ResolvedBox::Missing { .. } => None,
        })
        .collect();
    let results = parallel(&plan.machines, |m| {
        // Folders and provisioners run once the machine answers; their
        // failure leaves the machine up.
        let r = bring_up(env, &m.plan, m.address, &m.networks).and_then(|mut rec| {
            rec.box_dir = box_dirs.get(m.name.as_str()).map(|d| d.to_path_buf());
            env.project.save_record(&rec)?;
            provision::finish_up(env, &m.plan.machine, &rec, opts.provision)?;
            env.out.trace(Some(m.name.as_str()), "up finished");
            Ok(rec)
        });
        (m.name.clone(), r)
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
    if crate::remote::is_remote(env.hv.uri()) {
        return crate::remote::base_volume(env, &name, b);
    }
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
    // A guest booted from its disk has the host's time (QEMU's RTC); one
    // that goes on from memory (running, paused, a managed save) may not.
    let mut boot = match env.hv.domain_state(&plan.domain)? {
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
            Boot::Cold
        }
        Some(DomainState::Running) => {
            out("already running".into());
            Boot::FromMemory
        }
        Some(state) => {
            if state != DomainState::Shutoff {
                env.hv.destroy_domain(&plan.domain)?;
            }
            out(format!("starting ({})", state.as_str()));
            env.hv
                .start_domain(&plan.domain)
                .map_err(|e| start_failure(e, &plan.domain))?;
            crate::fault::point("up.domain-started");
            if state == DomainState::Shutoff {
                Boot::Cold
            } else {
                Boot::FromMemory
            }
        }
    };
    loop {
        match wait_ready(env, plan, ip, accel, boot) {
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
                boot = Boot::Cold;
            }
            Err(ReadyError::KvmFailed) => {
                return Err(Failure {
                    message: "KVM cannot run this guest (KVM internal error in the qemu log)"
                        .into(),
                    hint: Some(format!(
                        "use TCG: {} (or leave it to `accel: auto`)",
                        crate::host::accel::TCG_SETTING
                    )),
                })
            }
            Err(ReadyError::Failed(f)) => return Err(f),
            Ok(mut record) => {
                record.networks = nics.to_vec();
                crate::machine::net_apply::after_ready(env, plan, &record).map_err(|e| {
                    Failure {
                        hint: e.hint(),
                        message: e.to_string(),
                    }
                })?;
                env.out.trace(Some(name), "guest network set up");
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
    if plan.machine.cpu_mode == config::CpuMode::HostPassthrough && accel == Accel::Tcg {
        env.out.warn(
            name,
            format!(
                "cpu_mode host-passthrough needs KVM: under TCG the machine gets {}",
                cpu_label(&candidates[0])
            ),
        );
    }
    for (i, cpu) in candidates.iter().enumerate() {
        let xml = plan
            .domain_spec(env.project, disk, accel, cpu.clone())
            .to_xml();
        env.hv.define_domain(&xml)?;
        crate::fault::point("up.domain-defined");
        created.domain = true;
        env.out.trace(name, "domain defined");
        env.out.step(
            name,
            format!("starting ({}, cpu {})", accel_label(accel), cpu_label(cpu)),
        );
        match env.hv.start_domain(&plan.domain) {
            Ok(()) => {
                crate::fault::point("up.domain-started");
                env.out.trace(name, "domain started");
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
