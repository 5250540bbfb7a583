//! The project's NAT network: which subnet (one that collides with no libvirt
//! network and no host route) and which address each machine gets (a DHCP
//! reservation for its MAC, so the address is known before it boots).
//! Pure functions over libvirt's network XML and `/proc/net/route`.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::project::config::Subnet;
use crate::virt::network::{DhcpHost, DYNAMIC_RANGE_START};

/// First host number handed out to machines (below: gateway and spare).
const FIRST_MACHINE_HOST: u32 = 10;

#[derive(Deserialize)]
struct NetDoc {
    #[serde(default)]
    ip: Vec<IpDoc>,
}

#[derive(Deserialize)]
struct IpDoc {
    #[serde(rename = "@address")]
    address: Option<String>,
    #[serde(rename = "@prefix")]
    prefix: Option<u8>,
    #[serde(rename = "@netmask")]
    netmask: Option<String>,
    #[serde(rename = "@family")]
    family: Option<String>,
    dhcp: Option<DhcpDoc>,
}

#[derive(Deserialize)]
struct DhcpDoc {
    #[serde(default)]
    host: Vec<HostDoc>,
}

#[derive(Deserialize)]
struct HostDoc {
    #[serde(rename = "@mac")]
    mac: Option<String>,
    #[serde(rename = "@name")]
    name: Option<String>,
    #[serde(rename = "@ip")]
    ip: Option<Ipv4Addr>,
}

/// What kvmdrive reads back from a libvirt network's XML.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkFacts {
    pub subnets: Vec<Subnet>,
    pub hosts: Vec<DhcpHost>,
}

/// Reads the IPv4 subnets and DHCP reservations of a network's XML.
pub fn read_network(xml: &str) -> NetworkFacts {
    let Ok(doc) = quick_xml::de::from_str::<NetDoc>(xml) else {
        return NetworkFacts::default();
    };
    let mut facts = NetworkFacts::default();
    for ip in doc.ip {
        if ip.family.as_deref().is_some_and(|f| f != "ipv4") {
            continue;
        }
        let Some(addr) = ip.address.and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
            continue;
        };
        let prefix = ip.prefix.or_else(|| {
            ip.netmask
                .and_then(|m| m.parse::<Ipv4Addr>().ok())
                .map(|m| u32::from(m).count_ones() as u8)
        });
        if let Some(prefix) = prefix {
            facts.subnets.push(subnet(addr, prefix));
        }
        for h in ip.dhcp.map(|d| d.host).unwrap_or_default() {
            if let (Some(mac), Some(ip)) = (h.mac, h.ip) {
                facts.hosts.push(DhcpHost {
                    mac: mac.to_ascii_lowercase(),
                    name: h.name.unwrap_or_default(),
                    ip,
                });
            }
        }
    }
    facts
}

fn subnet(addr: Ipv4Addr, prefix: u8) -> Subnet {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Subnet {
        network: Ipv4Addr::from(u32::from(addr) & mask),
        prefix,
    }
}

/// Destinations of the host's IPv4 routes (`/proc/net/route`), default route excluded.
pub fn read_routes(proc_net_route: &str) -> Vec<Subnet> {
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The file prints each address as a native-endian u32.
            let dest = Ipv4Addr::from(dest.to_ne_bytes());
            let prefix = mask.count_ones() as u8;
            (prefix > 0).then(|| subnet(dest, prefix))
        })
        .collect()
}

/// The first /24 (192.168.121.0 upwards, as vagrant-libvirt starts) that
/// overlaps none of `taken`.
pub fn choose_subnet(taken: &[Subnet]) -> Option<Subnet> {
    let candidates = (121..=254)
        .map(|c| Ipv4Addr::new(192, 168, c, 0))
        .chain((16..=31).flat_map(|b| (0..=255).map(move |c| Ipv4Addr::new(172, b, c, 0))));
    candidates
        .map(|a| subnet(a, 24))
        .find(|s| !taken.iter().any(|t| t.overlaps(s)))
}

/// The address reserved for `mac`: its existing reservation, or the lowest
/// free address below the dynamic range.
pub fn assign_ip(subnet: &Subnet, hosts: &[DhcpHost], mac: &str) -> Option<Ipv4Addr> {
    if let Some(h) = hosts.iter().find(|h| h.mac.eq_ignore_ascii_case(mac)) {
        return Some(h.ip);
    }
    (FIRST_MACHINE_HOST..DYNAMIC_RANGE_START)
        .map(|n| subnet.host(n))
        .find(|ip| !hosts.iter().any(|h| h.ip == *ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
docker0\t0079A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn routes_are_read_in_host_byte_order() {
        let r = read_routes(ROUTES);
        assert_eq!(
            r.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            vec!["192.0.2.0/24", "192.168.121.0/24"]
        );
    }

    #[test]
    fn subnet_choice_skips_networks_and_routes() {
        let taken = [
            Subnet::parse("192.168.121.0/24").unwrap(),
            Subnet::parse("192.168.122.0/24").unwrap(),
        ];
        assert_eq!(
            choose_subnet(&taken).unwrap().to_string(),
            "192.168.123.0/24"
        );
        assert_eq!(choose_subnet(&[]).unwrap().to_string(), "192.168.121.0/24");
        let all_192 = [Subnet::parse("192.168.0.0/16").unwrap()];
        assert_eq!(
            choose_subnet(&all_192).unwrap().to_string(),
            "172.16.0.0/24"
        );
    }

    #[test]
    fn reads_libvirt_network_xml() {
        let xml = r#"<network><name>default</name>
          <ip address="192.168.122.1" netmask="255.255.255.0">
            <dhcp><range start="192.168.122.2" end="192.168.122.254"/>
              <host mac="52:54:00:AA:00:01" name="a" ip="192.168.122.10"/></dhcp></ip>
          <ip family="ipv6" address="fd00::1" prefix="64"/></network>"#;
        let f = read_network(xml);
        assert_eq!(f.subnets, vec![Subnet::parse("192.168.122.0/24").unwrap()]);
        assert_eq!(f.hosts.len(), 1);
        assert_eq!(f.hosts[0].mac, "52:54:00:aa:00:01");
        let golden = crate::virt::network::tests::sample(2).to_xml();
        assert_eq!(read_network(&golden).hosts.len(), 2);
    }

    #[test]
    fn ip_assignment_keeps_existing_and_fills_gaps() {
        let s = Subnet::parse("192.168.121.0/24").unwrap();
        let hosts = vec![
            DhcpHost {
                mac: "52:54:00:00:00:01".into(),
                name: "a".into(),
                ip: s.host(10),
            },
            DhcpHost {
                mac: "52:54:00:00:00:03".into(),
                name: "c".into(),
                ip: s.host(12),
            },
        ];
        assert_eq!(assign_ip(&s, &hosts, "52:54:00:00:00:01"), Some(s.host(10)));
        assert_eq!(assign_ip(&s, &hosts, "52:54:00:00:00:09"), Some(s.host(11)));
    }
}
