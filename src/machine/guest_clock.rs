//! Putting a guest's clock right after its memory was restored (snapshot
//! restore, resume from a managed save): the guest wakes at the time it was
//! saved. With `guest_agent: true` libvirt sets it (virDomainSetTime);
//! otherwise `sudo -n date -s @EPOCH` over SSH (the guest asks for the time
//! once the session is up), retried until the guest's SSH answers, which
//! also tells the caller that the machine is reachable.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use super::lifecycle::Env;
use super::project::MachineRecord;
use super::ssh::SshTarget;
use crate::project::config::Machine;

/// Sets the guest's clock to the host's; Ok once SSH answered (or the agent
/// did). Err with a message when neither worked before `deadline`.
pub fn correct(
    env: &Env,
    machine: &Machine,
    record: &MachineRecord,
    deadline: Instant,
) -> Result<(), String> {
    if env.hv.is_test_driver() {
        return Ok(()); // nothing runs there
    }
    if machine.hardware.guest_agent {
        // The agent may need a moment after the restore: fall back to SSH.
        match env.hv.set_guest_time(&record.domain, now()) {
            Ok(()) => return wait_ssh(record, Some("true"), deadline),
            Err(e) => env.out.detail(
                Some(&record.name),
                format!("{e}: setting the clock over SSH"),
            ),
        }
    }
    wait_ssh(record, None, deadline)
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// What the guest runs to set its clock: it says `ready` once the session
/// is up and then reads the host's time, so the SSH handshake (seconds on a
/// busy TCG host) does not make the time stale.
const DATE_SCRIPT: &str = "echo ready; read -r t && sudo -n date -u -s \"@$t\" >/dev/null";

/// The epoch with nanoseconds, as `date -s @...` reads it.
fn epoch_arg(at: Duration) -> String {
    format!("{}.{:09}", at.as_secs(), at.subsec_nanos())
}

/// One attempt: runs `script` (or sets the clock when None); returns ssh's
/// exit status (255: no connection) and its stderr.
fn attempt(target: &SshTarget, script: Option<&str>) -> std::io::Result<(Option<i32>, String)> {
    let mut child = target
        .command()
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "--"])
        .arg(script.unwrap_or(DATE_SCRIPT))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take();
    if script.is_none() {
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        if line.trim() == "ready" {
            if let Some(mut w) = stdin.take() {
                let _ = writeln!(w, "{}", epoch_arg(now()));
            }
        }
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}

/// Runs `script` over SSH until it succeeds (exit 255 means "no connection
/// yet": retried); no script means "set the clock".
fn wait_ssh(record: &MachineRecord, script: Option<&str>, deadline: Instant) -> Result<(), String> {
    let target = SshTarget::from_record(record);
    loop {
        if super::cancel::is_cancelled() {
            return Err("interrupted".into());
        }
        let (code, stderr) =
            attempt(&target, script).map_err(|e| format!("cannot run ssh: {e}"))?;
        match code {
            Some(0) => return Ok(()),
            Some(255) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => {
                return Err(format!(
                    "ssh {}@{} failed: {stderr}",
                    record.user, record.address
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
}
