//! Machines: where a project's state lives ([`project`]), what exists for
//! each machine in libvirt ([`plan`], [`netplan`]), bringing them up and down
//! ([`lifecycle`]), and reaching them over SSH ([`ssh`], [`keys`]).

pub mod arch;
pub mod base_import;
pub mod boot_diagnosis;
pub mod cancel;
pub mod disks;
pub mod forward;
pub mod guest_clock;
pub mod guest_net;
pub mod hardware;
pub mod host_lock;
pub mod keys;
pub mod lifecycle;
pub mod net_apply;
pub mod net_error;
pub mod netplan;
pub mod nic_setup;
pub mod nics;
pub mod placement;
pub mod plan;
pub mod project;
pub mod project_plan;
pub mod provision;
pub mod reuse;
pub mod snapshot;
pub mod ssh;
pub mod stale_connections;
pub mod suspend;
pub mod sync;
