//! Reusing machines between role-test runs (`create --reuse`, `test
//! --reuse`, the Molecule driver's `reuse: true`). A machine made fresh by a
//! reusing `create` gets a pristine snapshot, `kvmdrive-pristine`, taken
//! running once it is ready, whose description holds a fingerprint of its
//! definition and box. A reusing `destroy` parks it instead: the domain is
//! powered off (the snapshot keeps its memory) and the machine's state
//! directory (its SSH key, its record) moves to kvmdrive's home
//! (`$KVMDRIVE_HOME/parked/DOMAIN/`), since Molecule prunes its ephemeral
//! directory. The next reusing `create` with the same fingerprint reverts to
//! the snapshot instead of booting; a changed definition or box means a
//! fresh machine. `destroy --purge` and `gc` remove parked machines for good.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::lifecycle::{self, Env, IfDown, Run};
use super::plan;
use super::project::{MachineRecord, Project, ProjectError};
use super::snapshot::{self as snap, SnapshotError};
use crate::boxes::BoxStore;
use crate::project::config::{Config, Machine};
use crate::virt::hypervisor::DomainState;

/// The snapshot a reusing `create` takes and reverts to.
pub const PRISTINE: &str = "kvmdrive-pristine";
/// Directory under kvmdrive's home that holds parked machines.
pub const PARKED_DIR: &str = "parked";
const FINGERPRINT_PREFIX: &str = "kvmdrive pristine; fingerprint ";

/// What a parked machine's `park.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub domain: String,
    pub machine: String,
    /// The project it belongs to (its directory and state directory).
    pub project_dir: PathBuf,
    pub state_dir: PathBuf,
    /// When it was parked, seconds since the epoch.
    pub parked_at: u64,
}

impl Parked {
    /// Seconds since it was parked.
    pub fn age(&self) -> Duration {
        Duration::from_secs(epoch_now().saturating_sub(self.parked_at))
    }
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A machine's fingerprint: its whole definition (every field, defaults
/// applied) and the identity of the box it was made from.
pub fn fingerprint(machine: &Machine, box_identity: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("{machine:?}").as_bytes());
    h.update(b"\0");
    h.update(box_identity.as_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fingerprint a pristine snapshot's description carries.
pub fn fingerprint_of(description: &str) -> Option<&str> {
    description.strip_prefix(FINGERPRINT_PREFIX).map(str::trim)
}

/// Where parked machines live.
pub fn parked_root(store: &BoxStore) -> PathBuf {
    store.home.join(PARKED_DIR)
}

fn parked_dir(store: &BoxStore, domain: &str) -> PathBuf {
    parked_root(store).join(domain)
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Project(ProjectError::Io { context, source })
}

/// The parked machine behind `domain`, if there is one.
pub fn parked(store: &BoxStore, domain: &str) -> Option<Parked> {
    let text = fs::read_to_string(parked_dir(store, domain).join("park.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Every parked machine, oldest first.
pub fn all_parked(store: &BoxStore) -> Vec<Parked> {
    let mut out: Vec<Parked> = fs::read_dir(parked_root(store))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| parked(store, &e.file_name().to_string_lossy()))
        .collect();
    out.sort_by_key(|p| (p.parked_at, p.domain.clone()));
    out
}

fn forget_parked(store: &BoxStore, domain: &str) -> Result<(), SnapshotError> {
    let dir = parked_dir(store, domain);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("cannot remove {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Moves a directory (rename, else copy and remove: the home may be on
/// another file system than the state directory).
fn move_dir(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let err = |what: &str| {
        io(format!(
            "cannot {what} {} to {}",
            from.display(),
            to.display()
        ))
    };
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(err("create the parent of"))?;
    }
    let _ = fs::remove_dir_all(to);
    if fs::rename(from, to).is_ok() {
        return Ok(());
    }
    fs::create_dir_all(to).map_err(err("copy"))?;
    for entry in fs::read_dir(from).map_err(err("copy"))? {
        let entry = entry.map_err(err("copy"))?;
        if entry.file_type().map_err(err("copy"))?.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).map_err(err("copy"))?;
        }
    }
    fs::remove_dir_all(from).map_err(err("move"))
}

/// The box identity that goes into a machine's fingerprint (fetching the
/// box when it is not cached, as `up` would).
fn box_identity(env: &Env, m: &Machine) -> Result<String, SnapshotError> {
    let spec = lifecycle::box_spec(env.project, m);
    let b = crate::boxes::ensure(env.store, &spec, env.out)
        .map_err(|e| SnapshotError::Lifecycle(e.into()))?;
    let id = b
        .content_id()
        .map_err(|e| SnapshotError::Lifecycle(e.into()))?;
    Ok(format!("{} {} {id}", b.name, b.version))
}

/// `create` with reuse: parked machines whose fingerprint matches are
/// reverted to their pristine snapshot, the others made (or started) by
/// `up`; machines made fresh get a pristine snapshot.
pub fn create(
    env: &Env,
    config: &Config,
    names: &[String],
) -> Result<Vec<MachineRecord>, SnapshotError> {
    let machines = lifecycle::select(config, names)?;
    let mut fresh = Vec::new();
    let mut prints = Vec::new();
    {
        let _lock = env.project.lock()?;
        // `up` needs every host: nothing is reverted unless all answer.
        let per = snap::per_host(env, config, &machines, IfDown::RefuseAny, |env, ms| {
            classify(env, ms)
        })?;
        for (_, (f, p)) in per {
            fresh.extend(f);
            prints.extend(p);
        }
    }
    // Purged machines were destroyed under the lock above: destroy needs it.
    // `up` waits for SSH on the reverted machines too; its login puts their
    // clocks right (see `guest_clock::login`).
    let records = lifecycle::up(env, config, names)?;
    let _lock = env.project.lock()?;
    let pairs: Vec<(Machine, String)> = fresh.into_iter().zip(prints).collect();
    let made: Vec<Machine> = pairs.iter().map(|(m, _)| m.clone()).collect();
    let _ = snap::per_host(env, config, &made, IfDown::Skip, |env, ms| {
        snap::each_machine(env, ms, |m| {
            let print = &pairs
                .iter()
                .find(|(x, _)| x.name == m.name)
                .expect("paired")
                .1;
            match snap::save_one(env, m, PRISTINE, &format!("{FINGERPRINT_PREFIX}{print}")) {
                Ok(took) => env.out.step(
                    Some(&m.name.0),
                    format!(
                        "saved {PRISTINE} in {:.1}s (the next create reuses it)",
                        took.as_secs_f32()
                    ),
                ),
                Err(e) => env.out.warn(
                    Some(&m.name.0),
                    format!("cannot be reused: {e}; it will be destroyed, not parked"),
                ),
            }
            Ok(())
        })
    });
    Ok(records)
}

/// The reusing `create`'s first pass over the machines of one host (the
/// project lock is held): parked machines whose fingerprint matches are
/// reverted to their pristine snapshot; those that changed are purged.
/// Returns the machines `up` makes fresh and their fingerprints.
fn classify(env: &Env, machines: &[Machine]) -> Result<(Vec<Machine>, Vec<String>), SnapshotError> {
    let mut fresh = Vec::new();
    let mut prints = Vec::new();
    for m in machines {
        let name = m.name.0.as_str();
        let domain = plan::domain_name(env.project, name);
        let print = fingerprint(m, &box_identity(env, m)?);
        let state = env.hv.domain_state(&domain)?;
        let is_parked = parked(env.store, &domain).is_some();
        let pristine = match state {
            Some(_) => env.hv.snapshot_info(&domain, PRISTINE)?,
            None => None,
        };
        let matches = pristine
            .as_ref()
            .and_then(|s| fingerprint_of(&s.description))
            == Some(print.as_str());
        if is_parked && matches {
            move_dir(
                &parked_dir(env.store, &domain).join("machine"),
                &env.project.machine_dir(name),
            )?;
            forget_parked(env.store, &domain)?;
            let started = Instant::now();
            let reverted = match &pristine {
                Some(p) => env.hv.revert_snapshot(&domain, p)?,
                None => None,
            };
            if reverted.is_none() {
                return Err(SnapshotError::Missing {
                    machine: name.to_owned(),
                    name: PRISTINE.to_owned(),
                });
            }
            if let Some(record) = env.project.record(name)? {
                super::stale_connections::after_revert(env, &record);
            }
            env.out.step(
                Some(name),
                format!(
                    "reverted to {PRISTINE} in {:.1}s (reused, no boot)",
                    started.elapsed().as_secs_f32()
                ),
            );
        } else if is_parked || (state.is_some() && pristine.is_some() && !matches) {
            env.out.step(
                Some(name),
                "its definition or box changed since it was parked: making a fresh machine",
            );
            fresh.push(m.clone());
            prints.push(print);
            purge_domain(env, name, &domain)?;
        } else if state.is_none() {
            fresh.push(m.clone());
            prints.push(print);
        }
    }
    Ok((fresh, prints))
}

/// Removes a machine's domain for good (under the caller's lock: the
/// pieces of `destroy` that do not take it).
fn purge_domain(env: &Env, machine: &str, domain: &str) -> Result<(), SnapshotError> {
    env.hv.remove_domain(domain)?;
    env.hv
        .delete_volume(crate::virt::storage::POOL_NAME, &plan::overlay_name(domain))?;
    super::disks::remove(env.hv, domain)?;
    super::disks::remove_nvram(domain);
    let network = plan::network_name(env.project);
    let mac = plan::mac_address(env.project, machine);
    if let Some(xml) = env.hv.network_xml(&network)? {
        for h in super::netplan::read_network(&xml)
            .hosts
            .iter()
            .filter(|h| h.mac == mac)
        {
            env.hv.remove_dhcp_host(&network, &h.to_xml())?;
        }
    }
    let _ = fs::remove_file(plan::console_log(domain));
    env.project.forget(machine)?;
    forget_parked(env.store, domain)
}

/// `destroy` with reuse: machines with a pristine snapshot are parked, the
/// others destroyed. The project's network stays while machines are parked.
pub fn park(env: &Env, config: &Config, names: &[String]) -> Result<(), SnapshotError> {
    let machines = lifecycle::select(config, names)?;
    let (per, reached) = {
        let _lock = env.project.lock()?;
        lifecycle::for_each_host(
            env,
            config,
            &machines,
            IfDown::Skip,
            Run::Sequential,
            park_on_host,
        )
    };
    let destroy: Vec<String> = per.into_iter().flat_map(|(_, d)| d).collect();
    let destroyed = if destroy.is_empty() {
        Ok(())
    } else {
        lifecycle::destroy(env, config, &destroy)
    };
    if let Err(e) = reached {
        // What the hosts that answered could do is done; name the rest.
        if let Err(d) = destroyed {
            env.out.warn(None, d.to_string());
        }
        return Err(e);
    }
    destroyed?;
    // With every machine parked the project looks destroyed: no state left.
    let all_parked = config
        .machines()
        .iter()
        .all(|m| parked(env.store, &plan::domain_name(env.project, &m.name.0)).is_some());
    if all_parked {
        env.project.remove_state()?;
    }
    Ok(())
}

/// Parks the machines of one host that have a pristine snapshot (the
/// project lock is held); returns those to destroy instead.
fn park_on_host(env: &Env, machines: &[Machine]) -> Result<Vec<String>, SnapshotError> {
    let mut destroy = Vec::new();
    for m in machines {
        let name = m.name.0.as_str();
        let domain = plan::domain_name(env.project, name);
        let state = env.hv.domain_state(&domain)?;
        if state.is_none() || parked(env.store, &domain).is_some() {
            if state.is_none() {
                env.out.step(Some(name), "not created");
            } else {
                env.out.step(Some(name), "already parked");
            }
            continue;
        }
        if env.hv.snapshot_info(&domain, PRISTINE)?.is_none() {
            destroy.push(m.name.0.clone());
            continue;
        }
        super::forward::stop(&env.project.machine_dir(name));
        if state != Some(DomainState::Shutoff) {
            env.hv.destroy_domain(&domain)?;
        }
        let dir = parked_dir(env.store, &domain);
        move_dir(&env.project.machine_dir(name), &dir.join("machine"))?;
        let record = Parked {
            domain: domain.clone(),
            machine: name.to_owned(),
            project_dir: env.project.dir.clone(),
            state_dir: env.project.state_dir.clone(),
            parked_at: epoch_now(),
        };
        let json = serde_json::to_string_pretty(&record).expect("plain data serialises");
        fs::write(dir.join("park.json"), json)
            .map_err(io(format!("cannot write {}", dir.display())))?;
        env.out.step(
            Some(name),
            format!("parked (powered off; the next create reverts to {PRISTINE})"),
        );
    }
    Ok(destroy)
}

/// `destroy --purge`: everything of the project, parked machines included.
pub fn purge(env: &Env, config: &Config, names: &[String]) -> Result<(), SnapshotError> {
    lifecycle::destroy(env, config, names)?;
    for p in all_parked(env.store) {
        let ours = p.state_dir == env.project.state_dir;
        if ours && (names.is_empty() || names.contains(&p.machine)) {
            forget_parked(env.store, &p.domain)?;
        }
    }
    Ok(())
}

/// Parked machines `gc` would remove: older than `older_than` (all with None).
pub fn gc_candidates(store: &BoxStore, older_than: Option<Duration>) -> Vec<Parked> {
    all_parked(store)
        .into_iter()
        .filter(|p| older_than.is_none_or(|d| p.age() >= d))
        .collect()
}

/// Removes parked machines for good, each through its own project's
/// `destroy` (its network goes with its last machine).
pub fn gc(
    hv: &crate::virt::Hypervisor,
    store: &BoxStore,
    out: &crate::output::Reporter,
    parked: &[Parked],
) -> Result<(), SnapshotError> {
    for p in parked {
        let project = Project::new(&p.project_dir, Some(&p.state_dir))?;
        let env = Env {
            hv,
            project: &project,
            out,
            store,
            pool_dir: lifecycle::default_pool_dir(),
        };
        let _lock = project.lock()?;
        purge_domain(&env, &p.machine, &p.domain)?;
        out.step(
            Some(&p.machine),
            format!("removed parked machine {}", p.domain),
        );
        let left = hv
            .owned_domains()?
            .into_iter()
            .any(|d| d.project == project.id);
        if !left {
            // Its project's last machine: its networks and state go too.
            super::net_apply::remove_unused(&env, std::slice::from_ref(&p.machine))?;
            hv.remove_network(&plan::network_name(&project))?;
            project.remove_state()?;
        }
    }
    Ok(())
}

/// Parses `30m`, `12h`, `7d`, `90s` (a number and a unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit (s, m, h or d)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (s, m, h, d or w)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::config::Config;

    fn machine(yml: &str) -> Machine {
        Config::parse(yml, Path::new("kvmdrive.yml"))
            .unwrap()
            .machines()
            .remove(0)
    }

    #[test]
    fn fingerprint_follows_the_definition_and_the_box() {
        let a = machine("machines:\n  - name: web\n    box: b\n    memory: 512\n");
        let same = machine("machines:\n  - name: web\n    box: b\n    memory: 512\n");
        let more = machine("machines:\n  - name: web\n    box: b\n    memory: 1024\n");
        let fp = fingerprint(&a, "b 1 abc");
        assert_eq!(fp.len(), 32);
        assert_eq!(fp, fingerprint(&same, "b 1 abc"));
        assert_ne!(fp, fingerprint(&more, "b 1 abc"), "memory changed");
        assert_ne!(fp, fingerprint(&a, "b 2 abd"), "box changed");
        let desc = format!("{FINGERPRINT_PREFIX}{fp}");
        assert_eq!(fingerprint_of(&desc), Some(fp.as_str()));
        assert_eq!(fingerprint_of("kvmdrive snapshot"), None);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3y").is_err());
    }
}
