//! The box cache, in Vagrant's layout under kvmdrive's home
//! (`$KVMDRIVE_HOME`, default `~/.local/share/kvmdrive`):
//!
//! ```text
//! boxes/NAME(/ as -VAGRANTSLASH-)/metadata_url          catalog the box came from
//! boxes/NAME/VERSION/ARCH/libvirt/metadata.json, box.img, kvmdrive-source.json
//! tmp/        unpacking and downloads in progress (renamed into boxes/ when checked)
//! locks/      one lock file per box name
//! ```
//!
//! Boxes in Vagrant's own cache (`$VAGRANT_HOME/boxes`, default
//! `~/.vagrant.d/boxes`, with or without the ARCH level) are found and used
//! in place, read-only. A box only ever appears in `boxes/` by a rename of a
//! directory that passed every check, so the cache is never half-written.
//!
//! This file holds the cache's types and its queries (listing, finding,
//! reading a box); [`layout`] holds paths and name checks, [`lock`] the
//! per-box locks, [`install`] everything that changes the cache.

mod install;
mod layout;
mod lock;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::archive::{BoxDisk, BoxMetadata};
use super::catalog::{host_arch, libvirt_arch, ArchRequest, PROVIDER};
use super::fetch::NetConfig;
use super::version::{Constraint, Version};
use super::{image, io_err, BoxError};
pub use layout::{check_component, check_name};
pub use lock::BoxLock;

/// kvmdrive's record of where a cached box came from, beside its image.
pub const RECORD_FILE: &str = "kvmdrive-source.json";

/// Hex digits of [`InstalledBox::content_id`].
const CONTENT_ID_LEN: usize = 16;

/// A box in the cache, ready to back machine disks.
#[derive(Debug, Clone, PartialEq)]
pub struct InstalledBox {
    pub name: String,
    pub version: String,
    /// Vagrant's architecture name (`amd64`, `arm64`); see [`InstalledBox::libvirt_arch`].
    pub architecture: String,
    /// `.../libvirt/` directory of this box version.
    pub dir: PathBuf,
    /// The (first) qcow2 image machines are linked clones of.
    pub image: PathBuf,
    /// Virtual size of that image in bytes.
    pub virtual_size: u64,
}

impl InstalledBox {
    /// The architecture as libvirt names it (`x86_64`, `aarch64`).
    pub fn libvirt_arch(&self) -> &str {
        libvirt_arch(&self.architecture)
    }

    /// A short id of this box's content, for naming copies of its image
    /// (base volumes): the SHA-256 of the `.box` kvmdrive added it from, so
    /// a box replaced by new content never shares a name with the old one.
    /// Boxes from Vagrant's cache have no record: the image's path, size and
    /// modification time stand in for its content.
    pub fn content_id(&self) -> Result<String, BoxError> {
        let recorded = fs::read(self.dir.join(RECORD_FILE))
            .ok()
            .and_then(|t| serde_json::from_slice::<SourceRecord>(&t).ok())
            .map(|r| r.sha256)
            .filter(|h| h.len() >= CONTENT_ID_LEN && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if let Some(hex) = recorded {
            return Ok(hex[..CONTENT_ID_LEN].to_ascii_lowercase());
        }
        let meta = fs::metadata(&self.image)
            .map_err(io_err(format!("cannot read {}", self.image.display())))?;
        let stamp = format!(
            "{}:{}:{:?}",
            self.image.display(),
            meta.len(),
            SourceRecord::mtime_ns(&meta)
        );
        let digest = sha2::Sha256::digest(stamp.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok(hex[..CONTENT_ID_LEN].to_owned())
    }

    /// All disks of the box (v2 metadata may list several), first one first.
    pub fn disks(&self) -> Result<Vec<BoxDisk>, BoxError> {
        BoxMetadata::read(&self.dir)
            .map(|m| m.disks)
            .map_err(|message| BoxError::BadBox {
                name: self.name.clone(),
                message,
            })
    }
}

/// Which cache a box lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Kvmdrive,
    Vagrant,
}

/// A cache entry as found on disk, before its image is looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedBox {
    pub name: String,
    pub version: Version,
    /// `None` for Vagrant's layout before architectures (`VERSION/libvirt`).
    pub architecture: Option<String>,
    pub dir: PathBuf,
    pub origin: Origin,
}

impl CachedBox {
    /// Whether this box is for `arch`; boxes from before architectures count
    /// as the host's.
    pub fn matches_arch(&self, arch: &ArchRequest) -> bool {
        let wanted = arch.wanted();
        match &self.architecture {
            Some(a) => *a == wanted,
            None => wanted == host_arch(),
        }
    }

    pub fn arch_or_host(&self) -> String {
        self.architecture
            .clone()
            .unwrap_or_else(|| host_arch().to_owned())
    }

    pub fn record(&self) -> Option<SourceRecord> {
        let text = fs::read(self.dir.join(RECORD_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Bytes used on disk.
    pub fn size(&self) -> u64 {
        dir_size(&self.dir)
    }
}

/// What kvmdrive remembers about a box it added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The file path or URL the `.box` came from.
    pub source: String,
    /// SHA-256 of the `.box` file.
    pub sha256: String,
    /// Size of the `.box` file.
    pub size: u64,
    /// Virtual size of the first image, from qemu-img.
    pub virtual_size: u64,
    /// Catalog the box was resolved from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// Modification time of a local source file (ns since the epoch): the same
    /// path, size and time mean the same file without hashing it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_mtime_ns: Option<u128>,
    /// Seconds since the epoch.
    pub added: u64,
}

impl SourceRecord {
    pub fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// A file's modification time in ns since the epoch.
    pub fn mtime_ns(meta: &fs::Metadata) -> Option<u128> {
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
    }
}

/// Where boxes are cached and where they come from.
#[derive(Debug, Clone)]
pub struct BoxStore {
    /// kvmdrive's home (`$KVMDRIVE_HOME`); boxes live in its `boxes/`.
    pub home: PathBuf,
    /// Vagrant's home (`$VAGRANT_HOME`), read only.
    pub vagrant_home: Option<PathBuf>,
    /// Catalog server, tokens, retries.
    pub net: NetConfig,
}

impl BoxStore {
    /// Every box in both caches (kvmdrive's first), unsorted.
    pub fn list(&self) -> Vec<CachedBox> {
        let mut out = Vec::new();
        scan(&self.boxes_dir(), Origin::Kvmdrive, None, &mut out);
        if let Some(v) = self.vagrant_boxes_dir() {
            scan(&v, Origin::Vagrant, None, &mut out);
        }
        out
    }

    /// The versions of `name` in both caches (none for an invalid name).
    pub fn versions_of(&self, name: &str) -> Vec<CachedBox> {
        let mut out = Vec::new();
        if check_name(name).is_err() {
            return out;
        }
        scan(&self.boxes_dir(), Origin::Kvmdrive, Some(name), &mut out);
        if let Some(v) = self.vagrant_boxes_dir() {
            scan(&v, Origin::Vagrant, Some(name), &mut out);
        }
        out
    }

    /// The newest cached version of `name` that satisfies `constraint` and
    /// is for `arch`, checked and ready (kvmdrive's copy first on a tie).
    pub fn find_matching(
        &self,
        name: &str,
        constraint: &Constraint,
        arch: &ArchRequest,
    ) -> Result<Option<InstalledBox>, BoxError> {
        let mut candidates: Vec<CachedBox> = self
            .versions_of(name)
            .into_iter()
            .filter(|c| c.matches_arch(arch) && constraint.is_satisfied_by(&c.version))
            .collect();
        // stable sort: kvmdrive's entries (listed first) stay first among equals
        candidates.sort_by(|a, b| b.version.cmp(&a.version));
        match candidates.first() {
            Some(c) => self.installed(c).map(Some),
            None => Ok(None),
        }
    }

    /// Newest cached version of `name` satisfying `constraint` (any constraint
    /// when `None`), for the host's architecture.
    pub fn find(&self, name: &str, constraint: Option<&str>) -> Result<InstalledBox, BoxError> {
        let constraint = Constraint::parse(constraint.unwrap_or("")).map_err(|message| {
            BoxError::BadConstraint {
                constraint: constraint.unwrap_or("").to_owned(),
                message,
            }
        })?;
        self.find_matching(name, &constraint, &ArchRequest::Auto)?
            .ok_or_else(|| self.not_found(name, &constraint))
    }

    /// The error for a box that is not cached (in a satisfying version).
    pub fn not_found(&self, name: &str, constraint: &Constraint) -> BoxError {
        let cached = self.versions_of(name);
        if cached.is_empty() {
            let mut searched = vec![self.boxes_dir().display().to_string()];
            if let Some(v) = self.vagrant_boxes_dir() {
                searched.push(v.display().to_string());
            }
            BoxError::NotFound {
                name: name.to_owned(),
                searched: searched.join(", "),
            }
        } else {
            let mut versions: Vec<String> = cached
                .iter()
                .map(|c| format!("{} ({})", c.version, c.arch_or_host()))
                .collect();
            versions.sort();
            versions.dedup();
            BoxError::NoCachedVersion {
                name: name.to_owned(),
                constraint: constraint.to_string(),
                cached: versions.join(", "),
            }
        }
    }

    /// Reads and checks a cached box. kvmdrive's own boxes were checked when
    /// added and carry their image size in their record; boxes from
    /// Vagrant's cache are checked with qemu-img now.
    pub fn installed(&self, c: &CachedBox) -> Result<InstalledBox, BoxError> {
        let bad = |message: String| BoxError::BadBox {
            name: c.name.clone(),
            message: format!("{} ({})", message, c.dir.display()),
        };
        let meta = BoxMetadata::read(&c.dir).map_err(bad)?;
        let image = c.dir.join(&meta.disks[0].path);
        let recorded = match c.origin {
            Origin::Kvmdrive => c.record().map(|r| r.virtual_size).filter(|s| *s > 0),
            Origin::Vagrant => None,
        };
        let virtual_size = match recorded {
            Some(size) if image.is_file() => size,
            _ => check_image(&c.name, &image)?,
        };
        Ok(InstalledBox {
            name: c.name.clone(),
            version: c.version.to_string(),
            architecture: c.arch_or_host(),
            dir: c.dir.clone(),
            image,
            virtual_size,
        })
    }
}

/// Checks an image with qemu-img, mapping failures to box errors.
pub(crate) fn check_image(name: &str, image: &Path) -> Result<u64, BoxError> {
    match image::check(image) {
        Ok(info) => Ok(info.virtual_size),
        Err(image::ImageError::Tool(message)) => Err(BoxError::QemuImg { message }),
        Err(image::ImageError::Refused(message)) => Err(BoxError::BadBox {
            name: name.to_owned(),
            message,
        }),
    }
}

fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// Collects `root/NAME/VERSION/[ARCH/]libvirt` entries that have a metadata.json.
fn scan(root: &Path, origin: Origin, only: Option<&str>, out: &mut Vec<CachedBox>) {
    let names = match only {
        Some(name) => {
            let d = root.join(BoxStore::dir_name(name));
            if d.is_dir() {
                vec![(BoxStore::dir_name(name), d)]
            } else {
                vec![]
            }
        }
        None => subdirs(root),
    };
    for (dir_name, name_dir) in names {
        let name = BoxStore::box_name(&dir_name);
        for (version_text, version_dir) in subdirs(&name_dir) {
            let Ok(version) = Version::parse(&version_text) else {
                continue;
            };
            let mut push = |architecture: Option<String>, dir: PathBuf| {
                if dir.join("metadata.json").is_file() {
                    out.push(CachedBox {
                        name: name.clone(),
                        version: version.clone(),
                        architecture,
                        dir,
                        origin,
                    });
                }
            };
            for (arch, arch_dir) in subdirs(&version_dir) {
                if arch == PROVIDER {
                    push(None, arch_dir);
                } else {
                    push(Some(arch), arch_dir.join(PROVIDER));
                }
            }
        }
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            }
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_box(root: &Path, rel: &str) -> PathBuf {
        let dir = root.join(rel);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("metadata.json"),
            r#"{"provider":"libvirt","format":"qcow2","virtual_size":1}"#,
        )
        .unwrap();
        fs::write(dir.join("box.img"), b"not really qcow2").unwrap();
        dir
    }

    fn record(dir: &Path, virtual_size: u64) {
        let r = SourceRecord {
            source: "/x.box".into(),
            sha256: "00".into(),
            size: 1,
            virtual_size,
            catalog: None,
            source_mtime_ns: None,
            added: 0,
        };
        fs::write(dir.join(RECORD_FILE), serde_json::to_vec(&r).unwrap()).unwrap();
    }

    #[test]
    fn layout_and_listing() {
        let home = tempfile::tempdir().unwrap();
        let vagrant = tempfile::tempdir().unwrap();
        let store = BoxStore::new(home.path()).with_vagrant_home(vagrant.path());
        let host = host_arch();
        fake_box(
            &store.boxes_dir(),
            &format!("acme-VAGRANTSLASH-web/1.2.0/{host}/libvirt"),
        );
        fake_box(
            &store.boxes_dir(),
            "acme-VAGRANTSLASH-web/1.10.0/arm64/libvirt",
        );
        fake_box(
            &store.boxes_dir(),
            &format!("acme-VAGRANTSLASH-web/not-a-version/{host}/libvirt"),
        );
        fs::create_dir_all(
            store
                .boxes_dir()
                .join("acme-VAGRANTSLASH-web/2.0/amd64/virtualbox"),
        )
        .unwrap();
        fake_box(
            &vagrant.path().join("boxes"),
            "acme-VAGRANTSLASH-web/1.5/libvirt",
        );
        fake_box(&vagrant.path().join("boxes"), "other/0/libvirt");

        let all = store.list();
        assert_eq!(all.len(), 4, "{all:#?}");
        let web = store.versions_of("acme/web");
        let mut versions: Vec<String> = web
            .iter()
            .map(|c| format!("{} {:?}", c.version, c.origin))
            .collect();
        versions.sort();
        assert_eq!(
            versions,
            ["1.10.0 Kvmdrive", "1.2.0 Kvmdrive", "1.5 Vagrant"]
        );
        assert_eq!(
            store.provider_dir("acme/web", "1", "amd64"),
            home.path()
                .join("boxes/acme-VAGRANTSLASH-web/1/amd64/libvirt")
        );
        let legacy = web.iter().find(|c| c.origin == Origin::Vagrant).unwrap();
        assert!(legacy.matches_arch(&ArchRequest::Auto));
        assert_eq!(legacy.architecture, None);
        let arm = web.iter().find(|c| c.version.as_str() == "1.10.0").unwrap();
        assert!(arm.matches_arch(&ArchRequest::Explicit("arm64".into())));
        assert_eq!(arm.matches_arch(&ArchRequest::Auto), host == "arm64");
    }

    #[test]
    fn find_prefers_newest_satisfying_version_and_uses_the_record() {
        let home = tempfile::tempdir().unwrap();
        let store = BoxStore::new(home.path());
        let host = host_arch();
        for v in ["1.0", "1.5", "2.0"] {
            let d = fake_box(&store.boxes_dir(), &format!("b/{v}/{host}/libvirt"));
            record(&d, 7 << 30);
        }
        let found = store.find("b", None).unwrap();
        assert_eq!(found.version, "2.0");
        assert_eq!(found.virtual_size, 7 << 30);
        assert_eq!(found.architecture, host);
        assert_eq!(found.image, found.dir.join("box.img"));
        assert_eq!(store.find("b", Some("< 2")).unwrap().version, "1.5");
        assert_eq!(store.find("b", Some("~> 1.0.0")).unwrap().version, "1.0");
        match store.find("b", Some("> 3")) {
            Err(BoxError::NoCachedVersion { cached, .. }) => assert!(cached.contains("1.5")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.find("nope", None),
            Err(BoxError::NotFound { .. })
        ));
        assert!(matches!(
            store.find("b", Some(">>")),
            Err(BoxError::BadConstraint { .. })
        ));
    }

    #[test]
    fn content_ids_follow_the_recorded_box_or_the_image() {
        let home = tempfile::tempdir().unwrap();
        let store = BoxStore::new(home.path());
        let dir = fake_box(&store.boxes_dir(), "c/0/amd64/libvirt");
        let installed = |dir: &Path| InstalledBox {
            name: "c".into(),
            version: "0".into(),
            architecture: "amd64".into(),
            dir: dir.to_owned(),
            image: dir.join("box.img"),
            virtual_size: 1,
        };
        // no record (Vagrant's cache): path, size and time of the image
        let before = installed(&dir).content_id().unwrap();
        assert_eq!(before.len(), CONTENT_ID_LEN);
        fs::write(dir.join("box.img"), b"another image, longer").unwrap();
        assert_ne!(installed(&dir).content_id().unwrap(), before);
        // a record: the .box file's SHA-256, whatever the image's time
        let mut r = SourceRecord {
            source: "/x.box".into(),
            sha256: "AB".repeat(32),
            size: 1,
            virtual_size: 1,
            catalog: None,
            source_mtime_ns: None,
            added: 0,
        };
        fs::write(dir.join(RECORD_FILE), serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(installed(&dir).content_id().unwrap(), "ab".repeat(8));
        r.sha256 = "cd".repeat(32);
        fs::write(dir.join(RECORD_FILE), serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(installed(&dir).content_id().unwrap(), "cd".repeat(8));
    }

    #[test]
    fn vagrant_boxes_are_checked_with_qemu_img() {
        let home = tempfile::tempdir().unwrap();
        let vagrant = tempfile::tempdir().unwrap();
        let store = BoxStore::new(home.path()).with_vagrant_home(vagrant.path());
        fake_box(&vagrant.path().join("boxes"), "v/1/libvirt");
        // box.img is not a qcow2 image: refused (or qemu-img is missing)
        assert!(matches!(
            store.find("v", None),
            Err(BoxError::BadBox { .. }) | Err(BoxError::QemuImg { .. })
        ));
    }
}
