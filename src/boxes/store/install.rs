//! Changing the cache: renaming a checked box into place (the old copy
//! moved aside first, restored on failure), removing a box, reading and
//! writing `metadata_url`, staging and trash directories in `tmp/`, pruning emptied
//! parents, and cleaning what interrupted runs left in `tmp/`.

use std::fs;
use std::path::{Path, PathBuf};

use super::{BoxStore, CachedBox, Origin};
use crate::boxes::{io_err, BoxError};

impl BoxStore {
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
    pub fn staging_dir(&self) -> Result<crate::boxes::staging::Staging, BoxError> {
        let tmp = self.tmp_dir();
        crate::boxes::staging::Staging::new_in(&tmp).map_err(io_err(format!(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::version::Version;

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
}
