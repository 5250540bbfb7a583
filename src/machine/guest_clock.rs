//! Putting a guest's clock right after its memory was restored (snapshot
//! restore, resume from a managed save): the guest wakes at the time it was
//! saved. With `guest_agent: true` libvirt sets it (virDomainSetTime);
//! otherwise `sudo -n date -s @EPOCH` over SSH, retried until the guest's
//! SSH answers, which also tells the caller that the machine is reachable.

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

/// `date -s` with the host's time, built per attempt so a retry does not
/// set a stale time.
fn date_script(at: Duration) -> String {
    format!(
        "sudo -n date -u -s @{}.{:09} >/dev/null",
        at.as_secs(),
        at.subsec_nanos()
    )
}

/// Runs `script` over SSH until it succeeds (exit 255 means "no connection
/// yet": retried); no script means "set the clock".
fn wait_ssh(record: &MachineRecord, script: Option<&str>, deadline: Instant) -> Result<(), String> {
    let target = SshTarget::from_record(record);
    loop {
        if super::cancel::is_cancelled() {
            return Err("interrupted".into());
        }
        let s = script.map_or_else(|| date_script(now()), str::to_owned);
        let out = target
            .run(&s, 5)
            .map_err(|e| format!("cannot run ssh: {e}"))?;
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
    fn date_script_sets_utc_epoch_with_nanoseconds() {
        assert_eq!(
            date_script(Duration::new(1_764_560_000, 5)),
            "sudo -n date -u -s @1764560000.000000005 >/dev/null"
        );
    }
}
