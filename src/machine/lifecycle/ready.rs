//! Waiting until a started machine is ready: its SSH banner at the reserved
//! address (aborted when the domain stops running, or pauses with a KVM
//! internal error), then one login that swaps Vagrant's insecure key for the
//! machine's own and sets the host name, then a login with the own key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{failure, qemu_log, read_tail, Env, Failure, SSH_USER};
use crate::host::accel;
use crate::machine::keys;
use crate::machine::plan::{self, MachinePlan};
use crate::machine::project::MachineRecord;
use crate::machine::ssh::{self, SshTarget, WaitError};
use crate::virt::domain::Accel;
use crate::virt::hypervisor::DomainState;
use crate::wait::{wait_until, Poll, PollError};

pub(super) enum ReadyError {
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
pub(super) fn wait_ready(
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
        jump: crate::remote::Jump::from_uri(env.hv.uri()),
        box_dir: None,
        host: Some(env.hv.uri().to_owned()),
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
        crate::fault::point("up.ssh-wait");
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
    match crate::remote::jump::wait_for_banner(record.jump.as_ref(), addr, deadline, check) {
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
            let console =
                crate::remote::log_tail(env.hv.uri(), &plan::console_log(&plan.domain), 15);
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
        jump: record.jump.clone(),
    };
    let script = ssh::key_replacement_script(&key.public_line, plan.guest_hostname().as_ref());
    run_until_ok(&first, &script, deadline)?;
    crate::fault::point("up.key-replaced");
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
    let poll = Poll::until(Duration::from_millis(300), deadline).cancellable();
    let mut last_stderr = String::new();
    let r = wait_until(poll, || {
        let out = target.run(script, 10).map_err(|e| Failure {
            message: format!("cannot run ssh: {e}"),
            hint: Some("install the OpenSSH client (apt-get install openssh-client)".into()),
        })?;
        last_stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        match out.status.code() {
            Some(0) => Ok(Some(())),
            Some(255) => Ok(None),
            _ => Err(ssh_failed(target, &last_stderr)),
        }
    });
    match r {
        Ok(()) => Ok(()),
        Err(PollError::Cancelled) => Err(failure("interrupted")),
        Err(PollError::TimedOut) => Err(ssh_failed(target, &last_stderr)),
        Err(PollError::Failed(f)) => Err(f),
    }
}

fn ssh_failed(target: &SshTarget, stderr: &str) -> Failure {
    failure(format!(
        "ssh {}@{} failed: {stderr}",
        target.user, target.host
    ))
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
    let console = crate::remote::log_tail(env.hv.uri(), &plan::console_log(&plan.domain), 15);
    format!(
        "no SSH on {ip}:22 after {secs}s; domain is {state}; guest {} its address; last console lines ({}):\n{console}",
        if took_address { "took" } else { "did not take" },
        plan::console_log(&plan.domain).display()
    )
}
