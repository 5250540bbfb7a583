//! Tier 2: snapshots and suspend against libvirt's `test:///default` driver
//! (no daemon, no guest): save, list, restore and delete reach libvirt's
//! snapshot objects, `suspend` leaves a saved domain that `status` shows and
//! `up` resumes, and `destroy` leaves no domain (nor its snapshots) behind.

mod common;

use common::driver::{fixture, names, LIBVIRT};

use kvmdrive::machine::lifecycle;
use kvmdrive::machine::{plan, snapshot, suspend};
use kvmdrive::virt::hypervisor::DomainState;

#[test]
fn snapshots_are_saved_listed_restored_deleted_and_go_with_destroy() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a", "b"]);
    fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();

    fx.run(|env, c| snapshot::save(env, c, "s1", &[], false))
        .unwrap();
    fx.run(|env, c| snapshot::save(env, c, "only-a", &names(&["a"]), false))
        .unwrap();
    let rows = fx.run(snapshot::list).unwrap();
    let listed: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.machine.as_str(), r.snapshot.name.as_str()))
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(&("a", "s1")) && listed.contains(&("b", "s1")));
    assert!(listed.contains(&("a", "only-a")));
    assert!(rows.iter().all(|r| r.snapshot.has_memory()), "{rows:?}");

    // A second snapshot of the same name is refused, naming the machine.
    let again = fx.run(|env, c| snapshot::save(env, c, "s1", &names(&["a"]), false));
    assert!(
        matches!(again, Err(snapshot::SnapshotError::Exists { ref machine, .. }) if machine == "a"),
        "{again:?}"
    );
    let missing = fx.run(|env, c| snapshot::restore(env, c, "nope", &names(&["b"])));
    assert!(
        matches!(missing, Err(snapshot::SnapshotError::Missing { .. })),
        "{missing:?}"
    );

    fx.run(|env, c| snapshot::restore(env, c, "s1", &[]))
        .unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Running));

    fx.run(|env, c| snapshot::delete(env, c, "only-a", &[]))
        .unwrap();
    let left = fx.run(snapshot::list).unwrap();
    assert_eq!(left.len(), 2);

    // A halted machine's snapshot holds its disks; restoring leaves it stopped.
    fx.run(|env, c| lifecycle::halt(env, c, &names(&["b"]), false))
        .unwrap();
    fx.run(|env, c| snapshot::save(env, c, "cold", &names(&["b"]), false))
        .unwrap();
    let cold = fx
        .hv
        .snapshot_info(&fx.domain("b"), "cold")
        .unwrap()
        .unwrap();
    assert!(!cold.has_memory(), "{cold:?}");
    fx.run(|env, c| snapshot::restore(env, c, "cold", &names(&["b"])))
        .unwrap();
    assert_eq!(fx.state("b"), Some(DomainState::Shutoff));

    // destroy undefines domains that have snapshots, and takes them along.
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), None);
    assert_eq!(fx.state("b"), None);
    assert!(fx.hv.snapshots(&fx.domain("a")).unwrap().is_empty());
}

#[test]
fn suspended_machines_show_as_saved_and_up_resumes_them() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a"]);
    fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    fx.run(|env, c| suspend::suspend(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Saved));
    let status = fx
        .run(|env, c| lifecycle::status(Some(env.hv), env.project, c))
        .unwrap();
    assert_eq!(status[0].state, "saved");
    // Suspending again and halting a suspended machine are no-ops.
    fx.run(|env, c| suspend::suspend(env, c, &[])).unwrap();
    fx.run(|env, c| lifecycle::halt(env, c, &[], false))
        .unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Saved));
    // A suspended machine takes no snapshot (its memory is on disk).
    let r = fx.run(|env, c| snapshot::save(env, c, "s", &[], false));
    assert!(
        matches!(r, Err(snapshot::SnapshotError::Suspended { .. })),
        "{r:?}"
    );

    fx.run(|env, c| suspend::resume(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Running));
    assert!(!fx.hv.has_managed_save(&fx.domain("a")).unwrap());

    // `up` resumes a suspended machine too; destroy removes a saved one.
    fx.run(|env, c| suspend::suspend(env, c, &[])).unwrap();
    fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Running));
    fx.run(|env, c| suspend::suspend(env, c, &[])).unwrap();
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), None);
}

#[test]
fn reuse_parks_machines_and_reverts_them_until_their_definition_changes() {
    use kvmdrive::machine::reuse;
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a"]);
    let first = fx.run(|env, c| reuse::create(env, c, &[])).unwrap();
    let pristine = fx
        .hv
        .snapshot_info(&fx.domain("a"), reuse::PRISTINE)
        .unwrap();
    let print = pristine
        .as_ref()
        .and_then(|s| reuse::fingerprint_of(&s.description).map(str::to_owned));
    assert!(print.is_some(), "{pristine:?}");

    // destroy with reuse parks: powered off, state moved to the home.
    fx.run(|env, c| reuse::park(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Shutoff));
    assert!(
        !fx.project().state_dir.exists(),
        "the project looks destroyed"
    );
    let parked = reuse::all_parked(&fx.store);
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].machine, "a");

    // The next create reverts to the snapshot: same machine, same key.
    let again = fx.run(|env, c| reuse::create(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Running));
    assert_eq!(again, first, "same address and key");
    assert!(reuse::all_parked(&fx.store).is_empty());

    // A changed definition means a fresh machine with a new fingerprint.
    fx.run(|env, c| reuse::park(env, c, &[])).unwrap();
    let yml = std::fs::read_to_string(fx.dir.join("kvmdrive.yml")).unwrap();
    std::fs::write(
        fx.dir.join("kvmdrive.yml"),
        format!("{yml}    memory: 1024\n"),
    )
    .unwrap();
    fx.run(|env, c| reuse::create(env, c, &[])).unwrap();
    let newer = fx
        .hv
        .snapshot_info(&fx.domain("a"), reuse::PRISTINE)
        .unwrap()
        .unwrap();
    assert_ne!(
        reuse::fingerprint_of(&newer.description).map(str::to_owned),
        print
    );
    assert!(reuse::all_parked(&fx.store).is_empty());

    // gc removes parked machines for good, with their project's network.
    fx.run(|env, c| reuse::park(env, c, &[])).unwrap();
    let network = plan::network_name(&fx.project());
    assert!(
        fx.hv.network_exists(&network).unwrap(),
        "kept for parked machines"
    );
    let candidates = reuse::gc_candidates(&fx.store, None);
    assert_eq!(candidates.len(), 1);
    reuse::gc(&fx.hv, &fx.store, &fx.out, &candidates).unwrap();
    assert_eq!(fx.state("a"), None);
    assert!(!fx.hv.network_exists(&network).unwrap());
    assert!(reuse::all_parked(&fx.store).is_empty());
}

#[test]
fn purge_removes_parked_machines() {
    use kvmdrive::machine::reuse;
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a", "b"]);
    fx.run(|env, c| reuse::create(env, c, &[])).unwrap();
    fx.run(|env, c| reuse::park(env, c, &[])).unwrap();
    assert_eq!(reuse::all_parked(&fx.store).len(), 2);
    fx.run(|env, c| reuse::purge(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), None);
    assert_eq!(fx.state("b"), None);
    assert!(reuse::all_parked(&fx.store).is_empty());
    assert!(!fx
        .hv
        .network_exists(&plan::network_name(&fx.project()))
        .unwrap());
}

#[test]
fn push_and_pop_as_vagrant_and_save_force_replaces() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a"]);
    fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    let nothing = fx.run(|env, c| snapshot::pop(env, c, &[], true));
    assert!(
        matches!(nothing, Err(snapshot::SnapshotError::NothingPushed { .. })),
        "{nothing:?}"
    );

    let first = fx.run(|env, c| snapshot::push(env, c, &[])).unwrap();
    let second = fx.run(|env, c| snapshot::push(env, c, &[])).unwrap();
    assert!(first.starts_with(snapshot::PUSH_PREFIX) && first != second);
    let pushed = |fx: &common::driver::Fixture| -> Vec<String> {
        fx.run(snapshot::list)
            .unwrap()
            .into_iter()
            .map(|r| r.snapshot.name)
            .collect()
    };
    assert_eq!(pushed(&fx).len(), 2);
    // pop restores the latest push and deletes it; --no-delete keeps it.
    fx.run(|env, c| snapshot::pop(env, c, &[], true)).unwrap();
    assert_eq!(pushed(&fx), std::slice::from_ref(&first));
    fx.run(|env, c| snapshot::pop(env, c, &[], false)).unwrap();
    assert_eq!(pushed(&fx), std::slice::from_ref(&first));
    assert_eq!(fx.state("a"), Some(DomainState::Running));

    // save --force replaces a snapshot of the same name.
    fx.run(|env, c| snapshot::save(env, c, "s", &[], false))
        .unwrap();
    fx.run(|env, c| snapshot::save(env, c, "s", &[], true))
        .unwrap();
    assert_eq!(pushed(&fx), [first, "s".to_owned()]);
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
}
