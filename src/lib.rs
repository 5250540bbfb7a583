//! kvmdrive: Vagrant-compatible libvirt/KVM machines for CI and Ansible role
//! testing. Data flows one way: `config` (parse, validate) -> `machine::plan`
//! (names, boxes, MACs, IPs, XML, all decided) -> apply through `virt` ->
//! observe (SSH) -> report (`output`).

pub mod boxes;
pub mod config;
pub mod hardware;
pub mod host;
pub mod machine;
pub mod net_config;
pub mod output;
pub mod virt;

// Ansible role testing (Molecule driver and the lifecycle without Molecule).
pub mod ansible;
pub mod interpolate;
pub mod molecule_hardware;
pub mod molecule_networks;
pub mod platforms;
pub mod scenario;
pub mod steps;

// Synced folders and provisioners (kvmdrive.yml, Molecule, Vagrantfile lines).
pub mod provisioner;
pub mod raw_config_args;
pub mod synced_folder;
pub mod vagrant_ruby;

#[cfg(test)]
pub(crate) mod testutil;
