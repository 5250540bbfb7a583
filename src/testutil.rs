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

/// A machine record as `up` leaves it: `web` at 192.168.121.10, key under
/// `/p/.kvmdrive/machines/web`.
pub fn machine_record() -> crate::machine::project::MachineRecord {
    crate::machine::project::MachineRecord {
        name: "web".into(),
        domain: "p-1-web".into(),
        address: "192.168.121.10".into(),
        port: 22,
        user: "vagrant".into(),
        identity_file: "/p/.kvmdrive/machines/web/id_ed25519".into(),
        mac: "52:54:00:00:00:01".into(),
        domain_type: "qemu".into(),
        networks: Vec::new(),
        jump: None,
        box_dir: None,
        host: None,
        python: None,
    }
}

/// Asserts that `script` is valid POSIX sh (`sh -n`), with sh's complaint.
pub fn assert_sh_syntax(script: &str) {
    let out = std::process::Command::new("sh")
        .arg("-n")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
