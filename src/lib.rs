//! kvmdrive: Vagrant-compatible libvirt/KVM machines for CI and Ansible role
//! testing. Data flows one way: `project` (load and validate kvmdrive.yml or
//! Molecule platforms) -> `machine::plan`
//! (names, boxes, MACs, IPs, XML, all decided) -> apply through `virt` ->
//! observe (SSH) -> report (`output`). Every failure reaches the user as one
//! [`Error`] with a hint and an exit code.

pub mod boxes;
pub mod cli;
pub mod engine;
pub mod error;
pub mod fault;
pub mod front;
pub mod host;
pub mod machine;
pub mod output;
pub mod project;
pub mod remote;
pub mod roletest;
mod same_file;
pub mod virt;
pub mod wait;

pub use error::Error;

#[cfg(test)]
pub(crate) mod testutil;
