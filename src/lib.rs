//! kvmdrive: Vagrant-compatible libvirt/KVM machines for CI and Ansible role
//! testing. Data flows one way: `project` (load and validate kvmdrive.yml or
//! Molecule platforms) -> `machine::plan`
//! (names, boxes, MACs, IPs, XML, all decided) -> apply through `virt` ->
//! observe (SSH) -> report (`output`).

pub mod boxes;
pub mod fault;
pub mod host;
pub mod machine;
pub mod output;
pub mod project;
pub mod roletest;
pub mod virt;
pub mod wait;

#[cfg(test)]
pub(crate) mod testutil;
