//! Helpers shared by unit tests.

use std::path::PathBuf;

/// Compares `actual` with `tests/golden/NAME`. `KVMDRIVE_BLESS=1` rewrites
/// the file instead (review the diff before committing it).
pub fn assert_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("KVMDRIVE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with KVMDRIVE_BLESS=1 to create it)",
            path.display()
        )
    });
    pretty_assertions::assert_eq!(expected, actual, "golden file {name} differs");
}
