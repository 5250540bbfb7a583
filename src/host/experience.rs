//! What real guests did: when a guest started by `kvmdrive up` dies with a
//! KVM internal error, that is recorded here ("KVM cannot run guests on this
//! host": date, domain, the qemu log line) beside the probe's cache, keyed
//! like it ([`super::probe::host_key`]), so a kernel, qemu or KVM module
//! change drops it. `host check` and `accel: auto` read it: experience
//! overrides any probe or CPU-flag verdict, and the next `up` goes straight
//! to TCG saying why. Reading and writing are here; the decisions that use
//! the record are pure functions in [`super::accel`] and [`super::doctor`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A real guest's KVM failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmFailure {
    /// [`super::probe::host_key`] when it happened.
    pub key: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub date: String,
    /// The libvirt domain that died.
    pub domain: String,
    /// The line of its qemu log that says so.
    pub line: String,
}

impl KvmFailure {
    /// One line for people: what died, when, and how.
    pub fn describe(&self) -> String {
        format!(
            "guest {} died under KVM on {} UTC ({:?})",
            self.domain, self.date, self.line
        )
    }
}

/// The file: `kvm-failure.json` in the probe's cache directory.
pub fn path() -> PathBuf {
    super::probe::cache_dir().join("kvm-failure.json")
}

/// Pure: the line of a qemu log that shows KVM could not run the guest.
pub fn failure_line(qemu_log: &str) -> Option<&str> {
    crate::virt::qemu_log::kvm_failure_line(qemu_log)
}

/// Pure: the record if it was made under the host state `key`.
pub fn valid_for(record: Option<KvmFailure>, key: &str) -> Option<KvmFailure> {
    record.filter(|r| r.key == key)
}

/// The record for this host as it is now, if there is one.
pub fn load() -> Option<KvmFailure> {
    let r = serde_json::from_slice(&std::fs::read(path()).ok()?).ok();
    valid_for(r, &super::probe::host_key())
}

/// Records that `domain` died under KVM, with the failing line of its qemu
/// log. Best effort: a record that cannot be written only costs the next
/// `up` its KVM attempt, so failures are reported to stderr, not returned.
pub fn record(domain: &str, qemu_log: &str) {
    let Some(line) = failure_line(qemu_log) else {
        return;
    };
    let r = KvmFailure {
        key: super::probe::host_key(),
        date: utc_now(),
        domain: domain.to_owned(),
        line: line.to_owned(),
    };
    let p = path();
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(super::probe::cache_dir())?;
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&r)?)?;
        std::fs::rename(&tmp, &p)
    };
    if let Err(e) = write() {
        eprintln!(
            "kvmdrive: cannot record the KVM failure in {}: {e}",
            p.display()
        );
    }
}

fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

/// Pure: seconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failing_line_is_found() {
        let log = "char device redirected to /dev/pts/3\nKVM internal error. Suberror: 1\nemulation failure\n";
        assert_eq!(failure_line(log), Some("KVM internal error. Suberror: 1"));
        assert_eq!(failure_line("all fine\n"), None);
    }

    #[test]
    fn a_record_of_another_host_state_is_ignored() {
        let r = KvmFailure {
            key: "aa".into(),
            date: "2026-12-01 00:00:00".into(),
            domain: "kvmdrive-x-web".into(),
            line: "KVM internal error. Suberror: 1".into(),
        };
        assert_eq!(valid_for(Some(r.clone()), "aa"), Some(r.clone()));
        assert_eq!(valid_for(Some(r), "bb"), None);
        assert_eq!(valid_for(None, "aa"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_796_085_296), "2026-12-01 00:34:56");
    }
}
