//! `host up --fix`: what to repair, decided from the facts by a pure
//! function ([`plan`]), then applied one printed step at a time. A fixed
//! host plans nothing, which is what makes a second run change nothing.

use std::path::Path;

use super::error::HostError;
use serde::Serialize;

use super::facts::HostFacts;
use super::firewall::{self, Backend, LibvirtFirewall};
use super::kvm_access::{self, DEV_KVM};
use super::qemu_conf;

/// One repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fix", rename_all = "kebab-case")]
pub enum Fix {
    /// chown root:kvm, chmod 0660 /dev/kvm: what udev would have done.
    DevKvmUdevMode { kvm_gid: u32 },
    /// `user = "root"`, `group = "root"` in qemu.conf (when no kvm group
    /// would let the qemu user in).
    QemuRunsAsRoot,
    /// Point `iptables` (and `ip6tables`) at the backend holding the host's rules.
    IptablesAlternative { backend: Backend },
    /// libvirt >= 10.4: `firewall_backend = "iptables"` in network.conf.
    LibvirtFirewallIptables,
    /// net.ipv4.ip_forward = 1.
    IpForward,
    /// mkdir /var/log/libvirt/qemu, root:root 0755 as Debian's package has it.
    QemuLogDir,
}

impl Fix {
    /// Does libvirtd have to restart for this to take effect? (qemu.conf
    /// and the firewall backend are read at start; libvirtd re-creates the
    /// rules of running networks when it starts.)
    pub fn needs_libvirtd_restart(&self) -> bool {
        matches!(
            self,
            Fix::QemuRunsAsRoot | Fix::IptablesAlternative { .. } | Fix::LibvirtFirewallIptables
        )
    }

    pub fn check(&self) -> &'static str {
        match self {
            Fix::DevKvmUdevMode { .. } | Fix::QemuRunsAsRoot => "kvm-access",
            Fix::IptablesAlternative { .. } | Fix::LibvirtFirewallIptables => "iptables-backend",
            Fix::IpForward => "ip-forward",
            Fix::QemuLogDir => "qemu-log-dir",
        }
    }

    pub fn describe(&self, f: &HostFacts) -> String {
        match self {
            Fix::DevKvmUdevMode { .. } => format!(
                "/dev/kvm: {} -> root:kvm 0660, as udev would make it ({} can open it; libvirt keeps its capabilities cache)",
                f.dev_kvm.map(|n| n.describe()).unwrap_or_default(),
                f.qemu_user
            ),
            Fix::QemuRunsAsRoot => format!(
                "{}: user = \"root\", group = \"root\" (qemu runs as root and can open /dev/kvm)",
                f.qemu_conf.path.display()
            ),
            Fix::IptablesAlternative { backend } => format!(
                "update-alternatives --set iptables {} (the host's rules are in {})",
                backend.iptables_path(),
                backend.as_str()
            ),
            Fix::LibvirtFirewallIptables => {
                format!("{}: firewall_backend = \"iptables\"", firewall::NETWORK_CONF)
            }
            Fix::IpForward => "net.ipv4.ip_forward = 1".into(),
            Fix::QemuLogDir => format!(
                "mkdir {}, root:root 0755 (domain starts need it for qemu's console log)",
                super::facts::QEMU_LOG_DIR
            ),
        }
    }
}

/// What `--fix` would change on a host with these facts.
pub fn plan(f: &HostFacts) -> Vec<Fix> {
    let mut fixes = Vec::new();
    if super::doctor::qemu_can_open_kvm(f) == Some(false) {
        let udev_works = match (f.kvm_gid, &f.qemu_identity) {
            (Some(gid), Some(who)) => {
                kvm_access::can_open_rw(who, &kvm_access::udev_node(gid)).then_some(gid)
            }
            _ => None,
        };
        match udev_works {
            Some(kvm_gid) => fixes.push(Fix::DevKvmUdevMode { kvm_gid }),
            None => fixes.push(Fix::QemuRunsAsRoot),
        }
    }
    let lv = firewall::libvirt_firewall(&f.firewall, f.libvirt_version);
    if let Some(m) = firewall::mismatch(&f.firewall, lv) {
        if lv == LibvirtFirewall::Nftables {
            fixes.push(Fix::LibvirtFirewallIptables);
        }
        if f.firewall.iptables_backend != Some(m.host) {
            fixes.push(Fix::IptablesAlternative { backend: m.host });
        }
    }
    if f.ip_forward == Some(false) && f.ip_forward_writable {
        fixes.push(Fix::IpForward);
    }
    if f.qemu_log_dir_missing {
        fixes.push(Fix::QemuLogDir);
    }
    fixes
}

/// Applies one fix.
pub fn apply(fix: &Fix, f: &HostFacts) -> Result<(), HostError> {
    match fix {
        Fix::DevKvmUdevMode { kvm_gid } => {
            nix::unistd::chown(
                DEV_KVM,
                Some(nix::unistd::Uid::from_raw(0)),
                Some(nix::unistd::Gid::from_raw(*kvm_gid)),
            )
            .map_err(|e| HostError::io(format!("chown root:kvm {DEV_KVM}"))(e.into()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(DEV_KVM, std::fs::Permissions::from_mode(0o660))
                .map_err(HostError::io(format!("chmod 0660 {DEV_KVM}")))?;
        }
        Fix::QemuRunsAsRoot => {
            let path = &f.qemu_conf.path;
            edit_conf(path, &[("user", "root"), ("group", "root")])?;
        }
        Fix::IptablesAlternative { backend } => {
            let alt = super::alternatives::query("iptables").ok_or_else(|| {
                HostError::NoAlternatives {
                    wanted: backend.iptables_path().to_owned(),
                }
            })?;
            if !alt.has_choice(backend.iptables_path()) {
                return Err(HostError::NotAnAlternative {
                    path: backend.iptables_path().to_owned(),
                });
            }
            super::alternatives::set("iptables", backend.iptables_path())?;
            // ip6tables follows when it exists (libvirt also uses it for IPv6 networks).
            if super::alternatives::query("ip6tables")
                .is_some_and(|a| a.has_choice(backend.ip6tables_path()))
            {
                super::alternatives::set("ip6tables", backend.ip6tables_path())?;
            }
        }
        Fix::LibvirtFirewallIptables => {
            edit_conf(
                Path::new(firewall::NETWORK_CONF),
                &[("firewall_backend", "iptables")],
            )?;
        }
        Fix::IpForward => {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n")
                .map_err(HostError::io("write /proc/sys/net/ipv4/ip_forward"))?;
        }
        Fix::QemuLogDir => {
            use std::os::unix::fs::PermissionsExt;
            let dir = super::facts::QEMU_LOG_DIR;
            std::fs::create_dir_all(dir).map_err(HostError::io(format!("mkdir -p {dir}")))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(HostError::io(format!("chmod 0755 {dir}")))?;
        }
    }
    Ok(())
}

/// Sets string settings in a virConf file, writing it only when it changes.
fn edit_conf(path: &Path, settings: &[(&str, &str)]) -> Result<(), HostError> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(HostError::io(format!("read {}", path.display()))(e)),
    };
    let mut changed = false;
    for (k, v) in settings {
        if let Some(new) = qemu_conf::set_string(&text, k, v) {
            text = new;
            changed = true;
        }
    }
    if changed {
        std::fs::write(path, text).map_err(HostError::io(format!("write {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::firewall::{parse_save, FirewallFacts};
    use crate::host::kvm_access::{DevNode, Identity};

    fn facts() -> HostFacts {
        HostFacts {
            kvm_gid: Some(107),
            firewall: FirewallFacts {
                iptables_backend: Some(Backend::Nft),
                legacy: Some(parse_save("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n")),
                nft: Some(parse_save("")),
                ..Default::default()
            },
            libvirt_version: Some((9, 0, 0)),
            ip_forward: Some(false),
            ip_forward_writable: true,
            ..crate::host::facts::no_udev_host()
        }
    }

    #[test]
    fn broken_ci_container_gets_every_fix() {
        let p = plan(&facts());
        assert_eq!(
            p,
            vec![
                Fix::DevKvmUdevMode { kvm_gid: 107 },
                Fix::IptablesAlternative {
                    backend: Backend::Legacy
                },
                Fix::IpForward
            ]
        );
        assert!(p[1].needs_libvirtd_restart());
    }

    #[test]
    fn a_missing_qemu_log_dir_is_created() {
        let mut f = facts();
        f.qemu_log_dir_missing = true;
        let p = plan(&f);
        assert_eq!(p.last(), Some(&Fix::QemuLogDir));
        assert_eq!(Fix::QemuLogDir.check(), "qemu-log-dir");
        assert!(!Fix::QemuLogDir.needs_libvirtd_restart());
    }

    #[test]
    fn fixed_host_plans_nothing() {
        let mut f = facts();
        f.dev_kvm = Some(DevNode {
            uid: 0,
            gid: 107,
            mode: 0o660,
        });
        f.firewall.iptables_backend = Some(Backend::Legacy);
        f.ip_forward = Some(true);
        assert_eq!(plan(&f), vec![]);
    }

    #[test]
    fn qemu_user_outside_the_kvm_group_runs_as_root() {
        let mut f = facts();
        f.qemu_identity = Some(Identity {
            user: "qemu".into(),
            uid: 107,
            gid: 107,
            groups: vec![107],
        });
        f.kvm_gid = Some(36);
        assert_eq!(plan(&f)[0], Fix::QemuRunsAsRoot);
        f.kvm_gid = None;
        assert_eq!(plan(&f)[0], Fix::QemuRunsAsRoot);
    }

    #[test]
    fn libvirt_10_4_native_nft_also_switches_firewall_backend() {
        let mut f = facts();
        f.libvirt_version = Some((10, 6, 0));
        let p = plan(&f);
        assert!(p.contains(&Fix::LibvirtFirewallIptables), "{p:?}");
        assert!(
            p.contains(&Fix::IptablesAlternative {
                backend: Backend::Legacy
            }),
            "{p:?}"
        );
    }

    #[test]
    fn edit_conf_writes_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("qemu.conf");
        std::fs::write(&p, "#user = \"libvirt-qemu\"\n").unwrap();
        edit_conf(&p, &[("user", "root"), ("group", "root")]).unwrap();
        let once = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            once,
            "#user = \"libvirt-qemu\"\nuser = \"root\"\ngroup = \"root\"\n"
        );
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        edit_conf(&p, &[("user", "root"), ("group", "root")]).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), mtime);
    }
}
