//! Machine hardware settings of `kvmdrive.yml` (Molecule platforms map onto
//! the same types): the guest's host name, extra disks, firmware, machine
//! type, TPM, guest agent channel, nested virtualisation, CPU features and
//! graphics. Parsed and validated here, without I/O; `machine::hardware`
//! turns them into volumes and `virt::domain` into XML.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::project::config::Size;

/// A host name given to the guest: a DNS name, possibly fully qualified
/// (`node1.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(String);

impl Hostname {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid host name `{s}`: {why} (write e.g. `node1` or `node1.example.com`)")
        };
        let s = s.strip_suffix('.').unwrap_or(s);
        if s.is_empty() || s.len() > 253 {
            return Err(bad("a DNS name has 1-253 characters"));
        }
        for label in s.split('.') {
            let ok_chars = label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if label.is_empty() || label.len() > 63 || !ok_chars {
                return Err(bad(
                    "each dot-separated label has 1-63 letters, digits or `-`",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a label neither starts nor ends with `-`"));
            }
        }
        Ok(Hostname(s.to_ascii_lowercase()))
    }

    /// The whole name (`node1.example.com`).
    pub fn fqdn(&self) -> &str {
        &self.0
    }

    /// The first label (`node1`): the kernel's host name.
    pub fn short(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What host name the guest gets at its first login.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostnameSetting {
    /// The machine's name (the default; `hostname: true`).
    #[default]
    MachineName,
    /// This name (`hostname: node1.example.com`).
    Name(Hostname),
    /// The box's own host name is left alone (`hostname: false`).
    Keep,
}

impl<'de> Deserialize<'de> for HostnameSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Flag(true) => Ok(HostnameSetting::MachineName),
            Raw::Flag(false) => Ok(HostnameSetting::Keep),
            Raw::Text(s) => Hostname::parse(&s)
                .map(HostnameSetting::Name)
                .map_err(de::Error::custom),
        }
    }
}

/// How an extra disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    #[default]
    Virtio,
    Scsi,
    Sata,
}

impl DiskBus {
    pub fn parse(s: &str) -> Option<DiskBus> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// Image format of an extra disk's volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    #[default]
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<DiskFormat> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// One extra disk of a machine (`disks:` list), attached after the box's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSettings {
    pub size: Size,
    #[serde(default)]
    pub bus: DiskBus,
    #[serde(default)]
    pub format: DiskFormat,
    /// Part of the volume's name; default `disk1`, `disk2`, ... by position.
    pub name: Option<String>,
}

/// A machine's extra disks, each with a unique valid name (defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disks(pub Vec<DiskSettings>);

impl Disks {
    /// Fills in default names and checks every name.
    pub fn new(mut list: Vec<DiskSettings>) -> Result<Disks, String> {
        let mut seen = HashSet::new();
        for (i, d) in list.iter_mut().enumerate() {
            let name = d.name.get_or_insert_with(|| format!("disk{}", i + 1));
            let ok = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !ok {
                return Err(format!(
                    "invalid disk name `{name}`: use 1-32 lowercase letters, digits, `-` and `_`"
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(format!("duplicate disk name `{name}`"));
            }
        }
        Ok(Disks(list))
    }
}

impl<'de> Deserialize<'de> for Disks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Disks::new(Vec::<DiskSettings>::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// The guest's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS (libvirt's default).
    #[default]
    Bios,
    /// OVMF (UEFI), with a per-machine NVRAM file.
    #[serde(alias = "uefi")]
    Efi,
}

/// The emulated chipset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MachineType {
    /// i440FX (libvirt's default for x86_64).
    #[default]
    Pc,
    /// Q35 (PCIe, AHCI); needed for secure boot.
    Q35,
}

impl MachineType {
    /// `pc`, `q35` or a versioned name (`pc-q35-7.2`, `pc-i440fx-8.0`).
    pub fn parse(s: &str) -> Option<MachineType> {
        match s {
            "pc" | "i440fx" => Some(MachineType::Pc),
            "q35" => Some(MachineType::Q35),
            s if s.starts_with("pc-i440fx-") => Some(MachineType::Pc),
            s if s.starts_with("pc-q35-") => Some(MachineType::Q35),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MachineType::Pc => "pc",
            MachineType::Q35 => "q35",
        }
    }
}

/// `pc`, `q35` or a versioned name, as [`MachineType::parse`] reads them
/// (the same spelling in kvmdrive.yml and Molecule platforms).
impl<'de> Deserialize<'de> for MachineType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = String::deserialize(d)?;
        MachineType::parse(&t).ok_or_else(|| {
            de::Error::custom(format!(
                "kvmdrive emulates the `pc` (i440FX) or `q35` chipset, not `{t}`"
            ))
        })
    }
}

/// libvirt's CPU feature policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeaturePolicy {
    Force,
    #[default]
    Require,
    Optional,
    Disable,
    Forbid,
}

impl FeaturePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FeaturePolicy::Force => "force",
            FeaturePolicy::Require => "require",
            FeaturePolicy::Optional => "optional",
            FeaturePolicy::Disable => "disable",
            FeaturePolicy::Forbid => "forbid",
        }
    }

    pub fn parse(s: &str) -> Option<FeaturePolicy> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// A CPU feature: `vmx` (required) or `{name: vmx, policy: optional}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeature {
    pub name: String,
    pub policy: FeaturePolicy,
}

impl CpuFeature {
    pub fn new(name: &str, policy: FeaturePolicy) -> Result<CpuFeature, String> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(format!(
                "invalid CPU feature `{name}`: a libvirt feature name such as `vmx` or `avx2`"
            ));
        }
        Ok(CpuFeature {
            name: name.to_owned(),
            policy,
        })
    }
}

impl<'de> Deserialize<'de> for CpuFeature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            name: String,
            #[serde(default)]
            policy: FeaturePolicy,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Full(Full),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            de::Error::custom(
                "expected a feature name or {name, policy} (policy: force, require, optional, disable, forbid)",
            )
        })?;
        match raw {
            Raw::Name(n) => CpuFeature::new(&n, FeaturePolicy::Require),
            Raw::Full(f) => CpuFeature::new(&f.name, f.policy),
        }
        .map_err(de::Error::custom)
    }
}

/// A graphical console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Graphics {
    /// Serial console only (the default).
    #[default]
    None,
    /// VNC, listening on 127.0.0.1 only.
    Vnc,
}

/// A machine's hardware with defaults applied: what the plan works from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hardware {
    pub disks: Vec<DiskSettings>,
    pub firmware: Firmware,
    pub secure_boot: bool,
    pub machine_type: MachineType,
    pub tpm: bool,
    pub guest_agent: bool,
    pub nested: bool,
    pub cpu_features: Vec<CpuFeature>,
    pub graphics: Graphics,
}

impl Hardware {
    /// Combines the settings; secure boot implies UEFI and q35 unless they
    /// were set otherwise, which is an error.
    pub fn resolve(
        disks: Option<Disks>,
        firmware: Option<Firmware>,
        secure_boot: Option<bool>,
        machine_type: Option<MachineType>,
        flags: [Option<bool>; 3],
        cpu_features: Option<Vec<CpuFeature>>,
        graphics: Option<Graphics>,
    ) -> Result<Hardware, String> {
        let [tpm, guest_agent, nested] = flags;
        let secure_boot = secure_boot.unwrap_or(false);
        if secure_boot {
            if firmware == Some(Firmware::Bios) {
                return Err("secure_boot needs `firmware: efi`".into());
            }
            if machine_type == Some(MachineType::Pc) {
                return Err("secure_boot needs `machine_type: q35` (SMM)".into());
            }
        }
        Ok(Hardware {
            disks: disks.map(|d| d.0).unwrap_or_default(),
            firmware: if secure_boot {
                Firmware::Efi
            } else {
                firmware.unwrap_or_default()
            },
            secure_boot,
            machine_type: if secure_boot {
                MachineType::Q35
            } else {
                machine_type.unwrap_or_default()
            },
            tpm: tpm.unwrap_or(false),
            guest_agent: guest_agent.unwrap_or(false),
            nested: nested.unwrap_or(false),
            cpu_features: cpu_features.unwrap_or_default(),
            graphics: graphics.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_dns_names() {
        let h = Hostname::parse("Node1.Example.com.").unwrap();
        assert_eq!(h.fqdn(), "node1.example.com");
        assert_eq!(h.short(), "node1");
        assert_eq!(Hostname::parse("web").unwrap().short(), "web");
        for bad in ["", "a..b", "-a.b", "a_b.c", "a.b-", &"x".repeat(64)] {
            assert!(Hostname::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn disks_get_unique_default_names() {
        let d = |name: Option<&str>| DiskSettings {
            size: Size(1 << 30),
            bus: DiskBus::Virtio,
            format: DiskFormat::Qcow2,
            name: name.map(str::to_owned),
        };
        let ok = Disks::new(vec![d(None), d(Some("data"))]).unwrap();
        assert_eq!(ok.0[0].name.as_deref(), Some("disk1"));
        assert_eq!(ok.0[1].name.as_deref(), Some("data"));
        let e = Disks::new(vec![d(Some("disk2")), d(None)]).unwrap_err();
        assert!(e.contains("duplicate disk name `disk2`"), "{e}");
        assert!(Disks::new(vec![d(Some("Data/x"))]).is_err());
    }

    #[test]
    fn secure_boot_implies_efi_and_q35_and_refuses_the_opposite() {
        let hw = Hardware::resolve(None, None, Some(true), None, [None; 3], None, None).unwrap();
        assert_eq!(
            (hw.firmware, hw.machine_type),
            (Firmware::Efi, MachineType::Q35)
        );
        let e = Hardware::resolve(
            None,
            None,
            Some(true),
            Some(MachineType::Pc),
            [None; 3],
            None,
            None,
        )
        .unwrap_err();
        assert!(e.contains("q35"), "{e}");
        let e = Hardware::resolve(
            None,
            Some(Firmware::Bios),
            Some(true),
            None,
            [None; 3],
            None,
            None,
        )
        .unwrap_err();
        assert!(e.contains("efi"), "{e}");
    }

    #[test]
    fn machine_types_accept_versioned_names() {
        assert_eq!(MachineType::parse("pc-q35-7.2"), Some(MachineType::Q35));
        assert_eq!(MachineType::parse("pc-i440fx-8.0"), Some(MachineType::Pc));
        assert_eq!(MachineType::parse("virt"), None);
    }

    #[test]
    fn cpu_features_from_names_or_maps() {
        let f: Vec<CpuFeature> =
            serde_norway::from_str("- vmx\n- {name: avx2, policy: disable}\n").unwrap();
        assert_eq!(
            f[0],
            CpuFeature::new("vmx", FeaturePolicy::Require).unwrap()
        );
        assert_eq!(f[1].policy, FeaturePolicy::Disable);
        assert!(serde_norway::from_str::<Vec<CpuFeature>>("- {name: x, policy: maybe}\n").is_err());
        assert!(serde_norway::from_str::<Vec<CpuFeature>>("- 'a b'\n").is_err());
    }
}
