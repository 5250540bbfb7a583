//! Network spec -> libvirt network XML: one NAT network per project, with a
//! DHCP reservation for each machine so its address is known before it boots.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::to_xml;
use crate::project::config::Subnet;
use crate::project::net_config::Forward;

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
    pub name: String,
    /// Linux bridge name (at most 15 characters).
    pub bridge: String,
    pub subnet: Subnet,
    pub hosts: Vec<DhcpHost>,
    /// `nat` for the management network; private networks may be isolated.
    pub forward: Forward,
    /// Hand out dynamic addresses (reservations are served either way).
    pub dhcp_range: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DhcpHost {
    pub mac: String,
    pub name: String,
    pub ip: Ipv4Addr,
}

#[derive(Serialize)]
#[serde(rename = "network")]
struct NetworkXml<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    forward: Option<ForwardXml>,
    bridge: Bridge<'a>,
    ip: Ip<'a>,
}

#[derive(Serialize)]
struct ForwardXml {
    #[serde(rename = "@mode")]
    mode: &'static str,
}

#[derive(Serialize)]
struct Bridge<'a> {
    #[serde(rename = "@name")]
    name: &'a str,
    #[serde(rename = "@stp")]
    stp: &'static str,
    #[serde(rename = "@delay")]
    delay: u32,
}

#[derive(Serialize)]
struct Ip<'a> {
    #[serde(rename = "@address")]
    address: Ipv4Addr,
    #[serde(rename = "@prefix")]
    prefix: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    dhcp: Option<Dhcp<'a>>,
}

#[derive(Serialize)]
struct Dhcp<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<Range>,
    #[serde(rename = "host")]
    hosts: Vec<HostXml<'a>>,
}

#[derive(Serialize)]
struct Range {
    #[serde(rename = "@start")]
    start: Ipv4Addr,
    #[serde(rename = "@end")]
    end: Ipv4Addr,
}

#[derive(Serialize)]
#[serde(rename = "host")]
struct HostXml<'a> {
    #[serde(rename = "@mac")]
    mac: &'a str,
    #[serde(rename = "@name")]
    name: &'a str,
    #[serde(rename = "@ip")]
    ip: Ipv4Addr,
}

impl DhcpHost {
    /// The `<host/>` element alone, as `virNetworkUpdate` wants it.
    pub fn to_xml(&self) -> String {
        to_xml(&self.as_xml()).trim_end().to_owned()
    }

    fn as_xml(&self) -> HostXml<'_> {
        HostXml {
            mac: &self.mac,
            name: &self.name,
            ip: self.ip,
        }
    }
}

/// First address handed out by DHCP to machines without a reservation;
/// reservations use the addresses below it.
pub const DYNAMIC_RANGE_START: u32 = 128;

impl NetworkSpec {
    pub fn to_xml(&self) -> String {
        let doc = NetworkXml {
            name: &self.name,
            forward: match self.forward {
                Forward::Nat => Some(ForwardXml { mode: "nat" }),
                Forward::Route => Some(ForwardXml { mode: "route" }),
                Forward::Open => Some(ForwardXml { mode: "open" }),
                Forward::None => None,
            },
            // No spanning tree: a bridge with STP keeps every new port
            // (a started or restored guest's tap) from forwarding through
            // listening and learning, 2 s each at the kernel's minimum
            // forward delay, so a restored guest answered SSH only after
            // 4 s. These bridges hold only guests' taps: no loop for STP
            // to break.
            bridge: Bridge {
                name: &self.bridge,
                stp: "off",
                delay: 0,
            },
            ip: Ip {
                address: self.subnet.host(1),
                prefix: self.subnet.prefix,
                dhcp: (self.dhcp_range || !self.hosts.is_empty()).then(|| Dhcp {
                    range: self.dhcp_range.then(|| Range {
                        start: self.subnet.host(DYNAMIC_RANGE_START),
                        end: self.subnet.host(self.subnet.size().min(256) - 2),
                    }),
                    hosts: self.hosts.iter().map(DhcpHost::as_xml).collect(),
                }),
            },
        };
        to_xml(&doc)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(hosts: usize) -> NetworkSpec {
        NetworkSpec {
            name: "kvmdrive-1a2b3c".into(),
            bridge: "kvd-1a2b3c".into(),
            subnet: Subnet::parse("192.168.121.0/24").unwrap(),
            hosts: (0..hosts)
                .map(|i| DhcpHost {
                    mac: format!("52:54:00:00:00:{:02x}", i + 1),
                    name: format!("m{i}"),
                    ip: Subnet::parse("192.168.121.0/24")
                        .unwrap()
                        .host(10 + i as u32),
                })
                .collect(),
            forward: Forward::Nat,
            dhcp_range: true,
        }
    }

    #[test]
    fn network_matches_golden_file() {
        crate::testutil::assert_golden("network.xml", &sample(2).to_xml());
    }

    #[test]
    fn routed_and_open_private_networks() {
        let mut spec = sample(0);
        for (forward, mode) in [(Forward::Route, "route"), (Forward::Open, "open")] {
            spec.forward = forward;
            let xml = spec.to_xml();
            assert!(
                xml.contains(&format!("<forward mode=\"{mode}\"/>")),
                "{xml}"
            );
        }
    }

    #[test]
    fn isolated_private_networks() {
        let mut spec = sample(0);
        spec.name = "kvmdrive-1a2b3c-backend".into();
        spec.forward = Forward::None;
        spec.dhcp_range = false;
        let xml = spec.to_xml();
        crate::testutil::assert_golden("network-isolated.xml", &xml);
        assert!(!xml.contains("<forward") && !xml.contains("<dhcp"), "{xml}");
        spec.hosts = sample(1).hosts;
        let xml = spec.to_xml();
        assert!(xml.contains("<host ") && !xml.contains("<range"), "{xml}");
    }

    #[test]
    fn host_element_alone() {
        assert_eq!(
            sample(1).hosts[0].to_xml(),
            r#"<host mac="52:54:00:00:00:01" name="m0" ip="192.168.121.10"/>"#
        );
    }
}
