//! Configuring a machine's extra NICs inside the guest, as Vagrant's guest
//! capabilities do: a probe over SSH says which network system the guest runs
//! (netplan, NetworkManager, systemd-networkd or ifupdown) and each NIC's
//! interface name (found by MAC); then one script writes that system's
//! configuration for each NIC and applies it when it changed. Files persist,
//! so a halted machine comes back with the same addresses; a second `up`
//! rewrites nothing. The generators are pure and unit-tested for each system.

use super::nics::GuestAddress;
use super::ssh::shell_quote;

/// The network configuration system a guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestSystem {
    Netplan,
    NetworkManager,
    Networkd,
    Ifupdown,
}

impl GuestSystem {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestSystem::Netplan => "netplan",
            GuestSystem::NetworkManager => "networkmanager",
            GuestSystem::Networkd => "networkd",
            GuestSystem::Ifupdown => "ifupdown",
        }
    }
}

/// An extra NIC as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNic {
    pub mac: String,
    pub ifname: String,
    pub address: GuestAddress,
}

/// A file the configuration consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    pub path: String,
    pub mode: &'static str,
    pub content: String,
}

/// Prints `system=NAME` (netplan, networkmanager, networkd, ifupdown or
/// unknown) and one `mac=MAC if=NAME` line per interface, in the order
/// Vagrant's guest capabilities prefer.
pub const PROBE_SCRIPT: &str = r#"if command -v netplan >/dev/null 2>&1 && [ -d /etc/netplan ]; then s=netplan
elif command -v nmcli >/dev/null 2>&1 && nmcli -t -f RUNNING general 2>/dev/null | grep -q running; then s=networkmanager
elif [ -d /run/systemd/netif ] && command -v networkctl >/dev/null 2>&1 && pidof systemd-networkd >/dev/null 2>&1; then s=networkd
elif [ -f /etc/network/interfaces ] && command -v ifup >/dev/null 2>&1; then s=ifupdown
else s=unknown; fi
echo "system=$s"
for i in /sys/class/net/*; do echo "mac=$(cat "$i/address" 2>/dev/null) if=${i##*/}"; done"#;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub system: Option<GuestSystem>,
    /// (mac, interface name), MACs lowercase.
    pub interfaces: Vec<(String, String)>,
}

pub fn parse_probe(out: &str) -> Probe {
    let mut p = Probe {
        system: None,
        interfaces: Vec::new(),
    };
    for line in out.lines() {
        if let Some(s) = line.strip_prefix("system=") {
            p.system = match s.trim() {
                "netplan" => Some(GuestSystem::Netplan),
                "networkmanager" => Some(GuestSystem::NetworkManager),
                "networkd" => Some(GuestSystem::Networkd),
                "ifupdown" => Some(GuestSystem::Ifupdown),
                _ => None,
            };
        } else if let Some(rest) = line.strip_prefix("mac=") {
            if let Some((mac, ifname)) = rest.split_once(" if=") {
                p.interfaces
                    .push((mac.trim().to_ascii_lowercase(), ifname.trim().to_owned()));
            }
        }
    }
    p
}

fn tag(mac: &str) -> String {
    mac.replace(':', "")
}

/// systemd-networkd: a `.network` file matched by MAC, numbered before the
/// box's catch-all DHCP file (80-kvmdrive-dhcp.network).
pub fn networkd(nic: &GuestNic) -> GuestFile {
    let network = match nic.address {
        GuestAddress::Static(a) => format!("Address={a}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"),
        GuestAddress::Dhcp => "DHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n[DHCPv4]\nClientIdentifier=mac\nUseRoutes=no\nUseDNS=no\n".into(),
    };
    GuestFile {
        path: format!("/etc/systemd/network/10-kvmdrive-{}.network", tag(&nic.mac)),
        mode: "0644",
        content: format!(
            "# written by kvmdrive\n[Match]\nMACAddress={}\n\n[Link]\nRequiredForOnline=no\n\n[Network]\n{network}",
            nic.mac
        ),
    }
}

/// ifupdown: a stanza in /etc/network/interfaces.d (sourced by Debian's
/// /etc/network/interfaces).
pub fn ifupdown(nic: &GuestNic) -> GuestFile {
    let body = match nic.address {
        GuestAddress::Static(a) => format!("iface {} inet static\n    address {a}\n", nic.ifname),
        GuestAddress::Dhcp => format!("iface {} inet dhcp\n", nic.ifname),
    };
    GuestFile {
        path: format!("/etc/network/interfaces.d/kvmdrive-{}", tag(&nic.mac)),
        mode: "0644",
        content: format!(
            "# written by kvmdrive for {}\nallow-hotplug {}\n{body}",
            nic.mac, nic.ifname
        ),
    }
}

/// netplan: one file per NIC, matched by MAC.
pub fn netplan(nic: &GuestNic) -> GuestFile {
    let addr = match nic.address {
        GuestAddress::Static(a) => format!("      addresses: [\"{a}\"]\n      dhcp4: false\n"),
        GuestAddress::Dhcp => "      dhcp4: true\n      dhcp-identifier: mac\n      dhcp4-overrides:\n        use-routes: false\n        use-dns: false\n".into(),
    };
    GuestFile {
        path: format!("/etc/netplan/60-kvmdrive-{}.yaml", tag(&nic.mac)),
        mode: "0600",
        content: format!(
            "# written by kvmdrive\nnetwork:\n  version: 2\n  ethernets:\n    kvmdrive-{}:\n      match:\n        macaddress: \"{}\"\n      dhcp6: false\n{addr}",
            tag(&nic.mac),
            nic.mac
        ),
    }
}

/// NetworkManager: a keyfile connection bound to the MAC.
///
/// Every DHCP client here identifies itself by MAC: libvirt's DHCP host
/// table, where kvmdrive reserves the address, is keyed by MAC, and a
/// client-id that changes when our file replaces the box's (DUID vs MAC)
/// makes dnsmasq hold the reserved address for the earlier lease.
pub fn network_manager(nic: &GuestNic) -> GuestFile {
    let ipv4 = match nic.address {
        GuestAddress::Static(a) => format!("method=manual\naddress1={a}\n"),
        GuestAddress::Dhcp => {
            "method=auto\ndhcp-client-id=mac\nignore-auto-routes=true\nignore-auto-dns=true\nnever-default=true\n"
                .into()
        }
    };
    GuestFile {
        path: format!(
            "/etc/NetworkManager/system-connections/kvmdrive-{}.nmconnection",
            tag(&nic.mac)
        ),
        mode: "0600",
        content: format!(
            "# written by kvmdrive\n[connection]\nid=kvmdrive-{}\ntype=ethernet\nautoconnect=true\n\n[ethernet]\nmac-address={}\n\n[ipv4]\n{ipv4}\n[ipv6]\nmethod=ignore\n",
            tag(&nic.mac),
            nic.mac.to_ascii_uppercase()
        ),
    }
}

/// The file for one NIC on `system`.
pub fn file(system: GuestSystem, nic: &GuestNic) -> GuestFile {
    match system {
        GuestSystem::Netplan => netplan(nic),
        GuestSystem::NetworkManager => network_manager(nic),
        GuestSystem::Networkd => networkd(nic),
        GuestSystem::Ifupdown => ifupdown(nic),
    }
}

/// Commands that make `system` apply the files of `nics` (after a change,
/// or again for NICs whose address did not come: a DHCP client restarted
/// this way asks at once instead of at the end of its retry back-off).
pub fn apply(system: GuestSystem, nics: &[GuestNic]) -> String {
    match system {
        GuestSystem::Netplan => "netplan apply".into(),
        GuestSystem::NetworkManager => {
            let mut s = "nmcli connection reload".to_owned();
            for n in nics {
                s.push_str(&format!(
                    "; nmcli connection up kvmdrive-{} >/dev/null",
                    tag(&n.mac)
                ));
            }
            s
        }
        GuestSystem::Networkd => {
            let ifs: Vec<String> = nics.iter().map(|n| shell_quote(&n.ifname)).collect();
            format!(
                "networkctl reload && networkctl reconfigure {}",
                ifs.join(" ")
            )
        }
        GuestSystem::Ifupdown => {
            let mut s = String::from(
                "grep -qs '^source.*/etc/network/interfaces.d' /etc/network/interfaces || echo 'source /etc/network/interfaces.d/*' >> /etc/network/interfaces",
            );
            for n in nics {
                let i = shell_quote(&n.ifname);
                s.push_str(&format!("; ifdown {i} >/dev/null 2>&1; ifup {i}"));
            }
            s
        }
    }
}

/// The script (run with sudo) that writes each NIC's file when it differs
/// and applies the configuration when anything changed. Prints `changed`
/// or `unchanged`.
pub fn configure_script(system: GuestSystem, nics: &[GuestNic]) -> String {
    let mut s = String::from("set -e; changed=\n");
    for n in nics {
        let f = file(system, n);
        let (path, content) = (shell_quote(&f.path), shell_quote(&f.content));
        s.push_str(&format!(
            "if ! printf '%s' {content} | cmp -s - {path}; then mkdir -p \"$(dirname {path})\"; \
             printf '%s' {content} > {path}.kvmdrive; chmod {mode} {path}.kvmdrive; mv {path}.kvmdrive {path}; changed=1; fi\n",
            mode = f.mode
        ));
    }
    s.push_str(&format!(
        "if [ -n \"$changed\" ]; then {}; echo changed; else echo unchanged; fi\n",
        apply(system, nics)
    ));
    s
}

/// Waits up to `seconds` until every address in `ips` is on an interface
/// (a DHCP lease can take a moment after the configuration is applied).
/// Prints `missing: A B` with the ones that did not come, or nothing.
/// The deadline is the guest's clock, not a count of rounds: under TCG one
/// round of `ip` can take most of a second.
pub fn wait_script(ips: &[std::net::Ipv4Addr], seconds: u32) -> String {
    let list: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
    format!(
        "end=$(( $(date +%s) + {seconds} )); while :; do have=$(ip -4 -o addr show); missing=; \
         for a in {ips}; do case \"$have\" in *\" inet $a/\"*) ;; *) missing=\"$missing $a\";; esac; done; \
         [ -z \"$missing\" ] && exit 0; [ \"$(date +%s)\" -ge \"$end\" ] && break; sleep 0.5; done; echo \"missing:$missing\"",
        ips = list.join(" ")
    )
}

/// The addresses a [`wait_script`]'s output names as missing.
pub fn parse_missing(out: &str) -> Vec<std::net::Ipv4Addr> {
    out.lines()
        .filter_map(|l| l.strip_prefix("missing:"))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|a| a.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::net_config::IpWithPrefix;

    fn nic(addr: GuestAddress) -> GuestNic {
        GuestNic {
            mac: "52:54:00:ab:cd:ef".into(),
            ifname: "ens4".into(),
            address: addr,
        }
    }

    fn stat() -> GuestAddress {
        GuestAddress::Static(IpWithPrefix::parse("192.168.56.11", None).unwrap())
    }

    #[test]
    fn probe_output_is_read() {
        let p = parse_probe(
            "system=networkd\nmac=00:00:00:00:00:00 if=lo\nmac=52:54:00:AB:CD:EF if=ens4\n",
        );
        assert_eq!(p.system, Some(GuestSystem::Networkd));
        assert_eq!(p.interfaces[1], ("52:54:00:ab:cd:ef".into(), "ens4".into()));
        assert_eq!(parse_probe("system=unknown\n").system, None);
    }

    /// The reservation is keyed by MAC: a DHCP client must say its MAC as
    /// client id, as the box's own catch-all file does.
    #[test]
    fn dhcp_clients_identify_by_mac() {
        let d = nic(GuestAddress::Dhcp);
        assert!(networkd(&d)
            .content
            .contains("[DHCPv4]\nClientIdentifier=mac\n"));
        assert!(netplan(&d).content.contains("dhcp-identifier: mac\n"));
        assert!(network_manager(&d).content.contains("dhcp-client-id=mac\n"));
        assert!(!networkd(&nic(stat())).content.contains("ClientIdentifier"));
    }

    #[test]
    fn networkd_matches_the_mac_before_the_boxs_dhcp_file() {
        let f = networkd(&nic(stat()));
        assert_eq!(
            f.path,
            "/etc/systemd/network/10-kvmdrive-525400abcdef.network"
        );
        assert!(f.path.rsplit('/').next().unwrap() < "80-kvmdrive-dhcp.network");
        assert!(
            f.content
                .contains("[Match]\nMACAddress=52:54:00:ab:cd:ef\n"),
            "{}",
            f.content
        );
        assert!(
            f.content.contains("Address=192.168.56.11/24\n"),
            "{}",
            f.content
        );
        assert!(!f.content.contains("DHCP="));
        let f = networkd(&nic(GuestAddress::Dhcp));
        assert!(
            f.content.contains("DHCP=ipv4\n") && f.content.contains("UseRoutes=no"),
            "{}",
            f.content
        );
    }

    #[test]
    fn ifupdown_stanza_names_the_interface() {
        let f = ifupdown(&nic(stat()));
        assert_eq!(f.path, "/etc/network/interfaces.d/kvmdrive-525400abcdef");
        assert!(
            f.content.contains(
                "allow-hotplug ens4\niface ens4 inet static\n    address 192.168.56.11/24\n"
            ),
            "{}",
            f.content
        );
        assert!(ifupdown(&nic(GuestAddress::Dhcp))
            .content
            .contains("iface ens4 inet dhcp\n"));
    }

    #[test]
    fn netplan_matches_the_mac() {
        let f = netplan(&nic(stat()));
        assert_eq!(f.mode, "0600");
        assert!(
            f.content
                .contains("      match:\n        macaddress: \"52:54:00:ab:cd:ef\"\n"),
            "{}",
            f.content
        );
        assert!(
            f.content.contains("addresses: [\"192.168.56.11/24\"]"),
            "{}",
            f.content
        );
        // It is YAML that says what we mean.
        let v: serde_norway::Value = serde_norway::from_str(&f.content).unwrap();
        let e = &v["network"]["ethernets"]["kvmdrive-525400abcdef"];
        assert_eq!(e["dhcp4"], serde_norway::Value::Bool(false));
        let v: serde_norway::Value =
            serde_norway::from_str(&netplan(&nic(GuestAddress::Dhcp)).content).unwrap();
        assert_eq!(
            v["network"]["ethernets"]["kvmdrive-525400abcdef"]["dhcp4"],
            serde_norway::Value::Bool(true)
        );
    }

    #[test]
    fn network_manager_keyfile_binds_the_mac() {
        let f = network_manager(&nic(stat()));
        assert!(f.path.ends_with("/kvmdrive-525400abcdef.nmconnection"));
        assert_eq!(f.mode, "0600");
        assert!(
            f.content
                .contains("[ethernet]\nmac-address=52:54:00:AB:CD:EF\n"),
            "{}",
            f.content
        );
        assert!(
            f.content
                .contains("[ipv4]\nmethod=manual\naddress1=192.168.56.11/24\n"),
            "{}",
            f.content
        );
        assert!(network_manager(&nic(GuestAddress::Dhcp))
            .content
            .contains("method=auto\n"));
    }

    #[test]
    fn script_writes_only_what_differs_then_applies() {
        let s = configure_script(GuestSystem::Networkd, &[nic(stat())]);
        assert!(
            s.contains("cmp -s - '/etc/systemd/network/10-kvmdrive-525400abcdef.network'"),
            "{s}"
        );
        assert!(
            s.contains("networkctl reload && networkctl reconfigure 'ens4'"),
            "{s}"
        );
        assert!(s.contains("echo unchanged"));
        let s = configure_script(GuestSystem::Ifupdown, &[nic(GuestAddress::Dhcp)]);
        assert!(s.contains("ifup 'ens4'"), "{s}");
        let s = configure_script(GuestSystem::NetworkManager, &[nic(stat())]);
        assert!(
            s.contains("nmcli connection up kvmdrive-525400abcdef"),
            "{s}"
        );
        assert!(configure_script(GuestSystem::Netplan, &[nic(stat())]).contains("netplan apply"));
    }

    #[test]
    fn wait_script_checks_every_address() {
        let s = wait_script(
            &[
                "192.168.56.11".parse().unwrap(),
                "10.0.0.5".parse().unwrap(),
            ],
            15,
        );
        assert!(s.contains("+ 15 ))"), "{s}");
        assert!(s.contains("for a in 192.168.56.11 10.0.0.5;"), "{s}");
        crate::testutil::assert_sh_syntax(&s);
    }

    /// The wait reports what is missing, and the report is read back.
    #[test]
    fn wait_script_reports_the_missing_addresses() {
        let ip: std::net::Ipv4Addr = "203.0.113.77".parse().unwrap();
        let run = |ips: &[std::net::Ipv4Addr]| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(wait_script(ips, 0))
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let lo = std::net::Ipv4Addr::LOCALHOST;
        let out = run(&[lo, ip]);
        assert_eq!(parse_missing(&out), vec![ip], "{out}");
        assert_eq!(run(&[lo]), "", "127.0.0.1 is on lo");
        assert!(parse_missing("").is_empty());
    }

    /// The script runs: files land, a second run changes nothing.
    #[test]
    fn script_is_idempotent_in_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let mut n = nic(stat());
        n.ifname = "ens4".into();
        let script = configure_script(GuestSystem::Networkd, &[n])
            .replace("/etc/", &format!("{root}/etc/"))
            .replace("networkctl reload && networkctl reconfigure 'ens4'", "true");
        let run = || {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(run(), "changed\n");
        assert_eq!(run(), "unchanged\n");
        let written = std::fs::read_to_string(format!(
            "{root}/etc/systemd/network/10-kvmdrive-525400abcdef.network"
        ))
        .unwrap();
        assert!(written.contains("Address=192.168.56.11/24"));
    }
}
