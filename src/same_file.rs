//! Whether an open file is still the one at its path (same device and
//! inode): after taking a lock on a lock or staging file, a holder checks
//! that nobody removed or replaced the file meanwhile. Used by the project
//! lock, box staging and base-volume imports.

use std::fs::{self, File};
use std::path::Path;

pub(crate) fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
