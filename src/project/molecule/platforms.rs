//! Molecule platforms -> [`Config`]: the machine list a Molecule scenario
//! declares (molecule-vagrant's platform keys plus kvmdrive's own), checked
//! and turned into the same typed config `kvmdrive.yml` gives.
//!
//! Every key is either honoured, warned about (it only means something to
//! Vagrant, e.g. `provider_raw_config_args`), or refused with an error that
//! names it: nothing is silently ignored. The keys and their types are
//! [`Platform`]'s (serde), so the Molecule plugin's JSON schema
//! (molecule-plugin/src/molecule_kvmdrive/driver.json, generated from it)
//! accepts the same keys.

use serde_json::Value;

use crate::project::config::{
    checksum_of, Accel, Config, CpuMode, MachineName, MachineSettings, Machines, Positive, Size,
};
use crate::project::hardware::{Hostname, HostnameSetting};
use crate::project::hosts::{HostUri, Hosts};
use crate::project::machine_keys::copy_machine_keys;
use crate::project::molecule::hardware;
use crate::project::molecule::platform::Platform;
use crate::project::molecule::raw_config_args::{self, RawSetting, Scope};
use crate::project::molecule::vagrant_ruby::unquote_ruby_string;

/// vagrant-libvirt `provider_options` that change nothing a test can see
/// (display, pool and management-network naming): accepted with a warning.
pub(super) const COSMETIC_PROVIDER_OPTIONS: &[&str] = &[
    "graphics_port",
    "graphics_ip",
    "graphics_passwd",
    "graphics_autoport",
    "video_type",
    "video_vram",
    "keymap",
    "sound_type",
    "default_prefix",
    "storage_pool_name",
    "management_network_name",
    "management_network_address",
    "management_network_mode",
    "volume_cache",
    "random_hostname",
    // VirtualBox's, seen in scenarios written for another provider
    "gui",
    "linked_clone",
];

/// vagrant-libvirt `provider_options` for host-side details of the domain
/// (autostart, emulator, CPU pinning, the management NIC's PCI slot, ...):
/// accepted with [`HOST_SIDE`].
pub(super) const HOST_SIDE_PROVIDER_OPTIONS: &[&str] = &[
    "autostart",
    "emulator_path",
    "title",
    "description",
    "cpuset",
    "nodeset",
    "shares",
    "kvm_hidden",
    "disk_device",
    "disk_controller_model",
    "clock_offset",
    "forward_ssh_port",
    "host_device_exclude_prefixes",
    "memballoon_enabled",
    "memballoon_model",
    "memballoon_pci_bus",
    "memballoon_pci_slot",
    "snapshot_pool_name",
    "video_accel3d",
    "graphics_gl",
    "management_network_mac",
    "management_network_guest_ipv6",
    "management_network_autostart",
    "management_network_pci_bus",
    "management_network_pci_slot",
    "management_network_domain",
    "management_network_mtu",
    "management_network_keep",
    "management_network_iface_name",
    "management_network_model_type",
];

/// The warning for an option that only shapes the host's side.
pub(super) const HOST_SIDE: &str =
    "a host-side detail kvmdrive leaves to libvirt's defaults: ignored";

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("{source_name}: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {at}: {message}")]
    Invalid {
        source_name: String,
        at: String,
        message: String,
    },
    /// A key no platform has: its hint lists the ones kvmdrive knows.
    #[error(
        "{source_name}: {at}: unknown platform key (kvmdrive does not know what to do with it)"
    )]
    UnknownKey { source_name: String, at: String },
    /// A Vagrantfile line (`*_raw_config_args`) the small Ruby reader
    /// cannot take: not a platform key, so a hint of its own.
    #[error("{source_name}: {at}: {message}")]
    RubyLine {
        source_name: String,
        at: String,
        message: String,
    },
}

impl PlatformError {
    pub fn hint(&self) -> Option<String> {
        match self {
            PlatformError::Syntax { .. } => Some(
                "give a list of platforms, or a document with a `platforms:` list (molecule.yml)"
                    .into(),
            ),
            PlatformError::RubyLine { .. } => Some(
                "kvmdrive reads each line as one call with literal values (strings, symbols, \
                 numbers, true/false/nil, arrays, hashes; `#{Dir.pwd}` and `ENV['X']`), not \
                 full Ruby: write the line that way, or say it with kvmdrive's own platform \
                 keys (docs/molecule.md, \"Vagrantfile lines\")"
                    .into(),
            ),
            PlatformError::UnknownKey { .. } => Some(format!(
                "platform keys kvmdrive knows: {}",
                crate::project::schema::platform_keys().join(", ")
            )),
            PlatformError::Invalid { .. } => Some(
                "docs/molecule.md says what kvmdrive does with each molecule-vagrant key and \
                 value"
                    .into(),
            ),
        }
    }
}

/// One Molecule instance and the kvmdrive machine behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The platform's `name`: the Ansible host name.
    pub name: String,
    /// The machine (libvirt and guest host name).
    pub machine: String,
    /// Inventory groups (`groups`) and their child groups (`children`).
    pub groups: Vec<String>,
    pub children: Vec<String>,
}

/// A checked platform list.
#[derive(Debug, Clone)]
pub struct Platforms {
    pub config: Config,
    pub instances: Vec<Instance>,
    /// Keys, values and lines accepted but not honoured: tell the user.
    pub warnings: Vec<String>,
}

/// Parses JSON or YAML: a list of platforms, or a mapping with `platforms`
/// (and optionally `driver`), such as molecule.yml. `source_name` is only
/// used in messages.
pub fn parse(text: &str, source_name: &str) -> Result<Platforms, PlatformError> {
    from_document(&read_document(text, source_name)?, source_name)
}

/// JSON or YAML text -> a document (not yet checked), with YAML 1.1's
/// boolean words read as Molecule reads them (`yaml11`).
pub fn read_document(text: &str, source_name: &str) -> Result<Value, PlatformError> {
    let syntax = |message: String| PlatformError::Syntax {
        source_name: source_name.to_owned(),
        message,
    };
    let yaml: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| syntax(e.to_string()))?;
    let mut doc = serde_json::to_value(yaml).map_err(|e| syntax(e.to_string()))?;
    crate::project::molecule::yaml11::booleans_as_molecule_reads_them(&mut doc);
    Ok(doc)
}

/// Like [`parse`], from an already parsed document.
pub fn from_document(doc: &Value, source_name: &str) -> Result<Platforms, PlatformError> {
    let mut ck = Checker {
        source_name,
        warnings: Vec::new(),
    };
    let (driver, list) = match doc {
        Value::Array(list) => (None, list),
        Value::Object(m) => match m.get("platforms") {
            Some(Value::Array(list)) => (m.get("driver"), list),
            Some(_) => return Err(ck.err("platforms", "expected a list")),
            None => return Err(ck.err("document", "no `platforms` list")),
        },
        _ => return Err(ck.err("document", "expected a list of platforms")),
    };
    if list.is_empty() {
        return Err(ck.err("platforms", "the list is empty: declare at least one"));
    }
    let mut config = Config::default();
    let mut provision = None;
    if let Some(d) = driver {
        let keys = ck.driver(d)?;
        (config.defaults.box_name, config.hosts, provision) =
            (keys.default_box, keys.hosts, keys.provision);
    }
    let mut instances: Vec<Instance> = Vec::new();
    let mut machines = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let (settings, instance) = ck.platform(i, p, provision)?;
        if let Some(other) = instances
            .iter()
            .find(|o| o.name == instance.name || o.machine == instance.machine)
        {
            return Err(ck.err(
                &format!("platforms[{i}]"),
                &format!(
                    "`{}` (machine `{}`) collides with `{}` (machine `{}`): names must differ",
                    instance.name, instance.machine, other.name, other.machine
                ),
            ));
        }
        machines.push(settings);
        instances.push(instance);
    }
    config.machines = Machines(machines);
    config
        .check_machines()
        .map_err(|e| ck.err("platforms", &e))?;
    Ok(Platforms {
        config,
        instances,
        warnings: ck.warnings,
    })
}

/// The machine name for an instance name: lowercase, with anything that
/// cannot be in a host name turned into `-`.
pub fn machine_name(instance: &str) -> Result<MachineName, String> {
    MachineName::parse(&crate::machine::project::hostname_safe(instance, 40))
        .map_err(|_| format!("cannot make a machine name out of `{instance}`"))
}

/// What the `driver` section says about the machines.
#[derive(Default)]
struct DriverKeys {
    default_box: Option<String>,
    hosts: Hosts,
    /// molecule-vagrant's `provision`: `false` keeps the platforms'
    /// provisioners from running (kvmdrive runs them unless told not to).
    provision: Option<bool>,
}

/// molecule-vagrant's default vCPU count (its `vagrant` module's
/// `provider_cpus`): a platform without `cpus` gets it, as it did there.
pub const DEFAULT_CPUS: u32 = 2;

struct Checker<'a> {
    source_name: &'a str,
    warnings: Vec<String>,
}

impl Checker<'_> {
    fn err(&self, at: &str, message: &str) -> PlatformError {
        PlatformError::Invalid {
            source_name: self.source_name.to_owned(),
            at: at.to_owned(),
            message: message.to_owned(),
        }
    }

    fn warn(&mut self, at: &str, message: String) {
        self.warnings.push(format!("{at}: {message}"));
    }

    /// The `driver` section: returns `default_box`, `hosts` and `provision`.
    fn driver(&mut self, d: &Value) -> Result<DriverKeys, PlatformError> {
        let Value::Object(m) = d else {
            return Err(self.err("driver", "expected a mapping"));
        };
        let mut keys = DriverKeys::default();
        for (k, v) in m {
            let at = format!("driver.{k}");
            match k.as_str() {
                // Molecule's own driver keys.
                "name" | "options" | "ssh_connection_options" | "safe_files" => {}
                "default_box" => {
                    keys.default_box =
                        Some(string(v).ok_or_else(|| self.err(&at, "expected a string"))?)
                }
                "provider" => {
                    let name = v.get("name").and_then(Value::as_str).unwrap_or("libvirt");
                    if name != "libvirt" {
                        self.warn(&at, format!("kvmdrive always uses libvirt (not `{name}`)"));
                    }
                    // molecule-vagrant read only the name here; say so rather than
                    // let `provider: {options: ...}` look honoured.
                    if let Value::Object(p) = v {
                        for k in p.keys().filter(|k| *k != "name") {
                            self.warn(
                                &format!("{at}.{k}"),
                                "ignored (as by molecule-vagrant): set provider options per platform, in `provider_options`".into(),
                            );
                        }
                    }
                }
                "parallel" => {} // kvmdrive always brings machines up in parallel
                "reuse" | "mitogen" => {} // read by the scenario (machine::reuse, roletest::mitogen)
                "hosts" => {
                    let list: Vec<HostUri> = serde_json::from_value(v.clone()).map_err(|e| {
                        self.err(&at, &format!("expected a list of libvirt URIs: {e}"))
                    })?;
                    keys.hosts = Hosts::parse(list).map_err(|e| self.err(&at, &e))?;
                }
                "provision" => {
                    keys.provision = Some(
                        v.as_bool()
                            .ok_or_else(|| self.err(&at, "expected true or false"))?,
                    )
                }
                "cachier" => self.warn(&at, "only means something to Vagrant: ignored".into()),
                _ => self.warn(&at, "unknown driver key: ignored".into()),
            }
        }
        Ok(keys)
    }

    /// Platform `i`; `driver_provision` is the driver's `provision`.
    fn platform(
        &mut self,
        i: usize,
        p: &Value,
        driver_provision: Option<bool>,
    ) -> Result<(MachineSettings, Instance), PlatformError> {
        let at0 = format!("platforms[{i}]");
        let Value::Object(m) = p else {
            return Err(self.err(&at0, "expected a mapping"));
        };
        let name = match m.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(self.err(&format!("{at0}.name"), "expected a non-empty string")),
            None => return Err(self.err(&at0, "missing key `name`")),
        };
        let ctx = format!("platforms[{i}] ({name})");
        let mut instance = Instance {
            machine: machine_name(&name).map_err(|e| self.err(&ctx, &e))?.0,
            name,
            groups: Vec::new(),
            children: Vec::new(),
        };
        let known = crate::project::schema::platform_keys();
        if let Some(k) = m.keys().find(|k| !known.contains(k)) {
            return Err(PlatformError::UnknownKey {
                source_name: self.source_name.to_owned(),
                at: format!("{ctx}.{k}"),
            });
        }
        let platform: Platform =
            serde_json::from_value(p.clone()).map_err(|e| self.key_error(&ctx, m, e))?;
        let mut s = MachineSettings::default();
        copy_machine_keys!(&platform, &mut s);
        instance.groups = platform.groups.unwrap_or_default();
        instance.children = platform.children.unwrap_or_default();
        // The keys molecule-vagrant adds, in the document's (sorted) order:
        // a later one overrides an earlier one's setting, as before.
        for (k, v) in m {
            let at = format!("{ctx}.{k}");
            match k.as_str() {
                "interfaces" => self.interfaces(&at, v, &mut s)?,
                "provider_options" => self.provider_options(&at, v, &mut s)?,
                "config_options" => self.config_options(&at, v, &mut s)?,
                "provider_raw_config_args" => {
                    self.raw_config_args(&at, v, &mut s, Scope::Provider)?
                }
                // molecule-vagrant writes these as `override.LINE` in the
                // provider block: the same `vm.*` lines as the instance's.
                "instance_raw_config_args" | "provider_override_args" => {
                    self.raw_config_args(&at, v, &mut s, Scope::Instance)?
                }
                _ => {}
            }
        }
        // `provision: false`, the platform's or else the driver's.
        let off = match (platform.provision, driver_provision) {
            (Some(false), _) => Some("the platform says `provision: false`"),
            (_, Some(false)) => Some(
                "the driver says `provision: false` (molecule-vagrant's `vagrant up --no-provision`)",
            ),
            _ => None,
        };
        if let Some(why) = off.filter(|_| s.provision.as_ref().is_some_and(|p| !p.is_empty())) {
            self.warn(&ctx, format!("its provisioners are not run: {why}"));
            s.provision = None;
        }
        if s.hostname.is_none() && instance.name.contains('.') {
            // molecule-vagrant sets `vm.hostname` to the platform's name:
            // an FQDN stays one (the machine's own name cannot hold dots).
            if let Ok(h) = Hostname::parse(&instance.name) {
                s.hostname = Some(HostnameSetting::Name(h));
            }
        }
        if s.cpus.is_none() {
            s.cpus = Some(Positive(DEFAULT_CPUS));
        }
        checksum_of(&s, &MachineSettings::default()).map_err(|e| self.err(&ctx, &e))?;
        let name = MachineName(instance.machine.clone());
        s.name = Some(name);
        Ok((s, instance))
    }

    /// A platform serde refused: the error of the first key that fails on
    /// its own, named (serde's own message says what it expected).
    fn key_error(
        &self,
        ctx: &str,
        m: &serde_json::Map<String, Value>,
        whole: serde_json::Error,
    ) -> PlatformError {
        for (k, v) in m.iter().filter(|(k, _)| *k != "name") {
            let mut one = serde_json::Map::new();
            one.insert("name".into(), m["name"].clone());
            one.insert(k.clone(), v.clone());
            if let Err(e) = serde_json::from_value::<Platform>(Value::Object(one)) {
                return self.err(&format!("{ctx}.{k}"), &e.to_string());
            }
        }
        self.err(ctx, &whole.to_string())
    }

    /// Vagrant networks (molecule/networks.rs): extra NICs and forwarded ports.
    fn interfaces(
        &mut self,
        at: &str,
        v: &Value,
        s: &mut MachineSettings,
    ) -> Result<(), PlatformError> {
        let mapped = crate::project::molecule::networks::interfaces(at, v)
            .map_err(|(at, m)| self.err(&at, &m))?;
        for (at, m) in mapped.warnings {
            self.warn(&at, m);
        }
        // Before any `vm.network` lines of `instance_raw_config_args`
        // (molecule-vagrant writes `interfaces` first), whichever key
        // was read first.
        let mut networks = mapped.networks;
        networks.extend(s.networks.take().unwrap_or_default());
        s.networks = Some(networks);
        let mut ports = mapped.forwarded_ports;
        ports.extend(s.forwarded_ports.take().unwrap_or_default());
        s.forwarded_ports = Some(ports);
        Ok(())
    }

    /// vagrant-libvirt provider options.
    fn provider_options(
        &mut self,
        at: &str,
        v: &Value,
        s: &mut MachineSettings,
    ) -> Result<(), PlatformError> {
        let Value::Object(m) = v else {
            return Err(self.err(at, "expected a mapping"));
        };
        for (k, v) in m {
            let at = format!("{at}.{k}");
            // molecule-vagrant writes values into the Vagrantfile as Ruby, so
            // its users quote strings themselves: `driver: '"kvm"'`.
            let v = &unquote_ruby_string(v);
            let bad = |what: &str| self.err(&at, &format!("expected {what}"));
            match k.as_str() {
                "cpu_mode" => s.cpu_mode = Some(cpu_mode(v).map_err(|e| self.err(&at, &e))?),
                "cpu_model" => s.cpu_model = Some(string(v).ok_or_else(|| bad("a string"))?),
                "memory" => s.memory = Some(positive(v).ok_or_else(|| bad("a number of MiB"))?),
                "cpus" => s.cpus = Some(positive(v).ok_or_else(|| bad("a whole number"))?),
                "nic_model_type" => {
                    let m = v.as_str().ok_or_else(|| bad("a string"))?;
                    s.nic_model = Some(
                        crate::project::net_config::NicModel::parse(m).map_err(|e| self.err(&at, &e))?,
                    )
                }
                "driver" => {
                    s.accel = Some(match v.as_str() {
                        // vagrant-libvirt's default, so written out by most
                        // scenarios: KVM wherever it runs guests, TCG where it
                        // cannot (saying why). `accel: kvm` in kvmdrive.yml
                        // insists on KVM.
                        Some("kvm") => Accel::Auto,
                        Some("qemu") => Accel::Tcg,
                        _ => return Err(bad("`kvm` or `qemu`")),
                    })
                }
                k if hardware::PROVIDER_OPTIONS.contains(&k) => {
                    if let Some(w) = hardware::provider_option(s, k, v)
                        .map_err(|e| self.err(&at, &e))?
                    {
                        self.warn(&at, w);
                    }
                }
                "machine_virtual_size" => {
                    let gib = positive(v).ok_or_else(|| bad("a size in GiB"))?;
                    s.disk_size = Some(Size(u64::from(gib.0) * Size::GIB));
                }
                "disk_bus" => {
                    if v.as_str() != Some("virtio") {
                        return Err(self.err(&at, "kvmdrive attaches disks with virtio only"));
                    }
                }
                "machine_arch" => {
                    if v.as_str() != Some("x86_64") {
                        return Err(self.err(&at, "kvmdrive runs x86_64 guests only"));
                    }
                }
                k if COSMETIC_PROVIDER_OPTIONS.contains(&k) => self.warn(
                    &at,
                    "changes nothing kvmdrive's machines can show: ignored".into(),
                ),
                k if HOST_SIDE_PROVIDER_OPTIONS.contains(&k) => self.warn(&at, HOST_SIDE.into()),
                // kvmdrive reaches its machines over the management network.
                "mgmt_attach" if v.as_bool() == Some(true) => {}
                "mgmt_attach" => {
                    return Err(self.err(
                        &at,
                        "kvmdrive reaches its machines over its management network: it stays attached",
                    ))
                }
                // The system connection: what kvmdrive uses unless told otherwise.
                "qemu_use_session" if v.as_bool() == Some(false) => {}
                "uri" | "system_uri" if v.as_str() == Some("qemu:///system") => {}
                "uri" | "host" | "connect_via_ssh" | "username" | "password" | "socket"
                | "id_ssh_key_file" | "qemu_use_session" | "system_uri" => {
                    return Err(self.err(
                        &at,
                        "choose the libvirt connection with `kvmdrive --connect URI` (or LIBVIRT_DEFAULT_URI)",
                    ))
                }
                _ => {
                    return Err(self.err(
                        &at,
                        "a provider option kvmdrive cannot honour (it knows cpu_mode, cpu_model, memory, cpus, \
                         driver, machine_virtual_size, disk_bus: virtio, and the hardware options of docs/molecule.md)",
                    ))
                }
            }
        }
        Ok(())
    }

    /// Vagrantfile lines (vagrant_ruby.rs, raw_config_args.rs): what maps
    /// onto kvmdrive is applied, the rest is a warning naming the line.
    fn raw_config_args(
        &mut self,
        at: &str,
        v: &Value,
        s: &mut MachineSettings,
        scope: Scope,
    ) -> Result<(), PlatformError> {
        let Value::Array(list) = v else {
            return Err(self.err(at, "expected a list"));
        };
        let mut disks = Vec::new();
        for (j, line) in list.iter().enumerate() {
            let Some(text) = line.as_str() else {
                return Err(self.err(&format!("{at}[{j}]"), "expected a line of Ruby (a string)"));
            };
            let at = format!("{at}[{j}] (`{}`)", text.trim());
            let call = crate::project::molecule::vagrant_ruby::parse_line(
                text,
                &crate::project::molecule::vagrant_ruby::ProcessEnv,
            )
            .map_err(|e| PlatformError::RubyLine {
                source_name: self.source_name.to_owned(),
                at: at.clone(),
                message: e.message,
            })?;
            let settings =
                raw_config_args::classify(&call, scope).map_err(|e| self.err(&at, &e))?;
            for setting in settings {
                match setting {
                    RawSetting::SyncedFolder(f) => {
                        s.synced_folders.get_or_insert_with(Vec::new).push(f)
                    }
                    RawSetting::Provision(p) => s.provision.get_or_insert_with(Vec::new).push(p),
                    RawSetting::Hostname(h) => {
                        s.hostname = Some(
                            serde_json::from_value(Value::String(h))
                                .map_err(|e| self.err(&at, &e.to_string()))?,
                        )
                    }
                    RawSetting::BootTimeout(t) => {
                        s.boot_timeout = Some(
                            positive(&t)
                                .ok_or_else(|| self.err(&at, "expected a number of seconds"))?,
                        )
                    }
                    RawSetting::Interface(iface) => {
                        let mapped = crate::project::molecule::networks::interfaces(
                            &at,
                            &Value::Array(vec![iface]),
                        )
                        .map_err(|(at, m)| self.err(&at, &m))?;
                        for (at, m) in mapped.warnings {
                            self.warn(&at, m);
                        }
                        s.networks
                            .get_or_insert_with(Vec::new)
                            .extend(mapped.networks);
                        s.forwarded_ports
                            .get_or_insert_with(Vec::new)
                            .extend(mapped.forwarded_ports);
                    }
                    RawSetting::ProviderOption(k, v) => {
                        let mut one = serde_json::Map::new();
                        one.insert(k, v);
                        self.provider_options(&at, &Value::Object(one), s)?
                    }
                    RawSetting::Storage => match hardware::storage_line(text) {
                        Some(disk) => disks.push(disk.map_err(|e| self.err(&at, &e))?),
                        None => self.warn(&at, "not a disk kvmdrive can add: ignored".into()),
                    },
                    RawSetting::Unmapped(why) => self.warn(&at, why),
                }
            }
        }
        if !disks.is_empty() {
            hardware::add_disks(s, disks).map_err(|e| self.err(at, &e))?;
        }
        Ok(())
    }

    /// Vagrant `config.*` settings.
    fn config_options(
        &mut self,
        at: &str,
        v: &Value,
        s: &mut MachineSettings,
    ) -> Result<(), PlatformError> {
        let Value::Object(m) = v else {
            return Err(self.err(at, "expected a mapping"));
        };
        for (k, v) in m {
            let at = format!("{at}.{k}");
            match k.as_str() {
                "vm.boot_timeout" => {
                    s.boot_timeout = Some(
                        positive(v).ok_or_else(|| self.err(&at, "expected a number of seconds"))?,
                    )
                }
                // Vagrant's default folder: the project (the role) at /vagrant, by rsync.
                "synced_folder" => match v.as_bool() {
                    Some(true) => s.synced_folders.get_or_insert_with(Vec::new).insert(
                        0,
                        crate::project::synced_folder::SyncedFolder::vagrant_default(),
                    ),
                    Some(false) => {}
                    None => return Err(self.err(&at, "expected true or false")),
                },
                "ssh.insert_key" => {} // kvmdrive always replaces the insecure key
                _ => self.warn(&at, "a Vagrant setting: ignored".into()),
            }
        }
        Ok(())
    }
}

/// A string, or a number written without quotes (YAML's `box_version: 12.1`).
fn string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A value typed by its serde type (the same rules as kvmdrive.yml's).
fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

fn positive(v: &Value) -> Option<Positive> {
    typed(v).ok()
}

fn cpu_mode(v: &Value) -> Result<CpuMode, String> {
    typed(v).map_err(|_| "expected auto, host-passthrough, host-model or custom".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::hardware::{DiskFormat, Firmware, Hostname, HostnameSetting, MachineType};

    fn ok(text: &str) -> Platforms {
        parse(text, "molecule.yml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        parse(text, "molecule.yml").unwrap_err().to_string()
    }

    #[test]
    fn driver_hosts_and_platform_host_pins() {
        let p = ok("driver:\n  name: molecule-kvmdrive\n  hosts: ['qemu+ssh://a/system', 'qemu+ssh://b/system']\nplatforms:\n  - name: one\n    host: qemu+ssh://a/system\n  - name: two\n");
        assert_eq!(p.config.hosts.0.len(), 2);
        let m = p.config.machines();
        assert_eq!(
            m[0].host.as_ref().map(|h| h.as_str()),
            Some("qemu+ssh://a/system")
        );
        assert_eq!(m[1].host, None);
        let e = err("driver:\n  hosts: ['qemu+ssh://a/system']\nplatforms:\n  - name: one\n    host: qemu+ssh://z/system\n");
        assert!(e.contains("not one of `hosts:`"), "{e}");
        let e = err("driver:\n  hosts: 'qemu+ssh://a/system'\nplatforms:\n  - name: one\n");
        assert!(e.contains("driver.hosts"), "{e}");
    }

    /// The platform section of molecule-vagrant's documentation example,
    /// with a libvirt provider.
    const VAGRANT_SCENARIO: &str = r#"
driver:
  name: vagrant
  provider:
    name: libvirt
  default_box: generic/debian12
platforms:
  - name: instance-1
    hostname: web1
    instance_raw_config_args:
      - "vm.network 'forwarded_port', guest: 80, host: 8080"
    interfaces:
      - auto_config: true
        network_name: private_network
        type: dhcp
    config_options:
      synced_folder: false
      ssh.insert_key: true
      vm.boot_timeout: 600
    box: debian/bookworm64
    box_version: 12.1
    box_url: http://repo.example.com/debian.json
    box_download_checksum: 6d016aa287990152548f0a414048c2edeea7f84b48293cab21506f86649f79b8
    box_download_checksum_type: sha256
    memory: 1024
    cpus: 2
    provider_options:
      cpu_mode: host-passthrough
      nested: true
      machine_type: pc
      disk_bus: virtio
      video_type: qxl
    provider_raw_config_args:
      - "cpuset = '1-4,^3,6'"
    groups: [web]
    children: [frontend]
  - name: Instance_2
"#;

    #[test]
    fn a_molecule_vagrant_scenario_is_accepted() {
        let p = ok(VAGRANT_SCENARIO);
        let m = p.config.machines();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].name.0, "instance-1",
            "the instance name names the machine"
        );
        assert_eq!(
            m[0].hostname,
            HostnameSetting::Name(Hostname::parse("web1").unwrap())
        );
        assert_eq!(m[0].box_name, "debian/bookworm64");
        assert_eq!(
            m[0].box_version
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("12.1")
        );
        assert_eq!((m[0].memory_mib, m[0].cpus), (1024, 2));
        assert_eq!(m[0].boot_timeout_s, 600);
        assert_eq!(m[0].cpu_mode, CpuMode::HostPassthrough);
        assert_eq!(m[1].name.0, "instance-2");
        assert_eq!(m[1].box_name, "generic/debian12", "driver.default_box");
        assert_eq!(p.instances[0].name, "instance-1");
        assert_eq!(p.instances[0].groups, vec!["web"]);
        assert_eq!(p.instances[0].children, vec!["frontend"]);
        assert_eq!(p.instances[1].name, "Instance_2");
        assert_eq!(
            m[0].networks.len(),
            1,
            "the DHCP private_network is a second NIC"
        );
        assert!(m[1].networks.is_empty());
    }

    #[test]
    fn interfaces_and_vm_network_lines_add_up_interfaces_first() {
        let p = ok("- name: a\n  interfaces:\n    - network_name: private_network\n      ip: 192.168.56.4\n  instance_raw_config_args:\n    - 'vm.network :private_network, ip: \"172.28.128.10\"'\n    - 'vm.network \"forwarded_port\", guest: 80, host: 8080'\n");
        let m = &p.config.machines()[0];
        let ips: Vec<String> = m
            .networks
            .iter()
            .map(|n| match &n.kind {
                crate::project::net_config::NetworkKind::Private(p) => {
                    p.address.unwrap().ip.to_string()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ips, ["192.168.56.4", "172.28.128.10"]);
        assert_eq!(m.forwarded_ports.len(), 1);
    }

    #[test]
    fn interfaces_and_nic_model_type_map_onto_networks() {
        let p = ok("- name: a\n  provider_options:\n    nic_model_type: e1000\n  interfaces:\n    - network_name: private_network\n      ip: 192.168.56.4\n    - network_name: forwarded_port\n      guest: 80\n      host: 8080\n");
        let m = &p.config.machines()[0];
        assert_eq!(m.nic_model, crate::project::net_config::NicModel::E1000);
        assert_eq!(m.networks.len(), 1);
        assert_eq!(
            (m.forwarded_ports[0].guest, m.forwarded_ports[0].host),
            (80, 8080)
        );
        let e = err("- name: a\n  provider_options:\n    nic_model_type: ne2k_pci\n");
        assert!(
            e.contains("nic_model_type") && e.contains("ne2k_pci"),
            "{e}"
        );
    }

    #[test]
    fn driver_provider_options_are_named_as_ignored() {
        let p = ok("driver:\n  name: molecule-kvmdrive\n  provider:\n    name: libvirt\n    options:\n      memory: 2048\nplatforms:\n  - name: one\n");
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0].starts_with("driver.provider.options: ignored"),
            "{:?}",
            p.warnings
        );
        assert!(
            ok("driver:\n  provider:\n    name: libvirt\nplatforms:\n  - name: one\n")
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn vagrant_only_keys_are_named_in_warnings() {
        let w = ok(VAGRANT_SCENARIO).warnings.join("\n");
        for key in [
            "provider_raw_config_args[0] (`cpuset = '1-4,^3,6'`)",
            "video_type",
        ] {
            assert!(w.contains(key), "no warning about {key}: {w}");
        }
        assert!(!w.contains("cpu_mode"), "{w}");
        assert!(
            !w.contains("interfaces"),
            "a DHCP private network is honoured: {w}"
        );
    }

    #[test]
    fn vagrantfile_lines_and_synced_folder_true_map_onto_machines() {
        let p = ok(r#"
- name: a
  config_options:
    synced_folder: true
  instance_raw_config_args:
    - "vm.synced_folder 'data', '/srv/data', type: 'virtiofs'"
    - "vm.provision :shell, inline: 'touch /tmp/mark'"
    - "vm.provision 'file', source: 'motd', destination: '/etc/motd'"
    - "vm.network 'forwarded_port', guest: 80, host: 8080"
    - "vm.hostname = 'web.example.com'"
    - "vm.box_check_update = false"
  provider_raw_config_args:
    - "memory = 1536"
    - "cpus = 2"
    - "cpuset = '1-2'"
"#);
        let m = &p.config.machines()[0];
        let dests: Vec<&str> = m.synced_folders.iter().map(|f| f.dest.0.as_str()).collect();
        assert_eq!(dests, ["/vagrant", "/srv/data"]);
        assert_eq!(m.provisioners.len(), 2);
        assert_eq!(m.forwarded_ports.len(), 1);
        assert_eq!((m.memory_mib, m.cpus), (1536, 2));
        let w = p.warnings.join("\n");
        assert!(
            w.contains("instance_raw_config_args[5] (`vm.box_check_update = false`)"),
            "{w}"
        );
        assert!(
            w.contains("provider_raw_config_args[2] (`cpuset = '1-2'`)"),
            "{w}"
        );
        // The default folder can be switched off the Vagrant way.
        let p = ok("- name: a\n  config_options: {synced_folder: true}\n  instance_raw_config_args:\n    - \"vm.synced_folder '.', '/vagrant', disabled: true\"\n");
        assert!(p.config.machines()[0].synced_folders.is_empty());
        let e = err("- name: a\n  instance_raw_config_args:\n    - \"vm.synced_folder \\\"#{`id`}\\\", '/x'\"\n");
        assert!(
            e.contains("instance_raw_config_args[0]") && e.contains("only #{Dir.pwd}"),
            "{e}"
        );
        // A line the reader cannot take is not a platform-key problem: its
        // hint says what a line may hold, not which keys exist.
        let e = parse(
            "- name: a\n  instance_raw_config_args:\n    - 'vm.provision \"shell\", inline: <<-SHELL'\n",
            "molecule.yml",
        )
        .unwrap_err();
        assert!(matches!(e, PlatformError::RubyLine { .. }), "{e:?}");
        let hint = e.hint().unwrap();
        assert!(
            hint.contains("literal values") && !hint.contains("platform keys kvmdrive knows"),
            "{hint}"
        );
    }

    #[test]
    fn a_plain_list_works_and_kvmdrive_keys_are_honoured() {
        let p = ok(
            r#"[{"name": "a", "box": "/b/x.box", "disk_size": "30G", "accel": "tcg", "memory": "768"}]"#,
        );
        let m = &p.config.machines()[0];
        assert_eq!(m.disk_size, Some(30 * Size::GIB));
        assert_eq!(m.accel, Accel::Tcg);
        assert_eq!(m.memory_mib, 768);
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn unknown_and_unhonourable_keys_are_errors_naming_them() {
        let e = err("platforms:\n  - name: a\n    image: debian:12\n");
        assert!(
            e.contains("platforms[0] (a).image") && e.contains("unknown"),
            "{e}"
        );
        let e = err("- name: a\n  provider_options:\n    machine_type: virt\n");
        assert!(e.contains("machine_type") && e.contains("virt"), "{e}");
        let e = err("- name: a\n  provider_options:\n    frobnicate: 1\n");
        assert!(e.contains("frobnicate"), "{e}");
        let e = err("- name: a\n  interfaces:\n    - network_name: private_network\n      ip: 192.168.56.4\n      libvirt__forward_mode: hostdev\n");
        assert!(e.contains("interfaces[0].libvirt__forward_mode"), "{e}");
        let e = err("- name: a\n  config_options:\n    synced_folder: yes please\n");
        assert!(e.contains("synced_folder"), "{e}");
        let e = err("- name: a\n  box_download_checksum: abc\n");
        assert!(e.contains("go together"), "{e}");
        let e = err("- name: a\n  memory: lots\n");
        assert!(e.contains("memory"), "{e}");
        let e = err("- name: a\n  box_version: \"~>\"\n");
        assert!(e.contains("platforms[0] (a).box_version"), "{e}");
        // the checksum type follows from the length, as in kvmdrive.yml
        let sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let p = ok(&format!("- name: a\n  box_download_checksum: {sha1}\n"));
        assert_eq!(
            p.config.machines()[0].box_checksum.as_ref().unwrap().hex,
            sha1
        );
    }

    #[test]
    fn names_must_stay_distinct_as_machines() {
        let e = err("- name: web_1\n- name: web-1\n");
        assert!(e.contains("collides"), "{e}");
        assert!(err("- {}\n").contains("missing key `name`"));
        assert!(err("platforms: []\n").contains("empty"));
        assert!(err("- name: a\n  hostname: Bad_Host\n").contains("hostname"));
    }

    #[test]
    fn hardware_keys_and_provider_options_are_honoured() {
        let p = ok(r#"
- name: node1
  hostname: node1.example.com
  disks: [{size: 2G, bus: sata, name: data}]
  provider_options:
    machine_type: q35
    tpm_model: tpm-crb
    tpm_version: "2.0"
    qemu_use_agent: true
    nested: true
    cpu_feature: {name: avx2, policy: disable}
  provider_raw_config_args:
    - "storage :file, :type => 'raw', :size => '1G'"
    - "cpuset = '1-4'"
- name: keep
  hostname: false
  firmware: efi
"#);
        let m = p.config.machines();
        assert_eq!(m[0].name.0, "node1");
        assert_eq!(
            m[0].hostname,
            HostnameSetting::Name(Hostname::parse("node1.example.com").unwrap())
        );
        let hw = &m[0].hardware;
        assert_eq!(hw.machine_type, MachineType::Q35);
        assert!(hw.tpm && hw.guest_agent && hw.nested);
        assert_eq!(hw.cpu_features[0].name, "avx2");
        let disks: Vec<_> = hw.disks.iter().map(|d| d.name.clone().unwrap()).collect();
        assert_eq!(disks, ["data", "disk2"]);
        assert_eq!(hw.disks[1].format, DiskFormat::Raw);
        assert_eq!(m[1].hostname, HostnameSetting::Keep);
        assert_eq!(m[1].hardware.firmware, Firmware::Efi);
        let w = p.warnings.join("\n");
        assert!(w.contains("provider_raw_config_args[1]"), "{w}");
        assert!(!w.contains("provider_raw_config_args[0]"), "{w}");
        let e = err("- name: a\n  secure_boot: true\n  machine_type: pc\n");
        assert!(e.contains("q35"), "{e}");
    }

    #[test]
    fn driver_kvm_is_vagrant_libvirts_default_and_qemu_asks_for_tcg() {
        // `driver: kvm` is what vagrant-libvirt does anyway: KVM where it
        // runs guests, TCG (saying why) where it cannot; only kvmdrive's own
        // `accel: kvm` insists on KVM.
        let p = ok(r#"
- name: a
  provider_options: {driver: kvm}
- name: b
  provider_options: {driver: qemu}
- name: c
  accel: kvm
"#);
        let m = p.config.machines();
        assert_eq!(m[0].accel, Accel::Auto);
        assert_eq!(m[1].accel, Accel::Tcg);
        assert_eq!(m[2].accel, Accel::Kvm);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let e = err("- name: a\n  provider_options: {driver: xen}\n");
        assert!(e.contains("`kvm` or `qemu`"), "{e}");
    }

    #[test]
    fn values_written_as_ruby_strings_mean_the_string() {
        let p = ok(r#"
- name: a
  provider_options:
    driver: '"qemu"'
    nic_model_type: "'e1000'"
    cpu_mode: '"host-passthrough"'
    qemu_use_session: false
  interfaces:
    - network_name: private_network
      ip: '"192.168.56.10"'
      virtualbox__intnet: cluster
"#);
        let m = &p.config.machines()[0];
        assert_eq!(m.accel, Accel::Tcg);
        assert_eq!(m.cpu_mode, CpuMode::HostPassthrough);
        assert_eq!(
            m.nic_model,
            crate::project::net_config::NicModel::parse("e1000").unwrap()
        );
        let crate::project::net_config::NetworkKind::Private(net) = &m.networks[0].kind else {
            panic!("{:?}", m.networks[0])
        };
        assert_eq!(net.address.unwrap().to_string(), "192.168.56.10/24");
        let w = p.warnings.join("\n");
        assert!(
            w.contains("virtualbox__intnet: an option of another Vagrant provider"),
            "{w}"
        );
        let e = err("- name: a\n  provider_options:\n    qemu_use_session: true\n");
        assert!(e.contains("--connect"), "{e}");
        assert!(
            err("- name: a\n  provider_options:\n    driver: '\"xen\"'\n")
                .contains("`kvm` or `qemu`")
        );
    }

    #[test]
    fn an_fqdn_platform_name_is_the_guests_host_name() {
        let p = ok("- name: ipa.example.test\n- name: web\n- name: db.example.test\n  hostname: other.example.test\n");
        let m = p.config.machines();
        assert_eq!(m[0].name.0, "ipa-example-test");
        assert_eq!(
            m[0].hostname,
            HostnameSetting::Name(Hostname::parse("ipa.example.test").unwrap())
        );
        assert_eq!(m[1].hostname, HostnameSetting::MachineName);
        assert_eq!(
            m[2].hostname,
            HostnameSetting::Name(Hostname::parse("other.example.test").unwrap())
        );
    }

    #[test]
    fn platforms_get_molecule_vagrants_two_cpus_unless_they_say() {
        let p = ok("- name: a\n- name: b\n  cpus: 1\n- name: c\n  provider_options:\n    cpus: 3\n- name: d\n  provider_raw_config_args: ['cpus = 4']\n");
        let cpus: Vec<u32> = p.config.machines().iter().map(|m| m.cpus).collect();
        assert_eq!(cpus, [DEFAULT_CPUS, 1, 3, 4]);
    }

    #[test]
    fn driver_provision_false_keeps_provisioners_from_running() {
        let platform = "platforms:\n  - name: a\n    instance_raw_config_args:\n      - \"vm.provision :shell, inline: 'true'\"\n";
        let off = ok(&format!("driver:\n  provision: false\n{platform}"));
        assert!(off.config.machines()[0].provisioners.is_empty());
        assert!(
            off.warnings.join("\n").contains("provision: false"),
            "{:?}",
            off.warnings
        );
        for on in [
            format!("driver:\n  provision: true\n{platform}"),
            platform.to_owned(),
        ] {
            let p = ok(&on);
            assert_eq!(p.config.machines()[0].provisioners.len(), 1);
            assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        }
        assert!(err(&format!("driver:\n  provision: maybe\n{platform}")).contains("true or false"));
    }

    #[test]
    fn a_platforms_provision_false_keeps_its_own_provisioners_from_running() {
        let p = ok(r#"
- name: a
  provision: false
  instance_raw_config_args:
    - "vm.provision :shell, inline: 'true'"
- name: b
  provision: true
  instance_raw_config_args:
    - "vm.provision :shell, inline: 'true'"
"#);
        let m = p.config.machines();
        assert!(m[0].provisioners.is_empty());
        assert_eq!(m[1].provisioners.len(), 1);
        let w = p.warnings.join("\n");
        assert!(
            w.contains("platforms[0] (a)") && w.contains("`provision: false`"),
            "{w}"
        );
        assert!(!w.contains("platforms[1]"), "{w}");
    }

    #[test]
    fn provider_override_args_are_vm_lines_as_molecule_vagrant_writes_them() {
        let p = ok(r#"
- name: a
  provider_override_args:
    - "vm.synced_folder './', '/vagrant', disabled: true, type: 'nfs'"
    - "vm.synced_folder '.', '/srv/app', type: 'rsync'"
    - 'vm.network "forwarded_port", guest: 80, host: 8080'
    - "vm.provision :shell, inline: 'touch /tmp/mark'"
"#);
        let m = &p.config.machines()[0];
        assert_eq!(m.synced_folders.len(), 1, "{:?}", m.synced_folders);
        assert_eq!(m.synced_folders[0].dest.0, "/srv/app");
        assert_eq!(m.forwarded_ports.len(), 1);
        assert_eq!(m.provisioners.len(), 1);
        let e = err("- name: a\n  provider_override_args:\n    - \"vm.synced_folder \\\"#{`id`}\\\", '/x'\"\n");
        assert!(e.contains("provider_override_args[0]"), "{e}");
    }

    #[test]
    fn only_an_unknown_key_gets_the_list_of_keys_as_its_hint() {
        let hint = |text: &str| parse(text, "m.yml").unwrap_err().hint().unwrap();
        assert!(hint("- name: a\n  cpu: 2\n").contains("platform keys kvmdrive knows: accel"));
        let h = hint("- name: a\n  interfaces:\n    - network_name: private_network\n      ip: 10.0.0.5\n      libvirt__tunnel_type: udp\n");
        assert!(
            h.contains("docs/molecule.md") && !h.contains("accel"),
            "{h}"
        );
    }

    #[test]
    fn host_side_provider_options_are_warned_about_and_the_default_connection_taken() {
        let p = ok(r#"
- name: a
  provider_options:
    autostart: false
    emulator_path: /usr/bin/qemu-system-x86_64
    management_network_mtu: 1400
    mgmt_attach: true
    uri: qemu:///system
"#);
        let w = p.warnings.join("\n");
        for key in ["autostart", "emulator_path", "management_network_mtu"] {
            assert!(
                w.contains(&format!("provider_options.{key}: a host-side detail")),
                "{w}"
            );
        }
        assert_eq!(p.warnings.len(), 3, "{w}");
        let e = err("- name: a\n  provider_options:\n    mgmt_attach: false\n");
        assert!(e.contains("management network"), "{e}");
        let e = err("- name: a\n  provider_options:\n    uri: qemu+ssh://root@hv1/system\n");
        assert!(e.contains("--connect"), "{e}");
    }

    #[test]
    fn machine_names_from_instance_names() {
        assert_eq!(machine_name("Ubuntu_22.04").unwrap().0, "ubuntu-22-04");
        assert_eq!(machine_name("instance").unwrap().0, "instance");
        assert!(machine_name("__").is_err());
    }
}
