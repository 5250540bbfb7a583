//! Tier 2: the lifecycle against libvirt's `test:///default` driver (no
//! daemon, no guest). Checks what `up`, `halt` and `destroy` do to libvirt's
//! objects: domains, overlay volumes, the network and its DHCP reservations.

mod common;

use common::driver::{fixture, names, Fixture, LIBVIRT};

use std::path::Path;

use kvmdrive::machine::lifecycle;
use kvmdrive::machine::netplan;
use kvmdrive::machine::plan;
use kvmdrive::virt::hypervisor::DomainState;
use kvmdrive::virt::storage::POOL_NAME;

#[test]
fn up_makes_running_linked_clones_with_reserved_addresses() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["web", "db"]);
    let records = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(fx.state("web"), Some(DomainState::Running));
    assert_eq!(fx.state("db"), Some(DomainState::Running));
    assert!(fx.overlay_exists("web") && fx.overlay_exists("db"));

    // The domain is TCG, its disk an overlay in kvmdrive's pool.
    let project = fx.project();
    let xml = fx
        .hv
        .domain_xml(&plan::domain_name(&project, "web"))
        .unwrap()
        .unwrap();
    assert!(
        xml.contains("type='qemu'") || xml.contains("type=\"qemu\""),
        "{xml}"
    );
    assert!(xml.contains(&fx.pool_dir.display().to_string()), "{xml}");

    // Addresses were reserved before boot, one per MAC, and recorded.
    let net = fx
        .hv
        .network_xml(&plan::network_name(&project))
        .unwrap()
        .unwrap();
    let hosts = netplan::read_network(&net).hosts;
    assert_eq!(hosts.len(), 2);
    for r in &records {
        assert!(
            hosts
                .iter()
                .any(|h| h.mac == r.mac && h.ip.to_string() == r.address),
            "{r:?}"
        );
        assert_eq!(project.record(&r.name).unwrap().as_ref(), Some(r));
    }
    assert_ne!(records[0].address, records[1].address);

    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
}

#[test]
fn up_is_idempotent_and_restarts_stopped_machines() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a"]);
    let first = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    let again = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    assert_eq!(first, again, "a second up changes nothing");

    fx.run(|env, c| lifecycle::halt(env, c, &[], false))
        .unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Shutoff));
    let status = lifecycle::status(Some(&fx.hv), &fx.project(), &fx.config()).unwrap();
    assert_eq!(status[0].state, "shutoff");

    let restarted = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Running));
    // `halt --force` powers off at once; up starts the machine again.
    fx.run(|env, c| lifecycle::halt(env, c, &[], true)).unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Shutoff));
    fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    assert_eq!(fx.state("a"), Some(DomainState::Running));
    assert_eq!(
        restarted[0].address, first[0].address,
        "the address is kept"
    );
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
}

#[test]
fn destroy_removes_everything_and_then_has_nothing_to_do() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a", "b"]);
    fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    let project = fx.project();
    let network = plan::network_name(&project);

    // Destroying one machine keeps the network for the other.
    fx.run(|env, c| lifecycle::destroy(env, c, &names(&["a"])))
        .unwrap();
    assert_eq!(fx.state("a"), None);
    assert!(!fx.overlay_exists("a"));
    assert_eq!(fx.state("b"), Some(DomainState::Running));
    let hosts = netplan::read_network(&fx.hv.network_xml(&network).unwrap().unwrap()).hosts;
    assert_eq!(hosts.len(), 1, "a's reservation is gone");
    assert!(project.record("a").unwrap().is_none());

    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
    assert_eq!(fx.state("b"), None);
    assert!(!fx.overlay_exists("b"));
    assert!(!fx.hv.network_exists(&network).unwrap());
    assert!(!project.state_dir.exists(), ".kvmdrive is removed");

    // Nothing left: destroy still succeeds.
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
}

#[test]
fn destroy_finds_machines_removed_from_the_config() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a", "gone"]);
    fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    let yml = std::fs::read_to_string(fx.dir.join("kvmdrive.yml")).unwrap();
    std::fs::write(
        fx.dir.join("kvmdrive.yml"),
        yml.replace("  - name: gone\n", ""),
    )
    .unwrap();
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
    assert_eq!(fx.state("gone"), None);
    assert!(!fx
        .hv
        .network_exists(&plan::network_name(&fx.project()))
        .unwrap());
}

#[test]
fn a_failed_up_leaves_nothing_behind() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a"]);
    // A box that does not exist: the run fails before any machine is made.
    let yml = std::fs::read_to_string(fx.dir.join("kvmdrive.yml")).unwrap();
    let broken = yml.replace("  box: ", "  box: /nonexistent/");
    std::fs::write(fx.dir.join("kvmdrive.yml"), broken).unwrap();
    let err = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap_err();
    assert!(err.to_string().contains("nonexistent"), "{err}");
    assert_eq!(fx.state("a"), None);
    assert!(!fx.project().state_dir.exists());
    assert!(!fx
        .hv
        .network_exists(&plan::network_name(&fx.project()))
        .unwrap());
}

#[test]
fn unknown_machine_names_are_refused_before_anything_happens() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a"]);
    let err = fx
        .run(|env, c| lifecycle::up(env, c, &names(&["nope"])))
        .unwrap_err();
    assert!(err.to_string().contains("no machine named `nope`"), "{err}");
    assert!(!fx.project().state_dir.exists());
}

#[test]
fn status_without_state_does_not_need_libvirt() {
    let fx = fixture(&["a"]);
    let list = lifecycle::status(None, &fx.project(), &fx.config()).unwrap();
    assert_eq!(list[0].state, "not_created");
    assert!(list[0].address.is_none());
    let _ = Path::new("");
}

/// Extra-disk volumes of a domain (`machine::hardware` names them).
fn extra_disks(fx: &Fixture, machine: &str) -> Vec<String> {
    let domain = plan::domain_name(&fx.project(), machine);
    let prefix = kvmdrive::machine::hardware::disk_volume_prefix(&domain);
    let mut v: Vec<String> = fx
        .hv
        .volume_names(POOL_NAME)
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn extra_disks_come_and_go_with_their_machine() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a", "gone"]);
    let yml = std::fs::read_to_string(fx.dir.join("kvmdrive.yml")).unwrap();
    let yml = yml.replace(
        "  accel: tcg\n",
        "  accel: tcg\n  disks: [{size: 1G, name: data}, {size: 2G, bus: scsi, format: raw}]\n  machine_type: q35\n  tpm: true\n  guest_agent: true\n",
    );
    std::fs::write(fx.dir.join("kvmdrive.yml"), &yml).unwrap();
    fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    let domain = plan::domain_name(&fx.project(), "a");
    assert_eq!(
        extra_disks(&fx, "a"),
        [
            format!("{domain}.disk-data.qcow2"),
            format!("{domain}.disk-disk2.raw")
        ]
    );
    let xml = fx.hv.domain_xml(&domain).unwrap().unwrap();
    assert!(
        xml.contains("dev='vdb'") && xml.contains("dev='sda'"),
        "{xml}"
    );
    // A machine removed from the config loses its disks on destroy too.
    std::fs::write(
        fx.dir.join("kvmdrive.yml"),
        yml.replace("  - name: gone\n", ""),
    )
    .unwrap();
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
    assert!(extra_disks(&fx, "a").is_empty());
    assert!(extra_disks(&fx, "gone").is_empty());
    assert!(!fx.overlay_exists("gone"));
}

#[test]
fn a_foreign_architecture_is_refused_before_anything_is_made() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a"]);
    let foreign = if std::env::consts::ARCH == "aarch64" {
        "amd64"
    } else {
        "arm64"
    };
    let yml = std::fs::read_to_string(fx.dir.join("kvmdrive.yml")).unwrap();
    let yml = yml.replace(
        "  accel: tcg\n",
        &format!("  accel: tcg\n  box_architecture: {foreign}\n"),
    );
    std::fs::write(fx.dir.join("kvmdrive.yml"), yml).unwrap();
    let err = fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap_err();
    assert!(err.to_string().contains(foreign), "{err}");
    assert!(err.hint().unwrap().contains(foreign));
    assert_eq!(fx.state("a"), None);
    assert!(!fx.overlay_exists("a"));
    assert!(!fx.project().state_dir.exists());
    assert!(!fx
        .hv
        .network_exists(&plan::network_name(&fx.project()))
        .unwrap());
}

/// A v2 box with two disks (64 MiB and 32 MiB qcow2 images).
fn two_disk_box(dir: &Path) -> std::path::PathBuf {
    let work = dir.join("box2-src");
    std::fs::create_dir_all(&work).unwrap();
    for (file, size) in [("box.img", "64M"), ("data.img", "32M")] {
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(work.join(file))
            .arg(size)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    std::fs::write(
        work.join("metadata.json"),
        r#"{"provider":"libvirt","format":"qcow2","disks":[{"path":"box.img"},{"path":"data.img"}]}"#,
    )
    .unwrap();
    let file = dir.join("two-disks.box");
    let ok = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&file)
        .arg("-C")
        .arg(&work)
        .args(["metadata.json", "box.img", "data.img"])
        .status()
        .unwrap();
    assert!(ok.success());
    file
}

#[test]
fn every_disk_of_a_v2_box_is_attached_before_extra_disks() {
    let _g = LIBVIRT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture(&["a"]);
    let the_box = two_disk_box(fx.dir.parent().unwrap());
    std::fs::write(
        fx.dir.join("kvmdrive.yml"),
        format!(
            "defaults:\n  box: {}\n  accel: tcg\n  disks: [{{size: 1G}}]\nmachines:\n  - name: a\n",
            the_box.display()
        ),
    )
    .unwrap();
    fx.run(|env, c| lifecycle::up(env, c, &[])).unwrap();
    let domain = plan::domain_name(&fx.project(), "a");
    assert_eq!(
        extra_disks(&fx, "a"),
        [
            format!("{domain}.disk-disk1.qcow2"),
            format!("{domain}.disk.box2.qcow2")
        ]
    );
    let xml = fx.hv.domain_xml(&domain).unwrap().unwrap();
    let box2 = xml
        .find(".disk.box2.qcow2")
        .expect("second box disk attached");
    let vdb = xml.find("dev='vdb'").unwrap();
    let vdc = xml.find("dev='vdc'").unwrap();
    assert!(box2 < vdb && vdb < vdc, "{xml}");
    fx.run(|env, c| lifecycle::destroy(env, c, &[])).unwrap();
    assert!(extra_disks(&fx, "a").is_empty());
}
