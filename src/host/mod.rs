//! What the machine under us needs to run guests, and making it so.
//!
//! `kvmdrive host check` gathers facts ([`facts`]: files, a few tools, one
//! libvirt connection, optionally a probe guest) and turns them into
//! findings with pure functions ([`doctor`]). `kvmdrive host up` starts the
//! daemons a CI container lacks ([`daemons`]) and, with `--fix`, repairs
//! what the checks found ([`fix`]: /dev/kvm access through [`kvm_access`]
//! and [`qemu_conf`], the iptables backend through [`firewall`] and
//! [`alternatives`], ip_forward). The rest of kvmdrive uses
//! [`diagnose_start_failure`] and [`quick_preflight`] to say which check an
//! error comes from. [`accel`] (the lead's) picks KVM or TCG.

pub mod accel;
pub mod alternatives;
pub mod cli;
pub mod daemons;
pub mod diagnose;
pub mod doctor;
pub mod error;
pub mod experience;
pub mod facts;
pub mod finding;
pub mod firewall;
pub mod fix;
pub mod kvm_access;
pub mod probe;
pub mod programs;
pub mod qemu_conf;
pub mod up;

pub use diagnose::{diagnose_start_failure, quick_preflight};
pub use error::HostError;
pub use finding::{Finding, Status};
