//! A machine's extra networks and forwarded ports in `kvmdrive.yml`
//! (`networks:`, `forwarded_ports:`, `nic_model:`), typed while parsing:
//! addresses are [`Ipv4Addr`]s with a prefix, modes are enums, and a bad value
//! is a serde error, so [`crate::project::config`] reports it with file, line and key.
//!
//! The plan ([`crate::machine::guest_net`]) groups private networks of a
//! project into libvirt networks; the guest side is configured over SSH.

use std::fmt;
use std::net::Ipv4Addr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::project::config::Subnet;

/// The emulated network card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    #[default]
    Virtio,
    E1000,
    E1000e,
    Rtl8139,
}

impl NicModel {
    /// libvirt's `<model type=...>` and the Linux driver name.
    pub fn as_str(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
        }
    }

    pub fn parse(s: &str) -> Result<NicModel, String> {
        match s {
            "virtio" => Ok(NicModel::Virtio),
            "e1000" => Ok(NicModel::E1000),
            "e1000e" => Ok(NicModel::E1000e),
            "rtl8139" => Ok(NicModel::Rtl8139),
            _ => Err(format!(
                "unknown NIC model `{s}`: use virtio, e1000, e1000e or rtl8139"
            )),
        }
    }
}

/// How a private network reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// Isolated: machines and the host only.
    #[default]
    None,
    Nat,
    /// Routed by the host without NAT (libvirt adds forwarding rules).
    Route,
    /// Like route, but libvirt adds no firewall rules at all.
    Open,
}

/// macvtap mode of a public network on a host device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectMode {
    #[default]
    Bridge,
    Vepa,
    Private,
    Passthrough,
}

impl DirectMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DirectMode::Bridge => "bridge",
            DirectMode::Vepa => "vepa",
            DirectMode::Private => "private",
            DirectMode::Passthrough => "passthrough",
        }
    }
}

/// An IPv4 address with its prefix length (`192.168.56.11/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpWithPrefix {
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl IpWithPrefix {
    /// The subnet the address is in.
    pub fn subnet(&self) -> Subnet {
        Subnet {
            network: Ipv4Addr::from(u32::from(self.ip) & prefix_mask(self.prefix)),
            prefix: self.prefix,
        }
    }

    /// `ip` alone (prefix `default_prefix` or from `netmask`), or `ip/prefix`.
    pub fn parse(ip: &str, netmask: Option<&str>) -> Result<IpWithPrefix, String> {
        let (addr, prefix) = match ip.split_once('/') {
            Some((a, p)) => {
                if netmask.is_some() {
                    return Err(format!("`{ip}` has a prefix: leave out `netmask`"));
                }
                let p: u8 = p
                    .parse()
                    .map_err(|_| format!("invalid prefix in `{ip}`: write e.g. `10.0.0.5/24`"))?;
                (a, p)
            }
            None => (ip, netmask.map(parse_netmask).transpose()?.unwrap_or(24)),
        };
        let ip: Ipv4Addr = addr
            .trim()
            .parse()
            .map_err(|_| format!("invalid IPv4 address `{addr}`"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "prefix /{prefix} of `{ip}`: use a prefix between /8 and /30"
            ));
        }
        let net = IpWithPrefix { ip, prefix };
        let host = u32::from(ip) & !prefix_mask(prefix);
        if host == 0 || host == !prefix_mask(prefix) {
            return Err(format!(
                "`{ip}/{prefix}` is the network or broadcast address: give a machine address"
            ));
        }
        Ok(net)
    }
}

impl fmt::Display for IpWithPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// `255.255.255.0` -> 24; a mask with holes is an error.
pub fn parse_netmask(s: &str) -> Result<u8, String> {
    let err = || format!("invalid netmask `{s}`: write e.g. `255.255.255.0`");
    let m: Ipv4Addr = s.trim().parse().map_err(|_| err())?;
    let bits = u32::from(m);
    let prefix = bits.count_ones() as u8;
    if bits != prefix_mask(prefix) {
        return Err(err());
    }
    Ok(prefix)
}

/// A MAC address, lowercase `52:54:00:aa:bb:cc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mac(pub String);

impl Mac {
    pub fn parse(s: &str) -> Result<Mac, String> {
        let clean = s.trim().to_ascii_lowercase().replace('-', ":");
        let parts: Vec<&str> = clean.split(':').collect();
        let hex = parts.len() == 6
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
        let first = u8::from_str_radix(parts.first().unwrap_or(&"01"), 16).unwrap_or(1);
        if !hex || first & 1 == 1 {
            return Err(format!(
                "invalid MAC `{s}`: write six hex pairs such as 52:54:00:12:34:56 (unicast)"
            ));
        }
        Ok(Mac(clean))
    }
}

/// A network name usable in libvirt object names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetName(pub String);

impl NetName {
    pub fn parse(s: &str) -> Result<NetName, String> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !ok {
            return Err(format!(
                "invalid network name `{s}`: use 1-32 letters, digits, `-`, `_` or `.`"
            ));
        }
        Ok(NetName(s.to_owned()))
    }
}

/// A private network: shared by the machines of the project that name it
/// (or, unnamed, that use the same subnet).
#[derive(Debug, Clone, PartialEq)]
pub struct PrivateNetwork {
    pub name: Option<NetName>,
    /// The machine's static address (with `dhcp`: only the subnet is taken from it).
    pub address: Option<IpWithPrefix>,
    pub dhcp: bool,
    pub forward: Forward,
}

/// Where a public network's interface is attached on the host.
#[derive(Debug, Clone, PartialEq)]
pub enum PublicSource {
    /// macvtap on a host device (`<interface type='direct'>`).
    Direct { dev: String, mode: DirectMode },
    /// An existing host bridge (`<interface type='bridge'>`).
    Bridge { bridge: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum NetworkKind {
    Private(PrivateNetwork),
    Public {
        source: PublicSource,
        /// Static address; DHCP from the LAN when absent.
        address: Option<IpWithPrefix>,
    },
}

/// One `networks:` entry: an extra NIC of the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub kind: NetworkKind,
    pub nic_model: Option<NicModel>,
    pub mac: Option<Mac>,
    /// Configure the NIC inside the guest (default true).
    pub auto_config: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Private,
    Public,
}

/// The entry as written; checked into a [`Network`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(rename = "type")]
    kind: RawKind,
    name: Option<String>,
    ip: Option<String>,
    netmask: Option<String>,
    dhcp: Option<bool>,
    forward: Option<Forward>,
    nic_model: Option<NicModel>,
    mac: Option<String>,
    auto_config: Option<bool>,
    dev: Option<String>,
    mode: Option<DirectMode>,
    bridge: Option<String>,
}

impl RawNetwork {
    fn check(self) -> Result<Network, String> {
        let address = match &self.ip {
            Some(ip) => Some(IpWithPrefix::parse(ip, self.netmask.as_deref())?),
            None if self.netmask.is_some() => return Err("`netmask` needs `ip`".into()),
            None => None,
        };
        let kind = match self.kind {
            RawKind::Private => {
                for (key, set) in [
                    ("dev", self.dev.is_some()),
                    ("mode", self.mode.is_some()),
                    ("bridge", self.bridge.is_some()),
                ] {
                    if set {
                        return Err(format!("`{key}` belongs to `type: public`"));
                    }
                }
                let dhcp = self.dhcp.unwrap_or(false);
                if address.is_none() && !dhcp {
                    return Err(
                        "a private network needs `ip` (static address) or `dhcp: true`".into(),
                    );
                }
                NetworkKind::Private(PrivateNetwork {
                    name: self.name.as_deref().map(NetName::parse).transpose()?,
                    address,
                    dhcp,
                    forward: self.forward.unwrap_or_default(),
                })
            }
            RawKind::Public => {
                for (key, set) in [
                    ("name", self.name.is_some()),
                    ("forward", self.forward.is_some()),
                ] {
                    if set {
                        return Err(format!("`{key}` belongs to `type: private`"));
                    }
                }
                if self.dhcp == Some(true) && address.is_some() {
                    return Err("give either `ip` or `dhcp: true`, not both".into());
                }
                let source = match (self.dev, self.bridge) {
                    (Some(dev), None) => PublicSource::Direct {
                        dev: host_if_name(&dev)?,
                        mode: self.mode.unwrap_or_default(),
                    },
                    (None, Some(bridge)) if self.mode.is_none() => PublicSource::Bridge {
                        bridge: host_if_name(&bridge)?,
                    },
                    (None, Some(_)) => return Err("`mode` goes with `dev`, not `bridge`".into()),
                    _ => {
                        return Err(
                            "a public network needs `dev` (a host interface, macvtap) or `bridge` (a host bridge)"
                                .into(),
                        )
                    }
                };
                NetworkKind::Public { source, address }
            }
        };
        Ok(Network {
            kind,
            nic_model: self.nic_model,
            mac: self.mac.as_deref().map(Mac::parse).transpose()?,
            auto_config: self.auto_config.unwrap_or(true),
        })
    }
}

fn host_if_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && !s.contains('/')
        && s.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("invalid host interface name `{s}`"))
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawNetwork::deserialize(d)?
            .check()
            .map_err(de::Error::custom)
    }
}

/// A host port forwarded to a guest port (through an `ssh -L` process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedPort {
    pub guest: u16,
    pub host: u16,
    pub host_ip: Ipv4Addr,
    /// Address the guest side connects to, from inside the guest.
    pub guest_ip: Ipv4Addr,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Tcp,
    Udp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    guest: u16,
    host: u16,
    host_ip: Option<Ipv4Addr>,
    guest_ip: Option<Ipv4Addr>,
    protocol: Option<Protocol>,
}

impl<'de> Deserialize<'de> for ForwardedPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawPort::deserialize(d)?;
        if matches!(raw.protocol, Some(Protocol::Udp)) {
            return Err(de::Error::custom(
                "udp cannot be forwarded (kvmdrive forwards TCP through ssh); use a private network to reach UDP services",
            ));
        }
        if raw.guest == 0 || raw.host == 0 {
            return Err(de::Error::custom("ports must be 1-65535"));
        }
        Ok(ForwardedPort {
            guest: raw.guest,
            host: raw.host,
            host_ip: raw.host_ip.unwrap_or(Ipv4Addr::LOCALHOST),
            guest_ip: raw.guest_ip.unwrap_or(Ipv4Addr::LOCALHOST),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(yaml: &str) -> Result<Network, String> {
        serde_norway::from_str::<Network>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn private_static_with_netmask_or_prefix() {
        let n = net("{type: private, ip: 192.168.56.11, netmask: 255.255.0.0}").unwrap();
        let NetworkKind::Private(p) = &n.kind else {
            panic!()
        };
        assert_eq!(p.address.unwrap().to_string(), "192.168.56.11/16");
        assert_eq!(p.address.unwrap().subnet().to_string(), "192.168.0.0/16");
        assert_eq!(p.forward, Forward::None);
        assert!(n.auto_config);
        let n = net("{type: private, ip: 10.0.0.5/24, forward: nat, nic_model: e1000}").unwrap();
        let NetworkKind::Private(p) = &n.kind else {
            panic!()
        };
        assert_eq!(p.address.unwrap().prefix, 24);
        assert_eq!(p.forward, Forward::Nat);
        assert_eq!(n.nic_model, Some(NicModel::E1000));
        let n = net("{type: private, ip: 192.168.56.11}").unwrap();
        let NetworkKind::Private(p) = &n.kind else {
            panic!()
        };
        assert_eq!(p.address.unwrap().prefix, 24, "default /24");
    }

    #[test]
    fn private_dhcp_and_names() {
        let n = net("{type: private, dhcp: true, name: backend, auto_config: false, mac: '52:54:00:AA:BB:CC'}")
            .unwrap();
        let NetworkKind::Private(p) = &n.kind else {
            panic!()
        };
        assert!(p.dhcp && p.address.is_none());
        assert_eq!(p.name, Some(NetName("backend".into())));
        assert!(!n.auto_config);
        assert_eq!(n.mac, Some(Mac("52:54:00:aa:bb:cc".into())));
    }

    #[test]
    fn public_direct_and_bridge() {
        let n = net("{type: public, dev: eth0, mode: vepa}").unwrap();
        assert_eq!(
            n.kind,
            NetworkKind::Public {
                source: PublicSource::Direct {
                    dev: "eth0".into(),
                    mode: DirectMode::Vepa
                },
                address: None
            }
        );
        let n = net("{type: public, bridge: br0, ip: 10.1.2.3/16}").unwrap();
        assert!(matches!(
            n.kind,
            NetworkKind::Public {
                source: PublicSource::Bridge { .. },
                address: Some(_)
            }
        ));
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        for (yaml, want) in [
            ("{type: private}", "`ip`"),
            ("{type: private, ip: 300.1.1.1}", "invalid IPv4"),
            (
                "{type: private, ip: 10.0.0.5/24, netmask: 255.0.0.0}",
                "netmask",
            ),
            (
                "{type: private, ip: 10.0.0.5, netmask: 255.0.255.0}",
                "invalid netmask",
            ),
            ("{type: private, ip: 10.0.0.0/24}", "network or broadcast"),
            ("{type: private, ip: 10.0.0.5/31}", "prefix"),
            ("{type: private, ip: 10.0.0.5, dev: eth0}", "type: public"),
            ("{type: private, dhcp: true, name: 'a b'}", "network name"),
            (
                "{type: private, dhcp: true, mac: '01:00:00:00:00:00'}",
                "MAC",
            ),
            ("{type: public}", "`dev`"),
            ("{type: public, bridge: br0, mode: vepa}", "`mode`"),
            ("{type: public, dev: eth0, mode: fast}", "mode"),
            (
                "{type: private, ip: 10.0.0.5, nic_model: ne2k}",
                "nic_model",
            ),
            ("{type: bridge, dev: eth0}", "type"),
            ("{type: private, ip: 10.0.0.5, colour: red}", "colour"),
        ] {
            let e = net(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn in_kvmdrive_yml_errors_name_line_and_key_and_machines_inherit() {
        use crate::project::config::Config;
        let parse = |t: &str| Config::parse(t, std::path::Path::new("kvmdrive.yml"));
        let e = parse("machines:\n  - name: a\n    networks:\n      - type: private\n        ip: 10.0.0.300\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("kvmdrive.yml:4:") || e.starts_with("kvmdrive.yml:5:"),
            "{e}"
        );
        assert!(e.contains("networks") && e.contains("10.0.0.300"), "{e}");
        let e = parse(
            "machines:\n  - name: a\n    networks:\n      - type: private\n        ipp: 10.0.0.3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("kvmdrive.yml:5:") && e.contains("ipp"), "{e}");
        let c = parse(
            "defaults:\n  nic_model: e1000\n  networks: [{type: private, dhcp: true}]\nmachines:\n  - name: a\n  - name: b\n    networks: []\n    forwarded_ports: [{guest: 80, host: 8080}]\n",
        )
        .unwrap();
        let m = c.machines();
        assert_eq!(m[0].nic_model, NicModel::E1000);
        assert_eq!(m[0].networks.len(), 1);
        assert!(
            m[1].networks.is_empty(),
            "a machine's list replaces the default"
        );
        assert_eq!(m[1].forwarded_ports[0].host, 8080);
    }

    #[test]
    fn forwarded_ports() {
        let p: ForwardedPort = serde_norway::from_str("{guest: 80, host: 8080}").unwrap();
        assert_eq!((p.guest, p.host), (80, 8080));
        assert_eq!(p.host_ip, Ipv4Addr::LOCALHOST);
        let p: ForwardedPort =
            serde_norway::from_str("{guest: 80, host: 8080, host_ip: 0.0.0.0, protocol: tcp}")
                .unwrap();
        assert_eq!(p.host_ip, Ipv4Addr::UNSPECIFIED);
        let e = serde_norway::from_str::<ForwardedPort>("{guest: 53, host: 5353, protocol: udp}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("udp"), "{e}");
        assert!(serde_norway::from_str::<ForwardedPort>("{guest: 80, host: 70000}").is_err());
    }
}
