//! Tier 2 (libvirt's `test:///default`, in-process): hostile project paths
//! and hand-edited state. Project directories with spaces, unicode and long
//! paths, machine names at the length limit, and a `.kvmdrive/` whose files
//! were truncated or edited: a clear error naming the file, and `destroy`
//! still finds the machines through libvirt (the domains' metadata).

mod common;

use common::driver::{fixture_at, Fixture, LIBVIRT};

use std::path::{Path, PathBuf};

use kvmdrive::machine::lifecycle::{self, LifecycleError};
use kvmdrive::machine::plan;
use kvmdrive::machine::project::{Project, ProjectError};
use kvmdrive::project::config::Config;
use kvmdrive::virt::hypervisor::DomainState;

/// up, check every machine runs and has a record, destroy, check nothing is left.
fn up_and_destroy(fx: &Fixture, machines: &[&str]) {
    let c = fx.config();
    let records = fx
        .run_with(&c, |env, c| lifecycle::up(env, c, &[]))
        .unwrap();
    assert_eq!(records.len(), machines.len());
    let project = fx.project();
    for m in machines {
        assert_eq!(fx.state(m), Some(DomainState::Running), "{m}");
        assert!(project.record(m).unwrap().is_some(), "{m} has a record");
    }
    fx.run_with(&c, |env, c| lifecycle::destroy(env, c, &[]))
        .unwrap();
    for m in machines {
        assert_eq!(fx.state(m), None, "{m}");
    }
    assert!(!fx.hv.network_exists(&plan::network_name(&project)).unwrap());
    assert!(!project.state_dir.exists());
}

/// A path of nested directories about `len` bytes long below `tmp`.
fn long_rel(len: usize) -> String {
    let part = "ünïcödé dir ".repeat(8); // 96+ bytes, under NAME_MAX
    let mut rel = String::new();
    while rel.len() < len {
        rel.push_str(&part);
        rel.push('/');
    }
    rel.push_str("the project");
    rel
}

#[test]
fn project_directories_with_spaces_and_unicode_work() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture_at("My Prøject (test) 🚀", &["web"]);
    let p = fx.project();
    assert!(
        p.slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "{}",
        p.slug
    );
    up_and_destroy(&fx, &["web"]);
}

#[test]
fn very_long_project_paths_work() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture_at(&long_rel(1500), &["web"]);
    assert!(fx.dir.as_os_str().len() > 1500);
    up_and_destroy(&fx, &["web"]);
}

#[test]
fn machine_names_at_the_length_limit_work() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let longest = "m".repeat(39) + "1";
    assert_eq!(longest.len(), 40);
    let fx = fixture_at(&long_rel(300), &[&longest, "x"]);
    up_and_destroy(&fx, &[&longest, "x"]);

    // One more character is refused when the file is loaded.
    let too_long = "m".repeat(41);
    let yml = std::fs::read_to_string(fx.dir.join("kvmdrive.yml")).unwrap();
    std::fs::write(
        fx.dir.join("kvmdrive.yml"),
        yml.replace(&longest, &too_long),
    )
    .unwrap();
    let err = Config::load(&fx.dir).unwrap_err().to_string();
    assert!(err.contains("1-40"), "{err}");
}

fn record_path(p: &Project, machine: &str) -> PathBuf {
    p.machine_dir(machine).join("machine.json")
}

fn corrupt(path: &Path, how: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let new = match how {
        "truncated" => text[..text.len() / 2].to_owned(),
        "empty" => String::new(),
        "wrong type" => text.replacen("\"port\": 22", "\"port\": \"twenty-two\"", 1),
        _ => unreachable!(),
    };
    assert_ne!(new, text);
    std::fs::write(path, new).unwrap();
}

#[test]
fn edited_or_truncated_records_are_named_and_destroy_still_works() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    for how in ["truncated", "empty", "wrong type"] {
        let fx = fixture_at("p", &["a", "b"]);
        let c = fx.config();
        fx.run_with(&c, |env, c| lifecycle::up(env, c, &[]))
            .unwrap();
        let p = fx.project();
        let path = record_path(&p, "a");
        corrupt(&path, how);

        // status: an error that names the file and says what to do.
        let err = lifecycle::status(Some(&fx.hv), &p, &c).unwrap_err();
        match &err {
            LifecycleError::Project(e @ ProjectError::Corrupt { path: named, .. }) => {
                assert_eq!(named, &path, "{how}");
                assert!(e.hint().unwrap().contains("destroy"), "{how}");
            }
            other => panic!("{how}: expected Corrupt, got {other}"),
        }

        // destroy: finds both machines and removes them.
        fx.run_with(&c, |env, c| lifecycle::destroy(env, c, &[]))
            .unwrap();
        assert_eq!(fx.state("a"), None, "{how}");
        assert_eq!(fx.state("b"), None, "{how}");
        assert!(!p.state_dir.exists(), "{how}");
    }
}

#[test]
fn destroy_finds_machines_through_libvirt_when_state_and_config_are_gone() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture_at("p", &["a", "b"]);
    let c = fx.config();
    fx.run_with(&c, |env, c| lifecycle::up(env, c, &[]))
        .unwrap();
    let p = fx.project();
    // Hand-edited state: the machines' directories are gone, the lock file
    // holds garbage, and the config now lists no machine of the project.
    std::fs::remove_dir_all(p.state_dir.join("machines")).unwrap();
    std::fs::write(p.state_dir.join("lock"), [0xffu8, 0, 0xfe]).unwrap();
    let yml = std::fs::read_to_string(fx.dir.join("kvmdrive.yml")).unwrap();
    std::fs::write(
        fx.dir.join("kvmdrive.yml"),
        yml.replace("name: a", "name: other-a")
            .replace("name: b", "name: other-b"),
    )
    .unwrap();
    let c2 = fx.config();
    fx.run_with(&c2, |env, c| lifecycle::destroy(env, c, &[]))
        .unwrap();
    assert_eq!(fx.state("a"), None);
    assert_eq!(fx.state("b"), None);
    assert!(!fx.hv.network_exists(&plan::network_name(&p)).unwrap());
    assert!(!p.state_dir.exists());
}

#[test]
fn a_state_directory_that_is_a_file_is_a_clear_error() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture_at("p", &["a"]);
    let p = fx.project();
    std::fs::write(&p.state_dir, "not a directory").unwrap();
    let c = fx.config();
    let err = fx
        .run_with(&c, |env, c| lifecycle::up(env, c, &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&p.state_dir.display().to_string()), "{err}");
    assert_eq!(fx.state("a"), None);
    // The file is the user's: left as it was.
    assert_eq!(
        std::fs::read_to_string(&p.state_dir).unwrap(),
        "not a directory"
    );
}
