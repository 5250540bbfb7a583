//! Chooses the accelerator: KVM when it can run ordinary guests, TCG
//! otherwise, with the reason in one line.
//!
//! `/dev/kvm` existing is not enough. On some hosts it comes from `kvm_pvm`
//! (no vmx/svm in the CPU flags): a VM can be created, but every real guest
//! dies with "KVM internal error". What decides, strongest first: a real
//! guest that died under KVM here ([`super::experience`]), then the probe
//! guest's cached verdict ([`super::probe`]), then the kvm module and CPU
//! flags. The facts are read from the host so the decision itself is a
//! pure function, tested on its own.

use std::path::Path;

use super::experience::{self, KvmFailure};
use crate::project::config;
use crate::virt::domain::Accel;

/// What the host tells us about KVM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvmFacts {
    pub dev_kvm_exists: bool,
    /// The process (root) can open /dev/kvm read-write.
    pub dev_kvm_openable: bool,
    /// `vmx` or `svm` in /proc/cpuinfo.
    pub cpu_virt_flags: bool,
    /// `kvm_pvm` is loaded (a paravirtualised KVM that cannot run our guests).
    pub kvm_pvm: bool,
    /// A real guest died under KVM on this host as it is now.
    pub kvm_failure: Option<KvmFailure>,
    /// The cached probe's verdict (`host check --probe`): does KVM run it?
    pub probe_kvm_runs: Option<bool>,
}

impl KvmFacts {
    pub fn read() -> KvmFacts {
        let dev = Path::new("/dev/kvm");
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        KvmFacts {
            dev_kvm_exists: dev.exists(),
            dev_kvm_openable: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dev)
                .is_ok(),
            cpu_virt_flags: has_virt_flags(&cpuinfo),
            kvm_pvm: Path::new("/sys/module/kvm_pvm").exists(),
            kvm_failure: experience::load(),
            probe_kvm_runs: super::programs::find_program("qemu-system-x86_64")
                .and_then(|q| super::probe::cached(&q))
                .filter(|r| r.results.iter().any(|(l, _)| l.starts_with("kvm/")))
                .map(|r| r.kvm_runs()),
        }
    }
}

/// True when a `flags` line of /proc/cpuinfo lists vmx or svm.
pub fn has_virt_flags(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Where a user asks for TCG: kvmdrive.yml's key, and the Molecule platform's
/// vagrant-libvirt spelling (`driver` in `provider_options`).
pub const TCG_SETTING: &str =
    "`accel: tcg` in kvmdrive.yml (a Molecule platform: `provider_options: {driver: qemu}`)";

/// The accelerator to use and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// Applies an explicit setting, or decides from the host's facts.
pub fn choose(setting: config::Accel, facts: &KvmFacts) -> AccelChoice {
    let tcg = |reason: &str| AccelChoice {
        accel: Accel::Tcg,
        reason: reason.to_owned(),
    };
    match setting {
        config::Accel::Kvm => AccelChoice {
            accel: Accel::Kvm,
            reason: "KVM asked for (`accel: kvm`)".into(),
        },
        config::Accel::Tcg => {
            tcg("TCG asked for (`accel: tcg`, or a Molecule platform's `driver: qemu`)")
        }
        config::Accel::Auto if !facts.dev_kvm_exists => {
            tcg("no /dev/kvm: using TCG (software emulation, slower)")
        }
        config::Accel::Auto if !facts.dev_kvm_openable => {
            tcg("/dev/kvm cannot be opened: using TCG (software emulation, slower)")
        }
        config::Accel::Auto if facts.kvm_failure.is_some() => {
            let f = facts.kvm_failure.as_ref().expect("checked");
            tcg(&format!(
                "KVM cannot run guests on this host ({}; recorded in {}): using TCG",
                f.describe(),
                experience::path().display()
            ))
        }
        config::Accel::Auto if facts.probe_kvm_runs == Some(false) => {
            tcg("the probe guest dies under KVM here (`kvmdrive host check --probe`): using TCG")
        }
        config::Accel::Auto if facts.probe_kvm_runs == Some(true) => AccelChoice {
            accel: Accel::Kvm,
            reason: "KVM runs the probe guest".into(),
        },
        config::Accel::Auto if facts.kvm_pvm && !facts.cpu_virt_flags => {
            tcg("/dev/kvm is kvm_pvm without vmx/svm, which cannot run ordinary guests: using TCG")
        }
        config::Accel::Auto => AccelChoice {
            accel: Accel::Kvm,
            reason: "KVM available".into(),
        },
    }
}

/// True when a qemu log shows that KVM could not run the guest (the domain
/// then sits paused): the cue to retry under TCG.
pub fn kvm_failed_in_log(qemu_log: &str) -> bool {
    crate::virt::qemu_log::kvm_failure_line(qemu_log).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(exists: bool, open: bool, flags: bool, pvm: bool) -> KvmFacts {
        KvmFacts {
            dev_kvm_exists: exists,
            dev_kvm_openable: open,
            cpu_virt_flags: flags,
            kvm_pvm: pvm,
            ..Default::default()
        }
    }

    fn died() -> KvmFailure {
        KvmFailure {
            key: "k".into(),
            date: "2026-12-01 01:00:00".into(),
            domain: "kvmdrive-p-web".into(),
            line: "KVM internal error. Suberror: 1".into(),
        }
    }

    #[test]
    fn a_real_guest_that_died_under_kvm_wins() {
        // Even where flags and the probe say KVM works.
        let mut f = facts(true, true, true, false);
        f.probe_kvm_runs = Some(true);
        f.kvm_failure = Some(died());
        let c = choose(config::Accel::Auto, &f);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(
            c.reason.starts_with("KVM cannot run guests on this host"),
            "{}",
            c.reason
        );
        assert!(c.reason.contains("kvmdrive-p-web"), "{}", c.reason);
        assert!(!c.reason.contains('\n'), "one line: {}", c.reason);
        // An explicit setting still wins.
        assert_eq!(choose(config::Accel::Kvm, &f).accel, Accel::Kvm);
    }

    #[test]
    fn the_probe_verdict_overrides_the_flags() {
        let mut f = facts(true, true, false, true);
        f.probe_kvm_runs = Some(true);
        assert_eq!(choose(config::Accel::Auto, &f).accel, Accel::Kvm);
        let mut f = facts(true, true, true, false);
        f.probe_kvm_runs = Some(false);
        let c = choose(config::Accel::Auto, &f);
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("probe"), "{}", c.reason);
    }

    #[test]
    fn real_kvm_is_used() {
        let c = choose(config::Accel::Auto, &facts(true, true, true, false));
        assert_eq!(c.accel, Accel::Kvm);
    }

    #[test]
    fn kvm_pvm_without_virt_flags_falls_back_to_tcg() {
        let c = choose(config::Accel::Auto, &facts(true, true, false, true));
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("kvm_pvm"), "{}", c.reason);
    }

    #[test]
    fn missing_or_closed_dev_kvm_falls_back_to_tcg() {
        assert_eq!(
            choose(config::Accel::Auto, &facts(false, false, true, false)).accel,
            Accel::Tcg
        );
        assert_eq!(
            choose(config::Accel::Auto, &facts(true, false, true, false)).accel,
            Accel::Tcg
        );
    }

    #[test]
    fn explicit_setting_wins() {
        let none = facts(false, false, false, false);
        assert_eq!(choose(config::Accel::Kvm, &none).accel, Accel::Kvm);
        let good = facts(true, true, true, false);
        assert_eq!(choose(config::Accel::Tcg, &good).accel, Accel::Tcg);
    }

    #[test]
    fn cpuinfo_flags() {
        assert!(has_virt_flags("processor: 0\nflags\t\t: fpu vme vmx sse\n"));
        assert!(!has_virt_flags("flags\t\t: fpu vme sse hypervisor\n"));
        assert!(!has_virt_flags("model name: svm-like cpu\nflags: fpu\n"));
    }

    #[test]
    fn kvm_failure_is_recognised_in_the_qemu_log() {
        assert!(kvm_failed_in_log(
            "KVM internal error. Suberror: 1\nemulation failure\n"
        ));
        assert!(!kvm_failed_in_log("char device redirected to /dev/pts/3\n"));
    }
}
