//! A machine's hardware plan (pure): extra disk volumes and their target
//! names, the UEFI NVRAM file, machine type, CPU features (nested
//! virtualisation included), TPM, guest agent and VNC, decided from the
//! typed settings of [`crate::project::hardware`]. `destroy` finds extra disks by the
//! volume-name prefix, so it also removes those of machines no longer in
//! the config.

use std::path::{Path, PathBuf};

use crate::project::hardware::{DiskBus, Firmware, Hardware, MachineType};
use crate::virt::data_volume::DataVolumeSpec;
use crate::virt::domain::Accel;
use crate::virt::hardware::{self as hw, Bus, DiskSpec, HardwareSpec, UefiSpec};
use crate::virt::storage::VolumeSpec;

/// Where libvirt keeps domains' NVRAM files (on the libvirt host).
pub const NVRAM_DIR: &str = "/var/lib/libvirt/qemu/nvram";

/// Prefix of every extra-disk volume of a domain, the box's further disks
/// included (machine names hold no `.`, so no other machine's volume shares it).
pub fn disk_volume_prefix(domain: &str) -> String {
    format!("{domain}.disk")
}

/// The overlay of the box's `n`-th disk (`n` >= 2; the first is the machine's
/// main overlay).
pub fn box_disk_volume_name(domain: &str, n: usize) -> String {
    format!("{}.box{n}.qcow2", disk_volume_prefix(domain))
}

/// The volume of extra disk `name` of `domain`.
pub fn disk_volume_name(domain: &str, name: &str, format: &str) -> String {
    format!("{}-{name}.{format}", disk_volume_prefix(domain))
}

/// The machine's UEFI variables file.
pub fn nvram_path(domain: &str) -> PathBuf {
    Path::new(NVRAM_DIR).join(format!("{domain}_VARS.fd"))
}

/// The host CPU's vendor: which feature nested virtualisation needs under KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVendor {
    Intel,
    Amd,
    Other,
}

impl CpuVendor {
    pub fn from_cpuinfo(text: &str) -> CpuVendor {
        let vendor = text
            .lines()
            .find(|l| l.starts_with("vendor_id"))
            .and_then(|l| l.split(':').nth(1))
            .map(str::trim);
        match vendor {
            Some("GenuineIntel") => CpuVendor::Intel,
            Some("AuthenticAMD") | Some("HygonGenuine") => CpuVendor::Amd,
            _ => CpuVendor::Other,
        }
    }

    /// This host's (read once from /proc/cpuinfo).
    pub fn host() -> CpuVendor {
        static VENDOR: std::sync::OnceLock<CpuVendor> = std::sync::OnceLock::new();
        *VENDOR.get_or_init(|| {
            CpuVendor::from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
        })
    }
}

/// The CPU feature nested guests need: under TCG `svm` (qemu emulates AMD's
/// SVM, and qemu64 is an AMD-style model), under KVM the host vendor's.
pub fn nested_feature(accel: Accel, vendor: CpuVendor) -> &'static str {
    match (accel, vendor) {
        (Accel::Tcg, _) | (Accel::Kvm, CpuVendor::Amd) => "svm",
        (Accel::Kvm, _) => "vmx",
    }
}

/// An extra disk: its volume and where the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDisk {
    pub volume: DataVolumeSpec,
    pub bus: Bus,
    /// `vdb`, `vdc`, ... on virtio; `sda`, `sdb`, ... on SCSI and SATA.
    pub dev: String,
}

/// Everything hardware-related decided for one machine.
#[derive(Debug, Clone, PartialEq)]
pub struct HardwarePlan {
    pub settings: Hardware,
    /// Overlays of the box's second, third, ... disk (v2 boxes), attached
    /// right after the first (`vdb`, ...).
    pub box_disks: Vec<VolumeSpec>,
    pub disks: Vec<PlannedDisk>,
    pub nvram: Option<PathBuf>,
    pub vendor: CpuVendor,
}

/// `vd` + `b`: the n-th device name of a bus (0 = `a`, 25 = `z`, 26 = `aa`).
fn dev_name(prefix: &str, n: usize) -> String {
    let letter = |i: usize| char::from(b'a' + (i % 26) as u8);
    if n < 26 {
        format!("{prefix}{}", letter(n))
    } else {
        format!("{prefix}{}{}", letter(n / 26 - 1), letter(n))
    }
}

impl HardwarePlan {
    /// The box's disks come first (`vda` is the machine's main overlay, then
    /// one overlay per base in `box_bases`: (base image, its virtual size));
    /// extra disks follow.
    pub fn new(
        domain: &str,
        hw: &Hardware,
        box_bases: &[(PathBuf, u64)],
        vendor: CpuVendor,
    ) -> HardwarePlan {
        let box_disks: Vec<VolumeSpec> = box_bases
            .iter()
            .enumerate()
            .map(|(i, (base, size))| VolumeSpec {
                name: box_disk_volume_name(domain, i + 2),
                capacity_bytes: *size,
                backing: Some(base.clone()),
            })
            .collect();
        let mut next_vd = 1 + box_disks.len();
        let mut next_sd = 0;
        let disks = hw
            .disks
            .iter()
            .map(|d| {
                let (bus, dev) = match d.bus {
                    DiskBus::Virtio => {
                        next_vd += 1;
                        (Bus::Virtio, dev_name("vd", next_vd - 1))
                    }
                    DiskBus::Scsi | DiskBus::Sata => {
                        next_sd += 1;
                        let bus = if d.bus == DiskBus::Scsi {
                            Bus::Scsi
                        } else {
                            Bus::Sata
                        };
                        (bus, dev_name("sd", next_sd - 1))
                    }
                };
                let name = d.name.as_deref().expect("named by Disks::new");
                PlannedDisk {
                    volume: DataVolumeSpec {
                        name: disk_volume_name(domain, name, d.format.as_str()),
                        capacity_bytes: d.size.0,
                        format: d.format.as_str(),
                    },
                    bus,
                    dev,
                }
            })
            .collect();
        HardwarePlan {
            settings: hw.clone(),
            box_disks,
            disks,
            nvram: (hw.firmware == Firmware::Efi).then(|| nvram_path(domain)),
            vendor,
        }
    }

    /// The domain's hardware for an accelerator; extra disks live in `pool_dir`.
    pub fn spec(&self, pool_dir: &Path, accel: Accel) -> HardwareSpec {
        let s = &self.settings;
        let mut cpu_features: Vec<(String, &'static str)> = s
            .cpu_features
            .iter()
            .map(|f| (f.name.clone(), f.policy.as_str()))
            .collect();
        if s.nested {
            let f = nested_feature(accel, self.vendor);
            if !cpu_features.iter().any(|(n, _)| n == f) {
                cpu_features.push((f.to_owned(), "require"));
            }
        }
        HardwareSpec {
            machine_type: (s.machine_type == MachineType::Q35).then_some("q35"),
            uefi: self.nvram.as_ref().map(|nvram| UefiSpec {
                code: if s.secure_boot {
                    hw::OVMF_CODE_SECURE
                } else {
                    hw::OVMF_CODE
                }
                .into(),
                vars_template: if s.secure_boot {
                    hw::OVMF_VARS_SECURE
                } else {
                    hw::OVMF_VARS
                }
                .into(),
                nvram: nvram.clone(),
                secure_boot: s.secure_boot,
            }),
            disks: self
                .box_disks
                .iter()
                .enumerate()
                .map(|(i, v)| DiskSpec {
                    path: pool_dir.join(&v.name),
                    format: "qcow2",
                    bus: Bus::Virtio,
                    dev: dev_name("vd", i + 1),
                })
                .chain(self.disks.iter().map(|d| DiskSpec {
                    path: pool_dir.join(&d.volume.name),
                    format: d.volume.format,
                    bus: d.bus,
                    dev: d.dev.clone(),
                }))
                .collect(),
            cpu_features,
            tpm: s.tpm,
            guest_agent: s.guest_agent,
            vnc: s.graphics == crate::project::hardware::Graphics::Vnc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::config::Config;

    fn hardware(yaml: &str) -> Hardware {
        Config::parse(yaml, Path::new("k.yml"))
            .unwrap()
            .machines()
            .remove(0)
            .hardware
    }

    #[test]
    fn disks_follow_the_box_disk_in_order_per_bus() {
        let hw = hardware(
            "machines:\n  - name: a\n    disks:\n      - {size: 1G}\n      - {size: 2G, bus: scsi, format: raw, name: logs}\n      - {size: 3G}\n      - {size: 1G, bus: sata}\n",
        );
        let p = HardwarePlan::new("p-1-a", &hw, &[], CpuVendor::Intel);
        let devs: Vec<_> = p.disks.iter().map(|d| d.dev.as_str()).collect();
        assert_eq!(devs, ["vdb", "sda", "vdc", "sdb"]);
        assert_eq!(p.disks[0].volume.name, "p-1-a.disk-disk1.qcow2");
        assert_eq!(p.disks[1].volume.name, "p-1-a.disk-logs.raw");
        assert_eq!(p.disks[2].volume.capacity_bytes, 3 << 30);
        assert!(p
            .disks
            .iter()
            .all(|d| d.volume.name.starts_with(&disk_volume_prefix("p-1-a"))));
        assert!(!"p-1-a-b.qcow2".starts_with(&disk_volume_prefix("p-1-a")));
        let spec = p.spec(Path::new("/pool"), Accel::Tcg);
        assert_eq!(spec.disks[1].path, Path::new("/pool/p-1-a.disk-logs.raw"));
        assert_eq!(dev_name("vd", 26), "vdaa");
    }

    #[test]
    fn a_boxs_further_disks_come_before_the_extra_disks() {
        let hw = hardware("machines:\n  - name: a\n    disks: [{size: 1G}]\n");
        let bases = [("/pool/box-2.qcow2".into(), 5 << 30)];
        let p = HardwarePlan::new("p-1-a", &hw, &bases, CpuVendor::Intel);
        assert_eq!(p.box_disks[0].name, "p-1-a.disk.box2.qcow2");
        assert_eq!(p.box_disks[0].capacity_bytes, 5 << 30);
        assert_eq!(p.disks[0].dev, "vdc");
        let spec = p.spec(Path::new("/pool"), Accel::Tcg);
        let devs: Vec<_> = spec.disks.iter().map(|d| d.dev.as_str()).collect();
        assert_eq!(devs, ["vdb", "vdc"]);
        assert_eq!(spec.disks[0].path, Path::new("/pool/p-1-a.disk.box2.qcow2"));
        assert!(p.box_disks[0]
            .name
            .starts_with(&disk_volume_prefix("p-1-a")));
    }

    #[test]
    fn efi_gets_its_own_nvram_and_secure_boot_the_ms_images() {
        let p = HardwarePlan::new(
            "p-1-a",
            &hardware("defaults:\n  firmware: efi\n"),
            &[],
            CpuVendor::Intel,
        );
        let spec = p.spec(Path::new("/pool"), Accel::Kvm);
        let uefi = spec.uefi.unwrap();
        assert_eq!(
            uefi.nvram,
            Path::new("/var/lib/libvirt/qemu/nvram/p-1-a_VARS.fd")
        );
        assert_eq!(uefi.code, Path::new(hw::OVMF_CODE));
        assert_eq!(spec.machine_type, None);
        let p = HardwarePlan::new(
            "p-1-a",
            &hardware("defaults:\n  secure_boot: true\n"),
            &[],
            CpuVendor::Intel,
        );
        let spec = p.spec(Path::new("/pool"), Accel::Kvm);
        let uefi = spec.uefi.unwrap();
        assert!(uefi.secure_boot);
        assert_eq!(uefi.vars_template, Path::new(hw::OVMF_VARS_SECURE));
        assert_eq!(spec.machine_type, Some("q35"));
        let bios = HardwarePlan::new("p-1-a", &hardware(""), &[], CpuVendor::Intel);
        assert_eq!(
            bios.spec(Path::new("/pool"), Accel::Kvm),
            HardwareSpec::default()
        );
    }

    #[test]
    fn nested_requires_the_vendors_feature() {
        let hw = hardware(
            "defaults:\n  nested: true\n  cpu_features: [{name: avx2, policy: disable}]\n",
        );
        let feats = |vendor, accel| {
            HardwarePlan::new("d", &hw, &[], vendor)
                .spec(Path::new("/p"), accel)
                .cpu_features
        };
        assert_eq!(
            feats(CpuVendor::Intel, Accel::Kvm)[1],
            ("vmx".to_owned(), "require")
        );
        assert_eq!(
            feats(CpuVendor::Amd, Accel::Kvm)[1],
            ("svm".to_owned(), "require")
        );
        assert_eq!(feats(CpuVendor::Intel, Accel::Tcg)[1].0, "svm");
        assert_eq!(
            feats(CpuVendor::Intel, Accel::Kvm)[0],
            ("avx2".to_owned(), "disable")
        );
        assert_eq!(
            CpuVendor::from_cpuinfo("processor\t: 0\nvendor_id\t: AuthenticAMD\n"),
            CpuVendor::Amd
        );
    }
}
