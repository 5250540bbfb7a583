//! The plan for one machine: every name, address and document decided before
//! anything is changed. Pure: project + machine config + host choices in,
//! names and XML out.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::hardware::{CpuVendor, HardwarePlan};
use super::project::Project;
use crate::host::accel::AccelChoice;
use crate::project::config::{CpuMode, Machine};
use crate::project::hardware::{Hostname, HostnameSetting};
use crate::virt::domain::{Accel, CpuSpec, DomainSpec};
use crate::virt::storage::VolumeSpec;

/// The CPU model used under TCG and as the last fallback.
pub const SAFE_CPU_MODEL: &str = "qemu64";

/// libvirt object names of a project.
pub fn network_name(project: &Project) -> String {
    format!("kvmdrive-{}", project.id)
}

/// Linux bridge names are limited to 15 characters.
pub fn bridge_name(project: &Project) -> String {
    format!("kvd-{}", project.id)
}

pub fn domain_name(project: &Project, machine: &str) -> String {
    format!("{}-{}-{}", project.slug, project.id, machine)
}

pub fn overlay_name(domain: &str) -> String {
    format!("{domain}.qcow2")
}

/// A MAC in QEMU's locally administered range, stable per project and machine.
pub fn mac_address(project: &Project, machine: &str) -> String {
    let d = Sha256::digest(format!("{}/{}", project.id, machine).as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", d[0], d[1], d[2])
}

/// The file the serial console is logged to (virtlogd writes it).
pub fn console_log(domain: &str) -> PathBuf {
    PathBuf::from(format!("/var/log/libvirt/qemu/{domain}-console.log"))
}

/// Name of a box's base volume in the pool: one per box version and image.
pub fn base_volume_name(box_name: &str, version: &str, image_id: &str) -> String {
    let clean: String = box_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("box-{clean}-{version}-{image_id}.qcow2")
}

/// CPU presentations to try, best first: a CPU mode that fails to start is
/// retried with the next one.
pub fn cpu_candidates(machine: &Machine, accel: Accel) -> Vec<CpuSpec> {
    let model = || {
        CpuSpec::Model(
            machine
                .cpu_model
                .clone()
                .unwrap_or_else(|| SAFE_CPU_MODEL.into()),
        )
    };
    let safe = CpuSpec::Model(SAFE_CPU_MODEL.into());
    let mut list = match (machine.cpu_mode, accel) {
        (CpuMode::Custom, _) => vec![model()],
        // libvirt refuses host-passthrough for a TCG domain: straight to the
        // safe model (`up` says so).
        (CpuMode::HostPassthrough, Accel::Tcg) => vec![],
        (CpuMode::HostPassthrough, Accel::Kvm) => vec![CpuSpec::HostPassthrough],
        (CpuMode::HostModel, _) => vec![CpuSpec::HostModel],
        (CpuMode::Auto, Accel::Kvm) => vec![CpuSpec::HostPassthrough, CpuSpec::HostModel],
        (CpuMode::Auto, Accel::Tcg) => vec![],
    };
    if !list.contains(&safe) {
        list.push(safe);
    }
    list
}

/// Everything decided for one machine.
#[derive(Debug, Clone)]
pub struct MachinePlan {
    pub machine: Machine,
    pub domain: String,
    pub mac: String,
    pub overlay: VolumeSpec,
    pub accel: AccelChoice,
    /// Extra NICs (private and public networks).
    pub nics: Vec<super::nics::NicPlan>,
    /// Extra disks, firmware, machine type, TPM, ...
    pub hardware: HardwarePlan,
}

impl MachinePlan {
    pub fn new(
        project: &Project,
        machine: &Machine,
        base_image: &Path,
        box_virtual_size: u64,
        accel: AccelChoice,
    ) -> MachinePlan {
        let domain = domain_name(project, &machine.name.0);
        MachinePlan {
            mac: mac_address(project, &machine.name.0),
            overlay: VolumeSpec {
                name: overlay_name(&domain),
                capacity_bytes: machine.disk_size.unwrap_or(0).max(box_virtual_size),
                backing: Some(base_image.to_owned()),
            },
            hardware: HardwarePlan::new(&domain, &machine.hardware, &[], CpuVendor::host()),
            domain,
            machine: machine.clone(),
            accel,
            nics: super::nics::plan_nics(project, machine),
        }
    }

    /// Attaches the box's further disks (v2 boxes): (base image, virtual size)
    /// of its second, third, ... disk.
    pub fn with_box_disks(mut self, bases: &[(PathBuf, u64)]) -> MachinePlan {
        self.hardware = HardwarePlan::new(
            &self.domain,
            &self.machine.hardware,
            bases,
            self.hardware.vendor,
        );
        self
    }

    /// The host name the first login gives the guest (`None`: keep the box's).
    pub fn guest_hostname(&self) -> Option<Hostname> {
        match &self.machine.hostname {
            HostnameSetting::MachineName => {
                Some(Hostname::parse(&self.machine.name.0).expect("machine names are host names"))
            }
            HostnameSetting::Name(h) => Some(h.clone()),
            HostnameSetting::Keep => None,
        }
    }

    /// The domain XML for a given accelerator and CPU.
    pub fn domain_spec(
        &self,
        project: &Project,
        disk: &Path,
        accel: Accel,
        cpu: CpuSpec,
    ) -> DomainSpec {
        DomainSpec {
            name: self.domain.clone(),
            project: project.id.clone(),
            machine: self.machine.name.0.clone(),
            accel,
            cpu,
            memory_mib: self.machine.memory_mib,
            vcpus: self.machine.cpus,
            disk: disk.to_owned(),
            mac: self.mac.clone(),
            network: network_name(project),
            nic_model: self.machine.nic_model,
            interfaces: self.nics.iter().map(|n| n.interface.clone()).collect(),
            console_log: console_log(&self.domain),
            filesystems: crate::machine::sync::filesystems(&self.machine, &project.dir),
            hardware: self
                .hardware
                .spec(disk.parent().unwrap_or(Path::new("/")), accel),
            credentials: self
                .guest_hostname()
                .map(|h| (HOSTNAME_CREDENTIAL.to_owned(), h.fqdn().to_owned()))
                .into_iter()
                .collect(),
        }
    }
}

/// The systemd credential that carries the machine's host name (its FQDN)
/// into the guest at boot. A box may name itself from it before sshd starts
/// (the bundled box does, once per name: boxes/debian-12); the first login
/// then finds the name set and needs no `sudo`. Boxes that ignore it are
/// named by that login as before.
pub const HOSTNAME_CREDENTIAL: &str = "kvmdrive.hostname";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::config::Config;

    fn machine(yaml: &str) -> Machine {
        Config::parse(yaml, Path::new("k.yml"))
            .unwrap()
            .machines()
            .remove(0)
    }

    #[test]
    fn names_are_stable_and_fit_libvirt() {
        let p = Project::new(Path::new("/srv/role-nginx"), None).unwrap();
        assert_eq!(domain_name(&p, "web"), format!("role-nginx-{}-web", p.id));
        assert!(bridge_name(&p).len() <= 15);
        let mac = mac_address(&p, "web");
        assert!(mac.starts_with("52:54:00:") && mac.len() == 17, "{mac}");
        assert_eq!(mac, mac_address(&p, "web"));
        assert_ne!(mac, mac_address(&p, "db"));
        assert_eq!(
            base_volume_name("kvmdrive/debian-12", "0", "ab12"),
            "box-kvmdrive-debian-12-0-ab12.qcow2"
        );
    }

    #[test]
    fn the_host_name_goes_to_the_guest_as_a_credential_unless_kept() {
        let p = Project::new(Path::new("/srv/role-nginx"), None).unwrap();
        let credentials = |yaml: &str| {
            let accel = AccelChoice {
                accel: Accel::Tcg,
                reason: String::new(),
            };
            MachinePlan::new(&p, &machine(yaml), Path::new("/b.qcow2"), 0, accel)
                .domain_spec(&p, Path::new("/d/m.qcow2"), Accel::Tcg, CpuSpec::HostModel)
                .credentials
        };
        let named = |v: &str| vec![(HOSTNAME_CREDENTIAL.to_owned(), v.to_owned())];
        assert_eq!(credentials("machines:\n  - name: web\n"), named("web"));
        assert_eq!(
            credentials("machines:\n  - name: web\n    hostname: Web.Example.COM.\n"),
            named("web.example.com")
        );
        assert_eq!(
            credentials("machines:\n  - name: web\n    hostname: false\n"),
            vec![]
        );
    }

    #[test]
    fn cpu_fallbacks_end_with_a_safe_model() {
        let auto = machine("machines:\n  - name: a\n");
        assert_eq!(
            cpu_candidates(&auto, Accel::Kvm),
            vec![
                CpuSpec::HostPassthrough,
                CpuSpec::HostModel,
                CpuSpec::Model("qemu64".into())
            ]
        );
        assert_eq!(
            cpu_candidates(&auto, Accel::Tcg),
            vec![CpuSpec::Model("qemu64".into())]
        );
        let custom = machine(
            "defaults:\n  cpu_mode: custom\n  cpu_model: Haswell\nmachines:\n  - name: a\n",
        );
        assert_eq!(
            cpu_candidates(&custom, Accel::Kvm),
            vec![
                CpuSpec::Model("Haswell".into()),
                CpuSpec::Model("qemu64".into())
            ]
        );
        let passthrough =
            machine("defaults:\n  cpu_mode: host-passthrough\nmachines:\n  - name: a\n");
        assert_eq!(
            cpu_candidates(&passthrough, Accel::Kvm),
            vec![CpuSpec::HostPassthrough, CpuSpec::Model("qemu64".into())]
        );
        assert_eq!(
            cpu_candidates(&passthrough, Accel::Tcg),
            vec![CpuSpec::Model("qemu64".into())]
        );
    }

    #[test]
    fn overlay_is_at_least_the_box_size() {
        let p = Project::new(Path::new("/srv/x"), None).unwrap();
        let accel = AccelChoice {
            accel: Accel::Tcg,
            reason: String::new(),
        };
        let small = machine("defaults:\n  disk_size: 1G\nmachines:\n  - name: a\n");
        let plan = MachinePlan::new(
            &p,
            &small,
            Path::new("/pool/base.qcow2"),
            3 << 30,
            accel.clone(),
        );
        assert_eq!(plan.overlay.capacity_bytes, 3 << 30);
        let big = machine("defaults:\n  disk_size: 20G\nmachines:\n  - name: a\n");
        let plan = MachinePlan::new(&p, &big, Path::new("/pool/base.qcow2"), 3 << 30, accel);
        assert_eq!(plan.overlay.capacity_bytes, 20 << 30);
        assert_eq!(
            plan.overlay.backing.as_deref(),
            Some(Path::new("/pool/base.qcow2"))
        );
    }
}
