//! Storage pool and volume XML: kvmdrive's directory pool, box base volumes
//! and machine overlays (qcow2 linked clones backed by the box image).

use std::path::PathBuf;

use serde::Serialize;

use super::{to_xml, Empty};

/// kvmdrive's storage pool.
pub const POOL_NAME: &str = "kvmdrive";

/// qcow2 compatibility level of the volumes kvmdrive creates (qcow2 v3).
pub const QCOW2_COMPAT: &str = "1.1";

#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    pub name: String,
    pub path: PathBuf,
}

/// A qcow2 volume; with `backing` it is an overlay of that image.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeSpec {
    pub name: String,
    pub capacity_bytes: u64,
    pub backing: Option<PathBuf>,
}

#[derive(Serialize)]
#[serde(rename = "pool")]
struct PoolXml<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    name: &'a str,
    target: Target,
}

#[derive(Serialize)]
struct Target {
    path: String,
}

#[derive(Serialize)]
#[serde(rename = "volume")]
struct VolumeXml<'a> {
    name: &'a str,
    capacity: Capacity,
    target: VolTarget,
    #[serde(rename = "backingStore", skip_serializing_if = "Option::is_none")]
    backing_store: Option<BackingStore>,
}

/// A volume's size, shared with [`super::data_volume`].
#[derive(Serialize)]
pub(super) struct Capacity {
    #[serde(rename = "@unit")]
    unit: &'static str,
    #[serde(rename = "$text")]
    value: u64,
}

/// `compat` 1.1 with lazy refcounts, as vagrant-libvirt asks for: without a
/// `<compat>` libvirt makes qcow2 version 2 (compat 0.10) images.
#[derive(Serialize)]
struct VolTarget {
    format: Format,
    compat: &'static str,
    features: Features,
}

#[derive(Serialize)]
struct Features {
    lazy_refcounts: Empty,
}

impl Capacity {
    pub(super) fn bytes(value: u64) -> Capacity {
        Capacity {
            unit: "bytes",
            value,
        }
    }
}

/// A volume's format (`qcow2`, `raw`), shared with [`super::data_volume`].
#[derive(Serialize)]
pub(super) struct Format {
    #[serde(rename = "@type")]
    pub(super) kind: &'static str,
}

#[derive(Serialize)]
struct BackingStore {
    path: String,
    format: Format,
}

impl PoolSpec {
    pub fn to_xml(&self) -> String {
        to_xml(&PoolXml {
            kind: "dir",
            name: &self.name,
            target: Target {
                path: self.path.display().to_string(),
            },
        })
    }
}

impl VolumeSpec {
    pub fn to_xml(&self) -> String {
        to_xml(&VolumeXml {
            name: &self.name,
            capacity: Capacity::bytes(self.capacity_bytes),
            target: VolTarget {
                format: Format { kind: "qcow2" },
                compat: QCOW2_COMPAT,
                features: Features {
                    lazy_refcounts: Empty {},
                },
            },
            backing_store: self.backing.as_ref().map(|p| BackingStore {
                path: p.display().to_string(),
                format: Format { kind: "qcow2" },
            }),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample_pool() -> PoolSpec {
        PoolSpec {
            name: POOL_NAME.into(),
            path: "/var/lib/libvirt/images/kvmdrive".into(),
        }
    }

    pub fn sample_overlay() -> VolumeSpec {
        VolumeSpec {
            name: "proj-1a2b3c-web.qcow2".into(),
            capacity_bytes: 2 << 30,
            backing: Some("/var/lib/libvirt/images/kvmdrive/box-kvmdrive-debian-12-0.qcow2".into()),
        }
    }

    #[test]
    fn pool_and_volume_match_golden_files() {
        crate::testutil::assert_golden("pool.xml", &sample_pool().to_xml());
        crate::testutil::assert_golden("volume-overlay.xml", &sample_overlay().to_xml());
    }
}
