//! `host up` and `host down`: start what a libvirt host is missing (and,
//! with `--fix`, repair what the checks found), and later stop exactly what
//! was started.

use std::time::Duration;

use super::error::HostError;
use serde::Serialize;

use super::daemons::{self, Daemon, Started};
use super::doctor;
use super::facts::{GatherOptions, HostFacts, SYSTEM_URI};
use super::finding::{Finding, Status};
use super::fix::{self, Fix};
use crate::output::Reporter;
use crate::wait::{wait_until, Poll};

/// What `host up` did.
#[derive(Debug, Default, Serialize)]
pub struct UpReport {
    /// Daemons started (by hand, or with systemctl).
    pub started: Vec<Daemon>,
    /// Daemons that were running already.
    pub running: Vec<Daemon>,
    pub fixed: Vec<Applied>,
    /// libvirtd restarted to pick up a fix.
    pub restarted: Vec<Daemon>,
    /// False when this run changed nothing on the host.
    pub changed: bool,
    /// The checks after all that, problems only.
    pub problems: Vec<Finding>,
}

#[derive(Debug, Serialize)]
pub struct Applied {
    pub check: &'static str,
    #[serde(flatten)]
    pub fix: Fix,
    pub description: String,
}

pub struct UpOptions {
    pub fix: bool,
    /// How long each daemon may take to answer.
    pub timeout: Duration,
}

/// Starts the daemons, applies fixes, re-checks.
pub fn up(opts: &UpOptions, reporter: &Reporter) -> Result<UpReport, HostError> {
    let mut report = UpReport::default();
    let systemd = daemons::has_systemd();
    for d in daemons::ALL {
        let st = daemons::status(d);
        if st.answering {
            reporter.step(None, format!("{}: running{}", d.name(), pid_note(st.pid)));
            report.running.push(d);
            continue;
        }
        if systemd {
            reporter.step(None, format!("{}: systemctl start {}", d.name(), d.unit()));
            daemons::systemctl("start", d.unit())?;
            daemons::record(Started {
                daemon: d,
                pid: None,
                start_time: None,
                restarted: false,
                log: None,
            })?;
        } else {
            if let Some(pid) = st.pid {
                return Err(HostError::DaemonStuck {
                    daemon: d.name(),
                    pid,
                    socket: d.socket().to_owned(),
                });
            }
            let s = daemons::spawn(d, opts.timeout)?;
            reporter.step(
                None,
                format!(
                    "{}: started{}, log {}",
                    d.name(),
                    pid_note(s.pid),
                    s.log
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            );
            daemons::record(s)?;
        }
        report.started.push(d);
    }
    wait_for_libvirt(opts.timeout)?;

    if opts.fix {
        let facts = HostFacts::gather(GatherOptions::default());
        let plan = fix::plan(&facts);
        if plan.is_empty() {
            reporter.step(None, "fix: nothing to fix");
        }
        for f in &plan {
            let description = f.describe(&facts);
            reporter.step(None, format!("fix ({}): {description}", f.check()));
            fix::apply(f, &facts).map_err(|e| HostError::Fix {
                check: f.check(),
                description: description.clone(),
                source: Box::new(e),
            })?;
            report.fixed.push(Applied {
                check: f.check(),
                fix: f.clone(),
                description,
            });
        }
        if plan.iter().any(Fix::needs_libvirtd_restart) {
            reporter.step(None, "libvirtd: restarting to pick up the changes");
            restart_libvirtd(opts.timeout, systemd)?;
            report.restarted.push(Daemon::Libvirtd);
        }
    }

    let facts = HostFacts::gather(GatherOptions::default());
    report.problems = doctor::run_checks(&facts)
        .into_iter()
        .filter(|f| f.status != Status::Ok)
        .collect();
    report.changed =
        !report.started.is_empty() || !report.fixed.is_empty() || !report.restarted.is_empty();
    Ok(report)
}

fn pid_note(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// Waits until a libvirt connection works and answers a call.
pub fn wait_for_libvirt(timeout: Duration) -> Result<(), HostError> {
    let mut last = None;
    let answered = wait_until(Poll::every(Duration::from_millis(50), timeout), || {
        match crate::virt::Hypervisor::connect(SYSTEM_URI).and_then(|h| h.lib_version()) {
            Ok(_) => Ok::<_, std::convert::Infallible>(Some(())),
            Err(e) => {
                last = Some(e);
                Ok(None)
            }
        }
    });
    match (answered, last) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(source)) => Err(HostError::LibvirtSilent {
            seconds: timeout.as_secs(),
            source,
        }),
        (Err(_), None) => Err(HostError::LibvirtSilent {
            seconds: timeout.as_secs(),
            source: crate::virt::VirtError::other(format!("connect to {SYSTEM_URI}"), "no answer"),
        }),
    }
}

fn restart_libvirtd(timeout: Duration, systemd: bool) -> Result<(), HostError> {
    if systemd {
        daemons::systemctl("restart", Daemon::Libvirtd.unit())?;
    } else {
        let ours = daemons::load_state()
            .into_iter()
            .find(|s| s.daemon == Daemon::Libvirtd && !s.restarted && s.pid.is_some());
        if let Some(pid) = daemons::running_pid(Daemon::Libvirtd) {
            daemons::terminate(pid, None, Duration::from_secs(20))?;
        }
        let mut s = daemons::spawn(Daemon::Libvirtd, timeout)?;
        // Started by someone else before: `host down` leaves the new one running.
        s.restarted = ours.is_none();
        daemons::record(s)?;
    }
    wait_for_libvirt(timeout)
}

/// What `host down` did.
#[derive(Debug, Default, Serialize)]
pub struct DownReport {
    pub stopped: Vec<Daemon>,
    /// Recorded as started but already gone.
    pub gone: Vec<Daemon>,
    /// Restarted by `host up --fix` but started by someone else: left running.
    pub left_running: Vec<Daemon>,
}

/// Stops what `host up` started, in reverse order.
pub fn down(reporter: &Reporter) -> Result<DownReport, HostError> {
    let mut report = DownReport::default();
    let mut state = daemons::load_state();
    if state.is_empty() {
        reporter.step(None, "nothing was started by `kvmdrive host up`");
    }
    state.sort_by_key(|s| std::cmp::Reverse(daemons::ALL.iter().position(|d| *d == s.daemon)));
    for s in &state {
        let name = s.daemon.name();
        if s.restarted {
            reporter.step(
                None,
                format!("{name}: left running (it was running before `host up`)"),
            );
            report.left_running.push(s.daemon);
            continue;
        }
        match s.pid {
            Some(pid) => {
                if daemons::terminate(pid, s.start_time, Duration::from_secs(20))? {
                    reporter.step(None, format!("{name}: stopped (pid {pid})"));
                    report.stopped.push(s.daemon);
                } else {
                    reporter.step(None, format!("{name}: already gone (pid {pid})"));
                    report.gone.push(s.daemon);
                }
            }
            None => {
                reporter.step(None, format!("{name}: systemctl stop {}", s.daemon.unit()));
                daemons::systemctl("stop", s.daemon.unit())?;
                report.stopped.push(s.daemon);
            }
        }
    }
    daemons::save_state(&[])?;
    Ok(report)
}
