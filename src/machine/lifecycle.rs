//! `up`, `halt`, `destroy`, `status`: idempotent, parallel across machines,
//! and rolled back on failure or Ctrl-C (what a run created, it removes;
//! what existed before, it leaves).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cancel;
use super::keys;
use super::netplan;
use super::plan::{self, MachinePlan};
use super::project::{MachineRecord, Project, ProjectError};
use super::provision::{self, ProvisionError, ProvisionPolicy};
use super::ssh::{self, SshTarget, WaitError};
use crate::boxes::{self, BoxError, BoxSpec, BoxStore, InstalledBox};
use crate::host::accel::{self, KvmFacts};
use crate::output::Reporter;
use crate::project::config::{self, Config, Machine};
use crate::virt::domain::{Accel, CpuSpec};
use crate::virt::hypervisor::DomainState;
use crate::virt::network::{DhcpHost, NetworkSpec};
use crate::virt::storage::{PoolSpec, POOL_NAME};
use crate::virt::{Hypervisor, VirtError};

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
}

impl LifecycleError {
    pub fn hint(&self) -> Option<String> {
        match self {
            LifecycleError::Virt(e) => e.hint(),
            LifecycleError::Box(e) => e.hint(),
            LifecycleError::Project(e) => e.hint(),
            LifecycleError::UnknownMachine { .. } => Some("see `kvmdrive status`".into()),
            LifecycleError::NoSubnet => Some("set `network: {subnet: ...}` in kvmdrive.yml".into()),
            LifecycleError::Arch(e) => Some(e.hint()),
            LifecycleError::Net(e) => e.hint(),
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
struct Failure {
    message: String,
    hint: Option<String>,
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

fn failure(message: impl Into<String>) -> Failure {
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
fn box_spec(project: &Project, m: &Machine) -> BoxSpec {
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
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|it| s.spawn(|| f(it))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("machine threads do not panic"))
            .collect()
    })
}

/// Reports per-machine failures and turns them into one error.
fn collect<T>(
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

// ---- up ---------------------------------------------------------------------

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
        super::arch::check(&m.box_name, m.box_architecture.as_deref())?;
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
        super::net_apply::remove_unused(env, &[])?;
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
    let groups = super::net_apply::preflight(env, &config.machines(), machines)?;

    let pool_dir = env.hv.ensure_pool(&PoolSpec {
        name: POOL_NAME.into(),
        path: env.pool_dir.clone(),
    })?;

    // Boxes and their base volumes, once per distinct box, before any machine.
    let specs: Vec<BoxSpec> = machines.iter().map(|m| box_spec(env.project, m)).collect();
    let mut bases: HashMap<&BoxSpec, (PathBuf, u64, PathBuf)> = HashMap::new();
    // A v2 box's further disks (bases beside the first), per box.
    let mut box_disks: HashMap<&BoxSpec, Vec<(PathBuf, u64)>> = HashMap::new();
    for spec in &specs {
        if bases.contains_key(spec) {
            continue;
        }
        let installed = boxes::ensure(env.store, spec, env.out)?;
        super::arch::check_box(&installed)?;
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
            super::disks::ensure_box_bases(env.hv, &installed, &base)?,
        );
        bases.insert(spec, (base, installed.virtual_size, installed.dir.clone()));
    }

    let mut net = ensure_network(env, config)?;
    *network_created = net.created_now;
    let mut private = super::net_apply::ensure_private_networks(env, &groups)?;
    let mut plans = Vec::new();
    for (m, spec) in machines.iter().zip(&specs) {
        let choice = accel::choose(m.accel, &facts);
        let (base, size, _) = &bases[spec];
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
            net.hosts.push(host);
        }
        let nics = super::net_apply::reserve(env, &mut private, &plan)?;
        plans.push((plan, ip, nics));
    }
    if let Some((p, _, _)) = plans.first() {
        if p.accel.accel == Accel::Tcg {
            env.out.step(None, p.accel.reason.clone());
        }
    }

    // `box prune` reads the records of every registered project.
    if let Err(e) = boxes::projects::register(&env.store.home, &env.project.state_dir) {
        env.out.warn(
            None,
            format!("cannot register the project for `box prune`: {e}"),
        );
    }
    let results = parallel(&plans, |(plan, ip, nics)| {
        // Folders and provisioners run once the machine answers; their
        // failure leaves the machine up.
        let r = bring_up(env, plan, *ip, nics).and_then(|mut rec| {
            // The record names its box, so `box prune` keeps it.
            rec.box_dir = bases
                .values()
                .find(|b| plan.overlay.backing.as_deref() == Some(b.0.as_path()))
                .map(|b| b.2.clone());
            env.project.save_record(&rec)?;
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
    std::fs::create_dir_all(pool_dir).map_err(io)?;
    let tmp = tempfile::Builder::new()
        .prefix(".import-")
        .tempfile_in(pool_dir)
        .map_err(io)?;
    std::fs::copy(&b.image, tmp.path()).map_err(io)?;
    tmp.persist(&path).map_err(|e| io(e.error))?;
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
    if let Ok(groups) = super::nics::private_groups(&config.machines()) {
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
    nics: &[super::nics::NicAddress],
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
            if let Err(e) = super::disks::remove(env.hv, &plan.domain) {
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
    nics: &[super::nics::NicAddress],
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
            for d in super::disks::create(env.hv, plan)? {
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
                super::net_apply::after_ready(env, plan, &record).map_err(failure)?;
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
        created.domain = true;
        env.out.step(
            name,
            format!("starting ({}, cpu {})", accel_label(accel), cpu_label(cpu)),
        );
        match env.hv.start_domain(&plan.domain) {
            Ok(()) => return Ok(accel),
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

/// libvirt's log of the qemu process of a domain.
fn qemu_log(domain: &str) -> PathBuf {
    PathBuf::from(format!("/var/log/libvirt/qemu/{domain}.log"))
}

/// The last `n` lines of a text file ("" when unreadable).
fn read_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

enum ReadyError {
    /// The domain paused with a KVM internal error.
    KvmFailed,
    Failed(Failure),
}

impl From<Failure> for ReadyError {
    fn from(f: Failure) -> Self {
        ReadyError::Failed(f)
    }
}

/// Waits for the SSH banner, logs in (own key, else the insecure one),
/// installs the machine's own key, and checks a login with it.
fn wait_ready(
    env: &Env,
    plan: &MachinePlan,
    ip: Ipv4Addr,
    accel: Accel,
) -> Result<MachineRecord, ReadyError> {
    let name = plan.machine.name.0.as_str();
    let dir = env.project.machine_dir(name);
    let key = keys::machine_key(&dir).map_err(failure)?;
    let record = MachineRecord {
        name: name.to_owned(),
        domain: plan.domain.clone(),
        address: ip.to_string(),
        port: 22,
        user: SSH_USER.into(),
        identity_file: key.private_path.clone(),
        mac: plan.mac.clone(),
        domain_type: accel.domain_type().into(),
        networks: Vec::new(),
        box_dir: None,
    };
    if env.hv.is_test_driver() {
        // libvirt's test driver runs no guest: there is nothing to log in to.
        return Ok(record);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(plan.machine.boot_timeout_s.into());
    env.out.step(Some(name), format!("waiting for SSH on {ip}"));
    let mut kvm_failed = false;
    let check = || -> Result<(), String> {
        match env.hv.domain_state(&plan.domain) {
            Ok(Some(DomainState::Running)) => Ok(()),
            Ok(Some(DomainState::Paused)) if accel == Accel::Kvm => {
                let log = read_tail(&qemu_log(&plan.domain), 50);
                if accel::kvm_failed_in_log(&log) {
                    crate::host::experience::record(&plan.domain, &log);
                    kvm_failed = true;
                    Err("KVM internal error".into())
                } else {
                    Ok(())
                }
            }
            Ok(Some(s)) => Err(format!("the domain is {} instead of running", s.as_str())),
            Ok(None) => Err("the domain disappeared".into()),
            Err(e) => Err(e.to_string()),
        }
    };
    let addr = SocketAddr::new(IpAddr::V4(ip), 22);
    match ssh::wait_for_banner(addr, deadline, check) {
        Ok(()) => {}
        Err(_) if kvm_failed => return Err(ReadyError::KvmFailed),
        Err(WaitError::Cancelled) => return Err(failure("interrupted").into()),
        Err(WaitError::TimedOut) => {
            return Err(failure(timeout_diagnosis(
                env,
                plan,
                ip,
                plan.machine.boot_timeout_s,
            ))
            .into())
        }
        Err(WaitError::Aborted(why)) => {
            let console = read_tail(&plan::console_log(&plan.domain), 15);
            return Err(failure(format!(
                "stopped waiting for SSH: {why}\nlast console lines:\n{console}"
            ))
            .into());
        }
    }
    env.out.detail(
        Some(name),
        format!("SSH banner after {:.1}s", started.elapsed().as_secs_f32()),
    );

    // One login with every key the guest may accept (own key after a restart,
    // the insecure ones on first boot) that leaves only the own key.
    let mut identities = vec![key.private_path.clone()];
    identities.extend(
        keys::insecure_key_files(&env.project.state_dir).map_err(|e| failure(e.to_string()))?,
    );
    let first = SshTarget {
        host: ip.to_string(),
        port: 22,
        user: SSH_USER.into(),
        identities,
    };
    let script = ssh::key_replacement_script(&key.public_line, plan.guest_hostname().as_ref());
    run_until_ok(&first, &script, deadline)?;
    run_until_ok(&SshTarget::from_record(&record), "true", deadline)?;
    env.out.detail(
        Some(name),
        format!(
            "logged in with its own key after {:.1}s",
            started.elapsed().as_secs_f32()
        ),
    );
    Ok(record)
}

/// Runs `script` over SSH, retrying connection failures (exit 255) until
/// `deadline`; a failing script is an error at once.
fn run_until_ok(target: &SshTarget, script: &str, deadline: Instant) -> Result<(), Failure> {
    loop {
        if cancel::is_cancelled() {
            return Err(failure("interrupted"));
        }
        let out = target.run(script, 10).map_err(|e| Failure {
            message: format!("cannot run ssh: {e}"),
            hint: Some("install the OpenSSH client (apt-get install openssh-client)".into()),
        })?;
        match out.status.code() {
            Some(0) => return Ok(()),
            Some(255) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(300))
            }
            _ => {
                return Err(failure(format!(
                    "ssh {}@{} failed: {}",
                    target.user,
                    target.host,
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        }
    }
}

/// What we know when a machine never answered on SSH.
fn timeout_diagnosis(env: &Env, plan: &MachinePlan, ip: Ipv4Addr, secs: u32) -> String {
    let state = match env.hv.domain_state(&plan.domain) {
        Ok(Some(s)) => s.as_str().to_owned(),
        Ok(None) => "missing".into(),
        Err(e) => format!("unknown ({e})"),
    };
    let arp = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    let took_address = arp
        .lines()
        .any(|l| l.split_whitespace().next() == Some(&ip.to_string()) && l.contains(" 0x2 "));
    let console = read_tail(&plan::console_log(&plan.domain), 15);
    format!(
        "no SSH on {ip}:22 after {secs}s; domain is {state}; guest {} its address; last console lines ({}):\n{console}",
        if took_address { "took" } else { "did not take" },
        plan::console_log(&plan.domain).display()
    )
}

// ---- halt -------------------------------------------------------------------

/// Shuts machines down: `poweroff` over SSH (or ACPI), forcibly after a minute.
pub fn halt(env: &Env, config: &Config, names: &[String]) -> Result<(), LifecycleError> {
    let machines = select(config, names)?;
    let _lock = env.project.lock()?;
    let results = parallel(&machines, |m| (m.name.0.clone(), halt_one(env, m)));
    collect(env.out, results).map(drop)
}

fn halt_one(env: &Env, m: &Machine) -> Result<(), Failure> {
    let name = Some(m.name.0.as_str());
    let domain = plan::domain_name(env.project, &m.name.0);
    match env.hv.domain_state(&domain)? {
        None => {
            env.out.step(name, "not created");
            return Ok(());
        }
        Some(DomainState::Shutoff) => {
            env.out.step(name, "already stopped");
            return Ok(());
        }
        Some(_) => {}
    }
    super::forward::stop(&env.project.machine_dir(&m.name.0));
    env.out.step(name, "shutting down");
    let asked = match env.project.record(&m.name.0)? {
        Some(r) if !env.hv.is_test_driver() => SshTarget::from_record(&r)
            .run("sudo -n systemctl poweroff || sudo -n poweroff", 5)
            .is_ok(),
        _ => false,
    };
    if !asked {
        env.hv.shutdown_domain(&domain)?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !cancel::is_cancelled() {
        if matches!(
            env.hv.domain_state(&domain)?,
            Some(DomainState::Shutoff) | None
        ) {
            env.out.step(name, "stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    env.out.warn(name, "did not stop in 60 s: forcing it off");
    env.hv.destroy_domain(&domain)?;
    Ok(())
}

// ---- destroy ----------------------------------------------------------------

/// Domains of this project that libvirt still has (found by metadata).
fn remaining_domains(env: &Env) -> Result<Vec<crate::virt::hypervisor::OwnedDomain>, VirtError> {
    Ok(env
        .hv
        .owned_domains()?
        .into_iter()
        .filter(|d| d.project == env.project.id)
        .collect())
}

/// Removes machines (domain, disk, reservation, console log, state); with
/// the last one also the network and `.kvmdrive/`. Nothing to remove is fine.
pub fn destroy(env: &Env, config: &Config, names: &[String]) -> Result<(), LifecycleError> {
    if !names.is_empty() {
        select(config, names)?;
    }
    let _lock = env.project.lock()?;
    // Machines from the config plus any of this project's domains libvirt
    // still has (e.g. machines since removed from kvmdrive.yml).
    let mut targets: Vec<String> = config.machines().into_iter().map(|m| m.name.0).collect();
    for d in remaining_domains(env)? {
        if !targets.contains(&d.machine) {
            targets.push(d.machine);
        }
    }
    targets.retain(|t| names.is_empty() || names.contains(t));
    let network = plan::network_name(env.project);
    let results = parallel(&targets, |t| (t.clone(), destroy_one(env, t, &network)));
    collect(env.out, results)?;
    for n in super::net_apply::remove_unused(env, &targets)? {
        env.out.step(None, format!("removed network {n}"));
    }
    if remaining_domains(env)?.is_empty() {
        if env.hv.network_exists(&network)? {
            env.hv.remove_network(&network)?;
            env.out.step(None, format!("removed network {network}"));
        }
        env.project.remove_state()?;
    }
    Ok(())
}

fn destroy_one(env: &Env, machine: &str, network: &str) -> Result<(), Failure> {
    let domain = plan::domain_name(env.project, machine);
    let existed = env.hv.domain_state(&domain)?.is_some();
    env.hv.remove_domain(&domain)?;
    env.hv
        .delete_volume(POOL_NAME, &plan::overlay_name(&domain))?;
    super::disks::remove(env.hv, &domain)?;
    super::disks::remove_nvram(&domain);
    let mac = plan::mac_address(env.project, machine);
    if let Some(xml) = env.hv.network_xml(network)? {
        for h in netplan::read_network(&xml)
            .hosts
            .iter()
            .filter(|h| h.mac == mac)
        {
            env.hv.remove_dhcp_host(network, &h.to_xml())?;
        }
    }
    let _ = std::fs::remove_file(plan::console_log(&domain));
    super::forward::stop(&env.project.machine_dir(machine));
    env.project.forget(machine)?;
    env.out.step(
        Some(machine),
        if existed { "destroyed" } else { "not created" },
    );
    Ok(())
}

// ---- status -----------------------------------------------------------------

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
    pub networks: Vec<super::nics::NicAddress>,
}

/// The state of every configured machine. Without state (nothing was ever
/// brought up here) libvirt is not even asked.
pub fn status(
    hv: Option<&Hypervisor>,
    project: &Project,
    config: &Config,
) -> Result<Vec<MachineStatus>, LifecycleError> {
    config
        .machines()
        .into_iter()
        .map(|m| {
            let name = m.name.0;
            let state = match hv {
                Some(hv) => hv
                    .domain_state(&plan::domain_name(project, &name))?
                    .map_or("not_created", DomainState::as_str),
                None => "not_created",
            };
            let record = if state == "not_created" {
                None
            } else {
                project.record(&name)?
            };
            Ok(MachineStatus {
                state: state.to_owned(),
                address: record.as_ref().map(|r| r.address.clone()),
                port: record.as_ref().map(|r| r.port),
                user: record.as_ref().map(|r| r.user.clone()),
                networks: record
                    .as_ref()
                    .map(|r| r.networks.clone())
                    .unwrap_or_default(),
                identity_file: record.map(|r| r.identity_file),
                name,
            })
        })
        .collect()
}
