//! `halt`: machines shut down in parallel: `poweroff` over SSH (or an ACPI
//! request when there is no login), forced off when they are not stopped
//! within a minute. Forwarded ports stop with them.

use std::time::Duration;

use super::{collect, parallel, select, Env, Failure, LifecycleError};
use crate::machine::plan;
use crate::machine::ssh::SshTarget;
use crate::project::config::{Config, Machine};
use crate::virt::hypervisor::DomainState;
use crate::wait::{wait_until, Poll, PollError};

/// Shuts machines down: `poweroff` over SSH (or ACPI), forcibly after a minute.
/// With `force`, machines are powered off at once (Vagrant's `halt -f`).
pub fn halt(
    env: &Env,
    config: &Config,
    names: &[String],
    force: bool,
) -> Result<(), LifecycleError> {
    let machines = select(config, names)?;
    if !config.hosts.is_empty() {
        return super::hosts::halt(env, config, &machines, force);
    }
    let _lock = env.project.lock()?;
    halt_machines(env, &machines, force)
}

/// Halts `machines` on the host of `env` (the project lock is held).
pub(super) fn halt_machines(
    env: &Env,
    machines: &[Machine],
    force: bool,
) -> Result<(), LifecycleError> {
    let results = parallel(machines, |m| (m.name.0.clone(), halt_one(env, m, force)));
    collect(env.out, results).map(drop)
}

fn halt_one(env: &Env, m: &Machine, force: bool) -> Result<(), Failure> {
    let name = Some(m.name.0.as_str());
    let domain = plan::domain_name(env.project, &m.name.0);
    match env.hv.domain_state(&domain)? {
        None => {
            env.out.step(name, "not created");
            return Ok(());
        }
        Some(DomainState::Shutoff | DomainState::Saved) => {
            env.out.step(name, "already stopped");
            return Ok(());
        }
        Some(_) => {}
    }
    crate::machine::forward::stop(&env.project.machine_dir(&m.name.0));
    if force {
        if let Some(r) = env.project.record(&m.name.0)? {
            crate::machine::ssh::end_mux(&r);
        }
        env.hv.destroy_domain(&domain)?;
        env.out.step(name, "powered off (forced)");
        return Ok(());
    }
    env.out.step(name, "shutting down");
    let asked = match env.project.record(&m.name.0)? {
        Some(r) if !env.hv.is_test_driver() => {
            crate::machine::ssh::end_mux(&r);
            SshTarget::from_record(&r)
                .run("sudo -n systemctl poweroff || sudo -n poweroff", 5)
                .is_ok()
        }
        _ => false,
    };
    if !asked {
        env.hv.shutdown_domain(&domain)?;
    }
    // Ctrl-C, like the minute passing, forces the machine off.
    let poll = Poll::every(Duration::from_millis(200), Duration::from_secs(60)).cancellable();
    let stopped = wait_until(poll, || {
        env.hv
            .domain_state(&domain)
            .map(|s| matches!(s, Some(DomainState::Shutoff) | None).then_some(()))
    });
    match stopped {
        Ok(()) => {
            env.out.step(name, "stopped");
            return Ok(());
        }
        Err(PollError::Failed(e)) => return Err(e.into()),
        Err(PollError::TimedOut | PollError::Cancelled) => {}
    }
    env.out.warn(name, "did not stop in 60 s: forcing it off");
    env.hv.destroy_domain(&domain)?;
    Ok(())
}
