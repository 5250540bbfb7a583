//! `kvmdrive suspend` / `resume`, like `vagrant suspend/resume`: a running
//! machine's memory is saved to disk and its qemu process ends (libvirt's
//! managed save); `resume` (or `up`) starts it again from that state, no
//! reboot, with its clock put right (by the login that makes it ready). `status` shows such machines as
//! `saved`.

use std::time::Instant;

use super::lifecycle::{self, Env, IfDown};
use super::plan;
use super::snapshot::{each_machine, per_host, SnapshotError};
use crate::project::config::{Config, Machine};
use crate::virt::hypervisor::DomainState;

/// Saves the memory of the running machines named (all when none) and stops them.
pub fn suspend(env: &Env, config: &Config, names: &[String]) -> Result<(), SnapshotError> {
    let machines = lifecycle::select(config, names)?;
    let _lock = env.project.lock()?;
    per_host(env, config, &machines, IfDown::Skip, |env, ms| {
        suspend_on_host(env, ms)
    })
    .map(drop)
}

/// `suspend` of `machines` on the host of `env` (the project lock is held).
fn suspend_on_host(env: &Env, machines: &[Machine]) -> Result<(), SnapshotError> {
    each_machine(env, machines, |m| {
        let name = Some(m.name.0.as_str());
        let domain = plan::domain_name(env.project, &m.name.0);
        match env.hv.domain_state(&domain)? {
            None => env.out.step(name, "not created"),
            Some(DomainState::Saved) => env.out.step(name, "already suspended"),
            Some(DomainState::Running | DomainState::Paused) => {
                env.out.step(name, "suspending (saving its memory)");
                super::forward::stop(&env.project.machine_dir(&m.name.0));
                let started = Instant::now();
                env.hv.managed_save(&domain)?;
                env.out.step(
                    name,
                    format!("suspended in {:.1}s", started.elapsed().as_secs_f32()),
                );
            }
            Some(s) => env.out.step(
                name,
                format!("not running ({}): nothing to save", s.as_str()),
            ),
        }
        Ok(())
    })
    .map(drop)
}

/// Starts suspended machines from their saved memory and waits for SSH;
/// machines that are not suspended are left alone.
pub fn resume(env: &Env, config: &Config, names: &[String]) -> Result<(), SnapshotError> {
    let machines = lifecycle::select(config, names)?;
    // `up` needs every host: none is asked to do anything unless all answer.
    let found = per_host(env, config, &machines, IfDown::RefuseAny, |env, ms| {
        let mut saved = Vec::new();
        for m in ms {
            let domain = plan::domain_name(env.project, &m.name.0);
            match env.hv.domain_state(&domain)? {
                Some(DomainState::Saved) => saved.push(m.clone()),
                Some(s) => env
                    .out
                    .step(Some(&m.name.0), format!("not suspended ({})", s.as_str())),
                None => env.out.step(Some(&m.name.0), "not created"),
            }
        }
        Ok(saved)
    })?;
    let saved: Vec<Machine> = found.into_iter().flat_map(|(_, ms)| ms).collect();
    if saved.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let names: Vec<String> = saved.iter().map(|m| m.name.0.clone()).collect();
    // `up` starts a saved domain from its memory and waits for SSH; its
    // login puts the clock right (see `guest_clock::login`).
    let records = lifecycle::up(env, config, &names)?;
    for r in &records {
        env.out.step(
            Some(&r.name),
            format!(
                "resumed; SSH answered after {:.1}s",
                started.elapsed().as_secs_f32()
            ),
        );
    }
    Ok(())
}
