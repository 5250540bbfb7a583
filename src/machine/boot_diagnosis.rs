//! Why a started machine never answered on SSH within its `boot_timeout`:
//! the error `up` reports then. It gathers what can be known from outside
//! the guest, the domain's state, the DHCP lease and ARP entry libvirt has
//! for the machine's MAC, whether port 22 refuses or ignores connections,
//! and the last console lines, and names one [`BootCause`]: the guest never
//! took its address (its network never came up), or it has its address but
//! nothing listens on port 22 (sshd never started), or port 22 is silent.
//! `lifecycle::ready` calls [`diagnose`] where its wait for the SSH banner
//! times out; a domain that stops running ends that wait earlier, so only
//! what cannot be told from outside waits for the whole `boot_timeout`.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::lifecycle::{Env, Failure};
use super::plan::{self, MachinePlan};
use crate::virt::guest_address::AddressSource;
use crate::virt::hypervisor::DomainState;

/// How long the port probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What port 22 of the guest's address did when asked once more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortProbe {
    /// The connection was accepted.
    Open,
    /// The guest answered with a reset: nothing listens on the port.
    Refused,
    /// No answer (timeout, unreachable, ...): the reason.
    Silent(String),
    /// Not asked: the guest is reachable only through the remote host.
    NotProbed,
}

/// The one cause `up` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootCause {
    /// The domain is not running (shut off, crashed, paused, missing).
    NotRunning,
    /// No DHCP lease and no ARP entry for the machine's MAC.
    NoAddress,
    /// The guest has an address and refuses connections on port 22.
    SshRefused(Ipv4Addr),
    /// The guest has an address; port 22 does not answer.
    SshSilent(Ipv4Addr, String),
    /// The guest has an address and port 22 accepts connections now (it
    /// was late, or accepts but sends no SSH banner).
    SshLate(Ipv4Addr),
    /// The guest has an address; port 22 was not probed (remote host).
    AddressOnly(Ipv4Addr),
}

/// What was found, and the cause decided from it.
#[derive(Debug, Clone)]
pub struct BootDiagnosis {
    pub state: String,
    pub mac: String,
    pub reserved: Ipv4Addr,
    /// `Err`: the leases could not be read (why).
    pub leased: Result<Vec<Ipv4Addr>, String>,
    /// `Err`: the ARP table could not be read (why).
    pub arp: Result<Vec<Ipv4Addr>, String>,
    pub cause: BootCause,
}

impl BootDiagnosis {
    /// Decides the cause from what was observed (pure). `probe` asks port
    /// 22 of an address, called only when the guest has one.
    pub fn decide(
        state: Option<DomainState>,
        state_label: String,
        mac: &str,
        reserved: Ipv4Addr,
        leased: Result<Vec<Ipv4Addr>, String>,
        arp: Result<Vec<Ipv4Addr>, String>,
        probe: impl FnOnce(Ipv4Addr) -> PortProbe,
    ) -> BootDiagnosis {
        // The reserved address when the guest uses it, else whatever it took.
        let lease = leased.as_deref().unwrap_or_default();
        let seen = arp.as_deref().unwrap_or_default();
        let address = lease
            .iter()
            .chain(seen)
            .copied()
            .find(|a| *a == reserved)
            .or_else(|| lease.first().or(seen.first()).copied());
        let cause = match (state, address) {
            (Some(DomainState::Running), None) => BootCause::NoAddress,
            (Some(DomainState::Running), Some(ip)) => match probe(ip) {
                PortProbe::Refused => BootCause::SshRefused(ip),
                PortProbe::Silent(why) => BootCause::SshSilent(ip, why),
                PortProbe::Open => BootCause::SshLate(ip),
                PortProbe::NotProbed => BootCause::AddressOnly(ip),
            },
            _ => BootCause::NotRunning,
        };
        BootDiagnosis {
            state: state_label,
            mac: mac.to_owned(),
            reserved,
            leased,
            arp,
            cause,
        }
    }

    /// One sentence naming the cause.
    pub fn cause_text(&self) -> String {
        let leased_or_seen = |ip: &Ipv4Addr| {
            let how = if self.leased.as_ref().is_ok_and(|l| l.contains(ip)) {
                "leased"
            } else {
                "in use (ARP entry, no DHCP lease)"
            };
            let not_reserved = if *ip == self.reserved {
                String::new()
            } else {
                format!(", not the reserved {}", self.reserved)
            };
            format!("address {ip} {how} to {}{not_reserved}", self.mac)
        };
        match &self.cause {
            BootCause::NotRunning => format!("the domain is {} instead of running", self.state),
            BootCause::NoAddress => {
                let lease = match &self.leased {
                    Ok(_) => "no DHCP lease".to_owned(),
                    Err(why) => format!("DHCP leases not readable ({why})"),
                };
                let arp = match &self.arp {
                    Ok(_) => "no ARP entry".to_owned(),
                    Err(why) => format!("ARP table not readable ({why})"),
                };
                format!(
                    "the guest never took its address: {lease} and {arp} for its MAC {} \
                     (its network never came up)",
                    self.mac
                )
            }
            BootCause::SshRefused(ip) => format!(
                "{}, but port 22 refuses connections (sshd is not running in the guest)",
                leased_or_seen(ip)
            ),
            BootCause::SshSilent(ip, why) => format!(
                "{}, but port 22 does not answer ({why})",
                leased_or_seen(ip)
            ),
            BootCause::SshLate(ip) => format!(
                "{}; port 22 accepts connections now but sent no SSH banner in time",
                leased_or_seen(ip)
            ),
            BootCause::AddressOnly(ip) => format!(
                "{}; port 22 was not probed (the guest is on a remote host)",
                leased_or_seen(ip)
            ),
        }
    }

    /// What the user can do about it.
    pub fn hint(&self, boot_timeout_s: u32) -> Option<String> {
        match &self.cause {
            BootCause::NotRunning => Some("read the qemu log and the console lines above".into()),
            BootCause::NoAddress => Some(
                "the box must configure its first NIC by DHCP, with a driver its kernel has for \
                 `nic_model` (virtio by default); the console lines show how far it booted"
                    .into(),
            ),
            BootCause::SshRefused(_) => Some(
                "the box must start sshd at boot (enabled ssh.service or ssh.socket); the console \
                 lines show whether it failed"
                    .into(),
            ),
            BootCause::SshSilent(..) | BootCause::SshLate(_) | BootCause::AddressOnly(_) => {
                Some(format!(
                    "a slow guest (TCG, a loaded host) may need a longer `boot_timeout` (now {boot_timeout_s} s)"
                ))
            }
        }
    }
}

/// The complete entries of `/proc/net/arp` (text) for `mac`.
fn arp_entries(text: &str, mac: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // IP address, HW type, Flags (0x2: complete), HW address, ...
            let complete = f.get(2).is_some_and(|flags| *flags != "0x0");
            let same = f.get(3).is_some_and(|hw| hw.eq_ignore_ascii_case(mac));
            (complete && same).then(|| f[0].parse().ok()).flatten()
        })
        .collect()
}

/// Asks port 22 of `ip` once.
fn probe_port(ip: Ipv4Addr) -> PortProbe {
    match TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(ip), 22), PROBE_TIMEOUT) {
        Ok(_) => PortProbe::Open,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => PortProbe::Refused,
        Err(e) if e.kind() == ErrorKind::TimedOut => {
            PortProbe::Silent(format!("no reply in {} s", PROBE_TIMEOUT.as_secs()))
        }
        Err(e) => PortProbe::Silent(e.to_string()),
    }
}

/// The boot-timeout failure of machine `plan` whose reserved address is
/// `ip`: the cause, the domain state and the last console lines.
pub(crate) fn diagnose(env: &Env, plan: &MachinePlan, ip: Ipv4Addr) -> Failure {
    let secs = plan.machine.boot_timeout_s;
    let (state, state_label) = match env.hv.domain_state(&plan.domain) {
        Ok(s) => (s, s.map_or("missing", DomainState::as_str).to_owned()),
        Err(e) => (None, format!("unknown ({e})")),
    };
    let remote = crate::remote::is_remote(env.hv.uri());
    let leased = env
        .hv
        .guest_addresses(&plan.domain, &plan.mac, AddressSource::Lease)
        .map_err(|e| e.to_string());
    // libvirt 9.0's ARP source fails on newer kernels ("wrong nlmsg len");
    // a local hypervisor's ARP table is ours too.
    let arp = match env
        .hv
        .guest_addresses(&plan.domain, &plan.mac, AddressSource::Arp)
    {
        Ok(a) => Ok(a),
        Err(_) if !remote => std::fs::read_to_string("/proc/net/arp")
            .map(|t| arp_entries(&t, &plan.mac))
            .map_err(|e| format!("/proc/net/arp: {e}")),
        Err(e) => Err(e.to_string()),
    };
    let d = BootDiagnosis::decide(state, state_label, &plan.mac, ip, leased, arp, |a| {
        if remote {
            PortProbe::NotProbed
        } else {
            probe_port(a)
        }
    });
    let console_path = plan::console_log(&plan.domain);
    let console = crate::remote::log_tail(env.hv.uri(), &console_path, 15);
    Failure {
        message: format!(
            "no SSH on {ip}:22 after {secs}s: {}; domain is {}; last console lines ({}):\n{console}",
            d.cause_text(),
            d.state,
            console_path.display()
        ),
        hint: d.hint(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: &str = "52:54:00:aa:bb:cc";
    const IP: Ipv4Addr = Ipv4Addr::new(192, 168, 121, 10);

    fn decide(
        state: Option<DomainState>,
        leased: &[Ipv4Addr],
        arp: &[Ipv4Addr],
        probe: PortProbe,
    ) -> BootDiagnosis {
        let label = state.map_or("missing", DomainState::as_str).to_owned();
        BootDiagnosis::decide(
            state,
            label,
            MAC,
            IP,
            Ok(leased.to_vec()),
            Ok(arp.to_vec()),
            |_| probe,
        )
    }

    #[test]
    fn no_lease_and_no_arp_entry_is_no_address() {
        let d = decide(Some(DomainState::Running), &[], &[], PortProbe::Open);
        assert_eq!(d.cause, BootCause::NoAddress);
        let text = d.cause_text();
        assert!(text.contains("no DHCP lease and no ARP entry"), "{text}");
        assert!(text.contains(MAC), "{text}");
        assert!(d.hint(90).unwrap().contains("nic_model"));
    }

    #[test]
    fn a_refused_port_with_a_lease_is_sshd_not_running() {
        let d = decide(Some(DomainState::Running), &[IP], &[IP], PortProbe::Refused);
        assert_eq!(d.cause, BootCause::SshRefused(IP));
        let text = d.cause_text();
        assert!(
            text.contains("address 192.168.121.10 leased to 52:54:00:aa:bb:cc"),
            "{text}"
        );
        assert!(text.contains("port 22 refuses connections"), "{text}");
        assert!(!text.contains("not the reserved"), "{text}");
    }

    #[test]
    fn an_arp_entry_without_lease_counts_as_an_address() {
        let other = Ipv4Addr::new(192, 168, 121, 77);
        let d = decide(
            Some(DomainState::Running),
            &[],
            &[other],
            PortProbe::Silent("no reply in 3 s".into()),
        );
        assert_eq!(
            d.cause,
            BootCause::SshSilent(other, "no reply in 3 s".into())
        );
        let text = d.cause_text();
        assert!(text.contains("ARP entry, no DHCP lease"), "{text}");
        assert!(text.contains("not the reserved 192.168.121.10"), "{text}");
        assert!(text.contains("does not answer (no reply in 3 s)"), "{text}");
        assert!(d.hint(90).unwrap().contains("boot_timeout"));
    }

    #[test]
    fn the_reserved_address_wins_over_others() {
        let other = Ipv4Addr::new(192, 168, 121, 77);
        let d = decide(
            Some(DomainState::Running),
            &[other, IP],
            &[],
            PortProbe::Open,
        );
        assert_eq!(d.cause, BootCause::SshLate(IP));
    }

    #[test]
    fn a_domain_that_is_not_running_is_named_and_not_probed() {
        for state in [Some(DomainState::Shutoff), Some(DomainState::Crashed), None] {
            let d = BootDiagnosis::decide(
                state,
                state.map_or("missing", DomainState::as_str).to_owned(),
                MAC,
                IP,
                Ok(vec![IP]),
                Ok(vec![]),
                |_| panic!("a stopped domain is not probed"),
            );
            assert_eq!(d.cause, BootCause::NotRunning);
            assert!(
                d.cause_text().starts_with("the domain is "),
                "{}",
                d.cause_text()
            );
        }
    }

    #[test]
    fn an_unreadable_arp_table_is_said() {
        let d = BootDiagnosis::decide(
            Some(DomainState::Running),
            "running".into(),
            MAC,
            IP,
            Ok(vec![]),
            Err("wrong nlmsg len".into()),
            |_| PortProbe::Open,
        );
        assert_eq!(d.cause, BootCause::NoAddress);
        let text = d.cause_text();
        assert!(
            text.contains("no DHCP lease and ARP table not readable (wrong nlmsg len) for its MAC"),
            "{text}"
        );
    }

    #[test]
    fn arp_entries_are_complete_ones_of_the_mac() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     192.168.121.10   0x1         0x2         52:54:00:AA:BB:CC     *        kvd-1\n\
                     192.168.121.11   0x1         0x0         52:54:00:aa:bb:cc     *        kvd-1\n\
                     192.168.121.12   0x1         0x2         52:54:00:00:00:01     *        kvd-1\n";
        assert_eq!(arp_entries(table, MAC), vec![IP]);
        assert_eq!(arp_entries("", MAC), Vec::<Ipv4Addr>::new());
    }

    #[test]
    fn a_remote_guest_with_an_address_is_not_probed() {
        let d = decide(Some(DomainState::Running), &[IP], &[], PortProbe::NotProbed);
        assert_eq!(d.cause, BootCause::AddressOnly(IP));
        assert!(d.cause_text().contains("not probed"));
    }
}
