//! `kvmdrive host ...`: clap definitions and the text/JSON output of the
//! host commands (through the [`Reporter`]); failures to act are
//! [`HostError`]s with a hint. The top-level CLI has `Host(HostCommand)` and
//! calls [`run`].

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::json;

use super::doctor;
use super::facts::{GatherOptions, HostFacts};
use super::finding::{Finding, Status};
use super::up::{self, UpOptions};
use super::HostError;
use crate::output::Reporter;

/// Check and prepare the machine kvmdrive runs on.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Check what running VMs here needs: each check prints ok / warn / fail,
    /// what it saw and the exact fix. Exit 0 when a VM can run, 1 otherwise.
    Check(CheckArgs),
    /// Start dbus, virtlogd and libvirtd where they are not running (without
    /// systemd: by hand, detached, logs in /var/log/kvmdrive). Idempotent.
    Up(UpArgs),
    /// Stop what `kvmdrive host up` started, and nothing else.
    Down,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Boot a tiny probe guest (a few seconds) to see whether KVM runs an
    /// ordinary guest and which CPU modes start; the result is cached and
    /// reused by later checks.
    #[arg(long)]
    pub probe: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Also repair what `host check` finds: /dev/kvm access for qemu's user,
    /// the iptables backend, ip_forward. Each step is printed.
    #[arg(long)]
    pub fix: bool,

    /// Seconds to wait for each daemon to answer.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub timeout: u64,
}

/// Runs a host command; returns its verdict as an exit code (0: a VM can
/// run here, 1: a check failed; the findings say why). Errors are failures to
/// act (a daemon that does not start, a fix that cannot be applied).
pub fn run(cmd: HostCommand, out: &Reporter) -> Result<i32, HostError> {
    match cmd {
        HostCommand::Check(a) => Ok(check(&a, out)),
        HostCommand::Up(a) => {
            let report = up::up(
                &UpOptions {
                    fix: a.fix,
                    timeout: Duration::from_secs(a.timeout),
                },
                out,
            )?;
            let code = doctor::exit_code(&report.problems);
            if out.json() {
                out.json_doc(&json!({ "exit_code": code, "up": report }));
            } else {
                if !report.changed {
                    out.line("host up: nothing to do, nothing changed");
                }
                let fixable: Vec<&Finding> = report
                    .problems
                    .iter()
                    .filter(|f| f.status == Status::Fail)
                    .collect();
                for f in &report.problems {
                    print_finding(out, f);
                }
                if !a.fix
                    && fixable
                        .iter()
                        .any(|f| f.fix.as_deref().is_some_and(|x| x.contains("--fix")))
                {
                    out.line("run `kvmdrive host up --fix` to repair what `--fix` can");
                }
            }
            Ok(code)
        }
        HostCommand::Down => {
            let report = up::down(out)?;
            if out.json() {
                out.json_doc(&report);
            }
            Ok(0)
        }
    }
}

fn check(a: &CheckArgs, out: &Reporter) -> i32 {
    let start = Instant::now();
    let facts = HostFacts::gather(GatherOptions { probe: a.probe });
    let findings = doctor::run_checks(&facts);
    let code = doctor::exit_code(&findings);
    if out.json() {
        out.json_doc(&json!({
            "exit_code": code,
            "vm_can_run": code == 0,
            "seconds": start.elapsed().as_secs_f32(),
            "findings": findings,
            "facts": facts,
        }));
    } else {
        for f in &findings {
            print_finding(out, f);
        }
        let fails = findings.iter().filter(|f| f.status == Status::Fail).count();
        let warns = findings.iter().filter(|f| f.status == Status::Warn).count();
        out.line(format!(
            "{} check(s): {} ok, {warns} warn, {fails} fail: {}",
            findings.len(),
            findings.len() - fails - warns,
            if code == 0 {
                "a VM can run here"
            } else {
                "fix the failures before `kvmdrive up`"
            }
        ));
    }
    code
}

fn print_finding(out: &Reporter, f: &Finding) {
    out.line(format!(
        "{:<4}  {:<16}  {}",
        f.status.as_str(),
        f.check,
        f.summary
    ));
    if !f.saw.is_empty() {
        out.line(format!("{:24}saw: {}", "", f.saw));
    }
    if let (Some(fix), true) = (&f.fix, f.status != Status::Ok) {
        out.line(format!("{:24}fix: {fix}", ""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        cmd: HostCommand,
    }

    #[test]
    fn parses() {
        let t = T::try_parse_from(["host", "up", "--fix"]).unwrap();
        assert!(matches!(
            t.cmd,
            HostCommand::Up(UpArgs {
                fix: true,
                timeout: 60
            })
        ));
        let t = T::try_parse_from(["host", "check", "--probe"]).unwrap();
        assert!(matches!(
            t.cmd,
            HostCommand::Check(CheckArgs { probe: true })
        ));
        assert!(matches!(
            T::try_parse_from(["host", "down"]).unwrap().cmd,
            HostCommand::Down
        ));
    }
}
