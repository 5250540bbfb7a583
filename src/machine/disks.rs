//! Applying a machine's extra disks and UEFI NVRAM: create the planned data
//! volumes in kvmdrive's pool, and remove them (found by their name prefix,
//! so also for machines since removed from the config) and the NVRAM file.

use super::hardware::{disk_volume_prefix, nvram_path};
use super::plan::MachinePlan;
use crate::virt::storage::POOL_NAME;
use crate::virt::{Hypervisor, VirtError};

/// Creates the machine's extra disks, replacing leftovers of an interrupted
/// run; returns their volume names.
pub fn create(hv: &Hypervisor, plan: &MachinePlan) -> Result<Vec<String>, VirtError> {
    remove(hv, &plan.domain)?;
    let mut made = Vec::new();
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
