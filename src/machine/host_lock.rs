//! The host-wide network lock: one lock file per libvirt URI under
//! kvmdrive's runtime directory (`/run/kvmdrive`, `KVMDRIVE_RUN_DIR`), held
//! by `up` while it chooses a free subnet and defines the network on it, so
//! projects brought up at the same moment get distinct subnets. It waits
//! (the section is short: a few libvirt calls); it serialises the processes
//! of this host only, so two hosts sharing a remote libvirtd are not covered.

use std::fs::{self, File};
use std::path::PathBuf;

use super::project::{short_hash, ProjectError};

/// Held while subnets are chosen; released on drop (and by the kernel when
/// the process dies, even by SIGKILL).
pub struct NetworkLock {
    _file: File,
}

/// Where the lock file for `uri` lives: the runtime directory, or the
/// temporary directory when that cannot be created (not root).
fn lock_path(uri: &str) -> PathBuf {
    let name = format!("network-{}.lock", short_hash(uri.as_bytes()));
    let run = crate::host::daemons::run_dir();
    if fs::create_dir_all(&run).is_ok() {
        return run.join(name);
    }
    std::env::temp_dir().join(format!("kvmdrive-{name}"))
}

/// Takes the network lock of `uri`, waiting for whoever holds it. libvirt's
/// test driver keeps its state per process: nothing to lock there (`None`).
pub fn network(uri: &str) -> Result<Option<NetworkLock>, ProjectError> {
    if uri.starts_with("test:") {
        return Ok(None);
    }
    let path = lock_path(uri);
    let io = |what: &str| {
        let context = format!("cannot {what} {}", path.display());
        move |source| ProjectError::Io { context, source }
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open"))?;
    file.lock().map_err(io("lock"))?;
    Ok(Some(NetworkLock { _file: file }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_uri_has_its_own_lock_file() {
        assert_ne!(lock_path("qemu:///system"), lock_path("qemu:///session"));
        assert_eq!(lock_path("qemu:///system"), lock_path("qemu:///system"));
    }
}
