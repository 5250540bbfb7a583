//! What qemu says when KVM cannot run a guest: the one place that recognises
//! "KVM internal error" (the guest is paused, e.g. kvm_pvm hosts at the first
//! `iret`) and "failed to set MSR" (a CPU mode KVM refuses), in a libvirt
//! message, a qemu log or qemu's stderr. Accelerator choice, host checks, the
//! probe and `up`'s TCG fallback all ask here.

/// The text qemu prints when KVM stops a guest.
const KVM_INTERNAL_ERROR: &str = "KVM internal error";
/// The text qemu prints when KVM refuses the CPU model's MSRs.
const FAILED_TO_SET_MSR: &str = "failed to set MSR";

/// True when `text` (a line, a message) reports a KVM internal error.
pub fn is_kvm_internal_error(text: &str) -> bool {
    text.to_ascii_lowercase()
        .contains(&KVM_INTERNAL_ERROR.to_ascii_lowercase())
}

/// The line of a qemu log that shows KVM could not run the guest: a KVM
/// internal error first, else a refused MSR.
pub fn kvm_failure_line(qemu_log: &str) -> Option<&str> {
    qemu_log
        .lines()
        .find(|l| is_kvm_internal_error(l))
        .or_else(|| qemu_log.lines().find(|l| l.contains(FAILED_TO_SET_MSR)))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_kvm_internal_error() {
        assert!(is_kvm_internal_error("KVM internal error. Suberror: 1"));
        assert!(is_kvm_internal_error(
            "internal error: qemu unexpectedly closed the monitor: kvm internal error. Suberror: 1"
        ));
        assert!(!is_kvm_internal_error("internal error: process exited"));
    }

    #[test]
    fn finds_the_failure_line_in_a_log() {
        let log = "char device redirected to /dev/pts/3\nKVM internal error. Suberror: 1\nemulation failure\n";
        assert_eq!(
            kvm_failure_line(log),
            Some("KVM internal error. Suberror: 1")
        );
        let msr = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x0\n";
        assert_eq!(
            kvm_failure_line(msr),
            Some("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x0")
        );
        assert_eq!(kvm_failure_line("guest booted\n"), None);
    }
}
