//! What a hypervisor host has room for: its free memory
//! (`virNodeGetFreeMemory`) and its CPUs (`virNodeGetInfo`), the inputs of
//! machine placement ([`crate::machine::placement`]).

use super::error::VirtError;
use super::hypervisor::{call, Hypervisor};

/// A host's free memory and CPU count as libvirt reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCapacity {
    pub free_memory_bytes: u64,
    pub cpus: u32,
}

impl Hypervisor {
    /// The host's free memory and number of CPUs.
    pub fn node_capacity(&self) -> Result<NodeCapacity, VirtError> {
        let conn = self.connection();
        let info = conn
            .node_info()
            .map_err(call("read the host's CPU and memory (virNodeGetInfo)"))?;
        let free_memory_bytes = conn
            .free_memory()
            .map_err(call("read the host's free memory (virNodeGetFreeMemory)"))?;
        Ok(NodeCapacity {
            free_memory_bytes,
            cpus: info.cpus,
        })
    }
}
