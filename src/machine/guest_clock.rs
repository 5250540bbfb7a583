//! Putting a guest's clock right when its memory was restored (snapshot
//! restore, resume from a managed save, a reused machine): the guest wakes
//! at the time it was saved. Every login that makes such a machine ready
//! (see [`login`]; a cold boot takes QEMU's RTC, the host's time, and skips
//! it) also compares the guest's clock with the host's and, when they
//! differ by more than [`TOLERANCE`], sets it in the same session with one
//! `sudo -n date`, so no extra login is needed. With `guest_agent: true`
//! libvirt sets it (virDomainSetTime): a login finds it right, and a
//! snapshot restore needs no login at all (see [`correct`]).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::lifecycle::Env;
use super::project::MachineRecord;
use super::ssh::{self, SshTarget, WaitError};
use crate::project::config::Machine;

/// A guest clock this far from the host's is set.
pub const TOLERANCE: Duration = Duration::from_secs(1);

/// Appended to the script of a [`login`]: the guest says its time, and when
/// the host answers `set`, starts a root shell that says `ready` and then
/// reads the host's time, so neither the SSH handshake nor sudo's start
/// (seconds on a busy TCG host) makes the time it sets stale. A clock that
/// cannot be set (no passwordless sudo) does not fail the login.
const CLOCK_SCRIPT: &str = "printf 'kvmdrive-clock %s\\n' \"$(date -u +%s.%N)\"; read -r a || a=; \
     if [ \"$a\" = set ]; then sudo -n sh -c 'echo kvmdrive-clock-ready; read -r t && date -u -s \"@$t\" >/dev/null' \
     || echo 'kvmdrive-clock: not set' >&2; fi";
const CLOCK_LINE: &str = "kvmdrive-clock ";
const CLOCK_READY: &str = "kvmdrive-clock-ready";

fn now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The epoch with nanoseconds, as `date -s @...` reads it.
fn epoch_arg(at: Duration) -> String {
    format!("{}.{:09}", at.as_secs(), at.subsec_nanos())
}

/// Whether a guest that says `guest` (seconds since the epoch, as `date
/// +%s.%N` prints them) at host time `host` needs its clock set.
fn needs_setting(guest: &str, host: Duration) -> bool {
    match guest.trim().parse::<f64>() {
        Ok(g) => (g - host.as_secs_f64()).abs() > TOLERANCE.as_secs_f64(),
        Err(_) => false,
    }
}

/// Runs `script` over SSH (stdin piped for the clock exchange, output
/// captured) and puts the guest's clock right in the same session. The
/// returned stdout is the script's own (the exchange's lines are taken out).
pub fn login(target: &SshTarget, script: &str, timeout_s: u32) -> std::io::Result<Output> {
    let mut cmd = target.command();
    cmd.args(["-o", "BatchMode=yes", "-o"])
        .arg(format!("ConnectTimeout={timeout_s}"))
        .arg("--")
        .arg(with_clock(script));
    exchange(cmd)
}

/// `script` followed by the clock exchange.
fn with_clock(script: &str) -> String {
    format!("{script}\n{CLOCK_SCRIPT}")
}

/// Runs `cmd` (a shell running [`with_clock`]) and answers its clock lines.
fn exchange(mut cmd: std::process::Command) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take();
    let mut own = String::new();
    if let Some(out) = child.stdout.take() {
        let mut reader = BufReader::new(out);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            if let Some(guest) = line.strip_prefix(CLOCK_LINE) {
                let answer = if needs_setting(guest, now()) {
                    "set"
                } else {
                    "ok"
                };
                if let Some(w) = stdin.as_mut() {
                    let _ = writeln!(w, "{answer}");
                }
            } else if line.trim_end() == CLOCK_READY {
                if let Some(w) = stdin.as_mut() {
                    let _ = writeln!(w, "{}", epoch_arg(now()));
                }
            } else {
                own.push_str(&line);
            }
            line.clear();
        }
    }
    drop(stdin);
    let mut out = child.wait_with_output()?;
    out.stdout = own.into_bytes();
    Ok(out)
}

/// After a restore: sets the guest's clock (agent, else over SSH) and
/// returns once SSH answers. Err with a message when it did not before
/// `deadline`.
///
/// When the guest agent set the clock, sshd sending its banner is enough:
/// the machine was ready when the snapshot was taken and its sshd is the
/// same process, so a login here would only cost the caller's first login
/// its place (about a second under TCG, where the first login after a
/// revert also translates sshd's code again).
///
/// `agent_was_connected` (`Hypervisor::guest_agent_is_connected` before the
/// revert): after libvirt's revert (a new QEMU process) libvirt sees the
/// agent's channel close and open again while the memory is loaded, so a
/// call right after it may find it "not connected"; an agent that was there
/// is then waited for up to [`AGENT_RECONNECT`]. (A revert in place keeps
/// the channel.)
pub fn correct(
    env: &Env,
    machine: &Machine,
    record: &MachineRecord,
    deadline: Instant,
    agent_was_connected: bool,
) -> Result<(), String> {
    if env.hv.is_test_driver() {
        return Ok(()); // nothing runs there
    }
    if machine.hardware.guest_agent {
        // An agent that does not answer leaves it to SSH.
        match set_time_by_agent(env, &record.domain, agent_was_connected) {
            Ok(()) => {
                env.out
                    .trace(Some(&record.name), "clock set by the guest agent");
                return wait_banner(record, deadline);
            }
            Err(e) => env.out.detail(
                Some(&record.name),
                format!("{e}: setting the clock over SSH"),
            ),
        }
    }
    wait_ssh(env, record, deadline)
}

/// How long an agent that was connected before a revert is waited for.
const AGENT_RECONNECT: Duration = Duration::from_secs(2);

/// Sets the guest's clock through its agent; retried for up to
/// [`AGENT_RECONNECT`] when `wait` (the agent was connected before).
fn set_time_by_agent(env: &Env, domain: &str, wait: bool) -> Result<(), crate::virt::VirtError> {
    let started = Instant::now();
    loop {
        match env.hv.set_guest_time(domain, now()) {
            Err(_) if wait && started.elapsed() < AGENT_RECONNECT => {
                std::thread::sleep(Duration::from_millis(100))
            }
            r => return r,
        }
    }
}

/// Waits for the guest's sshd to send its banner (through the record's
/// jump host, if any): the same proof of "SSH answers" as `up`'s, without a
/// login. (Only a TCP accept would leave sshd's fork to the caller's first
/// login: no faster in all, measured.)
fn wait_banner(record: &MachineRecord, deadline: Instant) -> Result<(), String> {
    let addr = ssh_addr(record)
        .ok_or_else(|| format!("bad address {:?} in the machine record", record.address))?;
    crate::remote::jump::wait_for_banner(record.jump.as_ref(), addr, deadline, || Ok(()))
        .map_err(|e| wait_failed(e, format!("no SSH banner from {addr} before the deadline")))
}

/// The guest's SSH address from its record (`None`: not an IP address).
fn ssh_addr(record: &MachineRecord) -> Option<SocketAddr> {
    let ip: IpAddr = record.address.parse().ok()?;
    Some(SocketAddr::new(ip, record.port))
}

/// A wait that ended without an answer, as the error message; `timed_out`
/// says what did not come before the deadline.
fn wait_failed(e: WaitError, timed_out: String) -> String {
    match e {
        WaitError::Cancelled => "interrupted".into(),
        WaitError::TimedOut => timed_out,
        WaitError::Aborted(why) => why,
    }
}

/// Waits for the guest's SSH port to answer (polled every 50 ms: a SYN
/// lost while the guest wakes would cost a kernel retransmit of 1-3 s),
/// then logs in (clock put right) until that works.
fn wait_ssh(env: &Env, record: &MachineRecord, deadline: Instant) -> Result<(), String> {
    if let Some(addr) = ssh_addr(record).filter(|_| record.jump.is_none()) {
        ssh::wait_for_answer(addr, deadline, || Ok(()))
            .map_err(|e| wait_failed(e, format!("no answer on {addr} before the deadline")))?;
        env.out.trace(Some(&record.name), "SSH port answered");
    }
    let target = SshTarget::from_record(record);
    loop {
        if super::cancel::is_cancelled() {
            return Err("interrupted".into());
        }
        let out = login(&target, "true", 5).map_err(|e| format!("cannot run ssh: {e}"))?;
        match out.status.code() {
            Some(0) => return Ok(()),
            Some(255) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => {
                return Err(format!(
                    "ssh {}@{} failed: {}",
                    record.user,
                    record.address,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_argument_has_nanoseconds() {
        assert_eq!(
            epoch_arg(Duration::new(1_764_560_000, 5)),
            "1764560000.000000005"
        );
    }

    #[test]
    fn only_a_clock_off_by_more_than_the_tolerance_is_set() {
        let host = Duration::new(1_764_560_000, 500_000_000);
        assert!(!needs_setting("1764560000.100000000\n", host));
        assert!(!needs_setting("1764560001.400000000", host));
        assert!(needs_setting("1764559990.000000000", host));
        assert!(needs_setting("1764560002.000000000", host));
        assert!(!needs_setting("garbage", host));
    }

    #[test]
    fn the_clock_script_is_valid_shell() {
        crate::testutil::assert_sh_syntax(&format!("true\n{CLOCK_SCRIPT}"));
    }

    /// The exchange, against `sh` standing in for the guest's session (with
    /// `sudo` and `date` stubbed): a wrong clock gets `set` and then the time.
    #[test]
    fn login_sets_a_wrong_clock_in_the_same_session() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // The stub date answers an old time and records what it is asked
        // to set; the stub sudo runs its command.
        let stub = |name: &str, body: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        stub("sudo", "shift; exec \"$@\"\n".into());
        stub(
            "date",
            format!(
                "case \"$*\" in *-s*) echo \"$*\" >> {}; exit 0;; esac; echo 1000000000.0\n",
                log.display()
            ),
        );
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(with_clock("echo own-output"))
            .env("PATH", path);
        let out = exchange(cmd).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "own-output\n");
        let set = std::fs::read_to_string(&log).unwrap();
        assert!(set.starts_with("-u -s @17"), "{set}");
    }
}
