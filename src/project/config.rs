//! `kvmdrive.yml`: the project's machines, parsed and validated without any I/O
//! beyond reading the file. Everything later (plan, apply) trusts a [`Config`].
//!
//! Unknown keys, wrong types, bad values and duplicate machine names are errors
//! that name the file, the line and the key.
//!
//! About 600 lines without tests: the kvmdrive.yml schema (serde types,
//! defaults and their merge) is one document and stays in one file; the
//! feature fields live in their own modules (`net_config`, `hardware`,
//! `synced_folder`, `provisioner`, `machine_keys`).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::boxes::checksum::Checksum;
use crate::boxes::version::Constraint;
use crate::project::hardware::{Hardware, HostnameSetting};
use crate::project::machine_keys::machine_keys_struct;

/// The file name kvmdrive looks for in the project directory.
pub const CONFIG_FILE: &str = "kvmdrive.yml";

/// The box `kvmdrive init` writes and the quick start builds (boxes/debian-12).
pub const BUNDLED_BOX: &str = "kvmdrive/debian-12";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no {CONFIG_FILE} in {dir}")]
    Missing { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    InvalidNoLocation { path: PathBuf, message: String },
}

impl ConfigError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            ConfigError::Missing { .. } => {
                Some("run `kvmdrive init` to write a commented example".into())
            }
            ConfigError::Invalid { path, line, .. } => Some(format!(
                "fix line {line} of {}: the README's kvmdrive.yml section lists every key and its values",
                path.display()
            )),
            ConfigError::InvalidNoLocation { path, .. } => Some(format!(
                "fix {}: the README's kvmdrive.yml section lists every key and its values",
                path.display()
            )),
            ConfigError::Read { .. } => None,
        }
    }
}

/// The parsed `kvmdrive.yml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Settings every machine inherits unless it sets its own.
    #[serde(default)]
    pub defaults: MachineSettings,
    /// The project's machines, in the order they were written.
    #[serde(default)]
    pub machines: Machines,
    /// The project's NAT network.
    #[serde(default)]
    pub network: NetworkSettings,
    /// Hypervisor hosts (libvirt URIs) the machines are spread over; empty:
    /// the one host of `--connect` (see [`crate::project::hosts`]).
    #[serde(default)]
    pub hosts: crate::project::hosts::Hosts,
}

/// Machine list whose names are unique and valid (checked while parsing, so
/// errors carry the line of the offending entry).
#[derive(Debug, Clone, Default)]
pub struct Machines(pub Vec<MachineSettings>);

machine_keys_struct! {
    /// Per-machine settings; every field is optional so that `defaults` and each
    /// machine can be merged field by field. The keys shared with Molecule
    /// platforms come from [`crate::project::machine_keys`].
    #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct MachineSettings {
        /// Machine name (only in `machines`, not in `defaults`).
        pub name: Option<MachineName>,
        /// Host directories shown in the guest (see [`crate::project::synced_folder`]).
        pub synced_folders: Option<Vec<crate::project::synced_folder::SyncedFolder>>,
        /// Steps run in the machine at its first `up` (see [`crate::project::provisioner`]).
        pub provision: Option<Vec<crate::project::provisioner::Provisioner>>,
        /// Extra NICs: private and public networks (see [`crate::project::net_config`]).
        pub networks: Option<Vec<crate::project::net_config::Network>>,
        /// Host ports forwarded to guest ports.
        pub forwarded_ports: Option<Vec<crate::project::net_config::ForwardedPort>>,
        /// Card model of the management NIC (default virtio).
        pub nic_model: Option<crate::project::net_config::NicModel>,
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// IPv4 subnet of the project's NAT network, e.g. `192.168.121.0/24`; by
    /// default kvmdrive picks a /24 that collides with no network or route.
    pub subnet: Option<Subnet>,
}

/// A machine name usable as a host name and in libvirt object names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MachineName(pub String);

impl MachineName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if s.is_empty() || s.len() > 40 || !ok_chars || s.starts_with('-') || s.ends_with('-') {
            return Err(format!(
                "invalid machine name `{s}`: use 1-40 lowercase letters, digits and `-` (a host name)"
            ));
        }
        Ok(MachineName(s.to_owned()))
    }
}

impl fmt::Display for MachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

thread_local! {
    /// Names seen so far in the `machines` list being parsed. Checked where
    /// the name is read, so a duplicate's error carries the line of that name.
    static SEEN_NAMES: std::cell::RefCell<Option<HashSet<String>>> = const { std::cell::RefCell::new(None) };
}

impl<'de> Deserialize<'de> for MachineName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let name = MachineName::parse(&s).map_err(de::Error::custom)?;
        let fresh = SEEN_NAMES
            .with_borrow_mut(|seen| seen.as_mut().is_none_or(|seen| seen.insert(s.clone())));
        if !fresh {
            return Err(de::Error::custom(format!("duplicate machine name `{s}`")));
        }
        Ok(name)
    }
}

/// A whole number greater than zero. Also read from a string of digits or a
/// whole float (`"1024"`, `1024.0`): Molecule's `${VAR:-1024}` interpolation
/// and JSON tools write numbers that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positive(pub u32);

impl Positive {
    const EXPECTED: &'static str = "a whole number greater than 0";

    fn from_u64<E: de::Error>(n: u64) -> Result<Positive, E> {
        match u32::try_from(n) {
            Ok(0) => Err(E::custom("must be greater than 0")),
            Ok(n) => Ok(Positive(n)),
            Err(_) => Err(E::custom(format!("{n} is too large"))),
        }
    }
}

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Positive;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(Positive::EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Positive, E> {
                Positive::from_u64(n)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Positive, E> {
                match u64::try_from(n) {
                    Ok(n) => Positive::from_u64(n),
                    Err(_) => Err(E::custom("must be greater than 0")),
                }
            }
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<Positive, E> {
                if f.fract() != 0.0 || f < 0.0 || f > f64::from(u32::MAX) {
                    return Err(E::invalid_value(de::Unexpected::Float(f), &self));
                }
                Positive::from_u64(f as u64)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Positive, E> {
                match s.trim().parse::<u64>() {
                    Ok(n) => Positive::from_u64(n),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `box_url`: a box or catalog URL (http, https or file), or a local path.
/// A value with `://` must be a URL of one of those schemes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxUrl(pub String);

impl BoxUrl {
    pub fn parse(s: &str) -> Result<BoxUrl, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("box_url is empty: give a URL or remove the key".into());
        }
        if s.contains("://") {
            let url = reqwest::Url::parse(s)
                .map_err(|e| format!("box_url `{s}` is not a valid URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https" | "file") {
                return Err(format!(
                    "box_url `{s}`: kvmdrive fetches boxes over http, https or file only"
                ));
            }
        }
        Ok(BoxUrl(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for BoxUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BoxUrl::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// A size in bytes, written as `20G`, `512M`, `1T` or a number of GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub const GIB: u64 = 1 << 30;

    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => s.split_at(i),
            None => (s, "G"),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid size `{s}`: write e.g. `20G` or `512M`"))?;
        let mult = match unit.trim().trim_end_matches(['i', 'B']) {
            "M" | "m" => 1 << 20,
            "G" | "g" => 1 << 30,
            "T" | "t" => 1 << 40,
            _ => return Err(format!("invalid size `{s}`: unit must be M, G or T")),
        };
        match n.checked_mul(mult) {
            Some(bytes) if bytes > 0 => Ok(Size(bytes)),
            _ => Err(format!("invalid size `{s}`")),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Gib(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Gib(n) => Size::parse(&n.to_string()),
            Raw::Text(s) => Size::parse(&s),
        }
        .map_err(de::Error::custom)
    }
}

/// How the guest CPU is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CpuMode {
    /// host-passthrough under KVM, a named model under TCG.
    #[default]
    Auto,
    HostPassthrough,
    HostModel,
    Custom,
}

/// Which accelerator runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when it can run guests here, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// An IPv4 /24 .. /16 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: std::net::Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = || format!("invalid subnet `{s}`: write e.g. `192.168.121.0/24`");
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        if !(16..=24).contains(&prefix) {
            return Err(format!("subnet `{s}`: prefix must be between /16 and /24"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet {
            network: std::net::Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// The n-th address of the subnet (n = 1 is the gateway).
    pub fn host(&self, n: u32) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::from(u32::from(self.network) + n)
    }

    pub fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        let mask = u32::MAX << (32 - p);
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Subnet::parse(&s).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Machines {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MachinesVisitor;
        impl<'de> Visitor<'de> for MachinesVisitor {
            type Value = Machines;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of machines")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Machines, A::Error> {
                SEEN_NAMES.set(Some(HashSet::new()));
                let result = (|| {
                    let mut out = Vec::new();
                    while let Some(m) = seq.next_element::<MachineSettings>()? {
                        if m.name.is_none() {
                            return Err(de::Error::custom(format!(
                                "machines[{}]: missing key `name`",
                                out.len()
                            )));
                        }
                        out.push(m);
                    }
                    Ok(Machines(out))
                })();
                SEEN_NAMES.set(None);
                result
            }
        }
        d.deserialize_seq(MachinesVisitor)
    }
}

/// A machine with `defaults` applied: what the plan works from.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub name: MachineName,
    pub box_name: String,
    /// `box_version`, parsed.
    pub box_version: Option<Constraint>,
    pub box_url: Option<String>,
    pub box_architecture: Option<String>,
    /// `box_download_checksum` with its type (given, or told by the length).
    pub box_checksum: Option<Checksum>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub disk_size: Option<u64>,
    /// The guest's host name at first login.
    pub hostname: HostnameSetting,
    pub hardware: Hardware,
    pub cpu_mode: CpuMode,
    pub cpu_model: Option<String>,
    pub accel: Accel,
    pub boot_timeout_s: u32,
    /// `defaults`' folders merged with the machine's (by guest path).
    pub synced_folders: Vec<crate::project::synced_folder::SyncedFolder>,
    /// `defaults`' provisioners, then the machine's.
    pub provisioners: Vec<crate::project::provisioner::Provisioner>,
    pub networks: Vec<crate::project::net_config::Network>,
    pub forwarded_ports: Vec<crate::project::net_config::ForwardedPort>,
    pub nic_model: crate::project::net_config::NicModel,
    /// `host:`: the one of `hosts:` the machine must run on.
    pub host: Option<crate::project::hosts::HostUri>,
}

impl Config {
    /// Reads `kvmdrive.yml` from `dir`.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing {
                    dir: dir.to_owned(),
                })
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Config::parse(&text, &path)
    }

    /// Parses and validates `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_norway::from_str(text).map_err(|e| match e.location() {
                Some(loc) => ConfigError::Invalid {
                    path: path.to_owned(),
                    line: loc.line(),
                    column: loc.column(),
                    message: strip_location(&e.to_string()),
                },
                None => ConfigError::InvalidNoLocation {
                    path: path.to_owned(),
                    message: e.to_string(),
                },
            })?
        };
        if config.defaults.name.is_some() {
            return Err(ConfigError::InvalidNoLocation {
                path: path.to_owned(),
                message: "defaults: `name` belongs to a machine, not to `defaults`".into(),
            });
        }
        config
            .check_machines()
            .map_err(|message| ConfigError::InvalidNoLocation {
                path: path.to_owned(),
                message,
            })?;
        Ok(config)
    }

    /// Checks the settings that only conflict once `defaults` are applied
    /// (e.g. `secure_boot` with `machine_type: pc`, a checksum in a machine
    /// with its type in `defaults`).
    pub fn check_machines(&self) -> Result<(), String> {
        let implicit = MachineSettings::default();
        let list = if self.machines.0.is_empty() {
            std::slice::from_ref(&implicit)
        } else {
            &self.machines.0[..]
        };
        for m in list {
            hardware_of(m, &self.defaults)
                .and_then(|_| checksum_of(m, &self.defaults))
                .and_then(|_| match m.host.as_ref().or(self.defaults.host.as_ref()) {
                    Some(pin) => self
                        .hosts
                        .check_pin(m.name.as_ref().map_or("default", |n| n.0.as_str()), pin),
                    None => Ok(()),
                })
                .map_err(|e| match &m.name {
                    Some(n) => format!("machine `{n}`: {e}"),
                    None => e,
                })?;
        }
        Ok(())
    }

    /// The machines with defaults applied. A project without a `machines`
    /// list has one machine called `default`, as in Vagrant.
    pub fn machines(&self) -> Vec<Machine> {
        let implicit = [MachineSettings {
            name: Some(MachineName("default".into())),
            ..Default::default()
        }];
        let list: &[MachineSettings] = if self.machines.0.is_empty() {
            &implicit
        } else {
            &self.machines.0
        };
        list.iter().map(|m| self.resolve(m)).collect()
    }

    fn resolve(&self, m: &MachineSettings) -> Machine {
        let d = &self.defaults;
        macro_rules! pick {
            ($field:ident) => {
                m.$field.clone().or_else(|| d.$field.clone())
            };
        }
        Machine {
            name: m.name.clone().expect("validated while parsing"),
            box_name: pick!(box_name).unwrap_or_else(|| BUNDLED_BOX.to_owned()),
            box_version: pick!(box_version),
            box_url: pick!(box_url).map(|u| u.0),
            box_architecture: pick!(box_architecture),
            box_checksum: checksum_of(m, d).expect("checked by Config::check_machines"),
            memory_mib: pick!(memory).map_or(512, |p| p.0),
            cpus: pick!(cpus).map_or(1, |p| p.0),
            disk_size: pick!(disk_size).map(|s| s.0),
            hostname: pick!(hostname).unwrap_or_default(),
            hardware: hardware_of(m, d).expect("checked by Config::check_machines"),
            cpu_mode: pick!(cpu_mode).unwrap_or_default(),
            cpu_model: pick!(cpu_model),
            accel: pick!(accel).unwrap_or_default(),
            boot_timeout_s: pick!(boot_timeout).map_or(300, |p| p.0),
            synced_folders: crate::project::synced_folder::merge(
                d.synced_folders.as_deref().unwrap_or_default(),
                m.synced_folders.as_deref().unwrap_or_default(),
            ),
            provisioners: crate::project::provisioner::merge(
                d.provision.as_deref().unwrap_or_default(),
                m.provision.as_deref().unwrap_or_default(),
            ),
            networks: pick!(networks).unwrap_or_default(),
            forwarded_ports: pick!(forwarded_ports).unwrap_or_default(),
            nic_model: pick!(nic_model).unwrap_or_default(),
            host: pick!(host),
        }
    }
}

/// A machine's hardware: its own settings, else those of `defaults`.
fn hardware_of(m: &MachineSettings, d: &MachineSettings) -> Result<Hardware, String> {
    macro_rules! pick {
        ($field:ident) => {
            m.$field.clone().or_else(|| d.$field.clone())
        };
    }
    Hardware::resolve(
        pick!(disks),
        pick!(firmware),
        pick!(secure_boot),
        pick!(machine_type),
        [pick!(tpm), pick!(guest_agent), pick!(nested)],
        pick!(cpu_features),
        pick!(graphics),
    )
}

/// A machine's expected box checksum: its own `box_download_checksum` and
/// `_type`, else those of `defaults`; the type follows from the length when
/// not given (the same rule for kvmdrive.yml and Molecule platforms).
pub fn checksum_of(m: &MachineSettings, d: &MachineSettings) -> Result<Option<Checksum>, String> {
    let value = m
        .box_download_checksum
        .as_ref()
        .or(d.box_download_checksum.as_ref());
    let kind = m
        .box_download_checksum_type
        .as_ref()
        .or(d.box_download_checksum_type.as_ref());
    Checksum::from_settings(value.map(String::as_str), kind.and_then(|k| k.0))
        .map_err(|e| format!("box_download_checksum: {e}"))
}

/// serde_norway appends " at line L column C"; we print the location first.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// The commented example `kvmdrive init` writes.
pub const EXAMPLE: &str = r#"# kvmdrive.yml: the machines of this project (see `kvmdrive --help`).
#
# Settings under `defaults` apply to every machine; a machine may override any
# of them. Sizes: memory in MiB, disk_size as 20G / 512M.
defaults:
  # A box name in the cache (`kvmdrive box list`), a path to a .box file, or a URL.
  # kvmdrive/debian-12 is the bundled box: build it with boxes/debian-12/build.
  box: kvmdrive/debian-12
  memory: 512
  cpus: 1
  # accel: auto        # auto (KVM when it can run guests, else TCG) | kvm | tcg
  # cpu_mode: auto     # auto | host-passthrough | host-model | custom (with cpu_model)
  # disk_size: 20G     # grow the machine's disk beyond the box's size
  # boot_timeout: 300  # seconds to wait for SSH

machines:
  - name: default
  # - name: db
  #   memory: 1024

# network:
#   subnet: 192.168.121.0/24   # default: a free /24 picked by kvmdrive

# Several hypervisor hosts (libvirt URIs): each machine goes to the host with
# the most free memory, or to the one its `host:` names.
# hosts:
#   - qemu+ssh://root@hv1.example.com/system
#   - qemu+ssh://root@hv2.example.com/system
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("kvmdrive.yml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn example_parses_and_uses_the_bundled_box() {
        let c = parse(EXAMPLE).unwrap();
        let m = c.machines();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name.0, "default");
        assert_eq!(m[0].box_name, BUNDLED_BOX);
        assert_eq!(m[0].memory_mib, 512);
    }

    #[test]
    fn hosts_and_pins_are_read_and_checked() {
        let c = parse(
            "hosts: ['qemu+ssh://a/system', 'qemu+ssh://b/system']\nmachines:\n  - name: x\n    host: qemu+ssh://b/system\n  - name: y\n",
        )
        .unwrap();
        assert_eq!(c.hosts.0.len(), 2);
        let m = c.machines();
        assert_eq!(
            m[0].host.as_ref().map(|h| h.as_str()),
            Some("qemu+ssh://b/system")
        );
        assert_eq!(m[1].host, None);
        let e = err("hosts: ['qemu+ssh://a/system']\nmachines:\n  - name: x\n    host: qemu+ssh://c/system\n");
        assert!(
            e.contains("machine `x`") && e.contains("not one of `hosts:`"),
            "{e}"
        );
        let e = err("hosts: ['qemu+ssh://a/system', 'qemu+ssh://a/system']\n");
        assert!(e.contains("listed twice"), "{e}");
        let e = err("hosts: [hv1]\n");
        assert!(
            e.contains("kvmdrive.yml:1") && e.contains("not a libvirt URI"),
            "{e}"
        );
    }

    #[test]
    fn machine_settings_override_defaults() {
        let c = parse(
            "defaults:\n  memory: 768\n  cpus: 2\nmachines:\n  - name: a\n  - name: b\n    memory: 1024\n    disk_size: 20G\n",
        )
        .unwrap();
        let m = c.machines();
        assert_eq!((m[0].memory_mib, m[0].cpus), (768, 2));
        assert_eq!((m[1].memory_mib, m[1].cpus), (1024, 2));
        assert_eq!(m[1].disk_size, Some(20 * Size::GIB));
    }

    #[test]
    fn empty_file_means_one_default_machine() {
        let m = parse("").unwrap().machines();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name.0, "default");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err("machines:\n  - name: a\n    memroy: 5\n");
        assert!(e.starts_with("kvmdrive.yml:3:"), "{e}");
        assert!(e.contains("memroy"), "{e}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = err("defaults:\n  cpus: many\n");
        assert!(e.starts_with("kvmdrive.yml:2:"), "{e}");
        assert!(e.contains("cpus"), "{e}");
    }

    #[test]
    fn duplicate_names_are_refused_with_their_line() {
        let e = err("machines:\n  - name: a\n  - name: b\n  - name: a\n    memory: 1\n");
        assert!(e.contains("duplicate machine name `a`"), "{e}");
        assert!(e.starts_with("kvmdrive.yml:4:"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(err("defaults:\n  memory: 0\n").contains("greater than 0"));
        assert!(err("machines:\n  - name: Web_1\n").contains("invalid machine name"));
        assert!(err("machines:\n  - memory: 5\n").contains("missing key `name`"));
        assert!(err("defaults:\n  disk_size: 20Q\n").contains("unit"));
        assert!(err("defaults:\n  accel: fast\n").contains("accel"));
        assert!(err("network:\n  subnet: 10.0.0.0/8\n").contains("prefix"));
        assert!(err("defaults:\n  name: x\n").contains("belongs to a machine"));
    }

    #[test]
    fn box_values_are_typed_at_load() {
        let e = err("defaults:\n  box_version: \">= 1.0, <\"\n");
        assert!(
            e.starts_with("kvmdrive.yml:2:") && e.contains("box_version"),
            "{e}"
        );
        let e = err("defaults:\n  box_url: ftp://example.com/b.box\n");
        assert!(
            e.contains("box_url") && e.contains("http, https or file"),
            "{e}"
        );
        let e = err("defaults:\n  box_download_checksum_type: crc32\n");
        assert!(e.contains("crc32"), "{e}");
        let e = err("machines:\n  - name: a\n    box_download_checksum: abc\n");
        assert!(
            e.contains("machine `a`: box_download_checksum") && e.contains("go together"),
            "{e}"
        );
        let sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let c = parse(&format!(
            "defaults:\n  box_version: 12.1\n  box_download_checksum: {sha1}\n"
        ))
        .unwrap();
        let m = &c.machines()[0];
        assert_eq!(m.box_version.as_ref().unwrap().to_string(), "12.1");
        let sum = m.box_checksum.as_ref().unwrap();
        assert_eq!(
            sum.to_string(),
            format!("sha1:{sha1}"),
            "the type follows from the length"
        );
        // Molecule writes numbers as strings; kvmdrive.yml reads them the same way
        assert_eq!(
            parse("defaults:\n  memory: \"768\"\n").unwrap().machines()[0].memory_mib,
            768
        );
    }

    #[test]
    fn sizes_and_subnets() {
        assert_eq!(Size::parse("512M").unwrap().0, 512 << 20);
        assert_eq!(Size::parse("3").unwrap().0, 3 << 30);
        assert_eq!(Size::parse("1TiB").unwrap().0, 1 << 40);
        let s = Subnet::parse("192.168.121.77/24").unwrap();
        assert_eq!(s.to_string(), "192.168.121.0/24");
        assert_eq!(s.host(1).to_string(), "192.168.121.1");
        assert!(s.overlaps(&Subnet::parse("192.168.0.0/16").unwrap()));
        assert!(!s.overlaps(&Subnet::parse("192.168.122.0/24").unwrap()));
    }
}
