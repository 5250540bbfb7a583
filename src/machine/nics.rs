//! A machine's extra NICs and the project's private networks, decided before
//! anything is changed. Pure: config in, MACs, libvirt names, subnets and
//! interface specs out.
//!
//! Machines of a project that name the same private network (or, unnamed, use
//! the same subnet) share one libvirt network `kvmdrive-<id>-<name|subnet>`;
//! [`super::lifecycle`] creates it on `up` and removes it with its last user.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::project::Project;
use crate::project::config::{Machine, Subnet};
use crate::project::net_config::{
    Forward, IpWithPrefix, NetworkKind, PrivateNetwork, PublicSource,
};
use crate::virt::interface::{InterfaceSource, InterfaceSpec};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NetPlanError {
    #[error("private network `{key}`: machines disagree on its subnet ({a} and {b})")]
    SubnetMismatch { key: String, a: Subnet, b: Subnet },
    #[error("private network `{key}`: machines disagree on `forward` (none and nat)")]
    ForwardMismatch { key: String },
    #[error("private network `{key}`: {ip} is given to both `{a}` and `{b}`")]
    DuplicateIp {
        key: String,
        ip: Ipv4Addr,
        a: String,
        b: String,
    },
    #[error("private network `{key}`: {ip} is the host's address on that network ({machine})")]
    GatewayIp {
        key: String,
        ip: Ipv4Addr,
        machine: String,
    },
    #[error("private network `{key}` ({subnet}) overlaps {other}")]
    Overlap {
        key: String,
        subnet: Subnet,
        other: String,
    },
    #[error("public network of `{machine}`: host interface `{dev}` does not exist")]
    MissingDevice { machine: String, dev: String },
    #[error("public network of `{machine}`: `{bridge}` is not a bridge on this host")]
    MissingBridge { machine: String, bridge: String },
    #[error("no free subnet for private network `{key}`")]
    NoSubnet { key: String },
}

impl NetPlanError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            NetPlanError::SubnetMismatch { .. } | NetPlanError::ForwardMismatch { .. } => {
                "give every machine on that network addresses in one subnet and the same `forward`"
                    .into()
            }
            NetPlanError::DuplicateIp { .. } => "give each machine its own `ip`".into(),
            NetPlanError::GatewayIp { .. } => {
                "the first address of a private network is the host's: use another one".into()
            }
            NetPlanError::Overlap { .. } => {
                "pick a subnet no libvirt network or host route uses (`ip route`, `virsh net-list --all`)"
                    .into()
            }
            NetPlanError::MissingDevice { .. } => {
                "set `dev` to an interface from `ip -br link` (macvtap needs a real host device)"
                    .into()
            }
            NetPlanError::MissingBridge { .. } => {
                "create the bridge first (`ip link add br0 type bridge`) or use `dev` (macvtap)"
                    .into()
            }
            NetPlanError::NoSubnet { .. } => "give the network an `ip` on one machine".into(),
        })
    }
}

/// What identifies a private network within a project.
pub fn private_key(p: &PrivateNetwork) -> String {
    match (&p.name, &p.address) {
        (Some(n), _) => n.0.clone(),
        (None, Some(a)) => {
            let s = a.subnet();
            format!("{}-{}", s.network, s.prefix)
        }
        (None, None) => "dhcp".into(),
    }
}

/// libvirt name of a private network of the project.
pub fn private_network_name(project: &Project, key: &str) -> String {
    format!("{}{key}", private_network_prefix(project))
}

/// Every private network of the project starts with this.
pub fn private_network_prefix(project: &Project) -> String {
    format!("kvmdrive-{}-", project.id)
}

/// Bridge of a private network: `kvn-` and 10 hex digits (15 characters at most).
pub fn private_bridge_name(network: &str) -> String {
    let d = Sha256::digest(network.as_bytes());
    let hex: String = d.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("kvn-{hex}")
}

/// MAC of a machine's n-th extra NIC (n from 1), stable per project and machine.
pub fn extra_mac(project: &Project, machine: &str, n: usize) -> String {
    super::plan::mac_address(project, &format!("{machine}/nic{n}"))
}

/// How the guest configures an extra NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestAddress {
    Static(IpWithPrefix),
    Dhcp,
}

/// An extra NIC of a machine.
#[derive(Debug, Clone, PartialEq)]
pub struct NicPlan {
    pub interface: InterfaceSpec,
    /// Private network key (None for public networks).
    pub private_key: Option<String>,
    /// What the report calls the network: its key, or the host device/bridge.
    pub label: String,
    pub address: GuestAddress,
    /// Configure it inside the guest.
    pub auto_config: bool,
}

/// The extra NICs of `machine`, in the order written.
pub fn plan_nics(project: &Project, machine: &Machine) -> Vec<NicPlan> {
    let name = &machine.name.0;
    machine
        .networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mac = n
                .mac
                .as_ref()
                .map(|m| m.0.clone())
                .unwrap_or_else(|| extra_mac(project, name, i + 1));
            let model = n.nic_model.unwrap_or(machine.nic_model);
            let (source, private_key, label, address) = match &n.kind {
                NetworkKind::Private(p) => {
                    let key = private_key(p);
                    let address = match (p.dhcp, p.address) {
                        (false, Some(a)) => GuestAddress::Static(a),
                        _ => GuestAddress::Dhcp,
                    };
                    (
                        InterfaceSource::Network(private_network_name(project, &key)),
                        Some(key.clone()),
                        key,
                        address,
                    )
                }
                NetworkKind::Public { source, address } => {
                    let (src, label) = match source {
                        PublicSource::Direct { dev, mode } => (
                            InterfaceSource::Direct {
                                dev: dev.clone(),
                                mode: *mode,
                            },
                            dev.clone(),
                        ),
                        PublicSource::Bridge { bridge } => {
                            (InterfaceSource::Bridge(bridge.clone()), bridge.clone())
                        }
                    };
                    let address = address.map_or(GuestAddress::Dhcp, GuestAddress::Static);
                    (src, None, label, address)
                }
            };
            NicPlan {
                interface: InterfaceSpec { mac, model, source },
                private_key,
                label,
                address,
                auto_config: n.auto_config,
            }
        })
        .collect()
}

/// One private network of the project and who uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivateGroup {
    pub key: String,
    /// None: no machine gave an address; chosen on `up`.
    pub subnet: Option<Subnet>,
    pub forward: Forward,
    /// Some machine asks for DHCP.
    pub dhcp: bool,
}

/// The project's private networks, checked for agreement between machines.
pub fn private_groups(machines: &[Machine]) -> Result<Vec<PrivateGroup>, NetPlanError> {
    let mut groups: BTreeMap<String, PrivateGroup> = BTreeMap::new();
    let mut statics: BTreeMap<(String, Ipv4Addr), String> = BTreeMap::new();
    for m in machines {
        for n in &m.networks {
            let NetworkKind::Private(p) = &n.kind else {
                continue;
            };
            let key = private_key(p);
            let subnet = p.address.map(|a| a.subnet());
            let g = groups.entry(key.clone()).or_insert(PrivateGroup {
                key: key.clone(),
                subnet,
                forward: p.forward,
                dhcp: false,
            });
            match (g.subnet, subnet) {
                (Some(a), Some(b)) if a != b => {
                    return Err(NetPlanError::SubnetMismatch { key, a, b })
                }
                (None, Some(b)) => g.subnet = Some(b),
                _ => {}
            }
            if g.forward != p.forward {
                return Err(NetPlanError::ForwardMismatch { key });
            }
            g.dhcp |= p.dhcp;
            if let (false, Some(a)) = (p.dhcp, p.address) {
                if a.subnet().host(1) == a.ip {
                    return Err(NetPlanError::GatewayIp {
                        key,
                        ip: a.ip,
                        machine: m.name.0.clone(),
                    });
                }
                if let Some(other) = statics.insert((key.clone(), a.ip), m.name.0.clone()) {
                    return Err(NetPlanError::DuplicateIp {
                        key,
                        ip: a.ip,
                        a: other,
                        b: m.name.0.clone(),
                    });
                }
            }
        }
    }
    let list: Vec<PrivateGroup> = groups.into_values().collect();
    for (i, a) in list.iter().enumerate() {
        for b in &list[i + 1..] {
            if let (Some(sa), Some(sb)) = (a.subnet, b.subnet) {
                if sa.overlaps(&sb) {
                    return Err(NetPlanError::Overlap {
                        key: a.key.clone(),
                        subnet: sa,
                        other: format!("private network `{}` ({sb})", b.key),
                    });
                }
            }
        }
    }
    Ok(list)
}

/// What `status --json` and the inventory report about an extra NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicAddress {
    /// The private network's name (or subnet), or the host device/bridge.
    pub name: String,
    pub mac: String,
    /// Static or reserved address; None when the LAN's DHCP decides.
    pub ip: Option<Ipv4Addr>,
    pub prefix: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::config::Config;
    use crate::project::net_config::NicModel;
    use std::path::Path;

    fn machines(yaml: &str) -> Vec<Machine> {
        Config::parse(yaml, Path::new("k.yml")).unwrap().machines()
    }

    const TWO: &str = "machines:
  - name: a
    networks:
      - {type: private, ip: 192.168.56.11}
      - {type: private, dhcp: true, name: backend}
      - {type: public, dev: eth0, nic_model: e1000}
  - name: b
    networks:
      - {type: private, ip: 192.168.56.12, netmask: 255.255.255.0}
      - {type: private, dhcp: true, name: backend, auto_config: false}
";

    #[test]
    fn machines_on_the_same_subnet_or_name_share_a_network() {
        let g = private_groups(&machines(TWO)).unwrap();
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(g[0].key, "192.168.56.0-24");
        assert_eq!(g[0].subnet, Some(Subnet::parse("192.168.56.0/24").unwrap()));
        assert!(!g[0].dhcp);
        assert_eq!(g[1].key, "backend");
        assert_eq!((g[1].subnet, g[1].dhcp), (None, true));
    }

    #[test]
    fn nics_get_stable_macs_names_and_sources() {
        let p = Project::new(Path::new("/srv/x"), None).unwrap();
        let m = machines(TWO);
        let nics = plan_nics(&p, &m[0]);
        assert_eq!(nics.len(), 3);
        assert_eq!(
            nics[0].interface.source,
            InterfaceSource::Network(format!("kvmdrive-{}-192.168.56.0-24", p.id))
        );
        assert_eq!(
            nics[0].address,
            GuestAddress::Static(IpWithPrefix::parse("192.168.56.11", None).unwrap())
        );
        assert_eq!(nics[1].address, GuestAddress::Dhcp);
        assert_eq!(nics[1].label, "backend");
        assert_eq!(nics[2].interface.model, NicModel::E1000);
        assert_eq!(nics[2].private_key, None);
        assert_eq!(nics[0].interface.mac, plan_nics(&p, &m[0])[0].interface.mac);
        assert_ne!(nics[0].interface.mac, nics[1].interface.mac);
        assert_ne!(nics[0].interface.mac, plan_nics(&p, &m[1])[0].interface.mac);
        assert_ne!(
            nics[0].interface.mac,
            super::super::plan::mac_address(&p, "a")
        );
        assert!(!plan_nics(&p, &m[1])[1].auto_config);
        assert!(private_bridge_name("kvmdrive-abcdef-backend").len() <= 15);
    }

    #[test]
    fn disagreements_are_refused() {
        let e = private_groups(&machines(
            "machines:\n  - name: a\n    networks: [{type: private, name: n, ip: 10.0.0.5/24}]\n  - name: b\n    networks: [{type: private, name: n, ip: 10.1.0.5/24}]\n",
        ))
        .unwrap_err();
        assert!(matches!(e, NetPlanError::SubnetMismatch { .. }), "{e}");
        let e = private_groups(&machines(
            "machines:\n  - name: a\n    networks: [{type: private, ip: 10.0.0.5}]\n  - name: b\n    networks: [{type: private, ip: 10.0.0.5}]\n",
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("10.0.0.5 is given to both `a` and `b`"),
            "{e}"
        );
        let e = private_groups(&machines(
            "machines:\n  - name: a\n    networks: [{type: private, ip: 10.0.0.1}]\n",
        ))
        .unwrap_err();
        assert!(matches!(e, NetPlanError::GatewayIp { .. }), "{e}");
        let e = private_groups(&machines(
            "machines:\n  - name: a\n    networks: [{type: private, ip: 10.0.0.5/16}, {type: private, name: x, ip: 10.0.1.5/24}]\n",
        ))
        .unwrap_err();
        assert!(matches!(e, NetPlanError::Overlap { .. }), "{e}");
        let e = private_groups(&machines(
            "machines:\n  - name: a\n    networks: [{type: private, name: n, dhcp: true, forward: nat}]\n  - name: b\n    networks: [{type: private, name: n, dhcp: true}]\n",
        ))
        .unwrap_err();
        assert!(matches!(e, NetPlanError::ForwardMismatch { .. }), "{e}");
    }
}
