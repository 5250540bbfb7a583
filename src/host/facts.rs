//! Gathers what the host checks look at. This is the only part of `host
//! check` that does I/O; the verdicts in [`super::doctor`] are pure functions
//! of a [`HostFacts`], so every verdict is unit-tested with made-up facts.
//! Plain gathering is fast (well under a second: file reads, two
//! `iptables-save` runs, one libvirt connection); the probe guest runs only
//! when asked for.

pub use super::programs::find_program;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::accel::KvmFacts;
use super::daemons::{self, DaemonStatus};
use super::experience::KvmFailure;
use super::firewall::FirewallFacts;
use super::kvm_access::{self, DevNode, Identity};
use super::probe::{self, ProbeReport};
use super::qemu_conf::{self, QemuConf};

/// The URI of the system libvirtd that `host` commands look at.
pub const SYSTEM_URI: &str = "qemu:///system";

/// Where libvirt's qemu driver writes each domain's log and console log.
pub const QEMU_LOG_DIR: &str = "/var/log/libvirt/qemu";

/// Where libvirt's default storage pool lives.
pub const POOL_DIR: &str = "/var/lib/libvirt/images";

/// Everything the checks need.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostFacts {
    pub kvm: KvmFactsView,
    pub dev_kvm: Option<DevNode>,
    #[serde(skip)]
    pub qemu_conf: QemuConf,
    /// The qemu user/group as configured (or defaulted).
    pub qemu_user: String,
    pub qemu_group: String,
    /// That user resolved, or why it could not be.
    pub qemu_identity: Option<Identity>,
    pub qemu_identity_error: Option<String>,
    pub kvm_gid: Option<u32>,
    /// From `--probe`, or from the cache of an earlier probe.
    pub probe: Option<ProbeReport>,
    pub probe_cached: bool,
    pub probe_error: Option<String>,
    pub cpu_flags: CpuFacts,
    pub qemu_binary: Option<PathBuf>,
    pub systemd: bool,
    pub daemons: Vec<DaemonStatus>,
    /// (major, minor, micro) of the running libvirtd, else of the installed one.
    pub libvirt_version: Option<(u32, u32, u32)>,
    /// Why connecting to libvirt failed, if it did.
    pub libvirt_error: Option<String>,
    pub firewall: FirewallFacts,
    pub ip_forward: Option<bool>,
    pub ip_forward_writable: bool,
    pub dnsmasq: Option<PathBuf>,
    pub apparmor_enabled: Option<bool>,
    pub apparmor_parser: bool,
    /// `/sys/fs/selinux/enforce`: Some(true) enforcing, Some(false) permissive.
    pub selinux_enforcing: Option<bool>,
    pub pool_dir: PathBuf,
    pub pool_free_bytes: Option<u64>,
    /// [`QEMU_LOG_DIR`] is not a directory.
    pub qemu_log_dir_missing: bool,
}

/// [`KvmFacts`] plus what the report shows about the CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KvmFactsView {
    pub dev_kvm_exists: bool,
    pub dev_kvm_openable: bool,
    pub cpu_virt_flags: bool,
    pub kvm_pvm: bool,
    /// A real guest died under KVM here (`super::experience`).
    pub kvm_failure: Option<KvmFailure>,
}

impl From<&KvmFacts> for KvmFactsView {
    fn from(k: &KvmFacts) -> Self {
        KvmFactsView {
            dev_kvm_exists: k.dev_kvm_exists,
            dev_kvm_openable: k.dev_kvm_openable,
            cpu_virt_flags: k.cpu_virt_flags,
            kvm_pvm: k.kvm_pvm,
            kvm_failure: k.kvm_failure.clone(),
        }
    }
}

impl KvmFactsView {
    pub fn to_accel_facts(&self) -> KvmFacts {
        KvmFacts {
            dev_kvm_exists: self.dev_kvm_exists,
            dev_kvm_openable: self.dev_kvm_openable,
            cpu_virt_flags: self.cpu_virt_flags,
            kvm_pvm: self.kvm_pvm,
            kvm_failure: self.kvm_failure.clone(),
            // The report's probe (maybe fresh from --probe) is judged on its own.
            probe_kvm_runs: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuFacts {
    /// `vmx`, `svm` (hardware virtualisation) and `hypervisor` (we are a guest).
    pub vmx: bool,
    pub svm: bool,
    pub hypervisor: bool,
    /// kvm_intel/kvm_amd `nested` parameter, when that module is loaded.
    pub nested: Option<bool>,
    /// KVM modules loaded (`kvm_intel`, `kvm_amd`, `kvm_pvm`).
    pub kvm_modules: Vec<String>,
}

/// What to gather.
#[derive(Debug, Clone, Copy, Default)]
pub struct GatherOptions {
    /// Boot the probe guest (a few seconds) instead of trusting the cache.
    pub probe: bool,
}

impl HostFacts {
    pub fn gather(opts: GatherOptions) -> HostFacts {
        let mut f = HostFacts::gather_local();
        f.daemons = daemons::ALL.iter().map(|&d| daemons::status(d)).collect();
        let libvirtd_answers = f
            .daemons
            .iter()
            .any(|d| d.daemon == daemons::Daemon::Libvirtd && d.answering);
        if libvirtd_answers {
            match crate::virt::Hypervisor::connect(SYSTEM_URI).and_then(|h| h.lib_version()) {
                Ok(v) => f.libvirt_version = Some(split_version(v)),
                Err(e) => f.libvirt_error = Some(e.to_string()),
            }
        } else {
            f.libvirt_error = Some(format!(
                "nothing answers on {}",
                daemons::Daemon::Libvirtd.socket()
            ));
        }
        if f.libvirt_version.is_none() {
            f.libvirt_version = installed_libvirt_version();
        }
        f.firewall = FirewallFacts::gather();
        if let Some(qemu) = &f.qemu_binary {
            if opts.probe {
                let with_kvm = f.kvm.dev_kvm_exists && f.kvm.dev_kvm_openable;
                // SeaBIOS alone takes about 4 s under kvm_pvm before the
                // probe code dies; a working KVM finishes in well under 1 s.
                match probe::run(qemu, with_kvm, Duration::from_secs(15)) {
                    Ok(r) => {
                        // A probe where not even TCG ran says more about the
                        // probe than about the host: do not keep it.
                        if r.tcg_runs() {
                            let _ = probe::store(&r);
                        }
                        f.probe = Some(r);
                    }
                    Err(e) => f.probe_error = Some(e.to_string()),
                }
            } else {
                f.probe = probe::cached(qemu);
                f.probe_cached = f.probe.is_some();
            }
        }
        f
    }

    /// The cheap part: files under /dev, /proc, /sys and /etc only (no
    /// processes started, no sockets). Used by the preflight.
    pub fn gather_local() -> HostFacts {
        let kvm = KvmFacts::read();
        let qemu_conf = QemuConf::read(Path::new(qemu_conf::DEFAULT_PATH)).unwrap_or_default();
        let fallback_user = if kvm_access::user_name_exists("libvirt-qemu") {
            "libvirt-qemu"
        } else {
            "qemu"
        };
        let qemu_user = qemu_conf.effective_user(fallback_user).to_owned();
        let qemu_group = qemu_conf.effective_group(fallback_user).to_owned();
        let qemu_identity = Identity::resolve(&qemu_user, &qemu_group);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let pool_dir = PathBuf::from(POOL_DIR);
        HostFacts {
            kvm: KvmFactsView::from(&kvm),
            dev_kvm: DevNode::stat(Path::new(kvm_access::DEV_KVM)),
            qemu_conf,
            qemu_user,
            qemu_group,
            qemu_identity: qemu_identity.as_ref().ok().cloned(),
            qemu_identity_error: qemu_identity.err(),
            kvm_gid: kvm_access::kvm_gid(),
            cpu_flags: cpu_facts(&cpuinfo),
            qemu_binary: find_program("qemu-system-x86_64"),
            systemd: daemons::has_systemd(),
            ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .ok()
                .map(|s| s.trim() == "1"),
            ip_forward_writable: nix::unistd::access(
                "/proc/sys/net/ipv4/ip_forward",
                nix::unistd::AccessFlags::W_OK,
            )
            .is_ok(),
            dnsmasq: find_program("dnsmasq"),
            apparmor_enabled: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .ok()
                .map(|s| s.trim() == "Y"),
            apparmor_parser: find_program("apparmor_parser").is_some(),
            selinux_enforcing: std::fs::read_to_string("/sys/fs/selinux/enforce")
                .ok()
                .map(|s| s.trim() == "1"),
            pool_free_bytes: free_bytes(&pool_dir),
            qemu_log_dir_missing: !Path::new(QEMU_LOG_DIR).is_dir(),
            pool_dir,
            ..HostFacts::default()
        }
    }
}

/// `lib_version()`'s number (major * 1e6 + minor * 1e3 + micro).
pub fn split_version(v: u32) -> (u32, u32, u32) {
    (v / 1_000_000, (v / 1000) % 1000, v % 1000)
}

/// "libvirtd (libvirt) 9.0.0" -> (9, 0, 0).
pub fn parse_version_line(s: &str) -> Option<(u32, u32, u32)> {
    let word = s.split_whitespace().last()?;
    let mut it = word.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        it.next()??,
        it.next().flatten().unwrap_or(0),
        it.next().flatten().unwrap_or(0),
    ))
}

fn installed_libvirt_version() -> Option<(u32, u32, u32)> {
    let out = std::process::Command::new(find_program("libvirtd")?)
        .arg("--version")
        .output()
        .ok()?;
    parse_version_line(String::from_utf8_lossy(&out.stdout).lines().next()?)
}

pub fn cpu_facts(cpuinfo: &str) -> CpuFacts {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| flags.contains(&f);
    let mut nested = None;
    let mut kvm_modules = Vec::new();
    for m in ["kvm_intel", "kvm_amd", "kvm_pvm"] {
        let dir = Path::new("/sys/module").join(m);
        if dir.exists() {
            kvm_modules.push(m.to_owned());
            if let Ok(v) = std::fs::read_to_string(dir.join("parameters/nested")) {
                nested = Some(matches!(v.trim(), "Y" | "1"));
            }
        }
    }
    CpuFacts {
        vmx: has("vmx"),
        svm: has("svm"),
        hypervisor: has("hypervisor"),
        nested,
        kvm_modules,
    }
}

/// Free bytes for unprivileged use at `dir`, or at its nearest existing
/// ancestor (the pool directory may not exist yet).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let st = nix::sys::statvfs::statvfs(existing).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// A Debian host without udev, as tests start from it: /dev/kvm root:root
/// 0600 and qemu running as `libvirt-qemu` (member of the kvm group, 107).
#[cfg(test)]
pub(crate) fn no_udev_host() -> HostFacts {
    HostFacts {
        dev_kvm: Some(DevNode {
            uid: 0,
            gid: 0,
            mode: 0o600,
        }),
        qemu_user: "libvirt-qemu".into(),
        qemu_identity: Some(Identity {
            user: "libvirt-qemu".into(),
            uid: 64055,
            gid: 64055,
            groups: vec![107, 64055],
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(split_version(9_000_000), (9, 0, 0));
        assert_eq!(split_version(10_004_001), (10, 4, 1));
        assert_eq!(
            parse_version_line("libvirtd (libvirt) 9.0.0"),
            Some((9, 0, 0))
        );
        assert_eq!(
            parse_version_line("libvirtd (libvirt) 10.10"),
            Some((10, 10, 0))
        );
        assert_eq!(parse_version_line(""), None);
    }

    #[test]
    fn cpu_flags_are_read() {
        let c = cpu_facts("processor : 0\nflags : fpu vmx hypervisor sse\n");
        assert!(c.vmx && c.hypervisor && !c.svm);
    }

    #[test]
    fn programs_are_found_in_sbin() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-kvmdrive").is_none());
    }
}
