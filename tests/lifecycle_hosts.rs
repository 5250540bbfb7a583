//! Tier 2: `hosts:` against libvirt's test driver. `test:///default` reports
//! a few MiB of free memory, so a 512 MiB machine fits on no host there:
//! that checks that placement refuses to over-commit before anything is
//! made; a host whose URI does not open checks that `up` fails before
//! anything is made on the hosts that answer.

mod common;

use common::driver::{fixture, names, Fixture, LIBVIRT};

use kvmdrive::machine::lifecycle;
use kvmdrive::machine::plan;

fn write(fx: &Fixture, hosts: &[&str]) {
    let list: String = hosts.iter().map(|h| format!("  - {h}\n")).collect();
    let yml = format!(
        "hosts:\n{list}defaults:\n  box: {}\n  accel: tcg\n  memory: 512\nmachines:\n  - name: a\n  - name: b\n",
        fx.the_box.display()
    );
    std::fs::write(fx.dir.join("kvmdrive.yml"), yml).unwrap();
}

fn nothing_made(fx: &Fixture) {
    assert_eq!(fx.state("a"), None);
    assert_eq!(fx.state("b"), None);
    assert!(!fx
        .hv
        .network_exists(&plan::network_name(&fx.project()))
        .unwrap());
    assert!(!fx.project().state_dir.exists());
}

#[test]
fn a_host_that_does_not_answer_fails_up_before_anything_is_made() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&[]);
    write(&fx, &["test:///default", "test:///nonexistent/node.xml"]);
    let err = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("host test:///nonexistent/node.xml does not answer"),
        "{text}"
    );
    assert!(err.hint().unwrap().contains("nothing was created"));
    nothing_made(&fx);
}

#[test]
fn placement_never_over_commits_and_names_the_free_memory() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&[]);
    write(&fx, &["test:///default"]);
    let free_mib = fx.hv.node_capacity().unwrap().free_memory_bytes >> 20;
    assert!(
        free_mib < 512,
        "the test driver reports {free_mib} MiB free"
    );
    let err = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("machine `a` (512 MiB) fits on no host"),
        "{text}"
    );
    assert!(
        text.contains(&format!("test:///default: {free_mib} MiB")),
        "{text}"
    );
    nothing_made(&fx);
}

#[test]
fn status_shows_nothing_created_and_destroy_has_nothing_to_do() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&[]);
    write(&fx, &["test:///default"]);
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
    let list = fx
        .run(|env, c| lifecycle::status(Some(env.hv), env.project, c))
        .unwrap();
    assert_eq!(list.len(), 2);
    assert!(list
        .iter()
        .all(|m| m.state == "not_created" && m.host.is_none()));
    assert!(!lifecycle::spans_hosts(&list));
    let err = fx
        .run(|env, c| lifecycle::destroy(env, c, &names(&["zz"])))
        .unwrap_err();
    assert!(err.to_string().contains("no machine named `zz`"), "{err}");
}
