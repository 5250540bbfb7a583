//! The plan of one `up` for the whole project, decided before anything is
//! changed: the storage pool, the boxes' base volumes to import (or the box
//! to fetch), the networks to make and the DHCP reservations to add, and per
//! machine its domain name, MAC, reserved address(es), volumes, accelerator,
//! CPU fallback order and domain XML. [`plan_project`] is pure: what
//! `lifecycle`'s resolve step found ([`PlanInputs`]) in, a [`ProjectPlan`]
//! out. `up` applies it; `up --dry-run` prints it (serde for `--json`).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Serialize;

use super::lifecycle::LifecycleError;
use super::net_apply::PrivateNet;
use super::netplan;
use super::nics::{GuestAddress, NicAddress};
use super::plan::{self, MachinePlan};
use super::project::Project;
use crate::boxes::InstalledBox;
use crate::host::accel::{AccelChoice, KvmFacts};
use crate::project::config::{Machine, Subnet};
use crate::virt::domain::CpuSpec;
use crate::virt::hypervisor::DomainState;
use crate::virt::network::{DhcpHost, NetworkSpec};

/// The box of one machine as the resolve step found it.
#[derive(Debug, Clone)]
pub enum ResolvedBox {
    /// In the cache.
    Cached {
        installed: InstalledBox,
        /// Identifies the box's image content (names its base volume).
        content_id: String,
        /// A v2 box's second, third, ... disk: (image in the box, virtual size).
        extra_disks: Vec<(PathBuf, u64)>,
    },
    /// Not in the cache: `up` fetches it from `from`.
    Missing { from: String },
}

/// A network the plan uses: already in libvirt, or to be made by `up`.
#[derive(Debug, Clone)]
pub enum NetworkDoc {
    /// Its current document; `up` adds reservations to it one by one.
    Existing(String),
    /// `up` defines it with every reservation the plan makes in it.
    New(NetworkSpec),
}

impl NetworkDoc {
    pub fn is_new(&self) -> bool {
        matches!(self, NetworkDoc::New(_))
    }

    /// The document `up` defines or finds: a new network carries `hosts` in
    /// it, so `up` defines it once instead of adding each host afterwards
    /// (`virNetworkUpdate` restarts dnsmasq: 0.4 s per host here).
    pub fn with_hosts(&self, hosts: &[DhcpHost]) -> String {
        match self {
            NetworkDoc::New(spec) => NetworkSpec {
                hosts: hosts.to_vec(),
                ..spec.clone()
            }
            .to_xml(),
            NetworkDoc::Existing(xml) => xml.clone(),
        }
    }
}

/// The project's management network: found, or to be made.
#[derive(Debug, Clone)]
pub struct ManagementNet {
    pub name: String,
    pub subnet: Subnet,
    pub hosts: Vec<DhcpHost>,
    pub doc: NetworkDoc,
}

/// What the resolve step found: typed facts, no handles.
#[derive(Debug, Clone)]
pub struct PlanInputs {
    /// The selected machines, in config order.
    pub machines: Vec<Machine>,
    /// Per machine, in the same order.
    pub boxes: Vec<ResolvedBox>,
    /// Per machine: its domain's state now (`None`: not defined).
    pub states: Vec<Option<DomainState>>,
    pub facts: KvmFacts,
    /// Per machine: the accelerator, decided in resolve from `facts` (local
    /// libvirt) or from the remote host's capabilities.
    pub accel: Vec<AccelChoice>,
    pub pool_path: PathBuf,
    pub pool_exists: bool,
    /// Base volumes (file names) already in the pool.
    pub existing_bases: Vec<String>,
    pub network: ManagementNet,
    pub private: Vec<PrivateNet>,
}

/// Everything one `up` will do.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectPlan {
    pub project: String,
    pub pool: PoolPlan,
    pub boxes: Vec<BoxPlan>,
    pub networks: Vec<NetworkPlan>,
    pub machines: Vec<MachineEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolPlan {
    pub name: String,
    pub path: PathBuf,
    pub create: bool,
}

/// A distinct box the machines use.
#[derive(Debug, Clone, Serialize)]
pub struct BoxPlan {
    pub name: String,
    /// Cached version (`None` when it has to be fetched).
    pub version: Option<String>,
    /// Where `up` would fetch it from (`None`: cached).
    pub fetch_from: Option<String>,
    /// Base volumes in the pool (first disk first); empty until fetched.
    pub base_volumes: Vec<String>,
    /// The base volumes are copied into the pool by this `up`.
    pub import: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkPlan {
    pub name: String,
    /// `management` or `private`.
    pub kind: &'static str,
    pub subnet: String,
    pub create: bool,
    /// The network's document (the one to create, or its current one).
    pub xml: String,
    /// DHCP reservations this `up` adds.
    pub reservations: Vec<Reservation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reservation {
    pub mac: String,
    pub name: String,
    pub ip: Ipv4Addr,
}

/// One machine's part of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct MachineEntry {
    pub name: String,
    pub domain: String,
    /// `create`, `start` or `running`.
    pub action: &'static str,
    pub mac: String,
    pub address: Ipv4Addr,
    pub overlay: String,
    /// Extra volumes: a v2 box's further disks, then the `disks` entries.
    pub volumes: Vec<String>,
    /// Extra NICs with their static or reserved addresses.
    pub networks: Vec<NicAddress>,
    /// `kvm` or `qemu` (TCG).
    pub domain_type: &'static str,
    pub accel_reason: String,
    /// CPU presentations, tried in this order.
    pub cpu_fallback: Vec<String>,
    /// The domain XML `up` defines (first CPU of the fallback order).
    pub domain_xml: String,
    /// What apply works from.
    #[serde(skip)]
    pub plan: MachinePlan,
}

/// Decides everything from `inputs`; pure.
pub fn plan_project(project: &Project, inputs: &PlanInputs) -> Result<ProjectPlan, LifecycleError> {
    let mut boxes: Vec<BoxPlan> = Vec::new();
    let mut mgmt_hosts = inputs.network.hosts.clone();
    let mut mgmt_new = Vec::new();
    let mut private = inputs.private.clone();
    let mut private_new: Vec<Vec<Reservation>> = vec![Vec::new(); private.len()];
    let mut machines = Vec::new();
    for (i, m) in inputs.machines.iter().enumerate() {
        let (base, size, extra) = box_bases(inputs, &inputs.boxes[i], &mut boxes);
        let choice = inputs.accel[i].clone();
        let mp = MachinePlan::new(project, m, &base, size, choice).with_box_disks(&extra);
        let ip = netplan::assign_ip(&inputs.network.subnet, &mgmt_hosts, &mp.mac)
            .ok_or(LifecycleError::NoSubnet)?;
        if !mgmt_hosts
            .iter()
            .any(|h| h.mac.eq_ignore_ascii_case(&mp.mac))
        {
            let host = DhcpHost {
                mac: mp.mac.clone(),
                name: m.name.0.clone(),
                ip,
            };
            mgmt_new.push(reservation(&host));
            mgmt_hosts.push(host);
        }
        let nics = nic_addresses(&mut private, &mut private_new, &mp)?;
        machines.push(entry(project, inputs, &mp, inputs.states[i], ip, nics));
    }
    let mut networks = vec![NetworkPlan {
        name: inputs.network.name.clone(),
        kind: "management",
        subnet: inputs.network.subnet.to_string(),
        create: inputs.network.doc.is_new(),
        xml: inputs.network.doc.with_hosts(&mgmt_hosts),
        reservations: mgmt_new,
    }];
    for ((n, now), new) in inputs.private.iter().zip(&private).zip(private_new) {
        networks.push(NetworkPlan {
            name: n.name.clone(),
            kind: "private",
            subnet: n.subnet.to_string(),
            create: n.doc.is_new(),
            xml: n.doc.with_hosts(&now.hosts),
            reservations: new,
        });
    }
    Ok(ProjectPlan {
        project: project.id.clone(),
        pool: PoolPlan {
            name: crate::virt::storage::POOL_NAME.into(),
            path: inputs.pool_path.clone(),
            create: !inputs.pool_exists,
        },
        boxes,
        networks,
        machines,
    })
}

/// The base image, its size and the further disks' bases of a machine's box;
/// records the box in `boxes` the first time it is seen.
fn box_bases(
    inputs: &PlanInputs,
    b: &ResolvedBox,
    boxes: &mut Vec<BoxPlan>,
) -> (PathBuf, u64, Vec<(PathBuf, u64)>) {
    match b {
        ResolvedBox::Cached {
            installed,
            content_id,
            extra_disks,
        } => {
            let (name, version, virtual_size) =
                (&installed.name, &installed.version, &installed.virtual_size);
            let first = plan::base_volume_name(name, version, content_id);
            let stem = first.trim_end_matches(".qcow2").to_owned();
            let mut names = vec![first.clone()];
            let extra: Vec<(PathBuf, u64)> = extra_disks
                .iter()
                .enumerate()
                .map(|(i, (_, size))| {
                    let n = format!("{stem}-disk{}.qcow2", i + 2);
                    names.push(n.clone());
                    (inputs.pool_path.join(n), *size)
                })
                .collect();
            if !boxes.iter().any(|p| p.base_volumes.first() == Some(&first)) {
                boxes.push(BoxPlan {
                    name: name.clone(),
                    version: Some(version.clone()),
                    fetch_from: None,
                    import: names.iter().any(|n| !inputs.existing_bases.contains(n)),
                    base_volumes: names,
                });
            }
            (inputs.pool_path.join(first), *virtual_size, extra)
        }
        ResolvedBox::Missing { from } => {
            if !boxes.iter().any(|p| p.fetch_from.as_ref() == Some(from)) {
                boxes.push(BoxPlan {
                    name: from.clone(),
                    version: None,
                    fetch_from: Some(from.clone()),
                    base_volumes: Vec::new(),
                    import: true,
                });
            }
            (
                inputs.pool_path.join("(box not fetched yet)"),
                0,
                Vec::new(),
            )
        }
    }
}

fn reservation(h: &DhcpHost) -> Reservation {
    Reservation {
        mac: h.mac.clone(),
        name: h.name.clone(),
        ip: h.ip,
    }
}

/// What each extra NIC gets: static addresses as configured, an address
/// reserved per MAC for DHCP NICs on private networks (known before boot).
fn nic_addresses(
    nets: &mut [PrivateNet],
    new: &mut [Vec<Reservation>],
    plan: &MachinePlan,
) -> Result<Vec<NicAddress>, LifecycleError> {
    let mut out = Vec::new();
    for nic in &plan.nics {
        let mac = nic.interface.mac.clone();
        let (ip, prefix) = match (nic.address, &nic.private_key) {
            (GuestAddress::Static(a), _) => (Some(a.ip), Some(a.prefix)),
            (GuestAddress::Dhcp, Some(key)) => {
                let i = nets
                    .iter()
                    .position(|n| &n.key == key)
                    .expect("every private key has a network");
                let net = &mut nets[i];
                let ip = netplan::assign_ip(&net.subnet, &net.hosts, &mac)
                    .ok_or(LifecycleError::NoSubnet)?;
                if !net.hosts.iter().any(|h| h.mac.eq_ignore_ascii_case(&mac)) {
                    let host = DhcpHost {
                        mac: mac.clone(),
                        name: plan.machine.name.0.clone(),
                        ip,
                    };
                    new[i].push(reservation(&host));
                    net.hosts.push(host);
                }
                (Some(ip), Some(net.subnet.prefix))
            }
            (GuestAddress::Dhcp, None) => (None, None),
        };
        out.push(NicAddress {
            name: nic.label.clone(),
            mac,
            ip,
            prefix,
        });
    }
    Ok(out)
}

fn entry(
    project: &Project,
    inputs: &PlanInputs,
    mp: &MachinePlan,
    state: Option<DomainState>,
    ip: Ipv4Addr,
    nics: Vec<NicAddress>,
) -> MachineEntry {
    let accel = mp.accel.accel;
    let cpus = plan::cpu_candidates(&mp.machine, accel);
    let disk = inputs.pool_path.join(&mp.overlay.name);
    let domain_xml = mp
        .domain_spec(project, &disk, accel, cpus[0].clone())
        .to_xml();
    let mut volumes: Vec<String> = mp
        .hardware
        .box_disks
        .iter()
        .map(|v| v.name.clone())
        .collect();
    volumes.extend(mp.hardware.disks.iter().map(|d| d.volume.name.clone()));
    MachineEntry {
        name: mp.machine.name.0.clone(),
        domain: mp.domain.clone(),
        action: match state {
            None => "create",
            Some(DomainState::Running) => "running",
            Some(_) => "start",
        },
        mac: mp.mac.clone(),
        address: ip,
        overlay: mp.overlay.name.clone(),
        volumes,
        networks: nics,
        domain_type: accel.domain_type(),
        accel_reason: mp.accel.reason.clone(),
        cpu_fallback: cpus.iter().map(cpu_label).collect(),
        domain_xml,
        plan: mp.clone(),
    }
}

/// How a CPU presentation is named in messages and the plan.
pub fn cpu_label(cpu: &CpuSpec) -> String {
    match cpu {
        CpuSpec::HostPassthrough => "host-passthrough".into(),
        CpuSpec::HostModel => "host-model".into(),
        CpuSpec::Model(m) => m.clone(),
    }
}

impl ProjectPlan {
    /// A short readable summary: the project's lines, then one per machine.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.pool.create {
            lines.push(format!(
                "create storage pool {} at {}",
                self.pool.name,
                self.pool.path.display()
            ));
        }
        for b in &self.boxes {
            match (&b.fetch_from, b.import) {
                (Some(from), _) => lines.push(format!("fetch box from {from}, then import it")),
                (None, true) => lines.push(format!(
                    "import box {} {} as {}",
                    b.name,
                    b.version.as_deref().unwrap_or("?"),
                    b.base_volumes.join(", ")
                )),
                (None, false) => {}
            }
        }
        for n in &self.networks {
            if n.create {
                lines.push(format!(
                    "create {} network {} ({})",
                    n.kind, n.name, n.subnet
                ));
            }
            for r in &n.reservations {
                lines.push(format!(
                    "reserve {} for {} ({}) on {}",
                    r.ip, r.name, r.mac, n.name
                ));
            }
        }
        for m in &self.machines {
            let mut l = format!(
                "{}: {} domain {} ({}, cpu {}), mac {}, address {}, disk {}",
                m.name,
                m.action,
                m.domain,
                if m.domain_type == "kvm" { "KVM" } else { "TCG" },
                m.cpu_fallback.join(" > "),
                m.mac,
                m.address,
                m.overlay
            );
            if !m.volumes.is_empty() {
                l.push_str(&format!(", volumes {}", m.volumes.join(" ")));
            }
            for n in &m.networks {
                l.push_str(&format!(
                    ", nic {} {}",
                    n.name,
                    n.ip.map_or("dhcp".to_owned(), |ip| ip.to_string())
                ));
            }
            lines.push(l);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::host::accel;
    use crate::project::config::Config;

    fn inputs(yaml: &str, hosts: Vec<DhcpHost>) -> PlanInputs {
        let machines = Config::parse(yaml, Path::new("k.yml")).unwrap().machines();
        let n = machines.len();
        PlanInputs {
            machines: machines.clone(),
            boxes: vec![
                ResolvedBox::Missing {
                    from: "https://example.org/b.box".into()
                };
                n
            ],
            states: vec![None; n],
            accel: machines
                .iter()
                .map(|m| accel::choose(m.accel, &KvmFacts::default()))
                .collect(),
            facts: KvmFacts::default(),
            pool_path: PathBuf::from("/pool"),
            pool_exists: false,
            existing_bases: Vec::new(),
            network: ManagementNet {
                name: "kvmdrive-x".into(),
                subnet: Subnet::parse("192.168.121.0/24").unwrap(),
                hosts,
                doc: NetworkDoc::Existing("<network/>".into()),
            },
            private: Vec::new(),
        }
    }

    #[test]
    fn plans_names_macs_addresses_xml_and_cpu_order() {
        let p = Project::new(Path::new("/srv/role"), None).unwrap();
        let yaml = "machines:\n  - name: web\n  - name: db\n";
        let plan = plan_project(&p, &inputs(yaml, Vec::new())).unwrap();
        let again = plan_project(&p, &inputs(yaml, Vec::new())).unwrap();
        assert!(plan.pool.create);
        assert_eq!(
            plan.boxes[0].fetch_from.as_deref(),
            Some("https://example.org/b.box")
        );
        assert_eq!(plan.boxes.len(), 1, "one box for both machines");
        let web = &plan.machines[0];
        assert_eq!(web.domain, plan::domain_name(&p, "web"));
        assert_eq!(web.mac, plan::mac_address(&p, "web"));
        assert_eq!(web.mac, again.machines[0].mac);
        assert_eq!(web.overlay, format!("{}.qcow2", web.domain));
        assert_ne!(web.address, plan.machines[1].address);
        assert_eq!(web.address, again.machines[0].address);
        assert_eq!(web.domain_type, "qemu", "no /dev/kvm: TCG");
        assert_eq!(web.cpu_fallback, ["qemu64"]);
        assert!(web.domain_xml.contains(&web.mac), "{}", web.domain_xml);
        assert!(web.domain_xml.contains("/pool/"), "{}", web.domain_xml);
        let reserved: Vec<_> = plan.networks[0].reservations.iter().map(|r| r.ip).collect();
        assert_eq!(reserved, [web.address, plan.machines[1].address]);
        assert!(plan.summary().iter().any(|l| l.starts_with("web: create")));
    }

    #[test]
    fn a_network_to_create_carries_the_reservations_in_its_definition() {
        let p = Project::new(Path::new("/srv/role"), None).unwrap();
        let yaml = "machines:\n  - name: web\n  - name: db\n";
        let mut fresh = inputs(yaml, Vec::new());
        fresh.network.doc = NetworkDoc::New(NetworkSpec {
            name: "kvmdrive-x".into(),
            bridge: "kvmdrive-x".into(),
            subnet: fresh.network.subnet,
            hosts: Vec::new(),
            forward: crate::project::net_config::Forward::Nat,
            dhcp_range: true,
        });
        let plan = plan_project(&p, &fresh).unwrap();
        let facts = netplan::read_network(&plan.networks[0].xml);
        let in_xml: Vec<_> = facts.hosts.iter().map(|h| (h.mac.clone(), h.ip)).collect();
        let planned: Vec<_> = plan
            .machines
            .iter()
            .map(|m| (m.mac.clone(), m.address))
            .collect();
        assert_eq!(in_xml, planned, "{}", plan.networks[0].xml);
        assert_eq!(plan.networks[0].reservations.len(), 2, "still listed");
        // A network that is there keeps its document: up adds the hosts.
        let there = plan_project(&p, &inputs(yaml, Vec::new())).unwrap();
        assert_eq!(there.networks[0].xml, "<network/>");
    }

    #[test]
    fn an_existing_reservation_is_kept_and_not_added_again() {
        let p = Project::new(Path::new("/srv/role"), None).unwrap();
        let mac = plan::mac_address(&p, "web");
        let held = DhcpHost {
            mac: mac.clone(),
            name: "web".into(),
            ip: "192.168.121.77".parse().unwrap(),
        };
        let plan = plan_project(&p, &inputs("machines:\n  - name: web\n", vec![held])).unwrap();
        assert_eq!(plan.machines[0].address.to_string(), "192.168.121.77");
        assert!(plan.networks[0].reservations.is_empty());
    }
}
