//! A box rebuilt at the same path (`box: ./my.box`): `up` takes the new
//! content, imports it as a new base volume, and machines made from the old
//! one keep their backing file; neither `destroy` nor `box prune` removes a
//! base volume. Runs against libvirt's `test:///default` driver (no guest),
//! in process and through the CLI.

mod boxes_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use boxes_support::*;
use kvmdrive::boxes::commands::prune;
use kvmdrive::boxes::BoxStore;
use kvmdrive::machine::lifecycle::{self, Env};
use kvmdrive::machine::plan;
use kvmdrive::machine::project::Project;
use kvmdrive::output::Reporter;
use kvmdrive::project::config::Config;
use kvmdrive::virt::storage::POOL_NAME;
use kvmdrive::virt::Hypervisor;

/// The test driver's state is shared by every connection of the process.
static LIBVIRT: Mutex<()> = Mutex::new(());

const YML: &str =
    "defaults:\n  box: ./my.box\n  accel: tcg\nmachines:\n  - name: old\n  - name: new\n";

/// The two builds of `my.box`: same image size, different content.
fn build_a() -> Vec<u8> {
    good_box(Pack::Gzip, "64M", 0)
}

fn build_b() -> Vec<u8> {
    good_box(Pack::Gzip, "64M", 4096)
}

/// Base volumes (`box-*`) in the pool directory, sorted.
fn base_volumes(pool: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(pool)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("box-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The backing file libvirt recorded for a machine's overlay volume.
fn overlay_backing(project: &Project, machine: &str) -> String {
    let conn = virt::connect::Connect::open(Some("test:///default")).unwrap();
    let pool = conn.lookup_storage_pool_by_name(POOL_NAME).unwrap();
    let domain = plan::domain_name(project, machine);
    let vol = pool
        .lookup_storage_vol_by_name(&plan::overlay_name(&domain))
        .unwrap();
    let xml = vol.xml_desc(0).unwrap();
    let backing = xml
        .split_once("<backingStore>")
        .and_then(|(_, rest)| rest.split_once("<path>"))
        .and_then(|(_, rest)| rest.split_once("</path>"))
        .map(|(path, _)| path.to_owned());
    backing.unwrap_or_else(|| panic!("no backing store in {xml}"))
}

#[test]
fn a_rebuilt_box_gets_a_new_base_volume_and_old_machines_keep_theirs() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("project");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kvmdrive.yml"), YML).unwrap();
    std::fs::write(dir.join("my.box"), build_a()).unwrap();
    let hv = Hypervisor::connect("test:///default").unwrap();
    let store = BoxStore::new(tmp.path().join("home"));
    let out = Reporter::new(false, 0);
    let pool_dir = tmp.path().join("pool");
    let project = Project::new(&dir, None).unwrap();
    let run = |names: &[&str], up: bool| {
        let env = Env {
            hv: &hv,
            project: &project,
            out: &out,
            store: &store,
            pool_dir: pool_dir.clone(),
        };
        let config = Config::load(&dir).unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        if up {
            lifecycle::up(&env, &config, &names).map(|_| ())
        } else {
            lifecycle::destroy(&env, &config, &names)
        }
    };

    run(&["old"], true).unwrap();
    let first = base_volumes(&pool_dir);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("box-my-0-"), "{first:?}");

    // Rebuild the box at the same path: the next `up` takes the new content.
    let b = build_b();
    std::fs::write(dir.join("my.box"), &b).unwrap();
    run(&["new"], true).unwrap();
    let both = base_volumes(&pool_dir);
    assert_eq!(both.len(), 2, "a new base volume: {both:?}");
    assert!(both.contains(&first[0]), "the old one stays: {both:?}");
    let second = both.iter().find(|n| **n != first[0]).unwrap().clone();
    let cached = store.find("my", None).unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cached.dir.join("kvmdrive-source.json")).unwrap())
            .unwrap();
    assert_eq!(record["sha256"], sha256_hex(&b), "the cache holds build B");
    assert_eq!(store.versions_of("my").len(), 1, "replaced, not added");

    // Each machine is backed by the base volume of the build it was made from.
    let path = |n: &str| pool_dir.join(n).display().to_string();
    assert_eq!(overlay_backing(&project, "old"), path(&first[0]));
    assert_eq!(overlay_backing(&project, "new"), path(&second));

    // `up` again changes nothing: the same box, the same base volumes.
    run(&[], true).unwrap();
    assert_eq!(base_volumes(&pool_dir), both);

    // Neither destroy nor prune removes a base volume.
    run(&["new"], false).unwrap();
    assert_eq!(base_volumes(&pool_dir), both);
    let report = prune(&store, None, &BTreeMap::new(), false).unwrap();
    assert!(report.removed.is_empty(), "{:?}", report.removed);
    assert_eq!(base_volumes(&pool_dir), both);
    assert_eq!(overlay_backing(&project, "old"), path(&first[0]));
    run(&[], false).unwrap();
    assert_eq!(base_volumes(&pool_dir), both);
}

fn kvmdrive(project: &Path, home: &Path, pool: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kvmdrive"))
        .args(["-c", "test:///default"])
        .args(args)
        .env("KVMDRIVE_HOME", home)
        .env("VAGRANT_HOME", home.join("no-vagrant"))
        .env("KVMDRIVE_POOL_DIR", pool)
        .current_dir(project)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn up_says_in_one_line_that_the_box_file_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("project");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kvmdrive.yml"),
        "defaults:\n  box: ./my.box\n  accel: tcg\n",
    )
    .unwrap();
    let (home, pool): (PathBuf, PathBuf) = (tmp.path().join("home"), tmp.path().join("pool"));
    std::fs::write(dir.join("my.box"), build_a()).unwrap();
    // Every process has its own test driver: each `up` creates the machine.
    let (ok, text) = kvmdrive(&dir, &home, &pool, &["up"]);
    assert!(ok, "{text}");
    assert!(!text.contains("changed since"), "{text}");
    let (ok, text) = kvmdrive(&dir, &home, &pool, &["up"]);
    assert!(ok, "{text}");
    assert!(!text.contains("changed since"), "unchanged file: {text}");
    assert_eq!(base_volumes(&pool).len(), 1);

    std::fs::write(dir.join("my.box"), build_b()).unwrap();
    let (ok, text) = kvmdrive(&dir, &home, &pool, &["up"]);
    assert!(ok, "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("changed since it was added"))
        .collect();
    assert_eq!(
        lines,
        ["box ./my.box changed since it was added: using the new content"],
        "{text}"
    );
    assert_eq!(base_volumes(&pool).len(), 2);
}
