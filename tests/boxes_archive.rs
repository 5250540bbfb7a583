//! `box add` of local `.box` files: formats told apart by magic bytes,
//! metadata v1 and v2, checksums, the no-op re-add, and every archive shape
//! that must be refused, each leaving the cache exactly as it was.

mod boxes_support;

use std::fs;
use std::path::{Path, PathBuf};

use boxes_support::*;
use kvmdrive::boxes::store::RECORD_FILE;
use kvmdrive::boxes::{add, AddRequest, BoxError, BoxStore};
use kvmdrive::output::Reporter;

fn reporter() -> Reporter {
    Reporter::new(true, 0)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn add_file(
    store: &BoxStore,
    path: &Path,
    name: &str,
) -> Result<kvmdrive::boxes::AddOutcome, BoxError> {
    add(
        store,
        &AddRequest {
            source: path.display().to_string(),
            name: Some(name.into()),
            ..Default::default()
        },
        &reporter(),
    )
}

#[test]
fn gzip_tar_and_zstd_boxes_are_recognised_by_content_not_name() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = BoxStore::new(home.path());
    // deliberately misleading names
    for (pack, file_name, box_name) in [
        (Pack::Gzip, "a.tar.zst", "t/gz"),
        (Pack::Tar, "b.tar.gz", "t/tar"),
        (Pack::Zstd, "c.box", "t/zst"),
    ] {
        let path = write(files.path(), file_name, &good_box(pack, "64M", 0));
        let out = add_file(&store, &path, box_name).unwrap_or_else(|e| panic!("{pack:?}: {e}"));
        assert!(out.added);
        let b = out.installed;
        assert_eq!(b.name, box_name);
        assert_eq!(b.version, "0");
        assert_eq!(
            b.virtual_size,
            64 << 20,
            "from qemu-img, not metadata's 1 GiB"
        );
        assert!(b.image.is_file());
        assert_eq!(
            b.dir,
            home.path()
                .join("boxes")
                .join(box_name.replace('/', "-VAGRANTSLASH-"))
                .join("0")
                .join(kvmdrive::boxes::catalog::host_arch())
                .join("libvirt")
        );
    }
    assert_eq!(tmp_files(home.path()), Vec::<PathBuf>::new());
}

#[test]
fn re_adding_the_same_file_is_a_no_op_and_a_different_one_needs_force() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = BoxStore::new(home.path());
    let first = write(files.path(), "one.box", &good_box(Pack::Gzip, "64M", 0));
    let out = add_file(&store, &first, "acme/web").unwrap();
    assert!(out.added);
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(out.installed.dir.join(RECORD_FILE)).unwrap()).unwrap();
    assert_eq!(record["sha256"], sha256_hex(&fs::read(&first).unwrap()));
    let image_mtime = fs::metadata(&out.installed.image)
        .unwrap()
        .modified()
        .unwrap();

    // same bytes under another path: still the same box, nothing rewritten
    let copy = write(files.path(), "copy.box", &fs::read(&first).unwrap());
    let again = add_file(&store, &copy, "acme/web").unwrap();
    assert!(!again.added);
    assert_eq!(again.installed, out.installed);
    assert_eq!(
        fs::metadata(&out.installed.image)
            .unwrap()
            .modified()
            .unwrap(),
        image_mtime
    );

    // different bytes: refused without --force, cache untouched
    let before = snapshot(&home.path().join("boxes"));
    let other = write(files.path(), "two.box", &good_box(Pack::Gzip, "128M", 0));
    let err = add_file(&store, &other, "acme/web").unwrap_err();
    assert!(matches!(err, BoxError::AlreadyExists { .. }), "{err}");
    assert!(err.hint().unwrap().contains("--force"));
    assert_nothing_new(home.path(), &before);

    let forced = add(
        &store,
        &AddRequest {
            source: other.display().to_string(),
            name: Some("acme/web".into()),
            force: true,
            ..Default::default()
        },
        &reporter(),
    )
    .unwrap();
    assert!(forced.added);
    assert_eq!(forced.installed.virtual_size, 128 << 20);
    assert_eq!(tmp_files(home.path()), Vec::<PathBuf>::new());
}

#[test]
fn an_exact_version_is_recorded_and_other_constraints_must_admit_zero() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = BoxStore::new(home.path());
    let path = write(files.path(), "x.box", &good_box(Pack::Gzip, "64M", 0));
    let req = |v: &str| AddRequest {
        source: path.display().to_string(),
        name: Some("v/box".into()),
        version: Some(v.into()),
        ..Default::default()
    };
    assert_eq!(
        add(&store, &req("1.2.3"), &reporter())
            .unwrap()
            .installed
            .version,
        "1.2.3"
    );
    assert_eq!(
        add(&store, &req(">= 0"), &reporter())
            .unwrap()
            .installed
            .version,
        "0"
    );
    let before = snapshot(&home.path().join("boxes"));
    let err = add(&store, &req(">= 1"), &reporter()).unwrap_err();
    assert!(matches!(err, BoxError::DirectVersion { .. }), "{err}");
    assert_nothing_new(home.path(), &before);
    assert!(matches!(
        add(&store, &req("=> 1"), &reporter()).unwrap_err(),
        BoxError::BadConstraint { .. }
    ));
}

#[test]
fn checksums_of_every_kind_are_verified() {
    use md5::Digest as _;
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = BoxStore::new(home.path());
    let bytes = good_box(Pack::Gzip, "64M", 0);
    let path = write(files.path(), "x.box", &bytes);
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let sums = [
        ("md5", hex(&md5::Md5::digest(&bytes))),
        ("sha1", hex(&sha1::Sha1::digest(&bytes))),
        ("sha256", hex(&sha2::Sha256::digest(&bytes))),
        ("sha384", hex(&sha2::Sha384::digest(&bytes))),
        ("sha512", hex(&sha2::Sha512::digest(&bytes))),
    ];
    for (i, (kind, sum)) in sums.iter().enumerate() {
        let req = AddRequest {
            source: path.display().to_string(),
            name: Some(format!("sum/{kind}")),
            checksum: Some(sum.clone()),
            checksum_type: Some(kind.to_string()),
            ..Default::default()
        };
        assert!(add(&store, &req, &reporter()).unwrap().added, "{kind}");
        // one wrong digit: refused, nothing added
        let before = snapshot(&home.path().join("boxes"));
        let mut wrong = sum.clone();
        wrong.replace_range(i..i + 1, if &sum[i..i + 1] == "0" { "1" } else { "0" });
        let err = add(
            &store,
            &AddRequest {
                name: Some(format!("sum/{kind}-wrong")),
                checksum: Some(wrong),
                ..req
            },
            &reporter(),
        )
        .unwrap_err();
        match &err {
            BoxError::ChecksumMismatch {
                kind: k, actual, ..
            } => {
                assert_eq!(k, kind);
                assert_eq!(actual, sum);
            }
            other => panic!("{kind}: {other}"),
        }
        assert_nothing_new(home.path(), &before);
        assert!(path.is_file(), "a local source file is never deleted");
    }
}

#[test]
fn metadata_v2_with_two_disks() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = BoxStore::new(home.path());
    let meta = r#"{"provider":"libvirt","disks":[{"path":"disk-a.qcow2","name":"vda"},{"path":"data/disk-b.qcow2"}]}"#;
    let bytes = tar_of(
        &[
            Entry::File("metadata.json".into(), meta.as_bytes().to_vec()),
            Entry::Dir("data".into()),
            Entry::File("disk-a.qcow2".into(), qcow2("96M")),
            Entry::File("data/disk-b.qcow2".into(), qcow2("32M")),
        ],
        Pack::Gzip,
    );
    let path = write(files.path(), "v2.box", &bytes);
    let b = add_file(&store, &path, "multi/disk").unwrap().installed;
    assert_eq!(b.image, b.dir.join("disk-a.qcow2"));
    assert_eq!(b.virtual_size, 96 << 20);
    let disks = b.disks().unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0].name.as_deref(), Some("vda"));
    assert_eq!(disks[1].path, PathBuf::from("data/disk-b.qcow2"));
}

/// Each hostile or broken box, and a word its error must contain.
fn refused_shapes() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let meta = || Entry::File("metadata.json".into(), META_V1.as_bytes().to_vec());
    let img = || Entry::File("box.img".into(), qcow2("16M"));
    vec![
        (
            "absolute path",
            tar_of(
                &[
                    meta(),
                    img(),
                    Entry::File("/tmp/kvmdrive-evil".into(), b"x".to_vec()),
                ],
                Pack::Gzip,
            ),
            "absolute",
        ),
        (
            "dot-dot path",
            tar_of(
                &[meta(), img(), Entry::File("../evil".into(), b"x".to_vec())],
                Pack::Gzip,
            ),
            "..",
        ),
        (
            "symlink outside",
            tar_of(
                &[
                    meta(),
                    Entry::Symlink("box.img".into(), "/etc/shadow".into()),
                ],
                Pack::Gzip,
            ),
            "outside",
        ),
        (
            "relative symlink outside",
            tar_of(
                &[
                    meta(),
                    img(),
                    Entry::Symlink("up".into(), "../../etc".into()),
                ],
                Pack::Tar,
            ),
            "outside",
        ),
        (
            "hard link outside",
            tar_of(
                &[
                    meta(),
                    Entry::HardLink("box.img".into(), "/etc/passwd".into()),
                ],
                Pack::Gzip,
            ),
            "absolute",
        ),
        (
            "hard link with dot-dot",
            tar_of(
                &[meta(), Entry::HardLink("box.img".into(), "../x".into())],
                Pack::Zstd,
            ),
            "..",
        ),
        (
            "device file",
            tar_of(
                &[meta(), img(), Entry::CharDevice("null".into())],
                Pack::Gzip,
            ),
            "device",
        ),
        (
            "fifo",
            tar_of(&[meta(), img(), Entry::Fifo("pipe".into())], Pack::Gzip),
            "FIFO",
        ),
        ("no metadata", tar_of(&[img()], Pack::Gzip), "metadata.json"),
        ("no image", tar_of(&[meta()], Pack::Gzip), "box.img"),
        (
            "image is not qcow2",
            tar_of(
                &[meta(), Entry::File("box.img".into(), vec![0u8; 1 << 20])],
                Pack::Gzip,
            ),
            "qcow2",
        ),
        (
            "metadata says raw",
            tar_of(
                &[
                    Entry::File(
                        "metadata.json".into(),
                        br#"{"provider":"libvirt","format":"raw","virtual_size":1}"#.to_vec(),
                    ),
                    img(),
                ],
                Pack::Gzip,
            ),
            "raw",
        ),
        (
            "backing file",
            tar_of(
                &[
                    meta(),
                    Entry::File("box.img".into(), qcow2_with_backing("/etc/hostname")),
                ],
                Pack::Gzip,
            ),
            "backing file",
        ),
        (
            "image is a symlink inside",
            tar_of(
                &[
                    meta(),
                    Entry::File("real.img".into(), qcow2("16M")),
                    Entry::Symlink("box.img".into(), "real.img".into()),
                ],
                Pack::Gzip,
            ),
            "regular file",
        ),
        (
            "another provider",
            tar_of(
                &[
                    Entry::File(
                        "metadata.json".into(),
                        br#"{"provider":"virtualbox"}"#.to_vec(),
                    ),
                    Entry::File("box.ovf".into(), b"<xml/>".to_vec()),
                ],
                Pack::Gzip,
            ),
            "virtualbox",
        ),
        (
            "v2 disk outside",
            tar_of(
                &[
                    Entry::File(
                        "metadata.json".into(),
                        br#"{"provider":"libvirt","disks":[{"path":"../../etc/passwd"}]}"#.to_vec(),
                    ),
                    img(),
                ],
                Pack::Gzip,
            ),
            "relative path",
        ),
        (
            "not an archive",
            b"hello, I am text, not a box".repeat(40),
            "not a box",
        ),
        ("bzip2", b"BZh91AY&SY".repeat(60), "bzip2"),
        (
            "truncated gzip",
            good_box(Pack::Gzip, "16M", 0)[..300].to_vec(),
            "archive",
        ),
    ]
}

#[test]
fn refused_archives_leave_the_cache_untouched() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = BoxStore::new(home.path());
    // a box already cached, to prove it survives every failure
    let ok = write(files.path(), "ok.box", &good_box(Pack::Gzip, "64M", 0));
    add_file(&store, &ok, "keep/me").unwrap();
    let before = snapshot(&home.path().join("boxes"));
    for (what, bytes, needle) in refused_shapes() {
        let path = write(files.path(), "bad.box", &bytes);
        let err = add_file(&store, &path, "bad/box").expect_err(what);
        let text = err.to_string();
        assert!(
            text.contains(needle),
            "{what}: `{text}` should mention `{needle}`"
        );
        assert!(err.hint().is_some(), "{what}: no hint for `{text}`");
        assert_nothing_new(home.path(), &before);
        assert!(
            !Path::new("/tmp/kvmdrive-evil").exists(),
            "{what} wrote outside"
        );
    }
    assert!(!files.path().parent().unwrap().join("evil").exists());
}

#[test]
fn vagrant_boxes_are_used_in_place() {
    let home = tempfile::tempdir().unwrap();
    let vagrant = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    // unpack a good box by hand into Vagrant's pre-2.4 layout (no arch level)
    let dir = vagrant
        .path()
        .join("boxes/acme-VAGRANTSLASH-old/1.0.0/libvirt");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("metadata.json"), META_V1).unwrap();
    fs::write(dir.join("box.img"), qcow2("80M")).unwrap();
    let store = BoxStore::new(home.path()).with_vagrant_home(vagrant.path());
    let spec = kvmdrive::boxes::BoxSpec {
        name: "acme/old".into(),
        version: Some("~> 1.0".into()),
        ..Default::default()
    };
    let b = kvmdrive::boxes::ensure(&store, &spec, &reporter()).unwrap();
    assert_eq!(b.dir, dir);
    assert_eq!(b.virtual_size, 80 << 20);
    assert!(
        !home.path().join("boxes").exists(),
        "nothing copied into kvmdrive's cache"
    );

    // `box add` of that same version from a catalog file uses Vagrant's copy too
    let box_path = write(files.path(), "old.box", &good_box(Pack::Gzip, "64M", 0));
    let catalog = serde_json::json!({"name": "acme/old", "versions": [{"version": "1.0.0", "providers": [
        {"name": "libvirt", "url": format!("file://{}", box_path.display())}]}]});
    let cat_path = write(files.path(), "old.json", catalog.to_string().as_bytes());
    let out = add(
        &store,
        &AddRequest {
            source: cat_path.display().to_string(),
            ..Default::default()
        },
        &reporter(),
    )
    .unwrap();
    assert!(!out.added);
    assert_eq!(out.installed.dir, dir);
}

#[test]
fn a_file_changed_in_place_is_noticed_even_at_the_same_size() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = BoxStore::new(home.path());
    let mut bytes = good_box(Pack::Tar, "64M", 4096);
    let path = write(files.path(), "same.box", &bytes);
    assert!(add_file(&store, &path, "in/place").unwrap().added);
    assert!(
        !add_file(&store, &path, "in/place").unwrap().added,
        "unchanged: no-op"
    );
    // flip a byte of the padding file (the last file in the tar): same size, other content
    let n = bytes.len();
    bytes[n - 1024 - 100] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&path, &bytes).unwrap();
    // noticed, and an update of the box (the same path), not a conflict
    let out = add_file(&store, &path, "in/place").unwrap();
    assert!(out.added && out.updated);
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(out.installed.dir.join("kvmdrive-source.json")).unwrap())
            .unwrap();
    assert_eq!(record["sha256"], sha256_hex(&bytes));
    assert!(!add_file(&store, &path, "in/place").unwrap().added);
}
