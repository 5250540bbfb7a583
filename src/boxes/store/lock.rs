//! Per-box locks: one lock file per box name under `locks/`, held while a
//! box is added or removed so that concurrent kvmdrive processes and
//! threads take turns (the later one learns it waited).

use std::fs;

use super::{check_name, BoxStore};
use crate::boxes::{io_err, BoxError};

/// Held while a box is being added or removed; released on drop.
pub struct BoxLock {
    _file: fs::File,
    /// Whether another process or thread held it first.
    pub waited: bool,
}

impl BoxStore {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
