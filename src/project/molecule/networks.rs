//! molecule-vagrant `interfaces:` -> kvmdrive's `networks:` and
//! `forwarded_ports:` ([`crate::project::net_config`]): `private_network` (static `ip`
//! or `type: dhcp`), `public_network` (`dev`/`mode` macvtap, or a bridge) and
//! `forwarded_port`, with vagrant-libvirt's `libvirt__*` options. Each entry
//! is rewritten into kvmdrive's own spelling and checked by the same typed
//! parser `kvmdrive.yml` uses, so both refuse the same values.

use std::net::Ipv4Addr;

use serde_json::{Map, Value};

use crate::project::config::Subnet;
use crate::project::molecule::vagrant_ruby::unquote_ruby_string;
use crate::project::net_config::{ForwardedPort, IpWithPrefix, Network};

/// What the interfaces of one platform become.
#[derive(Debug, Default)]
pub struct Interfaces {
    pub networks: Vec<Network>,
    pub forwarded_ports: Vec<ForwardedPort>,
    /// (key path, message) for keys accepted but not honoured.
    pub warnings: Vec<(String, String)>,
}

/// Keys that only tune Vagrant's behaviour: accepted with a warning.
const IGNORED: &[&str] = &[
    "id",
    "auto_correct",
    "libvirt__guest_ipv6",
    "libvirt__iface_name",
];

/// vagrant-libvirt options for host-side details of the network or the
/// NIC (names, PCI slots, queues, MTU of the bridge, DHCP pool bounds,
/// autostart): accepted with a warning.
const HOST_SIDE_OPTIONS: &[&str] = &[
    "autostart",
    "libvirt__adapter",
    "libvirt__always_destroy",
    "libvirt__bus",
    "libvirt__slot",
    "libvirt__dhcp_start",
    "libvirt__dhcp_stop",
    "libvirt__domain_name",
    "libvirt__driver_name",
    "libvirt__driver_queues",
    "libvirt__forward_device",
    "libvirt__mtu",
];

/// Maps a platform's `interfaces` list; errors are (key path, message).
pub fn interfaces(at: &str, v: &Value) -> Result<Interfaces, (String, String)> {
    let Value::Array(list) = v else {
        return Err((at.into(), "expected a list".into()));
    };
    let mut out = Interfaces::default();
    for (j, iface) in list.iter().enumerate() {
        let at = format!("{at}[{j}]");
        let Value::Object(m) = iface else {
            return Err((at, "expected a mapping".into()));
        };
        // Values as Ruby string literals (`ip: '"10.0.0.2"'`) mean the string.
        let m: Map<String, Value> = m
            .iter()
            .map(|(k, v)| (k.clone(), unquote_ruby_string(v)))
            .collect();
        let m = &m;
        let kind = m.get("network_name").and_then(Value::as_str);
        match kind {
            Some("forwarded_port") => {
                let mut raw = Map::new();
                for (k, v) in m {
                    match k.as_str() {
                        "network_name" => {}
                        "guest" | "host" | "host_ip" | "guest_ip" | "protocol" => {
                            raw.insert(k.clone(), v.clone());
                        }
                        k if IGNORED.contains(&k) => out.warnings.push((
                            format!("{at}.{k}"),
                            "only means something to Vagrant: ignored".into(),
                        )),
                        _ => {
                            return Err((format!("{at}.{k}"), "unknown forwarded_port key".into()))
                        }
                    }
                }
                let p = serde_json::from_value::<ForwardedPort>(Value::Object(raw))
                    .map_err(|e| (at.clone(), e.to_string()))?;
                out.forwarded_ports.push(p);
            }
            Some(net @ ("private_network" | "public_network")) => {
                let raw = network(&at, net == "private_network", m, &mut out.warnings)?;
                let n = serde_json::from_value::<Network>(Value::Object(raw))
                    .map_err(|e| (at.clone(), e.to_string()))?;
                out.networks.push(n);
            }
            _ => {
                return Err((
                    format!("{at}.network_name"),
                    "expected private_network, public_network or forwarded_port".into(),
                ))
            }
        }
    }
    Ok(out)
}

/// One private or public network entry in kvmdrive's spelling.
fn network(
    at: &str,
    private: bool,
    m: &Map<String, Value>,
    warnings: &mut Vec<(String, String)>,
) -> Result<Map<String, Value>, (String, String)> {
    let mut raw = Map::new();
    raw.insert(
        "type".into(),
        Value::from(if private { "private" } else { "public" }),
    );
    let mut host_ip = None;
    let mut network_address = None;
    let mut bridge_type = false;
    for (k, v) in m {
        let key = format!("{at}.{k}");
        let bad = |what: &str| (key.clone(), format!("expected {what}"));
        match (k.as_str(), private) {
            ("network_name", _) => {}
            ("ip", _) => {
                raw.insert("ip".into(), v.clone());
            }
            ("netmask" | "libvirt__netmask", _) => {
                raw.insert("netmask".into(), v.clone());
            }
            ("auto_config", _) => {
                raw.insert("auto_config".into(), v.clone());
            }
            ("mac" | "libvirt__mac", _) => {
                raw.insert("mac".into(), v.clone());
            }
            ("nic_type" | "libvirt__nic_model_type" | "libvirt__model_type", _) => {
                raw.insert("nic_model".into(), v.clone());
            }
            ("type", true) => match v.as_str() {
                Some("dhcp") => {
                    raw.insert("dhcp".into(), Value::Bool(true));
                }
                Some("static") => {}
                _ => return Err(bad("`dhcp` or `static`")),
            },
            ("type", false) => match v.as_str() {
                Some("bridge") => bridge_type = true,
                Some("direct") => {}
                _ => return Err(bad("`direct` (macvtap) or `bridge`")),
            },
            ("libvirt__network_name", true) => {
                raw.insert("name".into(), v.clone());
            }
            ("libvirt__dhcp_enabled", true) => {
                if v.as_bool().is_none() {
                    return Err(bad("a boolean"));
                }
                // DHCP is served when a machine on the network asks for it.
            }
            ("libvirt__forward_mode", true) => {
                let mode = match v.as_str() {
                    Some("none" | "veryisolated") => "none",
                    Some(mode @ ("nat" | "route" | "open")) => mode,
                    Some(other) => {
                        return Err((
                            key,
                            format!("forward mode `{other}`: kvmdrive makes private networks isolated (none), nat, route or open"),
                        ))
                    }
                    None => return Err(bad("a string")),
                };
                raw.insert("forward".into(), Value::from(mode));
            }
            // The network a `type: dhcp` entry joins (vagrant-libvirt
            // derives it from `ip` when there is one).
            ("libvirt__network_address", true) => {
                network_address = Some(
                    v.as_str()
                        .ok_or_else(|| bad("an IPv4 network address"))?
                        .to_owned(),
                )
            }
            ("libvirt__host_ip", true) => {
                host_ip = Some(v.as_str().ok_or_else(|| bad("an IPv4 address"))?.to_owned())
            }
            ("dev", false) => {
                raw.insert("dev".into(), v.clone());
            }
            ("mode", false) => {
                raw.insert("mode".into(), v.clone());
            }
            ("bridge", false) => {
                raw.insert("bridge".into(), v.clone());
            }
            (k, _) if IGNORED.contains(&k) => {
                warnings.push((key, "only means something to Vagrant: ignored".into()))
            }
            (k, _) if HOST_SIDE_OPTIONS.contains(&k) => {
                warnings.push((key, super::platforms::HOST_SIDE.into()))
            }
            // Another provider's option (`virtualbox__intnet`): Vagrant
            // ignores it under libvirt, and so does kvmdrive.
            (k, _) if k.split_once("__").is_some_and(|(p, _)| p != "libvirt") => warnings.push((
                key,
                "an option of another Vagrant provider: ignored under libvirt".into(),
            )),
            _ => {
                return Err((
                    key,
                    format!(
                        "a {} key kvmdrive cannot honour",
                        if private {
                            "private_network"
                        } else {
                            "public_network"
                        }
                    ),
                ))
            }
        }
    }
    if bridge_type {
        // vagrant-libvirt: `type: bridge` makes `dev` a host bridge.
        if let Some(dev) = raw.remove("dev") {
            raw.insert("bridge".into(), dev);
        }
    }
    if let Some(address) = network_address {
        let key = format!("{at}.libvirt__network_address");
        let netmask = raw.get("netmask").and_then(Value::as_str);
        let subnet = network_subnet(&address, netmask).map_err(|e| (key.clone(), e))?;
        match raw.get("ip").and_then(Value::as_str) {
            // kvmdrive takes a DHCP network's subnet from an address in it.
            None if raw.get("dhcp") == Some(&Value::Bool(true)) => {
                raw.insert("ip".into(), Value::from(subnet.host(2).to_string()));
            }
            // Neither `ip` nor `type: dhcp`: the typed check refuses it.
            None => {}
            Some(ip) => {
                let same = IpWithPrefix::parse(ip, netmask).is_ok_and(|a| a.subnet() == subnet);
                if !same {
                    return Err((key, format!("`ip` {ip} is not in {address}")));
                }
            }
        }
    }
    if let Some(host_ip) = host_ip {
        let ip = raw.get("ip").and_then(Value::as_str).unwrap_or_default();
        let netmask = raw.get("netmask").and_then(Value::as_str);
        let subnet = IpWithPrefix::parse(ip, netmask)
            .map(|a| a.subnet())
            .map_err(|_| {
                (
                    format!("{at}.libvirt__host_ip"),
                    "needs `ip` on the same entry".into(),
                )
            })?;
        if subnet.host(1).to_string() != host_ip {
            return Err((
                format!("{at}.libvirt__host_ip"),
                format!(
                    "kvmdrive gives the host the first address of the network ({})",
                    subnet.host(1)
                ),
            ));
        }
    }
    Ok(raw)
}

/// The subnet of a network address such as `10.20.30.0` (netmask /24 by
/// default, as vagrant-libvirt's).
fn network_subnet(address: &str, netmask: Option<&str>) -> Result<Subnet, String> {
    let ip: Ipv4Addr = address
        .trim()
        .parse()
        .map_err(|_| format!("expected an IPv4 network address, not `{address}`"))?;
    // Any address of the network parses; the first host is one.
    let first = Ipv4Addr::from(u32::from(ip) | 1);
    Ok(IpWithPrefix::parse(&first.to_string(), netmask)?.subnet())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::net_config::{DirectMode, Forward, NetworkKind, NicModel, PublicSource};

    fn map(yaml: &str) -> Result<Interfaces, (String, String)> {
        let v: Value =
            serde_json::to_value(serde_norway::from_str::<serde_norway::Value>(yaml).unwrap())
                .unwrap();
        interfaces("p.interfaces", &v)
    }

    #[test]
    fn a_dhcp_network_takes_its_subnet_from_libvirt_network_address() {
        let i = map("- {network_name: private_network, type: dhcp, libvirt__network_address: 10.20.30.0, libvirt__netmask: 255.255.255.0}").unwrap();
        let NetworkKind::Private(p) = &i.networks[0].kind else {
            panic!("{:?}", i.networks[0])
        };
        assert!(p.dhcp);
        assert_eq!(
            p.address.unwrap().subnet().network.to_string(),
            "10.20.30.0"
        );
        assert_eq!(p.address.unwrap().prefix, 24);
        let i = map("- {network_name: private_network, type: dhcp, libvirt__network_address: 10.20.0.0, netmask: 255.255.0.0}").unwrap();
        let NetworkKind::Private(p) = &i.networks[0].kind else {
            panic!()
        };
        assert_eq!(p.address.unwrap().prefix, 16);
        // With `ip` as well, both must name the same network.
        assert!(map("- {network_name: private_network, ip: 10.20.30.5, libvirt__network_address: 10.20.30.0}").is_ok());
        let (at, e) = map(
            "- {network_name: private_network, ip: 10.9.9.5, libvirt__network_address: 10.20.30.0}",
        )
        .unwrap_err();
        assert!(
            at.ends_with("libvirt__network_address") && e.contains("not in"),
            "{at}: {e}"
        );
        // It names a network, not an address: without `type: dhcp` the
        // entry still needs `ip`.
        let (_, e) = map("- {network_name: private_network, libvirt__network_address: 10.20.30.0}")
            .unwrap_err();
        assert!(e.contains("needs `ip`"), "{e}");
        let (_, e) =
            map("- {network_name: private_network, type: dhcp, libvirt__network_address: nowhere}")
                .unwrap_err();
        assert!(e.contains("network address"), "{e}");
    }

    #[test]
    fn molecule_vagrant_interfaces_map_onto_networks() {
        let i = map(r#"
- {network_name: private_network, ip: 192.168.56.11, netmask: 255.255.255.0, libvirt__model_type: e1000, libvirt__mtu: 1400}
- {network_name: private_network, type: dhcp, libvirt__network_name: backend, libvirt__dhcp_enabled: true, libvirt__forward_mode: nat, auto_config: false}
- {network_name: private_network, ip: 10.0.5.4, libvirt__netmask: 255.255.0.0, libvirt__host_ip: 10.0.0.1, libvirt__forward_mode: route}
- {network_name: public_network, dev: eth0, mode: vepa}
- {network_name: public_network, dev: br0, type: bridge}
- {network_name: forwarded_port, guest: 80, host: 8080, host_ip: 127.0.0.1, id: http}
"#)
        .unwrap();
        assert_eq!(i.networks.len(), 5);
        let NetworkKind::Private(p) = &i.networks[0].kind else {
            panic!()
        };
        assert_eq!(p.address.unwrap().to_string(), "192.168.56.11/24");
        assert_eq!(i.networks[0].nic_model, Some(NicModel::E1000));
        let NetworkKind::Private(p) = &i.networks[1].kind else {
            panic!()
        };
        assert!(p.dhcp && p.forward == Forward::Nat);
        assert_eq!(p.name.as_ref().unwrap().0, "backend");
        assert!(!i.networks[1].auto_config);
        let NetworkKind::Private(p) = &i.networks[2].kind else {
            panic!()
        };
        assert_eq!(p.address.unwrap().prefix, 16);
        assert_eq!(p.forward, Forward::Route);
        assert!(
            matches!(&i.networks[3].kind, NetworkKind::Public { source: PublicSource::Direct { dev, mode: DirectMode::Vepa }, .. } if dev == "eth0")
        );
        assert!(
            matches!(&i.networks[4].kind, NetworkKind::Public { source: PublicSource::Bridge { bridge }, .. } if bridge == "br0")
        );
        assert_eq!(i.forwarded_ports[0].host, 8080);
        let w: Vec<&str> = i.warnings.iter().map(|(at, _)| at.as_str()).collect();
        assert_eq!(w, ["p.interfaces[0].libvirt__mtu", "p.interfaces[5].id"]);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_naming_the_key() {
        for (yaml, at, want) in [
            ("[{network_name: private_network, ip: 192.168.56.11, libvirt__forward_mode: bridge}]", "libvirt__forward_mode", "bridge"),
            ("[{network_name: private_network, ip: 10.0.0.5, libvirt__host_ip: 10.0.0.254}]", "libvirt__host_ip", "10.0.0.1"),
            ("[{network_name: private_network}]", "interfaces[0]", "dhcp"),
            ("[{network_name: forwarded_port, guest: 53, host: 5353, protocol: udp}]", "interfaces[0]", "udp"),
            ("[{network_name: bridged}]", "network_name", "private_network"),
            ("[{network_name: private_network, ip: 10.0.0.5, nic_count: 2}]", "nic_count", "cannot honour"),
        ] {
            let (a, m) = map(yaml).unwrap_err();
            assert!(a.contains(at) && m.contains(want), "{yaml}: {a}: {m}");
        }
    }
}
