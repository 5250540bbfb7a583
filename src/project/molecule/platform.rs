//! One Molecule platform as serde reads it: molecule-vagrant's keys around
//! the machine keys kvmdrive.yml has too (declared once in
//! [`crate::project::machine_keys`], typed the same way). The JSON schema of
//! the Molecule plugin is generated from this struct
//! ([`crate::project::schema`]); [`crate::project::molecule::platforms`]
//! turns a platform into machine settings.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::project::machine_keys::machine_keys_struct;

machine_keys_struct! {
    /// A kvmdrive machine. Accepts molecule-vagrant's platform keys; kvmdrive
    /// checks their values when it creates the machines (a value it cannot
    /// honour is an error, one that changes nothing a test can see a
    /// warning).
    #[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Platform {
        /// Instance (Ansible host) name; the machine is named after it (lowercase, `-` for other characters).
        #[schemars(length(min = 1))]
        pub name: String,
        /// Inventory groups.
        pub groups: Option<Vec<String>>,
        /// Child groups of the inventory groups.
        pub children: Option<Vec<String>>,
        /// Vagrant networks: private_network (ip or type: dhcp, libvirt__* options), public_network (dev/mode macvtap, or a bridge) and forwarded_port (tcp) become extra NICs and ssh port forwards.
        pub interfaces: Option<Vec<Map<String, Value>>>,
        /// vagrant-libvirt provider options: cpu_mode, cpu_model, memory, cpus, driver, machine_virtual_size, disk_bus (virtio), machine_type, loader, nvram, firmware, tpm_model, tpm_type, tpm_version, nested, cpu_feature, qemu_use_agent, graphics_type; other display options are ignored with a warning.
        pub provider_options: Option<Map<String, Value>>,
        /// Vagrant config: vm.boot_timeout is honoured; synced_folder: true syncs the Molecule project directory (the role) to /vagrant by rsync; others ignored with a warning.
        pub config_options: Option<Map<String, Value>>,
        /// Vagrantfile lines: vm.synced_folder, vm.provision (shell, file, ansible), vm.network, vm.hostname, vm.boot_timeout are applied; others are ignored with a warning naming the line.
        pub instance_raw_config_args: Option<Vec<Value>>,
        /// Vagrantfile provider lines (memory, cpus, nic_model_type, machine_type, cpu_mode, storage :file, ...) are applied; others are ignored with a warning naming the line.
        pub provider_raw_config_args: Option<Vec<Value>>,
        /// Vagrantfile lines molecule-vagrant writes as `override.LINE` in the provider block: read as instance_raw_config_args lines.
        pub provider_override_args: Option<Vec<Value>>,
        /// false: this platform's provisioners are not run (as the driver's `provision: false`); true: they are (the default).
        pub provision: Option<bool>,
    }
}
