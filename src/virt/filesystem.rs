//! Shared host directories in a domain: `<filesystem>` devices for 9p and
//! virtiofs synced folders, and the shared memory backing virtiofs needs.
//! Pure spec -> XML structs; `domain` places them in the document.

use std::path::PathBuf;

use serde::Serialize;

/// Where Debian's qemu ships virtiofsd (qemu-system-common).
pub const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// A host directory shared with the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemSpec {
    pub driver: FsDriver,
    pub source: PathBuf,
    /// The tag the guest mounts it by.
    pub tag: String,
}

/// How a shared directory is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsDriver {
    /// virtio-9p in mapped access mode (guest ownership kept in xattrs).
    NineP,
    /// virtiofs through the virtiofsd at this path; needs shared memory.
    Virtiofs { binary: PathBuf },
}

/// `<filesystem>` as libvirt wants it.
#[derive(Serialize)]
pub(crate) struct FilesystemXml {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@accessmode")]
    accessmode: &'static str,
    driver: DriverXml,
    #[serde(skip_serializing_if = "Option::is_none")]
    binary: Option<BinaryXml>,
    source: DirAttr,
    target: DirAttr,
}

#[derive(Serialize)]
struct DriverXml {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@wrpolicy", skip_serializing_if = "Option::is_none")]
    wrpolicy: Option<&'static str>,
}

#[derive(Serialize)]
struct BinaryXml {
    #[serde(rename = "@path")]
    path: String,
}

#[derive(Serialize)]
struct DirAttr {
    #[serde(rename = "@dir")]
    dir: String,
}

/// `<memoryBacking>` with shared memfd memory (virtiofs's requirement).
#[derive(Serialize)]
pub(crate) struct MemoryBackingXml {
    source: TypeAttr,
    access: ModeAttr,
}

#[derive(Serialize)]
struct TypeAttr {
    #[serde(rename = "@type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct ModeAttr {
    #[serde(rename = "@mode")]
    mode: &'static str,
}

impl FilesystemSpec {
    pub(crate) fn as_xml(&self) -> FilesystemXml {
        let (accessmode, driver, binary) = match &self.driver {
            FsDriver::NineP => (
                "mapped",
                DriverXml {
                    kind: "path",
                    wrpolicy: Some("immediate"),
                },
                None,
            ),
            FsDriver::Virtiofs { binary } => (
                "passthrough",
                DriverXml {
                    kind: "virtiofs",
                    wrpolicy: None,
                },
                Some(BinaryXml {
                    path: binary.display().to_string(),
                }),
            ),
        };
        FilesystemXml {
            kind: "mount",
            accessmode,
            driver,
            binary,
            source: DirAttr {
                dir: self.source.display().to_string(),
            },
            target: DirAttr {
                dir: self.tag.clone(),
            },
        }
    }
}

/// The memory backing a domain with these shares needs (virtiofs: shared).
pub(crate) fn memory_backing(filesystems: &[FilesystemSpec]) -> Option<MemoryBackingXml> {
    filesystems
        .iter()
        .any(|f| matches!(f.driver, FsDriver::Virtiofs { .. }))
        .then_some(MemoryBackingXml {
            source: TypeAttr { kind: "memfd" },
            access: ModeAttr { mode: "shared" },
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One 9p and one virtiofs share.
    pub fn shares() -> Vec<FilesystemSpec> {
        vec![
            FilesystemSpec {
                driver: FsDriver::NineP,
                source: "/home/me/proj".into(),
                tag: "kvmdrive-aaaaaa".into(),
            },
            FilesystemSpec {
                driver: FsDriver::Virtiofs {
                    binary: VIRTIOFSD.into(),
                },
                source: "/home/me/proj/data & more".into(),
                tag: "kvmdrive-bbbbbb".into(),
            },
        ]
    }

    #[test]
    fn only_virtiofs_needs_shared_memory() {
        let s = shares();
        assert!(memory_backing(&s).is_some());
        assert!(memory_backing(&s[..1]).is_none());
        assert!(memory_backing(&[]).is_none());
    }
}
