//! Extra networks against libvirt and the host: the checks `up` makes before
//! it creates anything (groups agree, public devices exist, forwarded host
//! ports are free), the project's private networks (found, or decided for
//! the plan to make), and their removal with the last machine that uses them.

use std::net::TcpListener;

use serde::Deserialize;

pub use super::nic_setup::after_ready;

use super::lifecycle::{Env, LifecycleError};
use super::netplan;
use super::nics::{self, NetPlanError, PrivateGroup};
use super::project_plan::NetworkDoc;

use crate::project::config::{Machine, Subnet};
use crate::virt::network::{DhcpHost, NetworkSpec};
use crate::virt::VirtError;

/// A private network as found or made by this run.
#[derive(Debug, Clone)]
pub struct PrivateNet {
    pub key: String,
    pub name: String,
    pub subnet: Subnet,
    pub hosts: Vec<DhcpHost>,
    pub doc: NetworkDoc,
    /// Isolated or NAT (for the plan's summary).
    pub forward: crate::project::net_config::Forward,
}

/// Checks that need no libvirt object: the project's private networks agree
/// (`all` machines), public devices exist and forwarded host ports can be
/// bound (`selected` machines; ports our own forwarders hold are skipped).
/// Returns the private networks the selected machines use.
pub fn preflight(
    env: &Env,
    all: &[Machine],
    selected: &[Machine],
) -> Result<Vec<PrivateGroup>, LifecycleError> {
    let mut groups = nics::private_groups(all)?;
    groups.retain(|g| {
        selected.iter().any(|m| {
            m.networks.iter().any(|n| {
                matches!(&n.kind, crate::project::net_config::NetworkKind::Private(p) if nics::private_key(p) == g.key)
            })
        })
    });
    let mut claimed: Vec<(std::net::Ipv4Addr, u16, &str)> = Vec::new();
    for m in selected {
        for p in &m.forwarded_ports {
            let clash = claimed.iter().find(|(ip, port, _)| {
                *port == p.host
                    && (*ip == p.host_ip || ip.is_unspecified() || p.host_ip.is_unspecified())
            });
            if let Some((_, _, other)) = clash {
                return Err(LifecycleError::PortInUse {
                    machine: m.name.0.clone(),
                    addr: format!("{}:{}", p.host_ip, p.host),
                    reason: format!("`{other}` forwards the same host port"),
                });
            }
            claimed.push((p.host_ip, p.host, &m.name.0));
        }
    }
    for m in selected {
        for n in &m.networks {
            if let crate::project::net_config::NetworkKind::Public { source, .. } = &n.kind {
                check_public(&m.name.0, source, std::path::Path::new("/sys/class/net"))?;
            }
        }
        if m.forwarded_ports.is_empty() {
            continue;
        }
        let dir = env.project.machine_dir(&m.name.0);
        if super::forward::running(&dir).is_some() {
            continue;
        }
        for p in &m.forwarded_ports {
            if let Err(e) = TcpListener::bind((p.host_ip, p.host)) {
                return Err(LifecycleError::PortInUse {
                    machine: m.name.0.clone(),
                    addr: format!("{}:{}", p.host_ip, p.host),
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(groups)
}

/// A public network's device or bridge must exist on the host.
pub fn check_public(
    machine: &str,
    source: &crate::project::net_config::PublicSource,
    sys_class_net: &std::path::Path,
) -> Result<(), NetPlanError> {
    use crate::project::net_config::PublicSource;
    match source {
        PublicSource::Direct { dev, .. } if !sys_class_net.join(dev).exists() => {
            Err(NetPlanError::MissingDevice {
                machine: machine.into(),
                dev: dev.clone(),
            })
        }
        PublicSource::Bridge { bridge } if !sys_class_net.join(bridge).join("bridge").exists() => {
            Err(NetPlanError::MissingBridge {
                machine: machine.into(),
                bridge: bridge.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// Finds each private network, or decides the one to make: a new one's
/// subnet must overlap no other libvirt network, no host route and nothing
/// in `also_taken` (the management network when this run makes it).
/// Changes nothing; `up` then makes the new ones.
pub fn resolve_private_networks(
    env: &Env,
    groups: &[PrivateGroup],
    also_taken: &[(String, Subnet)],
) -> Result<Vec<PrivateNet>, LifecycleError> {
    let mut out = Vec::new();
    let mut taken: Option<Vec<(String, Subnet)>> = None;
    for g in groups {
        let name = nics::private_network_name(env.project, &g.key);
        if let Some(xml) = env.hv.network_xml(&name)? {
            let facts = netplan::read_network(&xml);
            if let Some(subnet) = facts.subnets.first().copied() {
                out.push(PrivateNet {
                    key: g.key.clone(),
                    name,
                    subnet,
                    hosts: facts.hosts,
                    doc: NetworkDoc::Existing(xml),
                    forward: g.forward,
                });
                continue;
            }
        }
        let taken = match &mut taken {
            Some(t) => t,
            None => {
                let mut t = taken_subnets(env)?;
                t.extend(also_taken.iter().cloned());
                taken.insert(t)
            }
        };
        let subnet = match g.subnet {
            Some(s) => {
                if let Some((what, t)) = taken.iter().find(|(_, t)| t.overlaps(&s)) {
                    return Err(NetPlanError::Overlap {
                        key: g.key.clone(),
                        subnet: s,
                        other: format!("{what} ({t})"),
                    }
                    .into());
                }
                s
            }
            None => {
                let list: Vec<Subnet> = taken
                    .iter()
                    .map(|(_, t)| *t)
                    .chain(groups.iter().filter_map(|g| g.subnet))
                    .collect();
                netplan::choose_subnet(&list)
                    .ok_or_else(|| NetPlanError::NoSubnet { key: g.key.clone() })?
            }
        };
        let spec = NetworkSpec {
            name: name.clone(),
            bridge: nics::private_bridge_name(&name),
            subnet,
            hosts: Vec::new(),
            forward: g.forward,
            dhcp_range: g.dhcp,
        };
        taken.push((format!("network {name}"), subnet));
        out.push(PrivateNet {
            key: g.key.clone(),
            name,
            subnet,
            hosts: Vec::new(),
            doc: NetworkDoc::New(spec),
            forward: g.forward,
        });
    }
    Ok(out)
}

/// Subnets of every libvirt network and host route, with what holds them.
fn taken_subnets(env: &Env) -> Result<Vec<(String, Subnet)>, VirtError> {
    let mut taken = Vec::new();
    for xml in env.hv.all_network_xml()? {
        let name = network_name(&xml).unwrap_or_default();
        for s in netplan::read_network(&xml).subnets {
            taken.push((format!("libvirt network {name}"), s));
        }
    }
    for s in netplan::read_routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default()) {
        taken.push(("a host route".to_owned(), s));
    }
    Ok(taken)
}

/// Removes the project's private networks no remaining domain uses, and
/// the DHCP reservations of machines that are gone from the others.
/// Returns the names removed.
pub fn remove_unused(env: &Env, gone: &[String]) -> Result<Vec<String>, VirtError> {
    let prefix = nics::private_network_prefix(env.project);
    let mut used = Vec::new();
    for d in env.hv.owned_domains()? {
        if d.project == env.project.id {
            if let Some(xml) = env.hv.domain_xml(&d.domain)? {
                used.extend(domain_networks(&xml));
            }
        }
    }
    let mut removed = Vec::new();
    for xml in env.hv.all_network_xml()? {
        let Some(name) = network_name(&xml) else {
            continue;
        };
        if !name.starts_with(&prefix) {
            continue;
        }
        if used.contains(&name) {
            for h in netplan::read_network(&xml).hosts {
                if gone.contains(&h.name) {
                    env.hv.remove_dhcp_host(&name, &h.to_xml())?;
                }
            }
        } else {
            env.hv.remove_network(&name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}

#[derive(Deserialize)]
struct NetNameDoc {
    name: Option<String>,
}

/// The `<name>` of a network document.
fn network_name(xml: &str) -> Option<String> {
    quick_xml::de::from_str::<NetNameDoc>(xml).ok()?.name
}

#[derive(Deserialize)]
struct DomDoc {
    devices: Option<DevicesDoc>,
}

#[derive(Deserialize)]
struct DevicesDoc {
    #[serde(default)]
    interface: Vec<IfDoc>,
}

#[derive(Deserialize)]
struct IfDoc {
    source: Option<IfSourceDoc>,
    mac: Option<IfMacDoc>,
}

#[derive(Deserialize)]
struct IfMacDoc {
    #[serde(rename = "@address")]
    address: String,
}

#[derive(Deserialize)]
struct IfSourceDoc {
    #[serde(rename = "@network")]
    network: Option<String>,
}

/// MAC addresses of a domain's interfaces.
pub fn domain_macs(xml: &str) -> Vec<String> {
    interfaces(xml)
        .into_iter()
        .filter_map(|i| i.mac.map(|m| m.address))
        .collect()
}

/// Networks a domain's interfaces are attached to.
pub fn domain_networks(xml: &str) -> Vec<String> {
    interfaces(xml)
        .into_iter()
        .filter_map(|i| i.source.and_then(|s| s.network))
        .collect()
}

/// A domain's interfaces (none if the XML does not parse).
fn interfaces(xml: &str) -> Vec<IfDoc> {
    quick_xml::de::from_str::<DomDoc>(xml)
        .ok()
        .and_then(|doc| doc.devices)
        .map(|d| d.interface)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::net_config::{DirectMode, PublicSource};

    #[test]
    fn reads_names_and_attached_networks() {
        let mut spec = crate::virt::domain::tests::sample(
            crate::virt::domain::Accel::Tcg,
            crate::virt::domain::CpuSpec::HostModel,
        );
        spec.interfaces = crate::virt::interface::tests::extra_nics();
        assert_eq!(
            domain_networks(&spec.to_xml()),
            vec!["kvmdrive-1a2b3c", "kvmdrive-1a2b3c-backend"]
        );
        let macs = domain_macs(&spec.to_xml());
        assert_eq!(macs.len(), spec.interfaces.len() + 1, "{macs:?}");
        assert!(
            spec.interfaces.iter().all(|i| macs.contains(&i.mac)),
            "{macs:?}"
        );
        let net = crate::virt::network::tests::sample(0).to_xml();
        assert_eq!(network_name(&net).as_deref(), Some("kvmdrive-1a2b3c"));
    }

    #[test]
    fn public_sources_must_exist() {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sys.path().join("eth0")).unwrap();
        std::fs::create_dir_all(sys.path().join("br0/bridge")).unwrap();
        let direct = |dev: &str| PublicSource::Direct {
            dev: dev.into(),
            mode: DirectMode::Bridge,
        };
        let bridge = |b: &str| PublicSource::Bridge { bridge: b.into() };
        assert!(check_public("a", &direct("eth0"), sys.path()).is_ok());
        assert!(check_public("a", &bridge("br0"), sys.path()).is_ok());
        let e = check_public("a", &direct("eth9"), sys.path()).unwrap_err();
        assert!(e.to_string().contains("`eth9` does not exist"), "{e}");
        assert!(matches!(
            check_public("a", &bridge("eth0"), sys.path()),
            Err(NetPlanError::MissingBridge { .. })
        ));
    }
}
