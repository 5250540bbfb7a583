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

/// Held while a box is being added or removed; released on drop.
pub struct BoxLock {
    _file: fs::File,
    /// Whether another process or thread held it first.
    pub waited: bool,
}

impl BoxStore {
    /// The store at `$KVMDRIVE_HOME` (default `~/.local/share/kvmdrive`),
    /// also reading `$VAGRANT_HOME` (default `~/.vagrant.d`), with network
    /// settings from the environment.
    pub fn from_env() -> BoxStore {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/root".into());
        let kvmdrive_home = std::env::var_os("KVMDRIVE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".local/share/kvmdrive"));
        let vagrant_home = std::env::var_os("VAGRANT_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".vagrant.d"));
        BoxStore {
            home: kvmdrive_home,
            vagrant_home: Some(vagrant_home),
            net: NetConfig::from_env(),
        }
    }

    /// A store at `home` alone, with default network settings (tests, tools).
    pub fn new(home: impl Into<PathBuf>) -> BoxStore {
        BoxStore {
            home: home.into(),
            vagrant_home: None,
            net: NetConfig::default(),
        }
    }

    pub fn with_vagrant_home(mut self, dir: impl Into<PathBuf>) -> BoxStore {
        self.vagrant_home = Some(dir.into());
        self
    }

    pub fn with_net(mut self, net: NetConfig) -> BoxStore {
        self.net = net;
        self
    }

    pub fn boxes_dir(&self) -> PathBuf {
        self.home.join("boxes")
    }

    pub fn vagrant_boxes_dir(&self) -> Option<PathBuf> {
        self.vagrant_home.as_ref().map(|h| h.join("boxes"))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.home.join("tmp")
    }

    fn locks_dir(&self) -> PathBuf {
        self.home.join("locks")
    }

    /// `owner/name` -> `owner-VAGRANTSLASH-name`, as Vagrant names the directory.
    pub fn dir_name(name: &str) -> String {
        name.replace('/', "-VAGRANTSLASH-")
    }

    fn box_name(dir_name: &str) -> String {
        dir_name.replace("-VAGRANTSLASH-", "/")
    }

    /// Directory a box version goes to in kvmdrive's cache.
    pub fn provider_dir(&self, name: &str, version: &str, arch: &str) -> PathBuf {
        self.boxes_dir()
            .join(Self::dir_name(name))
            .join(version)
            .join(arch)
            .join(PROVIDER)
    }

    /// Takes the per-box lock, waiting for whoever holds it.
    pub fn lock(&self, name: &str) -> Result<BoxLock, BoxError> {
        check_name(name).map_err(|reason| BoxError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        let dir = self.locks_dir();
        fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let path = dir.join(format!("{}.lock", Self::dir_name(name)));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        let waited = match file.try_lock() {
            Ok(()) => false,
            Err(fs::TryLockError::WouldBlock) => {
                file.lock()
                    .map_err(io_err(format!("cannot lock {}", path.display())))?;
                true
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err(format!("cannot lock {}", path.display()))(e))
            }
        };
        Ok(BoxLock {
            _file: file,
            waited,
        })
    }

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

    /// Renames the checked box in `staged` into place, replacing what is
    /// there only with `force`. The caller holds the box's lock.
    pub fn install(
        &self,
        staged: &Path,
        name: &str,
        version: &str,
        arch: &str,
        force: bool,
    ) -> Result<PathBuf, BoxError> {
        let dest = self.provider_dir(name, version, arch);
        let exists = dest.exists();
        if exists && !force {
            return Err(BoxError::AlreadyExists {
                name: name.to_owned(),
                version: version.to_owned(),
                architecture: arch.to_owned(),
            });
        }
        let parent = dest.parent().expect("provider dir has a parent");
        fs::create_dir_all(parent)
            .map_err(io_err(format!("cannot create {}", parent.display())))?;
        let old = if exists {
            let trash = self.trash_path()?;
            fs::rename(&dest, &trash)
                .map_err(io_err(format!("cannot move {} aside", dest.display())))?;
            Some(trash)
        } else {
            None
        };
        crate::fault::point("box.rename");
        if let Err(e) = fs::rename(staged, &dest) {
            if let Some(old) = &old {
                let _ = fs::rename(old, &dest);
            } else {
                self.prune_empty_parents(&dest);
            }
            return Err(io_err(format!(
                "cannot move the box into {}",
                dest.display()
            ))(e));
        }
        if let Some(old) = old {
            let _ = fs::remove_dir_all(old);
        }
        Ok(dest)
    }

    /// Removes a box of kvmdrive's cache: it vanishes at once (renamed
    /// aside), then its files are deleted. The caller holds the box's lock.
    pub fn remove(&self, c: &CachedBox) -> Result<(), BoxError> {
        if c.origin != Origin::Kvmdrive {
            return Err(BoxError::BadBox {
                name: c.name.clone(),
                message: format!(
                    "{} is in Vagrant's cache; remove it with `vagrant box remove`",
                    c.dir.display()
                ),
            });
        }
        let trash = self.trash_path()?;
        fs::rename(&c.dir, &trash).map_err(io_err(format!("cannot remove {}", c.dir.display())))?;
        fs::remove_dir_all(&trash).map_err(io_err(format!("cannot delete {}", trash.display())))?;
        self.prune_empty_parents(&c.dir);
        Ok(())
    }

    /// The catalog URL a box was added from (Vagrant's `metadata_url` file).
    pub fn metadata_url(&self, name: &str, origin: Origin) -> Option<String> {
        let root = match origin {
            Origin::Kvmdrive => self.boxes_dir(),
            Origin::Vagrant => self.vagrant_boxes_dir()?,
        };
        let text = fs::read_to_string(root.join(Self::dir_name(name)).join("metadata_url")).ok()?;
        Some(text.trim().to_owned()).filter(|t| !t.is_empty())
    }

    pub fn write_metadata_url(&self, name: &str, url: &str) -> Result<(), BoxError> {
        let path = self
            .boxes_dir()
            .join(Self::dir_name(name))
            .join("metadata_url");
        fs::write(&path, url).map_err(io_err(format!("cannot write {}", path.display())))
    }

    /// A fresh directory for unpacking, on the same file system as the
    /// cache (what killed runs left there is removed first).
    pub fn staging_dir(&self) -> Result<super::staging::Staging, BoxError> {
        let tmp = self.tmp_dir();
        super::staging::Staging::new_in(&tmp).map_err(io_err(format!(
            "cannot create a directory in {}",
            tmp.display()
        )))
    }

    fn trash_path(&self) -> Result<PathBuf, BoxError> {
        let tmp = self.tmp_dir();
        fs::create_dir_all(&tmp).map_err(io_err(format!("cannot create {}", tmp.display())))?;
        // An empty directory: renaming a directory onto it replaces it.
        let dir = tempfile::Builder::new()
            .prefix("trash-")
            .tempdir_in(&tmp)
            .map_err(io_err("cannot create a directory for removal"))?;
        Ok(dir.keep())
    }

    /// Removes now-empty ARCH, VERSION and NAME directories above `provider_dir`
    /// (and the name's `metadata_url` once no version is left).
    fn prune_empty_parents(&self, provider_dir: &Path) {
        let boxes = self.boxes_dir();
        let mut dir = provider_dir.parent();
        while let Some(d) = dir {
            if d == boxes || !d.starts_with(&boxes) {
                break;
            }
            if d.parent() == Some(boxes.as_path()) {
                // the NAME directory: only metadata_url left means no versions left
                let only_metadata = fs::read_dir(d)
                    .map(|it| {
                        it.filter_map(|e| e.ok())
                            .all(|e| e.file_name() == "metadata_url")
                    })
                    .unwrap_or(false);
                if only_metadata {
                    let _ = fs::remove_file(d.join("metadata_url"));
                }
            }
            if fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Deletes what interrupted runs left in `tmp/` (unpack and trash
    /// directories, partial downloads) untouched for `older_than`.
    pub fn clean_tmp(&self, older_than: std::time::Duration) -> usize {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return 0;
        };
        let mut removed = 0;
        let mut paths: Vec<PathBuf> = Vec::new();
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name() == "downloads" {
                if let Ok(it) = fs::read_dir(e.path()) {
                    paths.extend(it.filter_map(|e| e.ok()).map(|e| e.path()));
                }
            } else {
                paths.push(e.path());
            }
        }
        for p in paths {
            let old = fs::symlink_metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= older_than);
            if old {
                let gone = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                if gone.is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// Box names become directory names: letters, digits, `.`, `_`, `-` in
/// `/`-separated parts, none of them empty, `.` or `..` (Vagrant's names).
pub fn check_name(name: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if name.len() <= 200 && name.split('/').all(part_ok) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid box name (use letters, digits, `.`, `_`, `-`, and `/` between parts)"
        ))
    }
}

/// A version or architecture used as one directory name.
pub fn check_component(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("`{value}` is not a valid {what}"))
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

    #[test]
    fn install_and_remove_leave_no_debris() {
        let home = tempfile::tempdir().unwrap();
        let store = BoxStore::new(home.path());
        let staged = store.staging_dir().unwrap();
        fs::write(staged.path().join("metadata.json"), "{}").unwrap();
        let dest = store
            .install(staged.path(), "a/b", "1", "amd64", false)
            .unwrap();
        staged.keep();
        assert!(dest.join("metadata.json").is_file());
        store.write_metadata_url("a/b", "https://x/a/b").unwrap();
        assert_eq!(
            store.metadata_url("a/b", Origin::Kvmdrive).as_deref(),
            Some("https://x/a/b")
        );

        let again = store.staging_dir().unwrap();
        assert!(matches!(
            store.install(again.path(), "a/b", "1", "amd64", false),
            Err(BoxError::AlreadyExists { .. })
        ));
        fs::write(again.path().join("new"), "").unwrap();
        store
            .install(again.path(), "a/b", "1", "amd64", true)
            .unwrap();
        again.keep();
        assert!(dest.join("new").is_file(), "replaced with --force");

        let c = CachedBox {
            name: "a/b".into(),
            version: Version::parse("1").unwrap(),
            architecture: Some("amd64".into()),
            dir: dest.clone(),
            origin: Origin::Kvmdrive,
        };
        store.remove(&c).unwrap();
        assert!(
            !store.boxes_dir().join("a-VAGRANTSLASH-b").exists(),
            "empty parents removed"
        );
        let leftovers: Vec<_> = fs::read_dir(store.tmp_dir()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn names_and_components_that_would_leave_the_cache_are_refused() {
        for ok in ["acme/web", "debian-12", "a.b_c/d-e", "generic/ubuntu2204"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "../x", "a/../b", "/abs", "a//b", "a/", ".", "a b", "a\\b", "x/..",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_component("version", "1.2.3-rc1").is_ok());
        assert!(check_component("architecture", "../x").is_err());
        assert!(check_component("architecture", "..").is_err());
        assert!(check_component("architecture", "").is_err());
        let home = tempfile::tempdir().unwrap();
        let store = BoxStore::new(home.path());
        assert!(matches!(
            store.lock("../evil"),
            Err(BoxError::InvalidName { .. })
        ));
        assert!(store.versions_of("../..").is_empty());
    }

    #[test]
    fn locks_exclude_each_other() {
        let home = tempfile::tempdir().unwrap();
        let store = BoxStore::new(home.path());
        let first = store.lock("a/b").unwrap();
        assert!(!first.waited);
        let store2 = store.clone();
        let t = std::thread::spawn(move || store2.lock("a/b").unwrap().waited);
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(first);
        assert!(t.join().unwrap(), "the second locker had to wait");
        // another box is independent
        let _a = store.lock("a/b").unwrap();
        assert!(!store.lock("c/d").unwrap().waited);
    }
}
