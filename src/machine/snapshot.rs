//! `kvmdrive snapshot save|restore|list|delete`: named snapshots of the
//! project's machines, as libvirt internal snapshots kept inside each
//! machine's qcow2 overlay (so `destroy`, which deletes the overlay, takes
//! them along). A running machine's snapshot holds its memory too, and
//! `restore` returns it running: its clock is put right and SSH answers
//! before the command ends. A halted machine's snapshot holds its disks.
//! Also the per-machine parallel runner that `suspend` shares.

use std::time::{Duration, Instant};

use super::lifecycle::{self, Env, IfDown, LifecycleError, Run};
use super::plan;
use super::project::ProjectError;
use crate::project::config::{Config, Machine};
use crate::virt::hypervisor::DomainState;
use crate::virt::snapshot::{self, Reverted, SnapshotInfo, SnapshotSpec};
use crate::virt::VirtError;

/// Prefix of the snapshots kvmdrive takes itself (`reuse`).
pub const RESERVED_PREFIX: &str = "kvmdrive-";

/// Prefix of `snapshot push`'s names (`push_SECONDS_MICROS`, as Vagrant's
/// `push_SECONDS_NNNN`).
pub const PUSH_PREFIX: &str = "push_";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Virt(#[from] VirtError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Forward(#[from] super::forward::ForwardError),
    #[error("`{machine}` is not created")]
    NotCreated { machine: String },
    #[error("`{machine}` cannot take an internal snapshot: {}", reasons.join("; "))]
    Unsupported {
        machine: String,
        reasons: Vec<String>,
    },
    #[error("`{machine}` has no snapshot `{name}`")]
    Missing { machine: String, name: String },
    #[error("`{machine}` already has a snapshot `{name}`")]
    Exists { machine: String, name: String },
    #[error("`{machine}` has no pushed snapshot")]
    NothingPushed { machine: String },
    #[error("`{machine}` is suspended (its memory is saved to disk)")]
    Suspended { machine: String },
    #[error("invalid snapshot name `{name}`: {why}")]
    BadName { name: String, why: &'static str },
    #[error("`{machine}` was restored but SSH does not answer: {message}")]
    NotReady { machine: String, message: String },
    #[error("{failed} of {total} machine(s) failed: {names}")]
    MachinesFailed {
        failed: usize,
        total: usize,
        names: String,
    },
}

impl SnapshotError {
    pub fn hint(&self) -> Option<String> {
        match self {
            SnapshotError::Lifecycle(e) => e.hint(),
            SnapshotError::Virt(e) => e.hint(),
            SnapshotError::Project(e) => e.hint(),
            SnapshotError::Forward(e) => e.hint(),
            SnapshotError::NotCreated { .. } => Some("run `kvmdrive up` first".into()),
            SnapshotError::Unsupported { .. } => Some(
                "kvmdrive's snapshots live inside qcow2 disks: use `firmware: bios` and \
                 `format: qcow2` for extra disks, or halt the machine and copy its disks"
                    .into(),
            ),
            SnapshotError::Missing { .. } => Some("see `kvmdrive snapshot list`".into()),
            SnapshotError::Exists { name, .. } => Some(format!(
                "pick another name, replace it with `kvmdrive snapshot save --force {name}`, \
                 or `kvmdrive snapshot delete {name}` first"
            )),
            SnapshotError::NothingPushed { .. } => {
                Some("`kvmdrive snapshot push` takes one; see `kvmdrive snapshot list`".into())
            }
            SnapshotError::Suspended { .. } => Some("run `kvmdrive resume` first".into()),
            SnapshotError::BadName { .. } => Some(
                "use letters, digits, `.`, `_` and `-`, not starting with `-` or `kvmdrive-`"
                    .into(),
            ),
            SnapshotError::NotReady { .. } => {
                Some("see `kvmdrive status`; `kvmdrive reload` restarts the machine".into())
            }
            SnapshotError::MachinesFailed { .. } => None,
        }
    }
}

/// Checks a user-given snapshot name.
pub fn check_name(name: &str) -> Result<(), SnapshotError> {
    let bad = |why| {
        Err(SnapshotError::BadName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("1 to 64 characters");
    }
    if name.starts_with('-') || name.starts_with('.') {
        return bad("it starts with `-` or `.`");
    }
    if name.starts_with(RESERVED_PREFIX) {
        return bad("names starting with `kvmdrive-` are kvmdrive's own");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("only letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

/// Runs `f` for every machine on its own thread; reports each failure and
/// returns one error (the machine's own when only one failed).
pub(crate) fn each_machine<R: Send>(
    env: &Env,
    machines: &[Machine],
    f: impl Fn(&Machine) -> Result<R, SnapshotError> + Sync,
) -> Result<Vec<R>, SnapshotError> {
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = machines.iter().map(|m| s.spawn(|| f(m))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("machine threads do not panic"))
            .collect()
    });
    let total = results.len();
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (m, r) in machines.iter().zip(results) {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => failed.push((m.name.0.clone(), e)),
        }
    }
    if failed.len() == 1 && total == 1 {
        return Err(failed.pop().expect("one").1);
    }
    if failed.is_empty() {
        return Ok(ok);
    }
    let names: Vec<String> = failed.iter().map(|(n, _)| n.clone()).collect();
    for (name, e) in failed {
        env.out.step(Some(&name), format!("error: {e}"));
        if let Some(h) = e.hint() {
            env.out.step(Some(&name), format!("hint: {h}"));
        }
    }
    Err(SnapshotError::MachinesFailed {
        failed: names.len(),
        total,
        names: names.join(", "),
    })
}

/// The domain of a machine and its state; an error when it is not created.
fn created(env: &Env, m: &Machine) -> Result<(String, DomainState), SnapshotError> {
    let domain = plan::domain_name(env.project, &m.name.0);
    match env.hv.domain_state(&domain)? {
        Some(s) => Ok((domain, s)),
        None => Err(SnapshotError::NotCreated {
            machine: m.name.0.clone(),
        }),
    }
}

/// Fails when the domain's disks cannot hold an internal snapshot.
fn check_supported(env: &Env, machine: &str, domain: &str) -> Result<(), SnapshotError> {
    let xml = env.hv.domain_xml(domain)?.unwrap_or_default();
    let reasons = snapshot::internal_snapshot_blockers(&xml)
        .map_err(|e| VirtError::other(format!("read the definition of {domain}"), e.to_string()))?;
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(SnapshotError::Unsupported {
            machine: machine.to_owned(),
            reasons,
        })
    }
}

/// Takes snapshot `name` of one machine (memory too when it runs); returns
/// how long it took.
pub(crate) fn save_one(
    env: &Env,
    m: &Machine,
    name: &str,
    description: &str,
) -> Result<Duration, SnapshotError> {
    let machine = m.name.0.as_str();
    let (domain, state) = created(env, m)?;
    if state == DomainState::Saved {
        return Err(SnapshotError::Suspended {
            machine: machine.to_owned(),
        });
    }
    if env.hv.snapshot_info(&domain, name)?.is_some() {
        return Err(SnapshotError::Exists {
            machine: machine.to_owned(),
            name: name.to_owned(),
        });
    }
    check_supported(env, machine, &domain)?;
    let memory = matches!(state, DomainState::Running | DomainState::Paused);
    env.out.step(
        Some(machine),
        format!(
            "saving snapshot {name} ({})",
            if memory { "memory and disks" } else { "disks" }
        ),
    );
    let started = Instant::now();
    env.hv.create_snapshot(
        &domain,
        &SnapshotSpec {
            name: name.to_owned(),
            description: description.to_owned(),
            memory,
        },
    )?;
    Ok(started.elapsed())
}

/// `snapshot save NAME [MACHINE...]`: on every host, or on none when a
/// host of the machines does not answer.
/// With `force`, a snapshot of that name is deleted first.
pub fn save(
    env: &Env,
    config: &Config,
    name: &str,
    names: &[String],
    force: bool,
) -> Result<(), SnapshotError> {
    check_name(name)?;
    let machines = lifecycle::select(config, names)?;
    let _lock = env.project.lock()?;
    per_host(env, config, &machines, IfDown::Refuse, |env, ms| {
        each_machine(env, ms, |m| {
            if force {
                let (domain, _) = created(env, m)?;
                if env.hv.delete_snapshot(&domain, name)? {
                    env.out
                        .trace(Some(&m.name.0), format!("deleted the old snapshot {name}"));
                }
            }
            let took = save_one(env, m, name, "kvmdrive snapshot")?;
            env.out.step(
                Some(&m.name.0),
                format!("saved snapshot {name} in {:.1}s", took.as_secs_f32()),
            );
            Ok(())
        })
        .map(drop)
    })
    .map(drop)
}

/// [`lifecycle::for_each_host`] with the hosts in parallel: what each host
/// returned, or the outcome's error.
pub(crate) fn per_host<R: Send>(
    env: &Env,
    config: &Config,
    machines: &[Machine],
    if_down: IfDown,
    f: impl Fn(&Env, &[Machine]) -> Result<R, SnapshotError> + Sync,
) -> Result<Vec<(String, R)>, SnapshotError> {
    let (done, outcome) =
        lifecycle::for_each_host(env, config, machines, if_down, Run::Parallel, f);
    outcome.map(|()| done)
}

/// Reverts one machine to snapshot `name`; when it was taken running, waits
/// until SSH answers with the clock put right. Returns the time from the
/// start of the revert to SSH answering.
pub(crate) fn restore_one(env: &Env, m: &Machine, name: &str) -> Result<Duration, SnapshotError> {
    let machine = m.name.0.as_str();
    let (domain, _) = created(env, m)?;
    let missing = || SnapshotError::Missing {
        machine: machine.to_owned(),
        name: name.to_owned(),
    };
    let info = env.hv.snapshot_info(&domain, name)?.ok_or_else(missing)?;
    super::forward::stop(&env.project.machine_dir(machine));
    let agent_was_connected = m.hardware.guest_agent && env.hv.guest_agent_is_connected(&domain);
    let started = Instant::now();
    match env.hv.revert_snapshot(&domain, &info)? {
        None => return Err(missing()),
        Some(Reverted::InPlace) => env
            .out
            .trace(Some(machine), format!("reverted to {name} (in place)")),
        Some(Reverted::ByLibvirt(why)) => env.out.trace(
            Some(machine),
            format!("reverted to {name} by libvirt ({why})"),
        ),
    }
    if !info.has_memory() {
        env.out.step(
            Some(machine),
            format!(
                "restored snapshot {name} (disks; the machine is stopped: `kvmdrive up` starts it)"
            ),
        );
        return Ok(started.elapsed());
    }
    let record = env.project.record(machine)?;
    if let Some(r) = &record {
        super::stale_connections::after_revert(env, r);
    }
    if info.state == "paused" {
        env.hv.resume_domain(&domain)?;
    }
    env.out.trace(Some(machine), "running");
    let reverted = started.elapsed();
    if let Some(record) = record {
        let deadline = started + Duration::from_secs(m.boot_timeout_s.into());
        super::guest_clock::correct(env, m, &record, deadline, agent_was_connected).map_err(
            |message| SnapshotError::NotReady {
                machine: machine.to_owned(),
                message,
            },
        )?;
        env.out.trace(Some(machine), "SSH answered, clock right");
        // The forwarders stopped before the revert start again.
        let dir = env.project.machine_dir(machine);
        super::forward::start(&dir, &record, &m.forwarded_ports)?;
    }
    let took = started.elapsed();
    env.out.step(
        Some(machine),
        format!(
            "restored snapshot {name} (revert {:.1}s); SSH answered after {:.1}s",
            reverted.as_secs_f32(),
            took.as_secs_f32()
        ),
    );
    Ok(took)
}

/// `snapshot restore NAME [MACHINE...]`: on every host, or on none when a
/// host of the machines does not answer.
pub fn restore(
    env: &Env,
    config: &Config,
    name: &str,
    names: &[String],
) -> Result<(), SnapshotError> {
    let machines = lifecycle::select(config, names)?;
    let _lock = env.project.lock()?;
    per_host(env, config, &machines, IfDown::Refuse, |env, ms| {
        each_machine(env, ms, |m| restore_one(env, m, name).map(drop)).map(drop)
    })
    .map(drop)
}

/// `snapshot delete NAME [MACHINE...]`: machines without it are skipped;
/// the hosts that answer are done, then the others are named.
pub fn delete(
    env: &Env,
    config: &Config,
    name: &str,
    names: &[String],
) -> Result<(), SnapshotError> {
    let machines = lifecycle::select(config, names)?;
    let _lock = env.project.lock()?;
    per_host(env, config, &machines, IfDown::Skip, |env, ms| {
        each_machine(env, ms, |m| {
            let domain = plan::domain_name(env.project, &m.name.0);
            let msg = if env.hv.domain_state(&domain)?.is_none() {
                "not created".to_owned()
            } else if env.hv.delete_snapshot(&domain, name)? {
                format!("deleted snapshot {name}")
            } else {
                format!("no snapshot {name}")
            };
            env.out.step(Some(&m.name.0), msg);
            Ok(())
        })
        .map(drop)
    })
    .map(drop)
}

/// `snapshot push [MACHINE...]`: a snapshot named after the time, which
/// `pop` finds again. Returns its name.
pub fn push(env: &Env, config: &Config, names: &[String]) -> Result<String, SnapshotError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Names of one second sort in the order they were taken.
    let name = format!("{PUSH_PREFIX}{}_{:06}", now.as_secs(), now.subsec_micros());
    save(env, config, &name, names, false)?;
    Ok(name)
}

/// The latest of `snapshots` that `push` took.
fn latest_pushed(snapshots: Vec<SnapshotInfo>) -> Option<SnapshotInfo> {
    snapshots
        .into_iter()
        .filter(|s| s.name.starts_with(PUSH_PREFIX))
        .max_by(|a, b| (a.creation_time, &a.name).cmp(&(b.creation_time, &b.name)))
}

/// `snapshot pop [MACHINE...]`: each machine back to its latest pushed
/// snapshot, which is then deleted unless `delete` is false.
pub fn pop(
    env: &Env,
    config: &Config,
    names: &[String],
    delete: bool,
) -> Result<(), SnapshotError> {
    let machines = lifecycle::select(config, names)?;
    let _lock = env.project.lock()?;
    per_host(env, config, &machines, IfDown::Refuse, |env, ms| {
        each_machine(env, ms, |m| {
            let (domain, _) = created(env, m)?;
            let pushed = latest_pushed(env.hv.snapshots(&domain)?).ok_or_else(|| {
                SnapshotError::NothingPushed {
                    machine: m.name.0.clone(),
                }
            })?;
            restore_one(env, m, &pushed.name)?;
            if delete && env.hv.delete_snapshot(&domain, &pushed.name)? {
                env.out
                    .step(Some(&m.name.0), format!("deleted snapshot {}", pushed.name));
            }
            Ok(())
        })
        .map(drop)
    })
    .map(drop)
}

/// One line of `snapshot list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotRow {
    pub machine: String,
    /// The libvirt URI of the machine's host, with several `hosts:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(flatten)]
    pub snapshot: SnapshotInfo,
}

/// `snapshot list`: every machine's snapshots, in config order, oldest
/// first; with several `hosts:`, from every host (none answering fails it).
pub fn list(env: &Env, config: &Config) -> Result<Vec<SnapshotRow>, SnapshotError> {
    let machines = config.machines();
    let several = config.hosts.0.len() > 1;
    let per = per_host(env, config, &machines, IfDown::Refuse, |env, ms| {
        let mut rows = Vec::new();
        for m in ms {
            let domain = plan::domain_name(env.project, &m.name.0);
            for s in env.hv.snapshots(&domain)? {
                rows.push(SnapshotRow {
                    machine: m.name.0.clone(),
                    host: several.then(|| env.hv.uri().to_owned()),
                    snapshot: s,
                });
            }
        }
        Ok(rows)
    })?;
    let mut rows: Vec<SnapshotRow> = per.into_iter().flat_map(|(_, r)| r).collect();
    // Stable: each machine's snapshots stay oldest first.
    rows.sort_by_key(|r| machines.iter().position(|m| m.name.0 == r.machine));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop_takes_the_latest_pushed_snapshot() {
        let s = |name: &str, creation_time| SnapshotInfo {
            name: name.into(),
            description: String::new(),
            state: "running".into(),
            creation_time,
        };
        let list = vec![
            s("push_100_000001", 100),
            s("before-upgrade", 300),
            s("push_200_000020", 200),
            s("push_200_000003", 200),
        ];
        assert_eq!(latest_pushed(list).unwrap().name, "push_200_000020");
        assert!(latest_pushed(vec![s("mine", 5)]).is_none());
        check_name("push_1765152000_004211").unwrap();
    }

    #[test]
    fn snapshot_names_are_checked() {
        for ok in ["before-upgrade", "v1.2_3", "A"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "kvmdrive-pristine"] {
            assert!(
                matches!(check_name(bad), Err(SnapshotError::BadName { .. })),
                "{bad:?}"
            );
        }
    }
}
