//! The two binaries: `kvmdrive` (the front) links no libvirt and runs what
//! needs none itself; everything else reaches `kvmdrive-engine` through
//! `exec` with the command line untouched, and a front without its engine
//! says what is missing and what to do.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

const FRONT: &str = env!("CARGO_BIN_EXE_kvmdrive");
const ENGINE: &str = env!("CARGO_BIN_EXE_kvmdrive-engine");

/// The shared libraries `binary` names in its dynamic section (`readelf -d`).
fn needed(binary: &str) -> Vec<String> {
    let out = Command::new("readelf")
        .args(["-d", binary])
        .output()
        .expect("run readelf (binutils)");
    assert!(out.status.success(), "readelf -d {binary} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_owned()))
        .collect()
}

#[test]
fn only_the_engine_links_libvirt() {
    let engine = needed(ENGINE);
    assert!(
        engine.iter().any(|l| l.starts_with("libvirt.so")),
        "{engine:?}"
    );
    let front = needed(FRONT);
    assert!(front.iter().any(|l| l.starts_with("libc.so")), "{front:?}");
    assert!(
        !front.iter().any(|l| l.starts_with("libvirt")),
        "the front links libvirt, so every `kvmdrive --version` loads its library chain: {front:?}"
    );
}

/// `kvmdrive` copied alone into `bin`, run with `args` in `project`.
fn lone_front(bin: &Path, project: &Path, args: &[&str]) -> Output {
    let front = bin.join("kvmdrive");
    if !front.exists() {
        std::fs::copy(FRONT, &front).unwrap();
    }
    // Another test thread that forks while the copy's file is still open
    // for writing holds it open until its child execs: exec then fails with
    // ETXTBSY ("Text file busy"). Wait for that moment to pass.
    for _ in 0..50 {
        let out = Command::new(&front)
            .arg("-C")
            .arg(project)
            .args(args)
            .env_remove("KVMDRIVE_ENGINE")
            .env_remove("LIBVIRT_DEFAULT_URI")
            .env("KVMDRIVE_HOME", project.join("home"))
            .output();
        match out {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed busy (ETXTBSY)", front.display());
}

/// "Text file busy" on Linux.
const ETXTBSY: i32 = 26;

#[test]
fn a_front_without_engine_runs_what_needs_no_libvirt_and_names_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let (bin, project) = (tmp.path().join("bin"), tmp.path().join("project"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&project).unwrap();

    for args in [&["--version"][..], &["init"], &["status"], &["box", "list"]] {
        let out = lone_front(&bin, &project, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = lone_front(&bin, &project, &["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not_created"));

    // Machines may exist once the project has state: only libvirt knows.
    std::fs::create_dir(project.join(".kvmdrive")).unwrap();
    for args in [
        &["status"][..],
        &["up", "--dry-run"],
        &["--json", "destroy"],
    ] {
        let out = lone_front(&bin, &project, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("needs kvmdrive-engine, which is not installed")
                && stderr.contains(&bin.join("kvmdrive-engine").display().to_string())
                && stderr.contains("hint: ")
                && stderr.contains("KVMDRIVE_ENGINE"),
            "{args:?}: {stderr}"
        );
    }
    // Platforms on stdin are the engine's to read, state or not.
    std::fs::remove_dir(project.join(".kvmdrive")).unwrap();
    let out = lone_front(&bin, &project, &["status", "--platforms", "-"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs kvmdrive-engine"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir(project.join(".kvmdrive")).unwrap();
    let out = lone_front(&bin, &project, &["--json", "destroy"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_code"], 1, "{v}");
}

#[test]
fn the_engine_gets_the_command_line_as_it_was_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = tmp.path().join("fake-engine");
    std::fs::write(&engine, "#!/bin/sh\nprintf '%s\\n' \"$@\"\nexit 7\n").unwrap();
    std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = ["-C", "/nowhere", "snapshot", "save", "a b", "--", "-x"];
    let out = Command::new(FRONT)
        .args(args)
        .env("KVMDRIVE_ENGINE", &engine)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "the engine's exit status");
    let seen: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(seen, args);
}

#[test]
fn front_and_engine_answer_alike() {
    for args in [
        &["--version"][..],
        &["completions", "bash"],
        &["status", "--help"],
    ] {
        // As the front execs it: argv[0] stays `kvmdrive` (clap's usage lines).
        let run = |bin: &str| {
            Command::new(bin)
                .arg0("kvmdrive")
                .args(args)
                .output()
                .unwrap()
        };
        let (front, engine) = (run(FRONT), run(ENGINE));
        assert!(front.status.success(), "{args:?}");
        assert_eq!(front.stdout, engine.stdout, "{args:?}");
    }
}
