//! Tier 2: `hosts:` against libvirt's test driver. `test:///default` reports
//! a few MiB of free memory, so a 512 MiB machine fits on no host there:
//! that checks that placement refuses to over-commit before anything is
//! made; a host whose URI does not open checks that `up` fails before
//! anything is made on the hosts that answer. `up` cannot place machines
//! on the test driver's hosts, so the commands that act on existing
//! machines get theirs another way: `a` is brought up on `test:///default`
//! without `hosts:`, `b` is defined in a second host's node XML (a
//! `test:///PATH.xml` connection is private: what a command changes there
//! is gone with it), or recorded on a host that does not answer.

mod common;

use common::driver::{fixture, names, Fixture, LIBVIRT};

use kvmdrive::machine::lifecycle::{self, LifecycleError};
use kvmdrive::machine::snapshot::{self, SnapshotError};
use kvmdrive::machine::{plan, provision, suspend};
use kvmdrive::virt::hypervisor::DomainState;

const DOWN: &str = "test:///nonexistent/node.xml";

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

/// `a` up on `test:///default` (made without `hosts:`, as `up` cannot
/// place it on the test driver), then kvmdrive.yml lists `hosts`.
fn a_up_then_hosts(fx: &Fixture, hosts: &[&str]) {
    fx.write("  - name: a\n  - name: b\n");
    fx.run(|env, c| lifecycle::up(env, c, &names(&["a"])))
        .unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Running));
    write(fx, hosts);
}

/// A second host: a node XML with `b`'s domain, running, with snapshot
/// `s0`; returns its URI.
fn host_with_b(fx: &Fixture) -> String {
    let dom = fx.domain("b");
    let xml = format!(
        "<node>\n<cpu><mhz>1000</mhz><model>x</model><active>2</active><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>\n<memory>8388608</memory>\n\
         <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'><name>{dom}</name><memory>65536</memory><os><type>hvm</type></os>\n\
         <test:domainsnapshot><name>s0</name><state>running</state><creationTime>1700000000</creationTime><memory snapshot='internal'/><active>0</active>\
         <domain type='test'><name>{dom}</name><memory>65536</memory><os><type>hvm</type></os></domain></test:domainsnapshot>\n</domain>\n</node>\n"
    );
    let path = fx.dir.parent().unwrap().join("host2.xml");
    std::fs::write(&path, xml).unwrap();
    format!("test://{}", path.display())
}

/// `b` recorded on the host that does not answer (a copy of `a`'s record).
fn b_recorded_on_down_host(fx: &Fixture) {
    let project = fx.project();
    let mut r = project.record("a").unwrap().unwrap();
    r.name = "b".into();
    r.domain = fx.domain("b");
    r.host = Some(DOWN.into());
    project.save_record(&r).unwrap();
}

/// Everything of `a` gone from `test:///default` again.
fn clean_up(fx: &Fixture) {
    fx.write("  - name: a\n  - name: b\n");
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), None);
}

#[test]
fn snapshot_save_and_list_reach_the_machines_of_every_host() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&[]);
    let h2 = host_with_b(&fx);
    a_up_then_hosts(&fx, &["test:///default", &h2]);

    // `b` is found on the second host (it has no record): without it, save fails.
    fx.run(|env, c| snapshot::save(env, c, "s1", &[], false))
        .unwrap();
    let on_a = fx.hv.snapshots(&fx.domain("a")).unwrap();
    assert_eq!(on_a.len(), 1);
    assert_eq!(on_a[0].name, "s1");

    let rows = fx.run(snapshot::list).unwrap();
    let listed: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|r| {
            (
                r.machine.as_str(),
                r.snapshot.name.as_str(),
                r.host.as_deref(),
            )
        })
        .collect();
    // (The second host's `s1` went with save's private connection.)
    assert_eq!(
        listed,
        [
            ("a", "s1", Some("test:///default")),
            ("b", "s0", Some(h2.as_str()))
        ]
    );
    let json = serde_json::to_value(&rows).unwrap();
    assert_eq!(json[1]["machine"], "b");
    assert_eq!(json[1]["host"], h2.as_str());
    clean_up(&fx);
}

#[test]
fn a_host_that_does_not_answer_makes_snapshot_save_list_reload_and_resume_refuse() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&[]);
    a_up_then_hosts(&fx, &["test:///default", DOWN]);
    b_recorded_on_down_host(&fx);

    let err = fx
        .run(|env, c| snapshot::save(env, c, "s1", &[], false))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            SnapshotError::Lifecycle(LifecycleError::Unreachable { .. })
        ),
        "{err:?}"
    );
    assert!(
        text.contains(DOWN) && text.contains("nothing was done"),
        "{text}"
    );
    assert!(err.hint().unwrap().contains("nothing was changed"));
    assert!(
        fx.hv.snapshots(&fx.domain("a")).unwrap().is_empty(),
        "nothing saved on the host that answers"
    );
    let err = fx.run(snapshot::list).unwrap_err();
    assert!(err.to_string().contains(DOWN), "{err}");

    // Only `a`, whose host answers: saved.
    fx.run(|env, c| snapshot::save(env, c, "s1", &names(&["a"]), false))
        .unwrap();
    assert_eq!(fx.hv.snapshots(&fx.domain("a")).unwrap().len(), 1);

    // `reload` too: nothing is halted when `up` could not follow.
    let err = fx
        .run(|env, c| lifecycle::reload(env, c, &[], lifecycle::UpOptions::default()))
        .unwrap_err();
    assert!(
        matches!(err, LifecycleError::Unreachable { ref hosts } if hosts.contains(DOWN)),
        "{err:?}"
    );
    assert_eq!(fx.state("a"), Some(DomainState::Running));

    // `resume` ends in `up`, which needs every host: nothing is resumed.
    fx.hv.managed_save(&fx.domain("a")).unwrap();
    let err = fx
        .run(|env, c| suspend::resume(env, c, &names(&["a"])))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Lifecycle(LifecycleError::Unreachable { ref hosts }) if hosts.contains(DOWN)
        ),
        "{err:?}"
    );
    assert_eq!(fx.state("a"), Some(DomainState::Saved));
    clean_up(&fx);
}

#[test]
fn provision_and_suspend_do_the_hosts_that_answer_and_name_the_others() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&[]);
    a_up_then_hosts(&fx, &["test:///default", DOWN]);
    b_recorded_on_down_host(&fx);

    // `a` has no provisioners: done; `b` is named with its host.
    let (runs, outcome) = fx
        .run(|env, c| provision::provision_machines(env, c, &[]))
        .unwrap();
    assert!(runs.is_empty());
    let err = outcome.unwrap_err();
    assert!(matches!(err, LifecycleError::NotReached { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("b on {DOWN}")), "{text}");
    assert!(!text.contains("a,") && !text.contains(" a "), "{text}");
    // --provision-with a provisioner no selected machine has: refused first.
    let unknown = fx.run(|_, c| provision::with_only(c, &[], &["nope".into()]));
    assert!(
        matches!(unknown, Err(LifecycleError::UnknownProvisioner { ref name }) if name == "nope"),
        "{unknown:?}"
    );

    // `snapshot delete`: `a`'s goes, `b` is named.
    fx.run(|env, c| snapshot::save(env, c, "s1", &names(&["a"]), false))
        .unwrap();
    let err = fx
        .run(|env, c| snapshot::delete(env, c, "s1", &[]))
        .unwrap_err();
    assert!(err.to_string().contains(&format!("b on {DOWN}")), "{err}");
    assert!(fx.hv.snapshots(&fx.domain("a")).unwrap().is_empty());

    let err = fx.run(|env, c| suspend::suspend(env, c, &[])).unwrap_err();
    assert!(err.to_string().contains(&format!("b on {DOWN}")), "{err}");
    assert_eq!(
        fx.state("a"),
        Some(DomainState::Saved),
        "the host that answers was done"
    );
    clean_up(&fx);
}
