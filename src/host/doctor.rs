//! The host checks: pure functions from [`HostFacts`] to [`Finding`]s. Each
//! says ok / warn / fail, what it saw, and the exact fix. `host check` runs
//! them all; [`super::quick_preflight`] runs the cheap ones.
//!
//! Long (about 600 lines without tests) on purpose: it is the table of every
//! host check, one short function each, kept in one place so the list of
//! what `host check` looks at reads top to bottom.

use super::accel;
use super::daemons::Daemon;
use super::facts::HostFacts;
use super::finding::{Finding, Status};
use super::firewall::{self, LibvirtFirewall};
use super::kvm_access::{self, DEV_KVM};
use crate::project::config;
use crate::virt::domain::Accel;

/// The fix for anything `host up --fix` repairs.
pub const FIX: &str = "run `kvmdrive host up --fix`";
/// The fix for daemons that are not running.
pub const UP: &str = "run `kvmdrive host up`";

/// Every check, in report order.
pub fn run_checks(f: &HostFacts) -> Vec<Finding> {
    vec![
        kvm_device(f),
        kvm_runs_guests(f),
        cpu(f),
        cpu_modes(f),
        kvm_access(f),
        caps_cache(f),
        qemu_binary(f),
        qemu_log_dir(f),
        daemon(f, Daemon::Dbus),
        daemon(f, Daemon::Virtlogd),
        daemon(f, Daemon::Libvirtd),
        libvirt(f),
        iptables_backend(f),
        ip_forward(f),
        dnsmasq(f),
        security(f),
        pool_space(f),
    ]
}

/// Exit status of `host check`: 0 when a VM can run, 1 otherwise.
pub fn exit_code(findings: &[Finding]) -> i32 {
    i32::from(findings.iter().any(|f| f.status == Status::Fail))
}

fn dev_kvm_desc(f: &HostFacts) -> String {
    match &f.dev_kvm {
        Some(n) => format!("{DEV_KVM} {}", n.describe()),
        None => format!("no {DEV_KVM}"),
    }
}

pub fn kvm_device(f: &HostFacts) -> Finding {
    const C: &str = "kvm-device";
    if !f.kvm.dev_kvm_exists {
        return Finding::warn(
            C,
            "no /dev/kvm: guests run under TCG (software emulation, several times slower)",
            dev_kvm_desc(f),
            "give the container the device (`docker run --device /dev/kvm`, a KVM-enabled CI task); \
             otherwise nothing to do",
        );
    }
    if !f.kvm.dev_kvm_openable {
        return Finding::warn(
            C,
            "/dev/kvm exists but kvmdrive cannot open it",
            dev_kvm_desc(f),
            "run kvmdrive as root (or as a member of the device's group)",
        );
    }
    Finding::ok(C, "/dev/kvm present and openable", dev_kvm_desc(f))
}

fn accel_facts_desc(f: &HostFacts) -> String {
    let c = &f.cpu_flags;
    let modules = if c.kvm_modules.is_empty() {
        "none".to_owned()
    } else {
        c.kvm_modules.join(",")
    };
    format!(
        "vmx/svm in CPU flags: {}; KVM modules: {modules}",
        if c.vmx || c.svm { "yes" } else { "no" }
    )
}

fn probe_desc(f: &HostFacts) -> Option<String> {
    let p = f.probe.as_ref()?;
    let parts: Vec<String> = p
        .results
        .iter()
        .map(|(l, o)| format!("{l}: {}", o.describe()))
        .collect();
    Some(format!(
        "probe guest{} ({:.1} s): {}",
        if f.probe_cached { ", cached" } else { "" },
        p.seconds,
        parts.join("; ")
    ))
}

/// The verdict the issue is about: not "can a VM be created" but "does an
/// ordinary guest run". From the probe when there is one, else from the
/// kvm module and CPU flags (the lead's `accel::choose`).
pub fn kvm_runs_guests(f: &HostFacts) -> Finding {
    const C: &str = "kvm-runs-guests";
    let tcg_fix = "nothing to fix: kvmdrive uses TCG by itself (`accel: tcg` in kvmdrive.yml says so explicitly)";
    // What a real guest did overrides every prediction.
    if let Some(k) = &f.kvm.kvm_failure {
        let probe = probe_desc(f).map(|p| format!("; {p}")).unwrap_or_default();
        return Finding::warn(
            C,
            "use TCG: KVM cannot run guests on this host (a real guest died under KVM)",
            format!("{}{probe}", k.describe()),
            format!(
                "{tcg_fix}; the record ({}) is dropped when the kernel, qemu or KVM modules change",
                super::experience::path().display()
            ),
        );
    }
    if let Some(p) = &f.probe {
        let saw = probe_desc(f).unwrap_or_default();
        if !p.tcg_runs() && !p.kvm_runs() {
            return Finding::fail(
                C,
                "qemu cannot run even the probe guest",
                saw,
                "see the probe's errors above",
            );
        }
        if p.kvm_runs() {
            return Finding::ok(C, "KVM runs ordinary guests: use KVM", saw);
        }
        let why = if f.kvm.kvm_pvm && !f.kvm.cpu_virt_flags {
            "KVM here is kvm_pvm without vmx/svm: it creates VMs but cannot run ordinary guests"
        } else {
            "KVM cannot run an ordinary guest here"
        };
        return Finding::warn(C, format!("use TCG: {why}"), saw, tcg_fix);
    }
    let choice = accel::choose(config::Accel::Auto, &f.kvm.to_accel_facts());
    let saw = format!(
        "{} (not probed: `kvmdrive host check --probe` boots a probe guest)",
        accel_facts_desc(f)
    );
    match choice.accel {
        Accel::Kvm => Finding::ok(C, "KVM should run ordinary guests: use KVM", saw),
        Accel::Tcg => {
            let reason = choice.reason.trim_end_matches(": using TCG");
            Finding::warn(C, format!("use TCG: {reason}"), saw, tcg_fix)
        }
    }
}

pub fn cpu(f: &HostFacts) -> Finding {
    const C: &str = "cpu";
    let c = &f.cpu_flags;
    let nested = match c.nested {
        Some(true) => "on",
        Some(false) => "off",
        None => "n/a",
    };
    let saw = format!(
        "vmx: {}, svm: {}, running under a hypervisor: {}, KVM modules: {}, nested virtualisation: {nested}",
        yes(c.vmx),
        yes(c.svm),
        yes(c.hypervisor),
        if c.kvm_modules.is_empty() { "none".to_owned() } else { c.kvm_modules.join(",") }
    );
    let hw_module = c
        .kvm_modules
        .iter()
        .any(|m| m == "kvm_intel" || m == "kvm_amd");
    if (c.vmx || c.svm) && !hw_module {
        let m = if c.vmx { "kvm_intel" } else { "kvm_amd" };
        return Finding::warn(
            C,
            "the CPU can virtualise but its KVM module is not loaded",
            saw,
            format!("modprobe {m}"),
        );
    }
    let summary = if c.vmx || c.svm {
        "hardware virtualisation available"
    } else {
        "no hardware virtualisation flags (vmx/svm)"
    };
    Finding::ok(C, summary, saw)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Which CPU modes start under KVM (the MSR quirk: `-cpu host`/`max` may
/// abort with "failed to set MSR 0x10a" while a named model runs).
pub fn cpu_modes(f: &HostFacts) -> Finding {
    const C: &str = "cpu-modes";
    let Some(p) = &f.probe else {
        let choice = accel::choose(config::Accel::Auto, &f.kvm.to_accel_facts());
        return match choice.accel {
            Accel::Tcg => Finding::ok(
                C,
                "guests use TCG with CPU model qemu64",
                "KVM CPU modes not probed (not used)",
            ),
            Accel::Kvm => Finding::warn(
                C,
                "not probed which CPU modes start under KVM",
                "no probe result cached",
                "run `kvmdrive host check --probe`",
            ),
        };
    };
    let saw = probe_desc(f).unwrap_or_default();
    if !p.kvm_runs() {
        return Finding::ok(
            C,
            "guests use TCG with CPU model qemu64 (no KVM CPU mode starts)",
            saw,
        );
    }
    let modes = p.kvm_cpu_modes();
    if modes.contains(&"host") {
        Finding::ok(
            C,
            format!("KVM CPU modes that start: {}", modes.join(", ")),
            saw,
        )
    } else {
        Finding::warn(
            C,
            format!("host-passthrough does not start under KVM; these do: {}", modes.join(", ")),
            saw,
            "kvmdrive picks a mode that starts; to pin one set `cpu: qemu64` (or `max`) in kvmdrive.yml",
        )
    }
}

/// Whether the qemu user can open /dev/kvm: `None` when there is no
/// /dev/kvm or the user is unknown.
pub fn qemu_can_open_kvm(f: &HostFacts) -> Option<bool> {
    let node = f.dev_kvm.as_ref()?;
    let who = f.qemu_identity.as_ref()?;
    Some(kvm_access::can_open_rw(who, node))
}

fn qemu_user_desc(f: &HostFacts) -> String {
    let groups = f
        .qemu_identity
        .as_ref()
        .map(|i| {
            i.groups
                .iter()
                .map(|&g| kvm_access::group_name(g).unwrap_or_else(|| g.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    format!(
        "{}: user = {:?}, group = {:?} (groups {groups}), dynamic_ownership = {}; {}",
        f.qemu_conf.path.display(),
        f.qemu_user,
        f.qemu_group,
        u8::from(f.qemu_conf.dynamic_ownership()),
        dev_kvm_desc(f)
    )
}

fn kvm_fix(f: &HostFacts) -> String {
    format!(
        "{FIX} (makes /dev/kvm root:kvm 0660 as udev would, or sets user = \"root\" in {})",
        f.qemu_conf.path.display()
    )
}

pub fn kvm_access(f: &HostFacts) -> Finding {
    const C: &str = "kvm-access";
    if f.dev_kvm.is_none() {
        return Finding::ok(C, "no /dev/kvm: nothing for qemu to open", dev_kvm_desc(f));
    }
    if let Some(e) = &f.qemu_identity_error {
        return Finding::fail(
            C,
            format!("qemu.conf's user/group cannot be resolved: {e}"),
            qemu_user_desc(f),
            format!(
                "set user and group in {} to existing ones",
                f.qemu_conf.path.display()
            ),
        );
    }
    match qemu_can_open_kvm(f) {
        Some(true) => Finding::ok(
            C,
            format!("qemu (as {}) can open /dev/kvm", f.qemu_user),
            qemu_user_desc(f),
        ),
        _ => Finding::fail(
            C,
            format!(
                "qemu (as {}) cannot open /dev/kvm: KVM guests fail to start",
                f.qemu_user
            ),
            qemu_user_desc(f),
            kvm_fix(f),
        ),
    }
}

/// The re-probe trap: libvirt checks /dev/kvm as the qemu user; denied, it
/// discards its qemu capabilities cache on every define and start.
pub fn caps_cache(f: &HostFacts) -> Finding {
    const C: &str = "caps-cache";
    match qemu_can_open_kvm(f) {
        Some(false) => Finding::fail(
            C,
            "libvirt will re-probe qemu (about 40 s) on every define and start",
            format!(
                "libvirt checks /dev/kvm as {} and is denied, so it drops its capabilities cache \
                 (\"KVM was enabled when probing ..., but it is not available now\"); {}",
                f.qemu_user,
                dev_kvm_desc(f)
            ),
            kvm_fix(f),
        ),
        _ => Finding::ok(
            C,
            "libvirt keeps its qemu capabilities cache",
            dev_kvm_desc(f),
        ),
    }
}

pub fn qemu_binary(f: &HostFacts) -> Finding {
    const C: &str = "qemu-binary";
    match &f.qemu_binary {
        Some(p) => Finding::ok(C, "qemu-system-x86_64 installed", p.display().to_string()),
        None => Finding::fail(
            C,
            "qemu-system-x86_64 is not installed",
            "not found on PATH or in /usr/sbin, /usr/bin",
            "apt-get install qemu-system-x86",
        ),
    }
}

/// qemu's console log goes to /var/log/libvirt/qemu: without the
/// directory every domain start fails ("Unable to open file").
pub fn qemu_log_dir(f: &HostFacts) -> Finding {
    const C: &str = "qemu-log-dir";
    let dir = super::facts::QEMU_LOG_DIR;
    if f.qemu_log_dir_missing {
        return Finding::fail(
            C,
            format!("{dir} is missing: every domain start fails on its console log"),
            format!("no directory {dir}"),
            format!("{FIX} (mkdir -p {dir}; chmod 0755 {dir}, as Debian's libvirt-daemon-system makes it)"),
        );
    }
    Finding::ok(C, format!("{dir} exists"), dir)
}

pub fn daemon(f: &HostFacts, d: Daemon) -> Finding {
    let check = d.name();
    let Some(st) = f.daemons.iter().find(|s| s.daemon == d) else {
        return Finding::warn(check, format!("{check}: not checked"), "", UP);
    };
    let fix = if f.systemd {
        format!("{UP} (or `systemctl start {}`)", d.unit())
    } else {
        format!("{UP} (starts it without systemd)")
    };
    // dbus is wanted (libvirt talks to it, e.g. for firewalld) but VMs run without it.
    let bad = if d == Daemon::Dbus {
        Status::Warn
    } else {
        Status::Fail
    };
    match (st.pid, st.answering) {
        (Some(pid), true) => Finding::ok(
            check,
            format!("{check} running and answering"),
            format!("pid {pid}, {}", d.socket()),
        ),
        (None, true) => Finding::ok(
            check,
            format!("{check} answering"),
            format!(
                "{} answers (socket-activated or in another pid namespace)",
                d.socket()
            ),
        ),
        (Some(pid), false) => Finding::fail(
            check,
            format!("{check} runs but does not answer"),
            format!("pid {pid}, nothing answers on {}", d.socket()),
            format!(
                "look at its log ({}), then restart it: {UP}",
                d.log_file().display()
            ),
        )
        .with_status(bad),
        (None, false) => Finding::fail(
            check,
            format!("{check} is not running"),
            format!("no process, nothing answers on {}", d.socket()),
            fix,
        )
        .with_status(bad),
    }
}

fn version_str(v: (u32, u32, u32)) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

pub fn libvirt(f: &HostFacts) -> Finding {
    const C: &str = "libvirt";
    let version = f
        .libvirt_version
        .map(version_str)
        .unwrap_or_else(|| "unknown".into());
    let lv = firewall::libvirt_firewall(&f.firewall, f.libvirt_version);
    let fw = match lv {
        LibvirtFirewall::Nftables => "firewall_backend nftables (native nft rules)".to_owned(),
        LibvirtFirewall::IptablesCommand(b) => {
            let how = if f
                .libvirt_version
                .is_some_and(|v| v >= firewall::FIREWALL_BACKEND_SINCE)
            {
                format!(
                    "firewall_backend = {:?}",
                    f.firewall.libvirt_setting.as_deref().unwrap_or("iptables")
                )
            } else {
                "libvirt < 10.4 has no firewall_backend setting".to_owned()
            };
            format!(
                "rules through the `iptables` command ({}), {how}",
                b.map(|b| b.as_str()).unwrap_or("not installed")
            )
        }
    };
    let saw = format!("libvirt {version}; {fw}");
    let answering = f
        .daemons
        .iter()
        .any(|d| d.daemon == Daemon::Libvirtd && d.answering);
    match (&f.libvirt_error, answering) {
        (Some(e), true) => Finding::fail(
            C,
            "libvirtd answers but a connection fails",
            format!("{saw}; {e}"),
            UP,
        ),
        _ => Finding::ok(C, format!("libvirt {version}"), saw),
    }
}

pub fn iptables_backend(f: &HostFacts) -> Finding {
    const C: &str = "iptables-backend";
    let fw = &f.firewall;
    let lv = firewall::libvirt_firewall(fw, f.libvirt_version);
    let Some(libvirt_backend) = lv.backend() else {
        return Finding::fail(
            C,
            "`iptables` is not installed: libvirt cannot start a NAT network",
            "`iptables --version` failed",
            "apt-get install iptables",
        );
    };
    let rules = |r: &Option<firewall::RuleSet>| {
        r.as_ref()
            .map(|r| r.describe())
            .unwrap_or_else(|| "not installed".into())
    };
    let saw = format!(
        "`iptables` is {}; libvirt uses {}; legacy tables: {}; nft tables: {}",
        fw.iptables_backend.map(|b| b.as_str()).unwrap_or("missing"),
        match lv {
            LibvirtFirewall::Nftables => "native nftables".to_owned(),
            LibvirtFirewall::IptablesCommand(_) => format!("iptables-{}", libvirt_backend.as_str()),
        },
        rules(&fw.legacy),
        rules(&fw.nft),
    );
    match firewall::mismatch(fw, lv) {
        None => Finding::ok(C, "libvirt's rules go where the host's rules are", saw),
        Some(m) => Finding::fail(
            C,
            format!(
                "the host's rules are in {} but libvirt would put its rules in {}: NAT guests get no traffic through",
                m.host.as_str(),
                m.libvirt.as_str()
            ),
            saw,
            format!(
                "{FIX} (update-alternatives --set iptables {}{})",
                m.host.iptables_path(),
                if lv == LibvirtFirewall::Nftables {
                    ", and firewall_backend = \"iptables\" in /etc/libvirt/network.conf"
                } else {
                    ""
                }
            ),
        ),
    }
}

pub fn ip_forward(f: &HostFacts) -> Finding {
    const C: &str = "ip-forward";
    match (f.ip_forward, f.ip_forward_writable) {
        (Some(true), _) => Finding::ok(C, "IPv4 forwarding is on", "net.ipv4.ip_forward = 1"),
        (Some(false), true) => Finding::warn(
            C,
            "IPv4 forwarding is off (libvirt turns it on when it starts a NAT network)",
            "net.ipv4.ip_forward = 0",
            FIX,
        ),
        (Some(false), false) => Finding::fail(
            C,
            "IPv4 forwarding is off and /proc/sys is read-only: libvirt cannot start a NAT network",
            "net.ipv4.ip_forward = 0, not writable",
            "start the container with `--sysctl net.ipv4.ip_forward=1` (or --privileged)",
        ),
        (None, _) => Finding::warn(
            C,
            "cannot read net.ipv4.ip_forward",
            "/proc/sys/net/ipv4/ip_forward unreadable",
            "mount /proc",
        ),
    }
}

pub fn dnsmasq(f: &HostFacts) -> Finding {
    const C: &str = "dnsmasq";
    match &f.dnsmasq {
        Some(p) => Finding::ok(
            C,
            "dnsmasq installed (DHCP and DNS for guest networks)",
            p.display().to_string(),
        ),
        None => Finding::fail(
            C,
            "dnsmasq is missing: guests on a libvirt network get no address",
            "dnsmasq not found",
            "apt-get install dnsmasq-base",
        ),
    }
}

pub fn security(f: &HostFacts) -> Finding {
    const C: &str = "security";
    let driver = f.qemu_conf.get_str("security_driver").unwrap_or("default");
    let apparmor = match f.apparmor_enabled {
        Some(true) => "enabled",
        Some(false) => "disabled",
        None => "absent",
    };
    let selinux = match f.selinux_enforcing {
        Some(true) => "enforcing",
        Some(false) => "permissive",
        None => "absent",
    };
    let saw =
        format!("AppArmor: {apparmor}; SELinux: {selinux}; qemu.conf security_driver: {driver}");
    if f.apparmor_enabled == Some(true) && !f.apparmor_parser && driver != "none" {
        return Finding::warn(
            C,
            "AppArmor is on but apparmor_parser is missing: libvirt cannot load qemu's profile",
            saw,
            "apt-get install apparmor (or security_driver = \"none\" in /etc/libvirt/qemu.conf)",
        );
    }
    if f.selinux_enforcing == Some(true) {
        return Finding::warn(
            C,
            "SELinux is enforcing: box images must carry the virt_image_t label",
            saw,
            "keep images in the libvirt pool (labelled by libvirt), or `restorecon` them",
        );
    }
    Finding::ok(C, "no security module in the way", saw)
}

pub fn pool_space(f: &HostFacts) -> Finding {
    const C: &str = "pool-space";
    const GIB: u64 = 1 << 30;
    let Some(free) = f.pool_free_bytes else {
        return Finding::warn(
            C,
            "cannot tell the free space",
            f.pool_dir.display().to_string(),
            "check `df`",
        );
    };
    let saw = format!(
        "{:.1} GiB free at {}",
        free as f64 / GIB as f64,
        f.pool_dir.display()
    );
    if free < GIB {
        Finding::fail(
            C,
            "less than 1 GiB free where the pool lives",
            saw,
            "free some space (`kvmdrive box prune`)",
        )
    } else if free < 5 * GIB {
        Finding::warn(
            C,
            "less than 5 GiB free where the pool lives",
            saw,
            "free some space",
        )
    } else {
        Finding::ok(C, "enough free space for the pool", saw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::daemons::DaemonStatus;
    use crate::host::facts::{CpuFacts, KvmFactsView};
    use crate::host::firewall::{parse_save, Backend, FirewallFacts};
    use crate::host::kvm_access::{DevNode, Identity};
    use crate::host::probe::{Outcome, ProbeReport};

    /// This CI container as measured: kvm_pvm, root-only /dev/kvm, Debian's
    /// libvirt-qemu, no daemons, iptables on nft, nothing in either table.
    fn ci_container() -> HostFacts {
        HostFacts {
            kvm: KvmFactsView {
                dev_kvm_exists: true,
                dev_kvm_openable: true,
                cpu_virt_flags: false,
                kvm_pvm: true,
                kvm_failure: None,
            },
            qemu_group: "libvirt-qemu".into(),
            kvm_gid: Some(107),
            cpu_flags: CpuFacts {
                hypervisor: true,
                kvm_modules: vec!["kvm_pvm".into()],
                ..Default::default()
            },
            qemu_binary: Some("/usr/bin/qemu-system-x86_64".into()),
            daemons: [Daemon::Dbus, Daemon::Virtlogd, Daemon::Libvirtd]
                .map(|d| DaemonStatus {
                    daemon: d,
                    pid: None,
                    answering: false,
                })
                .to_vec(),
            libvirt_version: Some((9, 0, 0)),
            firewall: FirewallFacts {
                iptables_backend: Some(Backend::Nft),
                legacy: Some(parse_save("")),
                nft: Some(parse_save("")),
                ..Default::default()
            },
            ip_forward: Some(false),
            ip_forward_writable: true,
            dnsmasq: Some("/usr/sbin/dnsmasq".into()),
            pool_dir: "/var/lib/libvirt/images".into(),
            pool_free_bytes: Some(80 << 30),
            ..crate::host::facts::no_udev_host()
        }
    }

    fn find<'a>(all: &'a [Finding], check: &str) -> &'a Finding {
        all.iter().find(|f| f.check == check).unwrap()
    }

    #[test]
    fn ci_container_names_the_privilege_problem_and_tcg() {
        let all = run_checks(&ci_container());
        let access = find(&all, "kvm-access");
        assert_eq!(access.status, Status::Fail);
        assert!(access.summary.contains("libvirt-qemu"), "{access:?}");
        assert!(access
            .fix
            .as_deref()
            .unwrap()
            .contains("kvmdrive host up --fix"));
        assert_eq!(find(&all, "caps-cache").status, Status::Fail);
        let kvm = find(&all, "kvm-runs-guests");
        assert_eq!(kvm.status, Status::Warn);
        assert!(kvm.summary.starts_with("use TCG"), "{kvm:?}");
        assert!(kvm.summary.contains("kvm_pvm"), "{kvm:?}");
        assert_eq!(find(&all, "libvirtd").status, Status::Fail);
        assert_eq!(find(&all, "dbus").status, Status::Warn);
        assert_eq!(find(&all, "iptables-backend").status, Status::Ok);
        assert_eq!(exit_code(&all), 1);
    }

    #[test]
    fn udev_mode_or_root_qemu_fixes_access() {
        let mut f = ci_container();
        f.dev_kvm = Some(DevNode {
            uid: 0,
            gid: 107,
            mode: 0o660,
        });
        assert_eq!(kvm_access(&f).status, Status::Ok);
        assert_eq!(caps_cache(&f).status, Status::Ok);
        let mut f = ci_container();
        f.qemu_identity = Some(Identity {
            user: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
        });
        assert_eq!(kvm_access(&f).status, Status::Ok);
    }

    #[test]
    fn a_ready_host_passes() {
        let mut f = ci_container();
        f.dev_kvm = Some(DevNode {
            uid: 0,
            gid: 107,
            mode: 0o660,
        });
        f.daemons.iter_mut().for_each(|d| {
            d.pid = Some(100);
            d.answering = true;
        });
        let all = run_checks(&f);
        assert_eq!(exit_code(&all), 0, "{all:#?}");
    }

    #[test]
    fn legacy_rules_with_nft_iptables_fail() {
        let mut f = ci_container();
        f.firewall.legacy = Some(parse_save(
            "*filter\n:FORWARD DROP [0:0]\n:DOCKER - [0:0]\n-A FORWARD -j DOCKER\nCOMMIT\n",
        ));
        let fw = iptables_backend(&f);
        assert_eq!(fw.status, Status::Fail);
        assert!(fw.summary.contains("legacy"), "{fw:?}");
        assert!(
            fw.fix
                .as_deref()
                .unwrap()
                .contains("/usr/sbin/iptables-legacy"),
            "{fw:?}"
        );
        f.firewall.iptables_backend = Some(Backend::Legacy);
        assert_eq!(iptables_backend(&f).status, Status::Ok);
    }

    #[test]
    fn probe_decides_over_flags() {
        let mut f = ci_container();
        f.probe = Some(ProbeReport {
            key: String::new(),
            results: vec![
                ("tcg/qemu64".into(), Outcome::Ran),
                ("kvm/host".into(), Outcome::Hung),
                ("kvm/qemu64".into(), Outcome::Hung),
            ],
            seconds: 5.0,
        });
        let k = kvm_runs_guests(&f);
        assert_eq!(k.status, Status::Warn);
        assert!(k.summary.starts_with("use TCG"));
        assert!(k.saw.contains("kvm/host: hangs"), "{k:?}");
        // A real KVM host where only named models start (the MSR quirk).
        f.probe = Some(ProbeReport {
            key: String::new(),
            results: vec![
                ("tcg/qemu64".into(), Outcome::Ran),
                (
                    "kvm/host".into(),
                    Outcome::Aborted("failed to set MSR 0x10a".into()),
                ),
                ("kvm/qemu64".into(), Outcome::Ran),
            ],
            seconds: 0.4,
        });
        assert_eq!(kvm_runs_guests(&f).status, Status::Ok);
        let m = cpu_modes(&f);
        assert_eq!(m.status, Status::Warn);
        assert!(m.summary.contains("qemu64"));
    }

    #[test]
    fn a_real_guests_kvm_failure_overrides_the_probe() {
        let mut f = ci_container();
        f.kvm = KvmFactsView {
            dev_kvm_exists: true,
            dev_kvm_openable: true,
            cpu_virt_flags: true,
            kvm_pvm: false,
            kvm_failure: None,
        };
        f.probe = Some(ProbeReport {
            key: String::new(),
            results: vec![
                ("tcg/qemu64".into(), Outcome::Ran),
                ("kvm/qemu64".into(), Outcome::Ran),
            ],
            seconds: 0.3,
        });
        assert_eq!(kvm_runs_guests(&f).status, Status::Ok);
        f.kvm.kvm_failure = Some(crate::host::experience::KvmFailure {
            key: String::new(),
            date: "2026-12-01 01:02:03".into(),
            domain: "kvmdrive-p-web".into(),
            line: "KVM internal error. Suberror: 1".into(),
        });
        let k = kvm_runs_guests(&f);
        assert_eq!(k.status, Status::Warn);
        assert!(
            k.summary.contains("KVM cannot run guests on this host"),
            "{k:?}"
        );
        assert!(
            k.saw.contains("kvmdrive-p-web") && k.saw.contains("2026-12-01"),
            "{k:?}"
        );
    }

    #[test]
    fn a_missing_qemu_log_dir_fails_with_the_fix() {
        let mut f = ci_container();
        assert_eq!(qemu_log_dir(&f).status, Status::Ok);
        f.qemu_log_dir_missing = true;
        let d = qemu_log_dir(&f);
        assert_eq!(d.status, Status::Fail);
        assert!(d.summary.contains("/var/log/libvirt/qemu"), "{d:?}");
        assert!(
            d.fix.as_deref().unwrap().contains("kvmdrive host up --fix"),
            "{d:?}"
        );
    }

    #[test]
    fn ip_forward_read_only_fails() {
        let mut f = ci_container();
        f.ip_forward_writable = false;
        assert_eq!(ip_forward(&f).status, Status::Fail);
        f.ip_forward = Some(true);
        assert_eq!(ip_forward(&f).status, Status::Ok);
    }
}
