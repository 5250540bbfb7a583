//! Waiting until a started machine is ready: an answer on its SSH port at
//! the reserved address, polled every 50 ms (aborted when the domain stops
//! running, or pauses with a KVM internal error), then one login, retried
//! until sshd lets us in, that swaps Vagrant's insecure key for the
//! machine's own, sets the host name (one `sudo`) and, unless the guest
//! booted cold, puts its clock right. A check login with the
//! own key follows only when that login could not tell that sshd reads the
//! file the key went to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{failure, qemu_log, read_tail, Env, Failure, SSH_USER};
use crate::host::accel;
use crate::machine::plan::{self, MachinePlan};
use crate::machine::project::MachineRecord;
use crate::machine::ssh::{self, SshTarget, WaitError};
use crate::machine::{guest_clock, keys};
use crate::virt::domain::Accel;
use crate::virt::hypervisor::DomainState;
use crate::wait::{wait_until, Poll, PollError};

/// How the guest came to run, which says whether its clock may be wrong.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Boot {
    /// Booted from its disk: the clock comes from QEMU's RTC, the host's.
    Cold,
    /// Goes on from saved memory (resume, a reverted snapshot, a machine
    /// found running or paused): the clock is where it was saved.
    FromMemory,
}

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
    boot: Boot,
) -> Result<MachineRecord, ReadyError> {
    let name = plan.machine.name.0.as_str();
    let dir = env.project.machine_dir(name);
    let key = keys::machine_key(&dir).map_err(failure)?;
    let mut record = MachineRecord {
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
        python: None,
    };
    if env.hv.is_test_driver() {
        // libvirt's test driver runs no guest: there is nothing to log in to.
        return Ok(record);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(plan.machine.boot_timeout_s.into());
    env.out.step(Some(name), format!("waiting for SSH on {ip}"));
    let kvm_failed = std::cell::Cell::new(false);
    let check = || -> Result<(), String> {
        crate::fault::point("up.ssh-wait");
        match env.hv.domain_state(&plan.domain) {
            Ok(Some(DomainState::Running)) => Ok(()),
            Ok(Some(DomainState::Paused)) if accel == Accel::Kvm => {
                let log = read_tail(&qemu_log(&plan.domain), 50);
                if accel::kvm_failed_in_log(&log) {
                    crate::host::experience::record(&plan.domain, &log);
                    kvm_failed.set(true);
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
    let waited = match record.jump.as_ref() {
        None => ssh::wait_for_answer(addr, deadline, &check).map(drop),
        Some(jump) => crate::remote::jump::wait_for_banner(Some(jump), addr, deadline, &check),
    };
    match waited {
        Ok(()) => {}
        Err(_) if kvm_failed.get() => return Err(ReadyError::KvmFailed),
        Err(WaitError::Cancelled) => return Err(failure("interrupted").into()),
        Err(WaitError::TimedOut) => {
            return Err(crate::machine::boot_diagnosis::diagnose(env, plan, ip).into())
        }
        Err(WaitError::Aborted(why)) => return Err(stopped_waiting(env, plan, &why).into()),
    }
    env.out.detail(
        Some(name),
        format!(
            "SSH port answered after {:.3}s",
            started.elapsed().as_secs_f32()
        ),
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
        shared: Vec::new(),
    };
    let script = ssh::key_replacement_script(
        &key.public_line,
        &keys::INSECURE_PUBLIC_KEYS,
        plan.guest_hostname().as_ref(),
    );
    // The same session puts a restored guest's clock right (resume, reuse);
    // a cold boot skips that exchange (a `date` and a round trip).
    let login = match boot {
        Boot::Cold => Login::Plain,
        Boot::FromMemory => Login::WithClock,
    };
    let stdout = match run_until_ok(&first, &script, login, deadline, &check) {
        Err(_) if kvm_failed.get() => return Err(ReadyError::KvmFailed),
        // Any answer ended the port wait, a refusal too: a port that still
        // does not take connections at the deadline is a boot problem (sshd
        // never started), which the diagnosis names.
        Err(_)
            if record.jump.is_none()
                && Instant::now() >= deadline
                && std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() =>
        {
            return Err(crate::machine::boot_diagnosis::diagnose(env, plan, ip).into())
        }
        r => r?,
    };
    crate::fault::point("up.key-replaced");
    record.python = ssh::python_in(&stdout);
    env.out
        .trace(Some(name), "first login done (own key installed)");
    if !ssh::key_file_in_use(&stdout) {
        // The guest let us in with a key kept elsewhere: make sure sshd
        // reads the file the own key went to.
        let own = SshTarget::from_record(&record);
        run_until_ok(&own, "true", Login::Plain, deadline, &check)?;
        env.out
            .trace(Some(name), "check login with the own key done");
    }
    env.out.detail(
        Some(name),
        format!(
            "logged in, own key in place, after {:.3}s",
            started.elapsed().as_secs_f32()
        ),
    );
    Ok(record)
}

/// The error when waiting stopped because the domain did (crashed, shut
/// off, disappeared).
fn stopped_waiting(env: &Env, plan: &MachinePlan, why: &str) -> Failure {
    let console = crate::remote::log_tail(env.hv.uri(), &plan::console_log(&plan.domain), 15);
    failure(format!(
        "stopped waiting for SSH: {why}\nlast console lines:\n{console}"
    ))
}

/// How often a login is tried again while sshd refuses it or is not up yet.
const LOGIN_RETRY: Duration = Duration::from_millis(100);

/// Whether a login also puts the guest's clock right ([`guest_clock::login`]).
#[derive(Clone, Copy)]
enum Login {
    Plain,
    WithClock,
}

/// Runs `script` over SSH, retrying connection failures (exit 255) every
/// [`LOGIN_RETRY`] until `deadline` (`check` between attempts may abort, as
/// in the wait for the port); a failing script is an error at once. Returns
/// the script's stdout.
fn run_until_ok(
    target: &SshTarget,
    script: &str,
    login: Login,
    deadline: Instant,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<String, Failure> {
    let poll = Poll::until(LOGIN_RETRY, deadline).cancellable();
    let mut last_stderr = String::new();
    let r = wait_until(poll, || {
        let out = match login {
            Login::Plain => target.run(script, 10),
            Login::WithClock => guest_clock::login(target, script, 10),
        }
        .map_err(|e| Failure {
            message: format!("cannot run ssh: {e}"),
            hint: Some("install the OpenSSH client (apt-get install openssh-client)".into()),
        })?;
        last_stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        match out.status.code() {
            Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
            Some(255) => match check() {
                Ok(()) => Ok(None),
                Err(why) => Err(failure(format!("stopped waiting for SSH: {why}"))),
            },
            _ => Err(ssh_failed(target, &last_stderr)),
        }
    });
    match r {
        Ok(out) => Ok(out),
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
