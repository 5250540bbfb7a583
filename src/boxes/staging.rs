//! Staging directories: where `box add` unpacks and checks a box before the
//! rename into `boxes/`. Each `tmp/unpack-XXXX/` has a lock file beside it,
//! `tmp/unpack-XXXX.lock`, that its process holds (flock) while it exists; a
//! killed `box add` holds nothing, so the next staging directory made
//! removes such leftovers (a whole unpacked box after a kill at the rename)
//! at once instead of waiting for `box prune`'s age rule.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::same_file::same_file;

const PREFIX: &str = "unpack-";
const LOCK_SUFFIX: &str = ".lock";

/// A staging directory, removed on drop unless [`Staging::keep`] is called
/// (after its contents were renamed into the cache).
pub struct Staging {
    dir: PathBuf,
    _lock: tempfile::NamedTempFile,
    keep: bool,
}

impl Staging {
    /// Makes a new staging directory in `tmp` after removing stale ones.
    pub fn new_in(tmp: &Path) -> io::Result<Staging> {
        fs::create_dir_all(tmp)?;
        remove_stale(tmp);
        loop {
            let lock = tempfile::Builder::new()
                .prefix(PREFIX)
                .suffix(LOCK_SUFFIX)
                .tempfile_in(tmp)?;
            lock.as_file().lock()?;
            // A cleaner may have removed it between create and lock.
            if !same_file(lock.as_file(), lock.path()) {
                continue;
            }
            let dir = dir_of(lock.path()).expect("named with the suffix");
            match fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(Staging {
                        dir,
                        _lock: lock,
                        keep: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Leaves the directory (now renamed away) alone; the lock file goes.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `tmp/unpack-XXXX` for `tmp/unpack-XXXX.lock`.
fn dir_of(lock: &Path) -> Option<PathBuf> {
    let name = lock.file_name()?.to_str()?.strip_suffix(LOCK_SUFFIX)?;
    Some(lock.with_file_name(name))
}

/// Removes the staging directories (and their lock files) of `tmp` whose
/// lock nobody holds; returns how many.
pub fn remove_stale(tmp: &Path) -> usize {
    let Ok(entries) = fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(PREFIX) && name.ends_with(LOCK_SUFFIX)) {
            continue;
        }
        let lock_path = e.path();
        let Ok(file) = File::open(&lock_path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        if let Some(dir) = dir_of(&lock_path) {
            let _ = fs::remove_dir_all(dir);
        }
        if fs::remove_file(&lock_path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_dropped_staging_directory_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Staging::new_in(tmp.path()).unwrap();
        fs::write(s.path().join("box.img"), b"x").unwrap();
        assert_eq!(names(tmp.path()).len(), 2, "directory and lock file");
        drop(s);
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn leftovers_of_dead_processes_go_and_live_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        // What a killed `box add` leaves: a directory and an unheld lock file.
        fs::create_dir(tmp.path().join("unpack-dead")).unwrap();
        fs::write(tmp.path().join("unpack-dead/box.img"), b"x").unwrap();
        fs::write(tmp.path().join("unpack-dead.lock"), b"").unwrap();
        let live = Staging::new_in(tmp.path()).unwrap();
        let mut left = names(tmp.path());
        left.retain(|n| !n.contains("dead"));
        assert_eq!(left.len(), 2);
        assert!(!tmp.path().join("unpack-dead").exists());
        assert!(!tmp.path().join("unpack-dead.lock").exists());
        // A second one does not take the first's directory away.
        let other = Staging::new_in(tmp.path()).unwrap();
        assert!(live.path().is_dir());
        assert_ne!(live.path(), other.path());
        // Other files in tmp/ (downloads) are not staging leftovers.
        fs::create_dir(tmp.path().join("downloads")).unwrap();
        assert_eq!(remove_stale(tmp.path()), 0);
    }
}
