//! The project registry: every state directory a `kvmdrive up` has used,
//! one absolute path a line in `$KVMDRIVE_HOME/projects`, so `box prune` and
//! `box remove` can see the machines of every project (kvmdrive.yml,
//! Molecule scenarios, `--state-dir` directories), not only the one they run
//! in. Entries whose directory is gone are dropped when the list is read.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The registry file under kvmdrive's home.
pub fn registry_path(home: &Path) -> PathBuf {
    home.join("projects")
}

/// Records `state_dir` (once). One appended line per new entry: concurrent
/// `up`s may both append the same path; [`list`] reads it once.
pub fn register(home: &Path, state_dir: &Path) -> std::io::Result<()> {
    if list(home).iter().any(|p| p == state_dir) {
        return Ok(());
    }
    fs::create_dir_all(home)?;
    let mut f = fs::File::options()
        .create(true)
        .append(true)
        .open(registry_path(home))?;
    f.write_all(format!("{}\n", state_dir.display()).as_bytes())
}

/// The registered state directories that still exist, each once. Entries
/// whose directory is gone are removed from the file (best effort: a
/// registry that cannot be rewritten is still read).
pub fn list(home: &Path) -> Vec<PathBuf> {
    let path = registry_path(home);
    let Ok(text) = fs::read_to_string(&path) else {
        return Vec::new();
    };
    let mut live: Vec<PathBuf> = Vec::new();
    let mut stale = false;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let dir = PathBuf::from(line);
        if !dir.is_dir() || live.contains(&dir) {
            stale = true;
        } else {
            live.push(dir);
        }
    }
    if stale {
        let body: String = live.iter().map(|d| format!("{}\n", d.display())).collect();
        let tmp = path.with_extension("tmp");
        if fs::write(&tmp, body).is_ok() {
            let _ = fs::rename(&tmp, &path);
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_dirs_are_listed_once_and_gone_ones_dropped() {
        let home = tempfile::tempdir().unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        assert!(list(home.path()).is_empty());
        register(home.path(), a.path()).unwrap();
        register(home.path(), a.path()).unwrap();
        register(home.path(), b.path()).unwrap();
        assert_eq!(
            list(home.path()),
            vec![a.path().to_owned(), b.path().to_owned()]
        );
        let gone = b.path().to_owned();
        drop(b);
        assert_eq!(list(home.path()), vec![a.path().to_owned()]);
        let text = fs::read_to_string(registry_path(home.path())).unwrap();
        assert!(!text.contains(gone.to_str().unwrap()), "{text}");
    }
}
