//! The hardware parts of a domain's XML: machine type, UEFI loader and
//! NVRAM, SMM, CPU features, extra disks and their controllers, TPM, the
//! guest agent channel and VNC graphics. [`HardwareSpec`] is what the plan
//! decides; `virt::domain` places the fragments built here into its
//! document. The default spec adds nothing (a BIOS `pc` machine with one disk).

use std::path::PathBuf;

use serde::Serialize;

use super::domain::Disk;

/// The virtio-serial port name qemu-guest-agent listens on.
pub const GUEST_AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// Debian's OVMF images (package `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Secure-boot build (SMM) and variables with Microsoft's keys enrolled.
pub const OVMF_CODE_SECURE: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
pub const OVMF_VARS_SECURE: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// UEFI firmware of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiSpec {
    /// Read-only code image.
    pub code: PathBuf,
    /// Variables image libvirt copies to `nvram` when that does not exist.
    pub vars_template: PathBuf,
    /// The machine's own variables file.
    pub nvram: PathBuf,
    pub secure_boot: bool,
}

/// The bus an extra disk is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Virtio,
    Scsi,
    Sata,
}

impl Bus {
    fn as_str(self) -> &'static str {
        match self {
            Bus::Virtio => "virtio",
            Bus::Scsi => "scsi",
            Bus::Sata => "sata",
        }
    }
}

/// An extra disk attached after the box's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    /// `qcow2` or `raw`.
    pub format: &'static str,
    pub bus: Bus,
    /// Target device name (`vdb`, `sda`, ...).
    pub dev: String,
}

/// Everything beyond the basic machine; `Default` adds nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HardwareSpec {
    /// `q35`; `None` leaves libvirt's default (`pc`).
    pub machine_type: Option<&'static str>,
    pub uefi: Option<UefiSpec>,
    pub disks: Vec<DiskSpec>,
    /// (feature name, policy) pairs for `<cpu>`.
    pub cpu_features: Vec<(String, &'static str)>,
    pub tpm: bool,
    pub guest_agent: bool,
    pub vnc: bool,
}

// ---- XML fragments (placed by virt::domain) ----------------------------------

#[derive(Serialize)]
pub(super) struct LoaderXml {
    #[serde(rename = "@readonly")]
    readonly: &'static str,
    #[serde(rename = "@secure")]
    secure: &'static str,
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "$text")]
    path: String,
}

#[derive(Serialize)]
pub(super) struct NvramXml {
    #[serde(rename = "@template")]
    template: String,
    #[serde(rename = "$text")]
    path: String,
}

#[derive(Serialize)]
pub(super) struct StateXml {
    #[serde(rename = "@state")]
    state: &'static str,
}

#[derive(Serialize)]
pub(super) struct CpuFeatureXml {
    #[serde(rename = "@policy")]
    policy: &'static str,
    #[serde(rename = "@name")]
    name: String,
}

#[derive(Serialize)]
pub(super) struct ControllerXml {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@index")]
    index: u32,
    #[serde(rename = "@model", skip_serializing_if = "Option::is_none")]
    model: Option<&'static str>,
}

#[derive(Serialize)]
pub(super) struct ChannelXml {
    #[serde(rename = "@type")]
    kind: &'static str,
    target: ChannelTargetXml,
}

#[derive(Serialize)]
struct ChannelTargetXml {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@name")]
    name: &'static str,
}

#[derive(Serialize)]
pub(super) struct GraphicsXml {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@autoport")]
    autoport: &'static str,
    listen: ListenXml,
}

#[derive(Serialize)]
struct ListenXml {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@address")]
    address: &'static str,
}

#[derive(Serialize)]
pub(super) struct TpmXml {
    #[serde(rename = "@model")]
    model: &'static str,
    backend: TpmBackendXml,
}

#[derive(Serialize)]
struct TpmBackendXml {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@version")]
    version: &'static str,
}

impl HardwareSpec {
    pub(super) fn loader(&self) -> Option<LoaderXml> {
        self.uefi.as_ref().map(|u| LoaderXml {
            readonly: "yes",
            secure: if u.secure_boot { "yes" } else { "no" },
            kind: "pflash",
            path: u.code.display().to_string(),
        })
    }

    pub(super) fn nvram(&self) -> Option<NvramXml> {
        self.uefi.as_ref().map(|u| NvramXml {
            template: u.vars_template.display().to_string(),
            path: u.nvram.display().to_string(),
        })
    }

    /// `<smm state="on"/>`, which secure boot needs.
    pub(super) fn smm(&self) -> Option<StateXml> {
        self.uefi
            .as_ref()
            .filter(|u| u.secure_boot)
            .map(|_| StateXml { state: "on" })
    }

    pub(super) fn cpu_features(&self) -> Vec<CpuFeatureXml> {
        self.cpu_features
            .iter()
            .map(|(name, policy)| CpuFeatureXml {
                policy,
                name: name.clone(),
            })
            .collect()
    }

    pub(super) fn disks(&self) -> Vec<Disk> {
        self.disks
            .iter()
            .map(|d| Disk::file(&d.path, d.format, d.dev.clone(), d.bus.as_str()))
            .collect()
    }

    /// A virtio-scsi controller for SCSI disks, an AHCI one for SATA disks.
    pub(super) fn controllers(&self) -> Vec<ControllerXml> {
        let mut out = Vec::new();
        if self.disks.iter().any(|d| d.bus == Bus::Scsi) {
            out.push(ControllerXml {
                kind: "scsi",
                index: 0,
                model: Some("virtio-scsi"),
            });
        }
        if self.disks.iter().any(|d| d.bus == Bus::Sata) {
            out.push(ControllerXml {
                kind: "sata",
                index: 0,
                model: None,
            });
        }
        out
    }

    pub(super) fn channel(&self) -> Option<ChannelXml> {
        self.guest_agent.then_some(ChannelXml {
            kind: "unix",
            target: ChannelTargetXml {
                kind: "virtio",
                name: GUEST_AGENT_CHANNEL,
            },
        })
    }

    pub(super) fn graphics(&self) -> Option<GraphicsXml> {
        self.vnc.then_some(GraphicsXml {
            kind: "vnc",
            autoport: "yes",
            listen: ListenXml {
                kind: "address",
                address: "127.0.0.1",
            },
        })
    }

    pub(super) fn tpm(&self) -> Option<TpmXml> {
        self.tpm.then_some(TpmXml {
            model: "tpm-crb",
            backend: TpmBackendXml {
                kind: "emulator",
                version: "2.0",
            },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every option at once: q35, secure boot, two extra disks, TPM, agent, VNC.
    pub fn everything() -> HardwareSpec {
        HardwareSpec {
            machine_type: Some("q35"),
            uefi: Some(UefiSpec {
                code: OVMF_CODE_SECURE.into(),
                vars_template: OVMF_VARS_SECURE.into(),
                nvram: "/var/lib/libvirt/qemu/nvram/proj-1a2b3c-web_VARS.fd".into(),
                secure_boot: true,
            }),
            disks: vec![
                DiskSpec {
                    path: "/var/lib/libvirt/images/kvmdrive/proj-1a2b3c-web.disk-data.qcow2".into(),
                    format: "qcow2",
                    bus: Bus::Virtio,
                    dev: "vdb".into(),
                },
                DiskSpec {
                    path: "/var/lib/libvirt/images/kvmdrive/proj-1a2b3c-web.disk-disk2.raw".into(),
                    format: "raw",
                    bus: Bus::Scsi,
                    dev: "sda".into(),
                },
            ],
            cpu_features: vec![("svm".into(), "require"), ("avx2".into(), "disable")],
            tpm: true,
            guest_agent: true,
            vnc: true,
        }
    }

    #[test]
    fn the_default_adds_nothing() {
        let hw = HardwareSpec::default();
        assert!(hw.loader().is_none() && hw.nvram().is_none() && hw.smm().is_none());
        assert!(hw.disks().is_empty() && hw.controllers().is_empty());
        assert!(hw.tpm().is_none() && hw.channel().is_none() && hw.graphics().is_none());
    }

    #[test]
    fn controllers_follow_the_disks_buses() {
        let mut hw = everything();
        assert_eq!(hw.controllers().len(), 1);
        hw.disks[1].bus = Bus::Sata;
        assert_eq!(hw.controllers()[0].kind, "sata");
        hw.disks.truncate(1);
        assert!(hw.controllers().is_empty());
    }
}
