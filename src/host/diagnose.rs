//! Turning errors from elsewhere (`kvmdrive up`'s libvirt calls) into the
//! host check that explains them, and the cheap preflight `up` runs first.

use super::doctor;
use super::facts::HostFacts;
use super::finding::{Finding, Status};

/// (pattern in libvirt's message, check, finding, fix). First match wins;
/// patterns are matched case-insensitively.
const PATTERNS: &[(&str, &str, &str, &str)] = &[
    (
        "/var/log/libvirt/qemu",
        "qemu-log-dir",
        "/var/log/libvirt/qemu is missing, so qemu's console log cannot be opened",
        doctor::FIX,
    ),
    ("could not access kvm kernel module", "kvm-access", "qemu cannot open /dev/kvm", doctor::FIX),
    ("failed to initialize kvm", "kvm-access", "qemu cannot open /dev/kvm", doctor::FIX),
    (
        "failed to set msr",
        "cpu-modes",
        "this CPU mode does not start under KVM",
        "use a named CPU model (`cpu: qemu64` in kvmdrive.yml); `kvmdrive host check --probe` lists the modes that start",
    ),
    ("/dev/kvm", "kvm-access", "qemu cannot open /dev/kvm", doctor::FIX),
    (
        "cannot check qemu binary",
        "qemu-binary",
        "libvirtd cannot look at the qemu binary",
        "check that qemu-system-x86 is installed (`kvmdrive host check`)",
    ),
    ("virtlogd-sock", "virtlogd", "virtlogd is not running", doctor::UP),
    ("virtlogd", "virtlogd", "virtlogd is not running", doctor::UP),
    ("libvirt-sock", "libvirtd", "libvirtd is not running", doctor::UP),
    ("failed to connect to the hypervisor", "libvirtd", "libvirtd is not running", doctor::UP),
    ("failed to connect socket", "libvirtd", "libvirtd is not running", doctor::UP),
    (
        "cannot enable ipv4 forwarding",
        "ip-forward",
        "libvirt cannot turn IPv4 forwarding on",
        "start the container with `--sysctl net.ipv4.ip_forward=1`, or run `kvmdrive host up --fix`",
    ),
    ("dnsmasq", "dnsmasq", "dnsmasq is missing or fails", "apt-get install dnsmasq-base"),
    (
        "iptables",
        "iptables-backend",
        "libvirt cannot install its firewall rules",
        "run `kvmdrive host check` and `kvmdrive host up --fix`",
    ),
    (
        "firewall",
        "iptables-backend",
        "libvirt cannot install its firewall rules",
        "run `kvmdrive host check` and `kvmdrive host up --fix`",
    ),
    (
        "apparmor",
        "security",
        "AppArmor blocks qemu",
        "apt-get install apparmor, or security_driver = \"none\" in /etc/libvirt/qemu.conf",
    ),
    ("no space left on device", "pool-space", "the disk is full", "free space where the pool lives"),
];

/// Given a libvirt error message, the one-line finding and fix that names
/// the check, e.g. "qemu cannot open /dev/kvm (check `kvm-access`): run
/// `kvmdrive host up --fix`". `None` when no check explains it.
pub fn diagnose_start_failure(message: &str) -> Option<String> {
    diagnose(
        message,
        std::path::Path::new(super::kvm_access::DEV_KVM).exists(),
    )
}

/// The pure half of [`diagnose_start_failure`]: `dev_kvm_exists` tells the
/// two causes of "no KVM capabilities" apart.
pub fn diagnose(message: &str, dev_kvm_exists: bool) -> Option<String> {
    let lower = message.to_lowercase();
    // libvirt's "could not find capabilities for domaintype=kvm": it found no
    // usable KVM (no device, or none its qemu user may open).
    if lower.contains("domaintype=kvm") {
        return Some(if dev_kvm_exists {
            format!(
                "libvirt's qemu user cannot use /dev/kvm (check `kvm-access`): {}",
                doctor::FIX
            )
        } else {
            format!(
                "there is no /dev/kvm (check `kvm-device`): use {}, or give the container /dev/kvm",
                super::accel::TCG_SETTING
            )
        });
    }
    if crate::virt::qemu_log::is_kvm_internal_error(message) {
        return Some(format!(
            "KVM cannot run this guest (check `kvm-runs-guests`): use TCG: {} (`kvmdrive host check --probe` shows why)",
            super::accel::TCG_SETTING
        ));
    }
    let (_, check, what, fix) = PATTERNS.iter().find(|(pat, ..)| lower.contains(pat))?;
    Some(format!("{what} (check `{check}`): {fix}"))
}

/// Cheap checks (< 10 ms: reads /dev, /proc, /sys, /etc and stats two
/// sockets; no process started, no probe guest) that `up` can run first.
/// Returns only findings that are not ok: the qemu user and /dev/kvm (the
/// ~40 s re-probe per define/start), and libvirtd/virtlogd not answering.
pub fn quick_preflight() -> Vec<Finding> {
    let mut f = HostFacts::gather_local();
    f.daemons = [
        super::daemons::Daemon::Virtlogd,
        super::daemons::Daemon::Libvirtd,
    ]
    .map(|d| super::daemons::DaemonStatus {
        daemon: d,
        pid: None,
        answering: std::os::unix::net::UnixStream::connect(d.socket()).is_ok(),
    })
    .to_vec();
    preflight_findings(&f)
}

/// The pure half of [`quick_preflight`].
pub fn preflight_findings(f: &HostFacts) -> Vec<Finding> {
    let mut out = vec![doctor::kvm_access(f), doctor::caps_cache(f)];
    for d in &f.daemons {
        if !d.answering {
            out.push(doctor::daemon(f, d.daemon));
        }
    }
    // One cause, one line: the cache finding repeats kvm-access's cause.
    if out
        .iter()
        .any(|x| x.check == "kvm-access" && x.status == Status::Fail)
    {
        out.retain(|x| x.check != "caps-cache");
        if let Some(x) = out.iter_mut().find(|x| x.check == "kvm-access") {
            x.summary
                .push_str(", and libvirt re-probes qemu (~40 s) on every define and start");
        }
    }
    out.retain(|x| x.status != Status::Ok);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::daemons::{Daemon, DaemonStatus};

    #[test]
    fn libvirt_messages_map_to_checks() {
        let cases = [
            (
                "internal error: process exited while connecting to monitor: Could not access KVM kernel module: Permission denied",
                "qemu cannot open /dev/kvm (check `kvm-access`): run `kvmdrive host up --fix`",
            ),
            (
                "failed to connect to the hypervisor",
                "libvirtd is not running (check `libvirtd`): run `kvmdrive host up`",
            ),
            (
                "Failed to connect socket to '/var/run/libvirt/virtlogd-sock': No such file or directory",
                "virtlogd is not running (check `virtlogd`): run `kvmdrive host up`",
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(diagnose_start_failure(msg).as_deref(), Some(want), "{msg}");
        }
        let qemu = diagnose_start_failure(
            "Cannot check QEMU binary /usr/bin/qemu-system-x86_64: Permission denied",
        )
        .unwrap();
        assert!(qemu.contains("check `qemu-binary`"), "{qemu}");
        let fw = diagnose_start_failure(
            "internal error: Failed to apply firewall rules /usr/sbin/iptables -w --table filter",
        )
        .unwrap();
        assert!(fw.contains("iptables-backend"), "{fw}");
        assert_eq!(
            diagnose_start_failure(
                "internal error: process exited while connecting to monitor: Unable to open file: /var/log/libvirt/qemu/kvmdrive-p-web-console.log: No such file or directory"
            )
            .as_deref(),
            Some("/var/log/libvirt/qemu is missing, so qemu's console log cannot be opened (check `qemu-log-dir`): run `kvmdrive host up --fix`")
        );
        assert_eq!(diagnose_start_failure("domain 'x' already exists"), None);
        let caps = "invalid argument: could not find capabilities for domaintype=kvm ";
        assert!(diagnose(caps, true).unwrap().contains("check `kvm-access`"));
        let no_dev = diagnose(caps, false).unwrap();
        assert!(no_dev.contains("check `kvm-device`"), "{no_dev}");
        let died = diagnose("KVM internal error. Suberror: 1 (/dev/kvm)", true).unwrap();
        assert!(died.contains("check `kvm-runs-guests`"), "{died}");
        // Both spellings of the way out: kvmdrive.yml's and a Molecule platform's.
        for hint in [&no_dev, &died] {
            assert!(hint.contains("`accel: tcg`"), "{hint}");
            assert!(
                hint.contains("`provider_options: {driver: qemu}`"),
                "{hint}"
            );
        }
    }

    #[test]
    fn preflight_warns_about_the_reprobe_trap_once() {
        let f = HostFacts {
            daemons: vec![DaemonStatus {
                daemon: Daemon::Libvirtd,
                pid: None,
                answering: true,
            }],
            ..crate::host::facts::no_udev_host()
        };
        let out = preflight_findings(&f);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].check, "kvm-access");
        assert!(out[0].summary.contains("40 s"));
    }

    #[test]
    fn quick_preflight_is_quick() {
        let _ = quick_preflight(); // warm the page cache and NSS
        let t = std::time::Instant::now();
        let _ = quick_preflight();
        eprintln!("quick_preflight: {:?}", t.elapsed());
        // Generous for a loaded CI machine; typically well under 10 ms.
        assert!(
            t.elapsed() < std::time::Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }
}
