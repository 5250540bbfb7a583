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

/// The three failures a program meets first, each one JSON object with an
/// error, a hint and the process's exit status.
fn assert_error_and_hint(v: &serde_json::Value) {
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert!(
        v["hint"].as_str().is_some_and(|h| !h.is_empty()),
        "no hint: {v}"
    );
    assert!(v["exit_code"].as_i64().is_some_and(|c| c != 0), "{v}");
}

#[test]
fn an_unknown_key_is_a_json_error_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n    memroy: 512\n",
    )
    .unwrap();
    let v = json_error(tmp.path(), &["-c", "test:///default", "up"]);
    assert_error_and_hint(&v);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("kvmdrive.yml:3"), "{msg}");
    assert!(msg.contains("memroy"), "{msg}");
}

#[test]
fn a_bad_value_is_a_json_error_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n    memory: lots\n",
    )
    .unwrap();
    let v = json_error(tmp.path(), &["-c", "test:///default", "up"]);
    assert_error_and_hint(&v);
    assert!(
        v["error"].as_str().unwrap().contains("kvmdrive.yml:3"),
        "{v}"
    );
}

#[test]
fn a_missing_libvirt_test_file_is_a_json_error_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n",
    )
    .unwrap();
    let uri = format!("test://{}", tmp.path().join("no-such.xml").display());
    let v = json_error(tmp.path(), &["-c", &uri, "up"]);
    assert_error_and_hint(&v);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect to libvirt"),
        "{v}"
    );
}

#[test]
fn an_unreachable_libvirt_hint_says_what_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n",
    )
    .unwrap();
    let sock = tmp.path().join("no-such-libvirt-sock");
    let uri = format!("qemu+unix:///system?socket={}", sock.display());
    let v = json_error(tmp.path(), &["-c", &uri, "up"]);
    assert_error_and_hint(&v);
    assert!(
        v["hint"].as_str().unwrap().contains("kvmdrive host up"),
        "{v}"
    );
}

#[test]
fn a_missing_box_file_is_a_json_error_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n    box: ./no-such.box\n",
    )
    .unwrap();
    let v = json_error(tmp.path(), &["-c", "test:///default", "up"]);
    assert_error_and_hint(&v);
}

#[test]
fn a_box_not_in_the_cache_is_a_json_error_saying_how_to_add_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n    box: nosuch\n",
    )
    .unwrap();
    let v = json_error(tmp.path(), &["-c", "test:///default", "up"]);
    assert_error_and_hint(&v);
    assert!(v["error"].as_str().unwrap().contains("nosuch"), "{v}");
    assert!(
        v["hint"].as_str().unwrap().contains("kvmdrive box add"),
        "{v}"
    );
}

#[test]
fn a_machine_that_is_not_up_is_a_json_error_for_ssh_config() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n",
    )
    .unwrap();
    let v = json_error(tmp.path(), &["ssh-config", "web"]);
    assert_error_and_hint(&v);
    assert_eq!(v["hint"], "run `kvmdrive up web`");
}
