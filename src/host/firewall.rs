//! iptables: legacy (x_tables) or nft, which one `iptables` resolves to, and
//! which one already holds the host's rules.
//!
//! Both backends hook into netfilter independently, so a packet must pass
//! both. When the runner (Docker, a CI agent) keeps `FORWARD DROP` in legacy
//! iptables while Debian points `iptables` at nft, libvirt (which calls
//! `iptables`) puts its accept and NAT rules into nft, the legacy DROP still
//! applies, and the guest network looks fine but forwards nothing. The fix is
//! to make libvirt use the backend that holds the host's rules.
//!
//! Parsing (`iptables-save`, `iptables --version`) and the verdict are pure;
//! [`FirewallFacts::gather`] runs the tools.

use std::process::Command;

use serde::Serialize;

use super::alternatives::{self, Alternative};

/// An iptables backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }

    /// Debian's path of this backend's `iptables`.
    pub fn iptables_path(self) -> &'static str {
        match self {
            Backend::Legacy => "/usr/sbin/iptables-legacy",
            Backend::Nft => "/usr/sbin/iptables-nft",
        }
    }

    pub fn ip6tables_path(self) -> &'static str {
        match self {
            Backend::Legacy => "/usr/sbin/ip6tables-legacy",
            Backend::Nft => "/usr/sbin/ip6tables-nft",
        }
    }

    fn save_command(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy-save",
            Backend::Nft => "iptables-nft-save",
        }
    }
}

/// Backend named in `iptables --version` ("iptables v1.8.9 (nf_tables)").
pub fn parse_version_backend(version_output: &str) -> Option<Backend> {
    if version_output.contains("(nf_tables)") {
        Some(Backend::Nft)
    } else if version_output.contains("(legacy)") {
        Some(Backend::Legacy)
    } else if version_output.trim_start().starts_with("iptables v1.") {
        // iptables before 1.8 only had the legacy backend and said nothing.
        Some(Backend::Legacy)
    } else {
        None
    }
}

/// What one backend's `iptables-save` shows, minus libvirt's own rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleSet {
    /// Rules (`-A` lines) not made by libvirt.
    pub foreign_rules: usize,
    /// libvirt's rules (in or jumping to `LIBVIRT_*` chains).
    pub libvirt_rules: usize,
    /// User chains not made by libvirt (`DOCKER`, `DOCKER-USER`, ...).
    pub foreign_chains: Vec<String>,
    /// Built-in chains whose policy is not ACCEPT, as `table/CHAIN=POLICY`.
    pub drop_policies: Vec<String>,
}

impl RuleSet {
    /// True when someone other than libvirt put something here that can
    /// decide a packet's fate.
    pub fn holds_host_rules(&self) -> bool {
        self.foreign_rules > 0 || !self.drop_policies.is_empty()
    }

    pub fn describe(&self) -> String {
        if !self.holds_host_rules() && self.libvirt_rules == 0 {
            return "empty".into();
        }
        let mut parts = vec![format!("{} host rule(s)", self.foreign_rules)];
        if !self.drop_policies.is_empty() {
            parts.push(format!("policies {}", self.drop_policies.join(",")));
        }
        if !self.foreign_chains.is_empty() {
            let mut chains = self.foreign_chains.clone();
            chains.truncate(4);
            parts.push(format!("chains {}", chains.join(",")));
        }
        if self.libvirt_rules > 0 {
            parts.push(format!("{} libvirt rule(s)", self.libvirt_rules));
        }
        parts.join(", ")
    }
}

fn is_libvirt_chain(name: &str) -> bool {
    name.starts_with("LIBVIRT_")
}

/// Summarises `iptables-save` output.
pub fn parse_save(text: &str) -> RuleSet {
    let mut set = RuleSet::default();
    let mut table = "";
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim();
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let (Some(chain), Some(policy)) = (words.next(), words.next()) else {
                continue;
            };
            if policy == "-" {
                if !is_libvirt_chain(chain) && !set.foreign_chains.iter().any(|c| c == chain) {
                    set.foreign_chains.push(chain.to_owned());
                }
            } else if policy != "ACCEPT" {
                set.drop_policies.push(format!("{table}/{chain}={policy}"));
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let mut words = rule.split_whitespace();
            let chain = words.next().unwrap_or_default();
            let jumps_to_libvirt = rule
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| (w[0] == "-j" || w[0] == "-g") && is_libvirt_chain(w[1]));
            if is_libvirt_chain(chain) || jumps_to_libvirt {
                set.libvirt_rules += 1;
            } else {
                set.foreign_rules += 1;
            }
        }
    }
    set
}

/// Everything the firewall check looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FirewallFacts {
    /// What `iptables --version` says (the backend libvirt < 10.4 uses).
    pub iptables_backend: Option<Backend>,
    /// `None` when that backend's tools are missing.
    pub legacy: Option<RuleSet>,
    pub nft: Option<RuleSet>,
    #[serde(skip)]
    pub alternative: Option<Alternative>,
    /// `firewall_backend` from /etc/libvirt/network.conf (libvirt >= 10.4).
    pub libvirt_setting: Option<String>,
}

/// Path of libvirt's network driver config.
pub const NETWORK_CONF: &str = "/etc/libvirt/network.conf";

impl FirewallFacts {
    pub fn gather() -> FirewallFacts {
        let version = run_stdout(Command::new("iptables").arg("--version"));
        FirewallFacts {
            iptables_backend: version.as_deref().and_then(parse_version_backend),
            legacy: save(Backend::Legacy),
            nft: save(Backend::Nft),
            alternative: alternatives::query("iptables"),
            libvirt_setting: std::fs::read_to_string(NETWORK_CONF).ok().and_then(|t| {
                super::qemu_conf::parse(&t)
                    .get_str("firewall_backend")
                    .map(str::to_owned)
            }),
        }
    }

    fn rules(&self, b: Backend) -> Option<&RuleSet> {
        match b {
            Backend::Legacy => self.legacy.as_ref(),
            Backend::Nft => self.nft.as_ref(),
        }
    }
}

fn save(b: Backend) -> Option<RuleSet> {
    run_stdout(&mut Command::new(b.save_command())).map(|t| parse_save(&t))
}

fn run_stdout(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How libvirt will install its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibvirtFirewall {
    /// Through the `iptables` command, whichever backend it resolves to.
    IptablesCommand(Option<Backend>),
    /// libvirt >= 10.4 with `firewall_backend = "nftables"`: native nft.
    Nftables,
}

/// libvirt (major, minor, micro) from which network.conf's
/// `firewall_backend` exists.
pub const FIREWALL_BACKEND_SINCE: (u32, u32, u32) = (10, 4, 0);

pub fn libvirt_firewall(
    facts: &FirewallFacts,
    libvirt_version: Option<(u32, u32, u32)>,
) -> LibvirtFirewall {
    let new_libvirt = libvirt_version.is_some_and(|v| v >= FIREWALL_BACKEND_SINCE);
    match facts.libvirt_setting.as_deref() {
        Some("nftables") if new_libvirt => LibvirtFirewall::Nftables,
        // 10.4+ prefers nftables when nothing is set and nft is available.
        None if new_libvirt && facts.nft.is_some() => LibvirtFirewall::Nftables,
        _ => LibvirtFirewall::IptablesCommand(facts.iptables_backend),
    }
}

impl LibvirtFirewall {
    pub fn backend(self) -> Option<Backend> {
        match self {
            LibvirtFirewall::IptablesCommand(b) => b,
            LibvirtFirewall::Nftables => Some(Backend::Nft),
        }
    }
}

/// The firewall verdict: which backend libvirt should use, when that differs
/// from what it uses now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The backend that holds the host's rules.
    pub host: Backend,
    /// The one libvirt would use.
    pub libvirt: Backend,
}

/// `Some` when the host's rules live in one backend and libvirt would put its
/// rules into the other. When both hold host rules, the one with a non-ACCEPT
/// policy (or more rules) is taken as the host's.
pub fn mismatch(facts: &FirewallFacts, lv: LibvirtFirewall) -> Option<Mismatch> {
    let libvirt = lv.backend()?;
    let held = |b| facts.rules(b).is_some_and(RuleSet::holds_host_rules);
    let host = match (held(Backend::Legacy), held(Backend::Nft)) {
        (true, false) => Backend::Legacy,
        (false, true) => Backend::Nft,
        (false, false) => return None,
        (true, true) => {
            let weight = |b| {
                let r = facts.rules(b).expect("held");
                (r.drop_policies.len(), r.foreign_rules)
            };
            if weight(Backend::Legacy) >= weight(Backend::Nft) {
                Backend::Legacy
            } else {
                Backend::Nft
            }
        }
    };
    (host != libvirt).then_some(Mismatch { host, libvirt })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_LEGACY: &str = "# Generated by iptables-save v1.8.9 on Fri Nov 27 23:55:18 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
COMMIT
";

    const LIBVIRT_NFT: &str = "# Generated by iptables-nft-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:LIBVIRT_FWI - [0:0]
:LIBVIRT_FWO - [0:0]
:LIBVIRT_INP - [0:0]
-A INPUT -j LIBVIRT_INP
-A FORWARD -j LIBVIRT_FWI
-A FORWARD -j LIBVIRT_FWO
-A LIBVIRT_FWO -s 192.168.121.0/24 -i virbr1 -j ACCEPT
-A LIBVIRT_INP -i virbr1 -p udp -m udp --dport 67 -j ACCEPT
COMMIT
";

    #[test]
    fn docker_rules_are_host_rules() {
        let r = parse_save(DOCKER_LEGACY);
        assert_eq!(r.foreign_rules, 4);
        assert_eq!(r.libvirt_rules, 0);
        assert_eq!(r.drop_policies, vec!["filter/FORWARD=DROP"]);
        assert_eq!(r.foreign_chains, vec!["DOCKER", "DOCKER-USER"]);
        assert!(r.holds_host_rules());
    }

    #[test]
    fn libvirt_rules_are_not_host_rules() {
        let r = parse_save(LIBVIRT_NFT);
        assert_eq!(r.foreign_rules, 0);
        assert_eq!(r.libvirt_rules, 5);
        assert!(r.foreign_chains.is_empty());
        assert!(!r.holds_host_rules());
        assert!(!parse_save("").holds_host_rules());
    }

    #[test]
    fn version_output_names_the_backend() {
        assert_eq!(
            parse_version_backend("iptables v1.8.9 (nf_tables)\n"),
            Some(Backend::Nft)
        );
        assert_eq!(
            parse_version_backend("iptables v1.8.9 (legacy)\n"),
            Some(Backend::Legacy)
        );
        assert_eq!(
            parse_version_backend("iptables v1.6.1\n"),
            Some(Backend::Legacy)
        );
        assert_eq!(parse_version_backend("bash: iptables: not found"), None);
    }

    fn facts(iptables: Backend, legacy: &str, nft: &str) -> FirewallFacts {
        FirewallFacts {
            iptables_backend: Some(iptables),
            legacy: Some(parse_save(legacy)),
            nft: Some(parse_save(nft)),
            ..Default::default()
        }
    }

    #[test]
    fn legacy_host_rules_with_iptables_on_nft_is_a_mismatch() {
        let f = facts(Backend::Nft, DOCKER_LEGACY, LIBVIRT_NFT);
        let lv = libvirt_firewall(&f, Some((9, 0, 0)));
        assert_eq!(lv, LibvirtFirewall::IptablesCommand(Some(Backend::Nft)));
        assert_eq!(
            mismatch(&f, lv),
            Some(Mismatch {
                host: Backend::Legacy,
                libvirt: Backend::Nft
            })
        );
        // Switched to legacy: consistent.
        let f = facts(Backend::Legacy, DOCKER_LEGACY, LIBVIRT_NFT);
        assert_eq!(mismatch(&f, libvirt_firewall(&f, Some((9, 0, 0)))), None);
    }

    #[test]
    fn no_host_rules_is_never_a_mismatch() {
        let f = facts(Backend::Nft, "", LIBVIRT_NFT);
        assert_eq!(mismatch(&f, libvirt_firewall(&f, None)), None);
    }

    #[test]
    fn libvirt_10_4_uses_native_nftables_unless_told_otherwise() {
        let mut f = facts(Backend::Legacy, DOCKER_LEGACY, "");
        assert_eq!(
            libvirt_firewall(&f, Some((10, 4, 0))),
            LibvirtFirewall::Nftables
        );
        assert!(mismatch(&f, libvirt_firewall(&f, Some((10, 4, 0)))).is_some());
        f.libvirt_setting = Some("iptables".into());
        assert_eq!(
            libvirt_firewall(&f, Some((10, 4, 0))),
            LibvirtFirewall::IptablesCommand(Some(Backend::Legacy))
        );
        // Before 10.4 the setting does not exist.
        f.libvirt_setting = Some("nftables".into());
        assert_eq!(
            libvirt_firewall(&f, Some((9, 0, 0))),
            LibvirtFirewall::IptablesCommand(Some(Backend::Legacy))
        );
    }
}
