//! Errors as programs see them: with `--json`, a failed command prints one
//! JSON object (`error`, `hint`, `exit_code`) on stdout, besides the text on
//! stderr, and exits with that code.

use std::path::Path;
use std::process::Command;

fn json_error(dir: &Path, args: &[&str]) -> serde_json::Value {
    let home = dir.join("home");
    let out = Command::new(env!("CARGO_BIN_EXE_kvmdrive"))
        .arg("--json")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("KVMDRIVE_HOME", &home)
        .env("VAGRANT_HOME", home.join("vagrant.d"))
        .env("VAGRANT_SERVER_URL", "http://127.0.0.1:9")
        .env_remove("LIBVIRT_DEFAULT_URI")
        .output()
        .expect("run kvmdrive");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {stdout}");
    assert!(
        stderr.contains("error: "),
        "no text error on stderr: {stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"));
    assert_eq!(
        v["exit_code"].as_i64(),
        out.status.code().map(i64::from),
        "{v}"
    );
    v
}

#[test]
fn a_bad_config_is_a_json_error_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n  - name: Bad_Name\n",
    )
    .unwrap();
    let v = json_error(tmp.path(), &["-c", "test:///default", "up"]);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("kvmdrive.yml:3"), "{msg}");
    assert!(msg.contains("Bad_Name"), "{msg}");
}

#[test]
fn an_unreachable_libvirt_is_a_json_error_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n",
    )
    .unwrap();
    let sock = tmp.path().join("no-such-libvirt-sock");
    let uri = format!("qemu+unix:///system?socket={}", sock.display());
    let v = json_error(tmp.path(), &["-c", &uri, "up"]);
    assert!(v["hint"].is_string(), "no hint: {v}");
    assert_eq!(v["exit_code"], 1);
}

#[test]
fn a_missing_box_is_a_json_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n    box: ./no-such.box\n",
    )
    .unwrap();
    let v = json_error(tmp.path(), &["-c", "test:///default", "up"]);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("no-such.box"), "{msg}");
}
