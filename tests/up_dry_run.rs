//! `up --dry-run` against libvirt's `test:///default` driver and through the
//! binary: the plan changes nothing (no domain, volume, network, pool,
//! state directory or box download), and the domain it plans is the one a
//! real `up` then defines.

mod common;

use std::process::Command;

use kvmdrive::boxes::BoxStore;
use kvmdrive::machine::lifecycle::{self, Env};
use kvmdrive::machine::project::Project;
use kvmdrive::output::Reporter;
use kvmdrive::project::config::Config;
use kvmdrive::virt::Hypervisor;

fn project_dir(tmp: &std::path::Path, machines: &[&str]) -> std::path::PathBuf {
    let dir = tmp.join("project");
    std::fs::create_dir_all(&dir).unwrap();
    let the_box = common::tiny_box(tmp);
    let mut yml = format!(
        "defaults:\n  box: {}\n  accel: tcg\nmachines:\n",
        the_box.display()
    );
    for m in machines {
        yml.push_str(&format!("  - name: {m}\n"));
    }
    std::fs::write(dir.join("kvmdrive.yml"), yml).unwrap();
    dir
}

fn listing(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = walk(dir);
    v.sort();
    v
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn dry_run_changes_nothing_and_plans_the_domain_up_defines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project_dir(tmp.path(), &["a", "b"]);
    let hv = Hypervisor::connect("test:///default").unwrap();
    let store = BoxStore::new(tmp.path().join("home"));
    let out = Reporter::new(false, 0);
    let project = Project::new(&dir, None).unwrap();
    let config = Config::load(&dir).unwrap();
    let env = Env {
        hv: &hv,
        project: &project,
        out: &out,
        store: &store,
        pool_dir: tmp.path().join("pool"),
    };
    let net = kvmdrive::machine::plan::network_name(&project);
    let domains_before = hv.owned_domains().unwrap().len();
    let files_before = listing(tmp.path());

    let plan = lifecycle::plan_up(&env, &config, &[]).unwrap();
    assert_eq!(plan.machines.len(), 2);
    assert!(plan.boxes[0].fetch_from.is_some(), "{:?}", plan.boxes);
    assert!(plan.networks[0].create);
    assert!(plan.machines.iter().all(|m| m.action == "create"));
    // Nothing changed: libvirt, the project dir, the box cache, the pool dir.
    assert_eq!(hv.owned_domains().unwrap().len(), domains_before);
    assert!(!hv.network_exists(&net).unwrap());
    assert_eq!(listing(tmp.path()), files_before);

    lifecycle::up(&env, &config, &[]).unwrap();
    for m in &plan.machines {
        let defined = hv.domain_xml(&m.domain).unwrap().expect("domain defined");
        let planned = &m.domain_xml;
        for needle in [
            format!("<name>{}</name>", m.domain),
            format!("<mac address=\"{}\"/>", m.mac),
            format!("{}", tmp.path().join("pool").join(&m.overlay).display()),
        ] {
            assert!(planned.contains(&needle), "plan lacks {needle}: {planned}");
            let alt = needle.replace('"', "'");
            assert!(
                defined.contains(&needle) || defined.contains(&alt),
                "libvirt's domain lacks {needle}: {defined}"
            );
        }
        let record = project.record(&m.name).unwrap().unwrap();
        assert_eq!(record.address, m.address.to_string());
        assert_eq!(record.mac, m.mac);
    }
    // Once made, the plan of the same project is the same domain XML.
    let again = lifecycle::plan_up(&env, &config, &[]).unwrap();
    for (a, b) in plan.machines.iter().zip(&again.machines) {
        assert_eq!(a.domain_xml, b.domain_xml);
        assert_eq!(b.action, "running");
    }
    assert!(!again.networks[0].create);
    lifecycle::destroy(&env, &config, &[]).unwrap();
}

#[test]
fn cli_dry_run_json_prints_one_plan_object() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project_dir(tmp.path(), &["web", "db"]);
    let home = tmp.path().join("home");
    let out = Command::new(env!("CARGO_BIN_EXE_kvmdrive"))
        .args(["--json", "-c", "test:///default", "-C"])
        .arg(&dir)
        .args(["up", "--dry-run"])
        .env("KVMDRIVE_HOME", &home)
        .env("VAGRANT_HOME", home.join("vagrant.d"))
        .env("KVMDRIVE_POOL_DIR", tmp.path().join("pool"))
        .env_remove("LIBVIRT_DEFAULT_URI")
        .output()
        .expect("run kvmdrive");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"));
    let names: Vec<&str> = v["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "db"]);
    assert!(v["machines"][0]["domain_xml"]
        .as_str()
        .unwrap()
        .contains("<domain"));
    assert!(!dir.join(".kvmdrive").exists());
    assert!(!home.exists(), "the box cache was touched");
}
