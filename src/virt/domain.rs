//! Domain spec -> libvirt domain XML.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::filesystem::{self, FilesystemSpec, FilesystemXml, MemoryBackingXml};
use super::hardware::{self as hw, HardwareSpec};
use super::interface::{InterfaceSource, InterfaceSpec, InterfaceXml};
use super::{to_xml, Empty};
use crate::project::net_config::NicModel;

/// XML namespace of kvmdrive's `<metadata>` element, which marks domains as
/// ours and names their project and machine.
pub const METADATA_NS: &str = "https://kvmdrive.dev/xmlns/machine/1";

/// Which accelerator runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// Software emulation (qemu's TCG): libvirt domain type `qemu`.
    Tcg,
}

impl Accel {
    pub fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }
}

/// How the guest CPU is presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuSpec {
    HostPassthrough,
    HostModel,
    /// A named model such as `qemu64` (the safe choice under TCG).
    Model(String),
}

/// Everything that decides a machine's domain XML.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainSpec {
    pub name: String,
    pub project: String,
    pub machine: String,
    pub accel: Accel,
    pub cpu: CpuSpec,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// The machine's qcow2 overlay.
    pub disk: PathBuf,
    /// The management NIC: its MAC, network and card model.
    pub mac: String,
    pub network: String,
    pub nic_model: NicModel,
    /// Extra NICs (private and public networks), after the management NIC.
    pub interfaces: Vec<InterfaceSpec>,
    /// File the serial console is logged to.
    pub console_log: PathBuf,
    /// Host directories shared with the guest (9p, virtiofs synced folders).
    pub filesystems: Vec<FilesystemSpec>,
    /// Firmware, machine type, extra disks, TPM, ... (default: none of them).
    pub hardware: HardwareSpec,
    /// systemd system credentials (name, value) handed to the guest as SMBIOS
    /// OEM strings (`io.systemd.credential:NAME=VALUE`, type 11), which
    /// systemd 252 and later imports at boot; other guests ignore them.
    pub credentials: Vec<(String, String)>,
}

#[derive(Serialize)]
#[serde(rename = "domain")]
struct DomainXml<'a> {
    #[serde(rename = "@type")]
    kind: &'a str,
    name: &'a str,
    metadata: MetadataXml<'a>,
    memory: Memory,
    #[serde(rename = "memoryBacking", skip_serializing_if = "Option::is_none")]
    memory_backing: Option<MemoryBackingXml>,
    vcpu: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    sysinfo: Option<SysinfoXml>,
    os: Os,
    features: Features,
    cpu: Cpu<'a>,
    clock: Clock,
    on_poweroff: &'static str,
    on_reboot: &'static str,
    on_crash: &'static str,
    devices: Devices<'a>,
}

#[derive(Serialize)]
struct MetadataXml<'a> {
    #[serde(rename = "kvmdrive:machine")]
    machine: MachineMeta<'a>,
}

#[derive(Serialize)]
struct MachineMeta<'a> {
    #[serde(rename = "@xmlns:kvmdrive")]
    ns: &'static str,
    #[serde(rename = "@project")]
    project: &'a str,
    #[serde(rename = "@name")]
    name: &'a str,
}

#[derive(Serialize)]
struct Memory {
    #[serde(rename = "@unit")]
    unit: &'static str,
    #[serde(rename = "$text")]
    value: u32,
}

#[derive(Serialize)]
struct Os {
    #[serde(rename = "type")]
    kind: OsType,
    #[serde(skip_serializing_if = "Option::is_none")]
    loader: Option<hw::LoaderXml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nvram: Option<hw::NvramXml>,
    boot: Boot,
    bootmenu: Toggle,
    #[serde(skip_serializing_if = "Option::is_none")]
    smbios: Option<SmbiosXml>,
}

/// `<sysinfo type='smbios'>` with OEM strings only; `<os><smbios
/// mode='sysinfo'/>` makes QEMU put them in the SMBIOS tables.
#[derive(Serialize)]
struct SysinfoXml {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "oemStrings")]
    oem_strings: OemStringsXml,
}

#[derive(Serialize)]
struct OemStringsXml {
    entry: Vec<String>,
}

#[derive(Serialize)]
struct SmbiosXml {
    #[serde(rename = "@mode")]
    mode: &'static str,
}

#[derive(Serialize)]
struct OsType {
    #[serde(rename = "@arch")]
    arch: &'static str,
    #[serde(rename = "@machine", skip_serializing_if = "Option::is_none")]
    machine: Option<&'static str>,
    #[serde(rename = "$text")]
    value: &'static str,
}

#[derive(Serialize)]
struct Boot {
    #[serde(rename = "@dev")]
    dev: &'static str,
}

#[derive(Serialize)]
struct Toggle {
    #[serde(rename = "@enable")]
    enable: &'static str,
}

#[derive(Serialize)]
struct Features {
    acpi: Empty,
    apic: Empty,
    #[serde(skip_serializing_if = "Option::is_none")]
    smm: Option<hw::StateXml>,
}

#[derive(Serialize)]
struct Cpu<'a> {
    #[serde(rename = "@mode")]
    mode: &'static str,
    #[serde(rename = "@check")]
    check: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<CpuModel<'a>>,
    feature: Vec<hw::CpuFeatureXml>,
}

#[derive(Serialize)]
struct CpuModel<'a> {
    #[serde(rename = "@fallback")]
    fallback: &'static str,
    #[serde(rename = "$text")]
    name: &'a str,
}

#[derive(Serialize)]
struct Clock {
    #[serde(rename = "@offset")]
    offset: &'static str,
}

#[derive(Serialize)]
struct Devices<'a> {
    disk: Disk,
    /// Extra disks, after the box's.
    #[serde(rename = "disk")]
    extra_disks: Vec<Disk>,
    controller: Vec<hw::ControllerXml>,
    #[serde(rename = "interface")]
    interfaces: Vec<InterfaceXml<'a>>,
    filesystem: Vec<FilesystemXml>,
    serial: Serial,
    console: Console,
    rng: Rng,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<hw::ChannelXml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    graphics: Option<hw::GraphicsXml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tpm: Option<hw::TpmXml>,
    memballoon: Model,
}

/// A file-backed disk as kvmdrive attaches every disk: the box disk and the
/// extra ones ([`super::hardware`]).
#[derive(Serialize)]
pub(super) struct Disk {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@device")]
    device: &'static str,
    driver: DiskDriver,
    source: FileSource,
    target: DiskTarget,
}

#[derive(Serialize)]
struct DiskDriver {
    #[serde(rename = "@name")]
    name: &'static str,
    #[serde(rename = "@type")]
    format: &'static str,
    #[serde(rename = "@discard")]
    discard: &'static str,
}

#[derive(Serialize)]
struct FileSource {
    #[serde(rename = "@file")]
    file: String,
}

impl Disk {
    /// qemu driver, `discard='unmap'` (the guest's trims shrink the file).
    pub(super) fn file(path: &Path, format: &'static str, dev: String, bus: &'static str) -> Disk {
        Disk {
            kind: "file",
            device: "disk",
            driver: DiskDriver {
                name: "qemu",
                format,
                discard: "unmap",
            },
            source: FileSource {
                file: path.display().to_string(),
            },
            target: DiskTarget { dev, bus },
        }
    }
}

#[derive(Serialize)]
struct DiskTarget {
    #[serde(rename = "@dev")]
    dev: String,
    #[serde(rename = "@bus")]
    bus: &'static str,
}

#[derive(Serialize)]
struct Model {
    #[serde(rename = "@model")]
    model: &'static str,
}

#[derive(Serialize)]
struct Serial {
    #[serde(rename = "@type")]
    kind: &'static str,
    log: Log,
    target: SerialTarget,
}

#[derive(Serialize)]
struct Log {
    #[serde(rename = "@file")]
    file: String,
    #[serde(rename = "@append")]
    append: &'static str,
}

#[derive(Serialize)]
struct SerialTarget {
    #[serde(rename = "@port")]
    port: u32,
}

#[derive(Serialize)]
struct Console {
    #[serde(rename = "@type")]
    kind: &'static str,
    target: ConsoleTarget,
}

#[derive(Serialize)]
struct ConsoleTarget {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@port")]
    port: u32,
}

#[derive(Serialize)]
struct Rng {
    #[serde(rename = "@model")]
    model: &'static str,
    backend: RngBackend,
}

#[derive(Serialize)]
struct RngBackend {
    #[serde(rename = "@model")]
    model: &'static str,
    #[serde(rename = "$text")]
    device: &'static str,
}

impl DomainSpec {
    /// The libvirt domain XML for this spec.
    pub fn to_xml(&self) -> String {
        let (mode, model) = match &self.cpu {
            CpuSpec::HostPassthrough => ("host-passthrough", None),
            CpuSpec::HostModel => ("host-model", None),
            CpuSpec::Model(name) => (
                "custom",
                Some(CpuModel {
                    fallback: "forbid",
                    name,
                }),
            ),
        };
        let management = InterfaceSpec {
            mac: self.mac.clone(),
            model: self.nic_model,
            source: InterfaceSource::Network(self.network.clone()),
        };
        let sysinfo = (!self.credentials.is_empty()).then(|| SysinfoXml {
            kind: "smbios",
            oem_strings: OemStringsXml {
                entry: self
                    .credentials
                    .iter()
                    .map(|(name, value)| format!("io.systemd.credential:{name}={value}"))
                    .collect(),
            },
        });
        // QEMU puts the <sysinfo> strings in its tables only when <os> asks.
        let smbios = sysinfo.as_ref().map(|_| SmbiosXml { mode: "sysinfo" });
        let doc = DomainXml {
            kind: self.accel.domain_type(),
            name: &self.name,
            metadata: MetadataXml {
                machine: MachineMeta {
                    ns: METADATA_NS,
                    project: &self.project,
                    name: &self.machine,
                },
            },
            memory: Memory {
                unit: "MiB",
                value: self.memory_mib,
            },
            memory_backing: filesystem::memory_backing(&self.filesystems),
            vcpu: self.vcpus,
            sysinfo,
            os: Os {
                kind: OsType {
                    arch: "x86_64",
                    machine: self.hardware.machine_type,
                    value: "hvm",
                },
                loader: self.hardware.loader(),
                nvram: self.hardware.nvram(),
                boot: Boot { dev: "hd" },
                bootmenu: Toggle { enable: "no" },
                smbios,
            },
            features: Features {
                acpi: Empty {},
                apic: Empty {},
                smm: self.hardware.smm(),
            },
            cpu: Cpu {
                mode,
                check: "none",
                model,
                feature: self.hardware.cpu_features(),
            },
            clock: Clock { offset: "utc" },
            on_poweroff: "destroy",
            on_reboot: "restart",
            on_crash: "destroy",
            devices: Devices {
                disk: Disk::file(&self.disk, "qcow2", "vda".into(), "virtio"),
                extra_disks: self.hardware.disks(),
                controller: self.hardware.controllers(),
                interfaces: std::iter::once(&management)
                    .chain(&self.interfaces)
                    .map(InterfaceSpec::as_xml)
                    .collect(),
                filesystem: self
                    .filesystems
                    .iter()
                    .map(FilesystemSpec::as_xml)
                    .collect(),
                serial: Serial {
                    kind: "pty",
                    log: Log {
                        file: self.console_log.display().to_string(),
                        append: "off",
                    },
                    target: SerialTarget { port: 0 },
                },
                console: Console {
                    kind: "pty",
                    target: ConsoleTarget {
                        kind: "serial",
                        port: 0,
                    },
                },
                rng: Rng {
                    model: "virtio",
                    backend: RngBackend {
                        model: "random",
                        device: "/dev/urandom",
                    },
                },
                channel: self.hardware.channel(),
                graphics: self.hardware.graphics(),
                tpm: self.hardware.tpm(),
                memballoon: Model { model: "none" },
            },
        };
        to_xml(&doc)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(accel: Accel, cpu: CpuSpec) -> DomainSpec {
        DomainSpec {
            name: "proj-1a2b3c-web".into(),
            project: "/home/me/proj".into(),
            machine: "web".into(),
            accel,
            cpu,
            memory_mib: 512,
            vcpus: 1,
            disk: "/var/lib/libvirt/images/kvmdrive/proj-1a2b3c-web.qcow2".into(),
            mac: "52:54:00:12:34:56".into(),
            network: "kvmdrive-1a2b3c".into(),
            nic_model: NicModel::Virtio,
            interfaces: Vec::new(),
            console_log: "/var/log/libvirt/qemu/proj-1a2b3c-web-console.log".into(),
            filesystems: Vec::new(),
            hardware: HardwareSpec::default(),
            credentials: Vec::new(),
        }
    }

    #[test]
    fn credentials_become_smbios_oem_strings() {
        let mut s = sample(Accel::Tcg, CpuSpec::Model("qemu64".into()));
        assert!(!s.to_xml().contains("smbios"), "none without credentials");
        s.credentials = vec![("kvmdrive.hostname".into(), "web.example.com".into())];
        let xml = s.to_xml();
        let compact: String = xml.lines().map(str::trim).collect();
        assert!(
            compact.contains(
                "<sysinfo type=\"smbios\"><oemStrings><entry>\
                 io.systemd.credential:kvmdrive.hostname=web.example.com\
                 </entry></oemStrings></sysinfo><os>"
            ),
            "{xml}"
        );
        assert!(
            compact.contains(r#"<bootmenu enable="no"/><smbios mode="sysinfo"/></os>"#),
            "{xml}"
        );
    }

    #[test]
    fn shared_folders_match_golden_file() {
        let mut s = sample(Accel::Tcg, CpuSpec::Model("qemu64".into()));
        s.filesystems = crate::virt::filesystem::tests::shares();
        let xml = s.to_xml();
        crate::testutil::assert_golden("domain-shared-folders.xml", &xml);
        assert!(xml.contains(r#"<source type="memfd"/>"#), "{xml}");
        assert_eq!(xml.matches("<filesystem ").count(), 2, "{xml}");
    }

    #[test]
    fn hardware_options_match_golden_file() {
        let mut s = sample(Accel::Tcg, CpuSpec::Model("qemu64".into()));
        s.hardware = crate::virt::hardware::tests::everything();
        let xml = s.to_xml();
        crate::testutil::assert_golden("domain-hardware.xml", &xml);
        assert!(
            xml.contains(r#"<type arch="x86_64" machine="q35">hvm</type>"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<smm state="on"/>"#), "{xml}");
        assert_eq!(xml.matches("<disk ").count(), 3, "{xml}");
        let vda = xml.find(r#"dev="vda""#).unwrap();
        assert!(vda < xml.find(r#"dev="vdb""#).unwrap(), "box disk first");
    }

    #[test]
    fn tcg_domain_matches_golden_file() {
        let xml = sample(Accel::Tcg, CpuSpec::Model("qemu64".into())).to_xml();
        crate::testutil::assert_golden("domain-tcg.xml", &xml);
    }

    #[test]
    fn kvm_domain_matches_golden_file() {
        let xml = sample(Accel::Kvm, CpuSpec::HostPassthrough).to_xml();
        crate::testutil::assert_golden("domain-kvm.xml", &xml);
    }

    #[test]
    fn extra_nics_follow_the_management_nic() {
        let mut s = sample(Accel::Tcg, CpuSpec::Model("qemu64".into()));
        s.nic_model = NicModel::E1000;
        s.interfaces = crate::virt::interface::tests::extra_nics();
        let xml = s.to_xml();
        crate::testutil::assert_golden("domain-networks.xml", &xml);
        let first = xml.find("<interface").unwrap();
        assert!(
            xml[first..].starts_with(r#"<interface type="network">"#),
            "{xml}"
        );
        assert!(xml[first..].contains(r#"<model type="e1000"/>"#));
        assert_eq!(xml.matches("<interface ").count(), 4, "{xml}");
    }

    #[test]
    fn special_characters_are_escaped() {
        let mut s = sample(Accel::Kvm, CpuSpec::HostModel);
        s.project = "/tmp/a&b<c>\"".into();
        let xml = s.to_xml();
        assert!(
            xml.contains("project=\"/tmp/a&amp;b&lt;c&gt;&quot;\""),
            "{xml}"
        );
    }
}
