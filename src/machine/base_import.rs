//! Copying a box image into the storage pool as a base volume: into a
//! temporary `.import-*` file that its process keeps locked (flock) while it
//! copies, then renamed into place. A copy whose process died (SIGKILL, a
//! cancelled CI job) holds no lock any more: [`remove_stale`] deletes it.
//! `up` runs it before each import, `destroy` with the project's last machine.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::same_file::same_file;

const PREFIX: &str = ".import-";

/// Copies `image` to `dest` (in `pool_dir`) through a locked temporary file.
pub fn import(image: &Path, pool_dir: &Path, dest: &Path) -> io::Result<()> {
    fs::create_dir_all(pool_dir)?;
    remove_stale(pool_dir);
    let tmp = loop {
        let tmp = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempfile_in(pool_dir)?;
        tmp.as_file().lock()?;
        // A cleaner may have removed it between create and lock: take another.
        if same_file(tmp.as_file(), tmp.path()) {
            break tmp;
        }
    };
    let mut src = File::open(image)?;
    io::copy(&mut src, &mut tmp.as_file())?;
    crate::fault::point("up.base-import");
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

/// Deletes the `.import-*` files of `pool_dir` that no process holds;
/// returns how many.
pub fn remove_stale(pool_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(pool_dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = e.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_and_leaves_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("box.img");
        fs::write(&image, b"qcow2 bytes").unwrap();
        let pool = tmp.path().join("pool");
        let dest = pool.join("box-x.img");
        import(&image, &pool, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"qcow2 bytes");
        let names: Vec<_> = fs::read_dir(&pool)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["box-x.img"]);
    }

    #[test]
    fn only_copies_nobody_holds_are_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join(".import-dead");
        fs::write(&dead, b"partial").unwrap();
        let live = tmp.path().join(".import-live");
        let held = File::create(&live).unwrap();
        held.lock().unwrap();
        let other = tmp.path().join("box-base.img");
        fs::write(&other, b"base").unwrap();

        assert_eq!(remove_stale(tmp.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists(), "a copy in progress stays");
        assert!(other.exists(), "base volumes stay");
        drop(held);
        // A process that another test forks holds a copy of the descriptor,
        // and so the lock, until its exec closes it: let that moment pass.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while File::open(&live).unwrap().try_lock().is_err() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(remove_stale(tmp.path()), 1);
        assert!(!live.exists());
    }
}
