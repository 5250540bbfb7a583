//! Helpers shared by integration tests.
#![allow(dead_code)]

pub mod driver;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds a tiny but valid libvirt `.box` (empty 64 MiB qcow2) in `dir`.
pub fn tiny_box(dir: &Path) -> PathBuf {
    let work = dir.join("box-src");
    std::fs::create_dir_all(&work).unwrap();
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(work.join("box.img"))
        .arg("64M")
        .status()
        .expect("qemu-img is installed");
    assert!(ok.success());
    std::fs::write(
        work.join("metadata.json"),
        r#"{"provider":"libvirt","format":"qcow2","virtual_size":1}"#,
    )
    .unwrap();
    std::fs::write(work.join("Vagrantfile"), "# tiny test box\n").unwrap();
    let file = dir.join("tiny.box");
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&file)
        .arg("-C")
        .arg(&work)
        .args(["metadata.json", "box.img", "Vagrantfile"])
        .status()
        .unwrap();
    assert!(ok.success());
    file
}

/// Path of the built `kvmdrive` binary.
pub fn kvmdrive_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kvmdrive"))
}
