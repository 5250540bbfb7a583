//! Applying a machine's extra disks and UEFI NVRAM: import a v2 box's further
//! disks into the pool, create the planned overlays and data volumes, and
//! remove them (found by their name prefix, so also for machines since
//! removed from the config) and the NVRAM file.

use std::path::{Path, PathBuf};

use super::hardware::{disk_volume_prefix, nvram_path};
use super::plan::MachinePlan;
use crate::boxes::{BoxError, InstalledBox};
use crate::virt::storage::POOL_NAME;
use crate::virt::{Hypervisor, VirtError};

/// Copies the box's second, third, ... disk into the pool beside `first_base`
/// (once per box content, like the first); returns (base, virtual size) each.
pub fn ensure_box_bases(
    hv: &Hypervisor,
    b: &InstalledBox,
    first_base: &Path,
) -> Result<Vec<(PathBuf, u64)>, BoxError> {
    let disks = b.disks()?;
    let mut out = Vec::new();
    for (i, d) in disks.iter().enumerate().skip(1) {
        let src = b.dir.join(&d.path);
        let stem = first_base.file_stem().unwrap_or_default().to_string_lossy();
        let base = first_base.with_file_name(format!("{stem}-disk{}.qcow2", i + 1));
        if !base.exists() {
            let io = |e: std::io::Error| BoxError::Io {
                context: format!("cannot copy {} to {}", src.display(), base.display()),
                source: e,
            };
            let dir = base.parent().unwrap_or(Path::new("/"));
            let tmp = tempfile::Builder::new()
                .prefix(".import-")
                .tempfile_in(dir)
                .map_err(io)?;
            std::fs::copy(&src, tmp.path()).map_err(io)?;
            tmp.persist(&base).map_err(|e| io(e.error))?;
            // A volume the pool does not list yet cannot back an overlay.
            let _ = hv.refresh_pool(POOL_NAME);
        }
        let size = crate::boxes::store::check_image(&b.name, &base)?;
        out.push((base, size));
    }
    Ok(out)
}

/// Creates the machine's extra disks, replacing leftovers of an interrupted
/// run; returns their volume names.
pub fn create(hv: &Hypervisor, plan: &MachinePlan) -> Result<Vec<String>, VirtError> {
    remove(hv, &plan.domain)?;
    let mut made = Vec::new();
    for v in &plan.hardware.box_disks {
        hv.create_volume(POOL_NAME, &v.to_xml())?;
        made.push(v.name.clone());
    }
    for d in &plan.hardware.disks {
        hv.create_volume(POOL_NAME, &d.volume.to_xml())?;
        made.push(d.volume.name.clone());
    }
    Ok(made)
}

/// Deletes every extra disk of `domain` from the pool; returns their names.
pub fn remove(hv: &Hypervisor, domain: &str) -> Result<Vec<String>, VirtError> {
    let prefix = disk_volume_prefix(domain);
    let mut removed = Vec::new();
    for name in hv.volume_names(POOL_NAME)? {
        if name.starts_with(&prefix) {
            hv.delete_volume(POOL_NAME, &name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Removes the domain's NVRAM file when libvirt left it behind (local hosts;
/// undefining with the NVRAM flag removes it everywhere else).
pub fn remove_nvram(domain: &str) {
    let _ = std::fs::remove_file(nvram_path(domain));
}
