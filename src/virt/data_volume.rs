//! Volume XML for a machine's extra (data) disks: empty qcow2 or raw volumes
//! in kvmdrive's pool, with no backing image (box disks are overlays, see
//! [`super::storage`]).

use serde::Serialize;

use super::storage::{Capacity, Format};
use super::to_xml;

/// An empty volume of `capacity_bytes` in `format` (`qcow2` or `raw`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataVolumeSpec {
    pub name: String,
    pub capacity_bytes: u64,
    pub format: &'static str,
}

#[derive(Serialize)]
#[serde(rename = "volume")]
struct VolumeXml<'a> {
    name: &'a str,
    capacity: Capacity,
    target: Target,
}

#[derive(Serialize)]
struct Target {
    format: Format,
    /// qcow2 v3 (as the overlays): only for qcow2.
    #[serde(skip_serializing_if = "Option::is_none")]
    compat: Option<&'static str>,
}

impl DataVolumeSpec {
    pub fn to_xml(&self) -> String {
        to_xml(&VolumeXml {
            name: &self.name,
            capacity: Capacity::bytes(self.capacity_bytes),
            target: Target {
                format: Format { kind: self.format },
                compat: (self.format == "qcow2").then_some("1.1"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_volumes_match_golden_files() {
        let qcow2 = DataVolumeSpec {
            name: "proj-1a2b3c-web.disk-data.qcow2".into(),
            capacity_bytes: 10 << 30,
            format: "qcow2",
        };
        crate::testutil::assert_golden("volume-data-qcow2.xml", &qcow2.to_xml());
        let raw = DataVolumeSpec {
            name: "proj-1a2b3c-web.disk-disk2.raw".into(),
            capacity_bytes: 1 << 30,
            format: "raw",
        };
        let xml = raw.to_xml();
        crate::testutil::assert_golden("volume-data-raw.xml", &xml);
        assert!(!xml.contains("compat"), "{xml}");
    }
}
