//! The lifecycle commands for a project with several `hosts:` (libvirt
//! URIs): `up` connects to every host first (one that does not answer fails
//! `up` before anything is made anywhere), places each machine
//! ([`crate::machine::placement`]) and then runs the one-host `up` on every
//! host in parallel, each host with its own copy of the project's NAT
//! network (subnet chosen from that host's networks); `status`, `halt` and
//! `destroy` find each machine on the host its record names (or, without a
//! record, on whichever host has its domain). `destroy` removes what it can
//! reach and names what it could not; a later `destroy` finishes the job.
//! The project's state goes with the last machine on the last host. The
//! other commands (`provision`, `rsync`, `snapshot`, `suspend`/`resume`,
//! `reload`, reuse) run their one-host code once per host through
//! [`for_each_host`].

use std::collections::BTreeMap;

use super::destroy::destroy_on_host;
use super::halt::halt_machines;
use super::status::MachineStatus;
use super::up::{up_on_host, UpOptions};
use super::{box_spec, parallel, Env, LifecycleError};
use crate::boxes;
use crate::machine::placement::{self, HostRoom, Request};
use crate::machine::plan;
use crate::machine::project::{MachineRecord, Project};
use crate::project::config::{Config, Machine};
use crate::virt::hypervisor::DomainState;
use crate::virt::{Hypervisor, VirtError};

/// What `status` says when machines sit on more than one host.
pub const ROUTING_NOTE: &str = "machines on different hosts reach each other only where you route between the hosts' NAT networks (see docs/remote.md)";

/// A connection to `uri`; `env`'s own connection when it is that host.
fn connect(env_hv: &Hypervisor, uri: &str) -> Result<Hypervisor, VirtError> {
    if env_hv.uri() == uri {
        return Ok(env_hv.clone());
    }
    let hv = Hypervisor::connect(uri)?;
    hv.lib_version()?;
    Ok(hv)
}

/// Connections to every host, in `hosts:` order, each `Err` when it does
/// not answer.
fn connect_each(
    env_hv: &Hypervisor,
    config: &Config,
) -> Vec<(String, Result<Hypervisor, VirtError>)> {
    let uris: Vec<String> = config.hosts.0.iter().map(|h| h.0.clone()).collect();
    let conns = parallel(&uris, |u| connect(env_hv, u));
    uris.into_iter().zip(conns).collect()
}

fn host_down(uri: &str, e: &VirtError) -> LifecycleError {
    LifecycleError::HostDown {
        uri: uri.to_owned(),
        message: e.to_string(),
    }
}

/// An `Env` for one host.
fn env_on<'a>(env: &'a Env, hv: &'a Hypervisor) -> Env<'a> {
    Env {
        hv,
        project: env.project,
        out: env.out,
        store: env.store,
        pool_dir: env.pool_dir.clone(),
    }
}

/// The machines of this project each host has a domain for.
fn existing(env: &Env, hvs: &[Hypervisor]) -> Result<Vec<Vec<String>>, LifecycleError> {
    parallel(hvs, |hv| {
        Ok(hv
            .owned_domains()
            .map_err(|e| host_down(hv.uri(), &e))?
            .into_iter()
            .filter(|d| d.project == env.project.id)
            .map(|d| d.machine)
            .collect())
    })
    .into_iter()
    .collect()
}

/// `up` over several hosts.
pub(super) fn up(
    env: &Env,
    config: &Config,
    machines: &[Machine],
    opts: UpOptions,
) -> Result<Vec<MachineRecord>, LifecycleError> {
    let had_state = env.project.has_state();
    let _lock = env.project.lock()?;
    let (hvs, placed) = match prepare(env, config, machines) {
        Ok(p) => p,
        Err(e) => {
            // Nothing was created: leave no state behind either.
            if !had_state {
                env.project.remove_state()?;
            }
            return Err(e);
        }
    };
    let groups: Vec<(&Hypervisor, Vec<Machine>)> = hvs
        .iter()
        .enumerate()
        .map(|(h, hv)| {
            let ms = machines
                .iter()
                .zip(&placed)
                .filter(|(_, &p)| p == h)
                .map(|(m, _)| m.clone())
                .collect();
            (hv, ms)
        })
        .filter(|(_, ms): &(_, Vec<Machine>)| !ms.is_empty())
        .collect();
    let results = parallel(&groups, |(hv, ms)| {
        up_on_host(&env_on(env, hv), config, ms, opts)
    });
    let mut records = Vec::new();
    let mut failures = Vec::new();
    for ((hv, _), r) in groups.iter().zip(results) {
        match r {
            Ok(rs) => records.extend(rs),
            Err(LifecycleError::Cancelled) => failures.push(LifecycleError::Cancelled),
            Err(e) => failures.push(LifecycleError::OnHost {
                uri: hv.uri().to_owned(),
                source: Box::new(e),
            }),
        }
    }
    if failures.is_empty() {
        let order = |r: &MachineRecord| machines.iter().position(|m| m.name.0 == r.name);
        records.sort_by_key(order);
        return Ok(records);
    }
    if existing(env, &hvs)?.iter().all(Vec::is_empty) {
        env.project.remove_state()?;
    }
    Err(failures.swap_remove(0))
}

/// What `up` decides before it creates anything: a connection to every
/// host (all must answer) and each machine's host (an index into them).
fn prepare(
    env: &Env,
    config: &Config,
    machines: &[Machine],
) -> Result<(Vec<Hypervisor>, Vec<usize>), LifecycleError> {
    // Every host answers, or nothing is made anywhere.
    let hvs: Vec<Hypervisor> = connect_each(env.hv, config)
        .into_iter()
        .map(|(uri, c)| c.map_err(|e| host_down(&uri, &e)))
        .collect::<Result<_, _>>()?;
    let rooms: Vec<HostRoom> = parallel(&hvs, |hv| {
        hv.node_capacity()
            .map(|c| HostRoom {
                uri: hv.uri().to_owned(),
                free_memory_mib: c.free_memory_bytes >> 20,
                cpus: c.cpus,
            })
            .map_err(|e| host_down(hv.uri(), &e))
    })
    .into_iter()
    .collect::<Result<_, _>>()?;
    let have = existing(env, &hvs)?;
    let requests: Vec<Request> = machines
        .iter()
        .map(|m| Request {
            name: m.name.0.clone(),
            memory_mib: m.memory_mib,
            cpus: m.cpus,
            pinned: m.host.as_ref().map(|h| h.0.clone()),
            existing: hvs
                .iter()
                .zip(&have)
                .find(|(_, names)| names.contains(&m.name.0))
                .map(|(hv, _)| hv.uri().to_owned()),
        })
        .collect();
    let placed = placement::place(&rooms, &requests)?;
    for (r, &h) in requests.iter().zip(&placed) {
        let why = if r.existing.is_some() {
            "exists there"
        } else if r.pinned.is_some() {
            "pinned by `host:`"
        } else {
            "most free memory"
        };
        env.out
            .step(Some(&r.name), format!("on {} ({why})", rooms[h].uri));
    }
    // Boxes once, before the hosts work in parallel.
    let mut fetched = Vec::new();
    for spec in machines.iter().map(|m| box_spec(env.project, m)) {
        if !fetched.contains(&spec) {
            boxes::ensure(env.store, &spec, env.out)?;
            fetched.push(spec);
        }
    }
    Ok((hvs, placed))
}

/// The host each machine is on: its record's, else the first connected
/// host that has its domain; `None` when none has it.
fn host_of(
    project: &Project,
    name: &str,
    conns: &[(String, Result<Hypervisor, VirtError>)],
) -> Result<Option<usize>, LifecycleError> {
    if let Some(uri) = project.record(name)?.and_then(|r| r.host) {
        if let Some(i) = conns.iter().position(|(u, _)| *u == uri) {
            return Ok(Some(i));
        }
    }
    let domain = plan::domain_name(project, name);
    for (i, (_, c)) in conns.iter().enumerate() {
        if let Ok(hv) = c {
            if hv.domain_state(&domain)?.is_some() {
                return Ok(Some(i));
            }
        }
    }
    Ok(None)
}

/// What a command does when a host that may hold its machines does not
/// answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfDown {
    /// Refuse before anything is done when any host of `hosts:` does not
    /// answer (commands that end in `up`, which needs them all).
    RefuseAny,
    /// Refuse before anything is done when a host that holds one of the
    /// machines (or may: a machine without a record) does not answer.
    Refuse,
    /// Do the hosts that answer, then fail naming what was not reached.
    Skip,
}

/// Whether the hosts work at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    Parallel,
    Sequential,
}

/// What [`for_each_host`] did: each host's URI and what the command
/// returned there (hosts that answered and had machines, in `hosts:`
/// order), and the outcome (an error when a host failed or was not
/// reached).
pub type HostRuns<R, E> = (Vec<(String, R)>, Result<(), E>);

/// Runs a command's one-host code `f` once per host, with that host's
/// `Env` and the machines of `machines` that are there (its record's host,
/// else the host that has its domain; a machine on no host goes with the
/// first host that answers, whose code reports it not created). Without
/// `hosts:`, or with one, `f` runs once with `env` and every machine, as
/// before hosts existed. Hosts that do not answer are handled as `if_down`
/// says. The caller holds the project lock when the command needs it; `f`
/// must not take it.
pub fn for_each_host<R, E>(
    env: &Env,
    config: &Config,
    machines: &[Machine],
    if_down: IfDown,
    run: Run,
    f: impl Fn(&Env, &[Machine]) -> Result<R, E> + Sync,
) -> HostRuns<R, E>
where
    R: Send,
    E: From<LifecycleError> + std::fmt::Display + Send,
{
    if config.hosts.0.len() <= 1 {
        return match f(env, machines) {
            Ok(r) => (vec![(env.hv.uri().to_owned(), r)], Ok(())),
            Err(e) => (Vec::new(), Err(e)),
        };
    }
    let conns = connect_each(env.hv, config);
    let mut groups: Vec<Vec<Machine>> = vec![Vec::new(); conns.len()];
    let mut nowhere = Vec::new();
    for m in machines {
        match host_of(env.project, &m.name.0, &conns) {
            Ok(Some(i)) => groups[i].push(m.clone()),
            Ok(None) => nowhere.push(m.clone()),
            Err(e) => return (Vec::new(), Err(e.into())),
        }
    }
    // Hosts that do not answer, with libvirt's error, and the machines
    // recorded there.
    let down: Vec<(usize, String)> = conns
        .iter()
        .enumerate()
        .filter_map(|(i, (uri, c))| c.as_ref().err().map(|e| (i, format!("{uri} ({e})"))))
        .collect();
    // The down hosts that make the command refuse: any (RefuseAny), or
    // those that may hold its machines (Refuse); a machine found on no host
    // that answers may be on one that does not.
    let refused = |i: usize| match if_down {
        IfDown::RefuseAny => true,
        IfDown::Refuse => !groups[i].is_empty() || !nowhere.is_empty(),
        IfDown::Skip => false,
    };
    if down.iter().any(|(i, _)| refused(*i)) {
        let hosts = down
            .iter()
            .filter(|(i, _)| refused(*i))
            .map(|(_, h)| h.clone())
            .collect::<Vec<_>>()
            .join("; ");
        return (
            Vec::new(),
            Err(LifecycleError::Unreachable { hosts }.into()),
        );
    }
    let mut left = Vec::new();
    for (i, h) in &down {
        let (uri, c) = &conns[*i];
        if let Err(e) = c {
            env.out
                .warn(None, format!("host {uri} does not answer: {e}"));
        }
        let ms = std::mem::take(&mut groups[*i]);
        if !ms.is_empty() {
            let names: Vec<&str> = ms.iter().map(|m| m.name.0.as_str()).collect();
            left.push(format!("{} on {h}", names.join(", ")));
        }
    }
    if let Some(first) = conns.iter().position(|(_, c)| c.is_ok()) {
        let mut ms = std::mem::take(&mut groups[first]);
        ms.append(&mut nowhere);
        let order = |m: &Machine| machines.iter().position(|x| x.name == m.name);
        ms.sort_by_key(order);
        groups[first] = ms;
    } else if !nowhere.is_empty() {
        let names: Vec<&str> = nowhere.iter().map(|m| m.name.0.as_str()).collect();
        left.push(format!("{} (no host answers)", names.join(", ")));
    }
    let work: Vec<(String, Env, Vec<Machine>)> = conns
        .iter()
        .zip(groups)
        .filter(|(_, ms)| !ms.is_empty())
        .filter_map(|((uri, c), ms)| Some((uri.clone(), env_on(env, c.as_ref().ok()?), ms)))
        .collect();
    let results: Vec<Result<R, E>> = match run {
        Run::Parallel => parallel(&work, |(_, e, ms)| f(e, ms)),
        Run::Sequential => work.iter().map(|(_, e, ms)| f(e, ms)).collect(),
    };
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for ((uri, _, _), r) in work.iter().zip(results) {
        match r {
            Ok(v) => done.push((uri.clone(), v)),
            Err(e) => failed.push((uri.clone(), e)),
        }
    }
    if left.is_empty() && failed.len() <= 1 {
        return (done, failed.pop().map_or(Ok(()), |(_, e)| Err(e)));
    }
    if !failed.is_empty() && crate::machine::cancel::is_cancelled() {
        return (done, Err(LifecycleError::Cancelled.into()));
    }
    for (uri, e) in &failed {
        env.out.step(None, format!("error on {uri}: {e}"));
    }
    let outcome = if !left.is_empty() {
        LifecycleError::NotReached {
            left: left.join("; "),
        }
    } else {
        LifecycleError::HostsFailed {
            failed: failed.len(),
            total: work.len(),
            hosts: failed
                .iter()
                .map(|(u, _)| u.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    };
    (done, Err(outcome.into()))
}

/// `status` over several hosts: a machine on a host that does not answer
/// is `unknown`.
pub(super) fn status(
    env_hv: &Hypervisor,
    project: &Project,
    config: &Config,
) -> Result<Vec<MachineStatus>, LifecycleError> {
    let conns = connect_each(env_hv, config);
    let mut list = Vec::new();
    for m in config.machines() {
        let name = m.name.0;
        let at = host_of(project, &name, &conns)?;
        let state = match at.map(|i| &conns[i].1) {
            None => "not_created".to_owned(),
            Some(Err(_)) => "unknown".to_owned(),
            Some(Ok(hv)) => hv
                .domain_state(&plan::domain_name(project, &name))?
                .map_or("not_created", DomainState::as_str)
                .to_owned(),
        };
        let host = at.map(|i| conns[i].0.clone());
        list.push(MachineStatus::new(project, name, state, host)?);
    }
    Ok(list)
}

/// True when the machines of `list` sit on more than one host.
pub fn spans_hosts(list: &[MachineStatus]) -> bool {
    let mut hosts = list.iter().filter_map(|m| m.host.as_deref());
    hosts.next().is_some_and(|first| hosts.any(|h| h != first))
}

/// `halt` over several hosts, one host after the other.
pub(super) fn halt(
    env: &Env,
    config: &Config,
    machines: &[Machine],
    force: bool,
) -> Result<(), LifecycleError> {
    let _lock = env.project.lock()?;
    let conns = connect_each(env.hv, config);
    let mut by_host: BTreeMap<usize, Vec<Machine>> = BTreeMap::new();
    for m in machines {
        match host_of(env.project, &m.name.0, &conns)? {
            Some(i) => by_host.entry(i).or_default().push(m.clone()),
            None => env.out.step(Some(&m.name.0), "not created"),
        }
    }
    for (i, ms) in by_host {
        let (uri, c) = &conns[i];
        let hv = c.as_ref().map_err(|e| host_down(uri, e))?;
        halt_machines(&env_on(env, hv), &ms, force)?;
    }
    Ok(())
}

/// `destroy` over several hosts: every host that answers loses the
/// project's machines it has; machines recorded on a host that does not
/// answer are named, and the state stays for a later `destroy`.
pub(super) fn destroy(env: &Env, config: &Config, names: &[String]) -> Result<(), LifecycleError> {
    let _lock = env.project.lock()?;
    let conns = connect_each(env.hv, config);
    let wanted: Vec<String> = config
        .machines()
        .into_iter()
        .map(|m| m.name.0)
        .filter(|n| names.is_empty() || names.contains(n))
        .collect();
    let mut targets: Vec<Vec<String>> = vec![Vec::new(); conns.len()];
    let mut nowhere = Vec::new();
    for n in &wanted {
        match host_of(env.project, n, &conns)? {
            Some(i) => targets[i].push(n.clone()),
            None => nowhere.push(n.clone()),
        }
    }
    let mut all_empty = true;
    let mut left: Vec<String> = Vec::new();
    let mut first_error = None;
    for (i, (uri, c)) in conns.iter().enumerate() {
        let hv = match c {
            Ok(hv) => hv,
            Err(e) => {
                all_empty = false;
                env.out
                    .warn(None, format!("host {uri} does not answer: {e}"));
                if !targets[i].is_empty() {
                    left.push(format!("{} on {uri}", targets[i].join(", ")));
                } else {
                    left.push(format!("whatever is on {uri}"));
                }
                continue;
            }
        };
        // Machines found on no host are forgotten by the first host that answers.
        let mut mine = std::mem::take(&mut targets[i]);
        mine.append(&mut nowhere);
        // A host's leftovers of other names (renamed machines) go too,
        // but only when all machines are being removed.
        let restrict: Vec<String> = if names.is_empty() {
            Vec::new()
        } else {
            names.to_vec()
        };
        match destroy_on_host(&env_on(env, hv), mine, &restrict) {
            Ok(empty) => all_empty &= empty,
            Err(e) => {
                all_empty = false;
                first_error.get_or_insert(LifecycleError::OnHost {
                    uri: uri.clone(),
                    source: Box::new(e),
                });
            }
        }
    }
    if !left.is_empty() {
        return Err(LifecycleError::NotRemoved {
            left: left.join("; "),
        });
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if all_empty {
        env.project.remove_state()?;
    }
    Ok(())
}
