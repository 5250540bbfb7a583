//! Remote libvirt hosts: what changes when the hypervisor is not this
//! machine. A connection URI with a host part (`qemu+ssh://root@hv1/system`)
//! is remote ([`is_remote`]); then box images reach the host through libvirt's
//! storage streams ([`crate::virt::upload`]) instead of a file copy, the
//! subnet is chosen from the host's libvirt networks only, logs on the host are
//! named instead of read, and guests — on the host's NAT network, which this
//! machine cannot route to — are reached over SSH through the host
//! ([`jump::Jump`]): in kvmdrive's own SSH, in the readiness wait, in
//! `ssh-config` and in the Ansible inventory. Local URIs keep the local fast
//! paths.

pub mod jump;
pub mod uri;

pub use jump::Jump;
pub use uri::is_remote;

use std::path::{Path, PathBuf};

use crate::boxes::InstalledBox;
use crate::host::accel::{self, AccelChoice, KvmFacts};
use crate::machine::lifecycle::{Env, LifecycleError};
use crate::project::config;
use crate::virt::domain::Accel;
use crate::virt::storage::POOL_NAME;
use crate::virt::{Hypervisor, VirtError};

/// The base volume `name` of box `b` on a remote host: uploaded through
/// libvirt once per host (later `up`s find it), never copied by path.
pub fn base_volume(env: &Env, name: &str, b: &InstalledBox) -> Result<PathBuf, LifecycleError> {
    if b.disks()?.len() > 1 {
        return Err(VirtError::other(
            format!("use box {} on a remote host", b.name),
            "boxes with several disks are only supported on a local libvirt yet",
        )
        .into());
    }
    if let Some(path) = env.hv.volume_path(POOL_NAME, name)? {
        // Complete copies only: a cut upload is replaced below.
        let done = env
            .hv
            .volume_xml(POOL_NAME, name)?
            .and_then(|x| crate::virt::upload::volume_format(&x))
            .is_some_and(|f| f == "qcow2");
        if done {
            return Ok(path);
        }
    }
    let host = uri::RemoteUri::parse(env.hv.uri()).map_or_else(String::new, |r| r.host);
    env.out.step(
        None,
        format!(
            "uploading box {} {} to {host} (storage pool {POOL_NAME})",
            b.name, b.version
        ),
    );
    let path = env.hv.upload_qcow2_volume(
        POOL_NAME,
        name,
        &b.image,
        &crate::machine::cancel::is_cancelled,
    )?;
    Ok(path)
}

/// The accelerator for a machine: this machine's facts decide for a local
/// libvirt; for a remote one, `auto` means KVM when the host's libvirt offers
/// a `kvm` domain type (as vagrant-libvirt decides), else TCG.
pub fn choose_accel(hv: &Hypervisor, setting: config::Accel, facts: &KvmFacts) -> AccelChoice {
    if setting != config::Accel::Auto || !is_remote(hv.uri()) {
        return accel::choose(setting, facts);
    }
    match hv.capabilities() {
        Ok(caps) if offers_kvm(&caps) => AccelChoice {
            accel: Accel::Kvm,
            reason: "the remote host's libvirt offers KVM".into(),
        },
        Ok(_) => AccelChoice {
            accel: Accel::Tcg,
            reason:
                "the remote host's libvirt offers no KVM: using TCG (software emulation, slower)"
                    .into(),
        },
        Err(e) => AccelChoice {
            accel: Accel::Tcg,
            reason: format!("cannot read the remote host's capabilities ({e}): using TCG"),
        },
    }
}

/// Whether libvirt's capabilities XML lists a `kvm` domain type.
fn offers_kvm(caps: &str) -> bool {
    caps.contains("<domain type='kvm'") || caps.contains("<domain type=\"kvm\"")
}

/// The last `n` lines of a log file libvirt writes on the hypervisor host:
/// read here when the host is this machine; otherwise a note saying where
/// the file is (libvirt has no call that reads it).
pub fn log_tail(uri: &str, path: &Path, n: usize) -> String {
    if let Some(jump) = Jump::from_uri(uri) {
        return format!(
            "(on the remote host {}; read it there: ssh {} tail -n {n} {})",
            jump.host,
            jump.destination(),
            path.display()
        );
    }
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_is_read_from_capabilities() {
        assert!(offers_kvm(
            "<guest><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest>"
        ));
        assert!(!offers_kvm(
            "<guest><arch name='x86_64'><domain type='qemu'/></arch></guest>"
        ));
    }

    #[test]
    fn remote_logs_are_named_not_read() {
        let note = log_tail(
            "qemu+ssh://root@10.250.1.2/system",
            Path::new("/var/log/libvirt/qemu/d-console.log"),
            15,
        );
        assert!(note.contains("remote host 10.250.1.2"), "{note}");
        assert!(note.contains("ssh root@10.250.1.2 tail -n 15 /var/log/libvirt/qemu/d-console.log"));
        assert_eq!(
            log_tail("qemu:///system", Path::new("/nonexistent/x.log"), 5),
            ""
        );
    }
}
