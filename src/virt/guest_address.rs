//! Which IPv4 addresses libvirt has seen a domain's NICs use
//! (`virDomainInterfaceAddresses`): from the DHCP leases of its libvirt
//! networks, or from the hypervisor host's ARP table. Both are read on the
//! host libvirtd runs on, so they work for remote hypervisors too. Used to
//! say why a guest never answered (`machine::boot_diagnosis`).

use std::net::Ipv4Addr;

use virt::sys;

use super::hypervisor::{call, Hypervisor};
use super::VirtError;

/// Where libvirt looks for a domain's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// The DHCP leases of the libvirt networks its NICs are on.
    Lease,
    /// The host's ARP (neighbour) table.
    Arp,
}

impl AddressSource {
    fn raw(self) -> sys::virDomainInterfaceAddressesSource {
        match self {
            AddressSource::Lease => sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            AddressSource::Arp => sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AddressSource::Lease => "DHCP lease",
            AddressSource::Arp => "ARP entry",
        }
    }
}

impl Hypervisor {
    /// The IPv4 addresses `source` knows for the NIC with MAC `mac` of
    /// domain `name` (empty: none, or no such domain).
    pub fn guest_addresses(
        &self,
        name: &str,
        mac: &str,
        source: AddressSource,
    ) -> Result<Vec<Ipv4Addr>, VirtError> {
        let Some(dom) = self.domain(name)? else {
            return Ok(Vec::new());
        };
        let nics = dom
            .interface_addresses(source.raw(), 0)
            .map_err(call(format!(
                "read the addresses of domain {name} ({})",
                source.as_str()
            )))?;
        Ok(nics
            .iter()
            .filter(|n| {
                n.hwaddr
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(mac))
            })
            .flat_map(|n| &n.addrs)
            .filter_map(|a| a.addr.parse().ok())
            .collect())
    }
}
