//! Cache layout, Vagrant style:
//! `$KVMDRIVE_HOME/boxes/NAME(/ as -VAGRANTSLASH-)/VERSION/ARCH/libvirt/`
//! holding `metadata.json` and `box.img`. Boxes in `~/.vagrant.d/boxes`
//! (or `$VAGRANT_HOME/boxes`) are found too and used in place.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{io_err, BoxError};

const PROVIDER: &str = "libvirt";

/// A box in the cache, ready to back machine disks.
#[derive(Debug, Clone, PartialEq)]
pub struct InstalledBox {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// `.../libvirt/` directory of this box version.
    pub dir: PathBuf,
    /// The qcow2 image machines are linked clones of.
    pub image: PathBuf,
    /// Virtual size of the image in bytes.
    pub virtual_size: u64,
}

#[derive(Debug, Clone)]
pub struct BoxStore {
    /// kvmdrive's own cache (written to).
    pub root: PathBuf,
    /// Vagrant's cache (read only).
    pub vagrant_root: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    provider: Option<String>,
    format: Option<String>,
    virtual_size: Option<u64>,
}

impl BoxStore {
    /// The store at `$KVMDRIVE_HOME` (default `~/.local/share/kvmdrive`).
    pub fn from_env() -> BoxStore {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/root".into());
        let root = std::env::var_os("KVMDRIVE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".local/share/kvmdrive"));
        let vagrant = std::env::var_os("VAGRANT_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".vagrant.d"));
        BoxStore {
            root: root.join("boxes"),
            vagrant_root: Some(vagrant.join("boxes")),
        }
    }

    fn dir_name(name: &str) -> String {
        name.replace('/', "-VAGRANTSLASH-")
    }

    /// Newest installed version of `name` (or exactly `version`).
    pub fn find(&self, name: &str, version: Option<&str>) -> Result<InstalledBox, BoxError> {
        let roots: Vec<&PathBuf> = std::iter::once(&self.root)
            .chain(self.vagrant_root.as_ref())
            .collect();
        for root in &roots {
            let box_dir = root.join(Self::dir_name(name));
            let Ok(entries) = fs::read_dir(&box_dir) else {
                continue;
            };
            let mut versions: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|v| version.is_none_or(|want| want.trim_start_matches('=').trim() == v))
                .collect();
            versions.sort_by(|a, b| compare_versions(b, a));
            for v in versions {
                if let Some(b) = self.installed(name, &v, &box_dir.join(&v)) {
                    return Ok(b);
                }
            }
        }
        Err(BoxError::NotFound {
            name: name.to_owned(),
            searched: roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn installed(&self, name: &str, version: &str, version_dir: &Path) -> Option<InstalledBox> {
        let arch = std::env::consts::ARCH;
        for candidate in [
            version_dir.join(arch).join(PROVIDER),
            version_dir.join(PROVIDER),
        ] {
            if candidate.join("box.img").is_file() {
                let meta = read_metadata(&candidate).ok()?;
                return Some(InstalledBox {
                    name: name.to_owned(),
                    version: version.to_owned(),
                    architecture: arch.to_owned(),
                    image: candidate.join("box.img"),
                    virtual_size: meta.virtual_size.unwrap_or(0) << 30,
                    dir: candidate,
                });
            }
        }
        None
    }

    /// Unpacks a local `.box` file into the cache as `name`/`version`.
    /// Unpacking happens in a temporary directory that is renamed into place
    /// only when the box passed its checks.
    pub fn add_file(
        &self,
        file: &Path,
        name: &str,
        version: &str,
        force: bool,
    ) -> Result<InstalledBox, BoxError> {
        let arch = std::env::consts::ARCH;
        let final_dir = self
            .root
            .join(Self::dir_name(name))
            .join(version)
            .join(arch)
            .join(PROVIDER);
        if final_dir.join("box.img").is_file() && !force {
            if let Some(b) =
                self.installed(name, version, final_dir.parent().unwrap().parent().unwrap())
            {
                return Ok(b);
            }
        }
        fs::create_dir_all(&self.root)
            .map_err(io_err(format!("cannot create {}", self.root.display())))?;
        let tmp = tempfile::Builder::new()
            .prefix(".add-")
            .tempdir_in(&self.root)
            .map_err(io_err(
                "cannot create a temporary directory in the box cache",
            ))?;
        let f = fs::File::open(file).map_err(io_err(format!("cannot open {}", file.display())))?;
        let bad = |message: String| BoxError::BadArchive {
            path: file.to_owned(),
            message,
        };
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
        for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            let ok = entry
                .unpack_in(tmp.path())
                .map_err(|e| bad(e.to_string()))?;
            if !ok {
                return Err(bad("entry escapes the box directory".into()));
            }
        }
        let meta = read_metadata(tmp.path()).map_err(bad)?;
        if meta.provider.as_deref() != Some(PROVIDER) {
            return Err(bad(format!("provider is {:?}, not libvirt", meta.provider)));
        }
        if meta.format.as_deref() != Some("qcow2") || !tmp.path().join("box.img").is_file() {
            return Err(bad("needs a qcow2 box.img".into()));
        }
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir)
                .map_err(io_err(format!("cannot remove {}", final_dir.display())))?;
        }
        fs::create_dir_all(final_dir.parent().unwrap())
            .map_err(io_err("cannot create the box directory"))?;
        fs::rename(tmp.keep(), &final_dir).map_err(io_err("cannot move the box into the cache"))?;
        let version_dir = final_dir.parent().unwrap().parent().unwrap().to_path_buf();
        self.installed(name, version, &version_dir)
            .ok_or_else(|| BoxError::BadBox {
                name: name.into(),
                message: "incomplete after unpacking".into(),
            })
    }
}

fn read_metadata(dir: &Path) -> Result<Metadata, String> {
    let text =
        fs::read_to_string(dir.join("metadata.json")).map_err(|e| format!("metadata.json: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("metadata.json: {e}"))
}

/// Orders dotted versions numerically where possible.
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| {
        s.split('.')
            .map(|p| p.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    parts(a).cmp(&parts(b))
}
