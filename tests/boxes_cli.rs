//! `kvmdrive box ...` as a user runs it: add/list/remove, prune keeping
//! what the project uses, index + add by `owner/name` from a static server,
//! outdated, proxies from the environment, and two processes adding the same
//! box at once.

mod boxes_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use boxes_support::*;

struct Env {
    home: tempfile::TempDir,
    vagrant: tempfile::TempDir,
    files: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
            vagrant: tempfile::tempdir().unwrap(),
            files: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kvmdrive"));
        c.args(args)
            .env("KVMDRIVE_HOME", self.home.path())
            .env("VAGRANT_HOME", self.vagrant.path())
            .env("VAGRANT_SERVER_URL", "http://127.0.0.1:1")
            .current_dir(self.files.path());
        for v in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
            "VAGRANT_CLOUD_TOKEN",
            "KVMDRIVE_CATALOG_TOKEN",
        ] {
            c.env_remove(v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.files.path().join(name);
        fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }

    fn boxes(&self) -> PathBuf {
        self.home.path().join("boxes")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn add_list_remove() {
    let env = Env::new();
    let one = env.file("one.box", &good_box(Pack::Gzip, "64M", 0));
    let out = env.ok(&["box", "add", &one, "--name", "acme/web"]);
    assert!(out.contains("added"), "{out}");
    let out = env.ok(&["box", "add", &one, "--name", "acme/web"]);
    assert!(out.contains("already cached"), "{out}");

    let other = env.file("two.box", &good_box(Pack::Zstd, "32M", 0));
    let before = snapshot(&env.boxes());
    let o = env.run(&["box", "add", &other, "--name", "acme/web"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("hint: use --force"), "{}", stderr(&o));
    assert_eq!(snapshot(&env.boxes()), before);

    env.ok(&[
        "box",
        "add",
        &other,
        "--name",
        "acme/web",
        "--box-version",
        "2.0",
    ]);
    let list = env.json(&["box", "list"]);
    let versions: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["0", "2.0"]);
    assert_eq!(list[0]["origin"], "kvmdrive");
    assert_eq!(list[0]["provider"], "libvirt");
    assert!(list[0]["size"].as_u64().unwrap() > 0);
    assert!(env
        .ok(&["box", "list"])
        .contains("acme/web (libvirt, 2.0, ("));

    let o = env.run(&["box", "remove", "acme/web"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("several versions"), "{}", stderr(&o));
    let removed = env.json(&["box", "remove", "acme/web", "--box-version", "0"]);
    assert_eq!(removed["removed"][0]["version"], "0");
    env.ok(&["box", "remove", "acme/web", "--all"]);
    assert_eq!(env.json(&["box", "list"]), serde_json::json!([]));
    assert!(!env.boxes().join("acme-VAGRANTSLASH-web").exists());
    let o = env.run(&["box", "remove", "acme/web"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_changed_file_at_the_same_path_is_an_update_not_a_conflict() {
    let env = Env::new();
    let a = good_box(Pack::Gzip, "64M", 0);
    let b = good_box(Pack::Gzip, "64M", 4096);
    let record = || -> serde_json::Value {
        let dir = env.boxes().join("my/0").join(
            fs::read_dir(env.boxes().join("my/0"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name(),
        );
        serde_json::from_slice(&fs::read(dir.join("libvirt/kvmdrive-source.json")).unwrap())
            .unwrap()
    };
    env.file("my.box", &a);
    let v = env.json(&["box", "add", "my.box", "--name", "my"]);
    assert_eq!(
        (v["added"].as_bool(), v["updated"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(record()["sha256"], sha256_hex(&a));

    // Rebuilt at the same path: no --force needed, one line says so.
    env.file("my.box", &b);
    let o = env.run(&["box", "add", "my.box", "--name", "my"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.contains("changed since it was added"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        said,
        ["box ./my.box changed since it was added: using the new content"]
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("box my 0 ("),
        "{o:?}"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(") updated: "),
        "{o:?}"
    );
    assert_eq!(record()["sha256"], sha256_hex(&b));
    assert_eq!(env.json(&["box", "list"]).as_array().unwrap().len(), 1);
    assert_eq!(tmp_files(env.home.path()), Vec::<PathBuf>::new());

    // Unchanged now; touching it keeps it the same box.
    let v = env.json(&["box", "add", "my.box", "--name", "my"]);
    assert_eq!(v["added"], false);
    let f = fs::File::options()
        .write(true)
        .open(env.files.path().join("my.box"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let v = env.json(&["box", "add", "my.box", "--name", "my"]);
    assert_eq!(
        (v["added"].as_bool(), v["updated"].as_bool()),
        (Some(false), Some(false))
    );
    let mtime = fs::metadata(env.files.path().join("my.box"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    assert_eq!(
        record()["source_mtime_ns"].as_u64().map(u128::from),
        Some(mtime),
        "the record learns the new time: no rehash next time"
    );

    // Another file for the same name is still a conflict.
    let other = env.file("other.box", &a);
    let before = snapshot(&env.boxes());
    let o = env.run(&["box", "add", &other, "--name", "my"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("hint: use --force"), "{}", stderr(&o));
    assert_eq!(snapshot(&env.boxes()), before);
}

#[test]
fn json_add_reports_the_box_and_nothing_else_on_stdout() {
    let env = Env::new();
    let server = TestServer::start();
    let bytes = good_box(Pack::Gzip, "64M", 0);
    server.route("/j.box", Route::bytes(bytes.clone()));
    let v = env.json(&["box", "add", &server.url("/j.box"), "--name", "j/box"]);
    assert_eq!(v["name"], "j/box");
    assert_eq!(v["added"], true);
    assert_eq!(v["virtual_size"], 64u64 << 20);
    assert_eq!(v["download"]["bytes"], bytes.len());
    assert!(v["download"]["seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn prune_keeps_the_newest_and_what_the_project_uses() {
    let env = Env::new();
    let bytes = good_box(Pack::Gzip, "32M", 0);
    let f = env.file("b.box", &bytes);
    for v in ["1.0", "1.1", "2.0"] {
        env.ok(&["box", "add", &f, "--name", "p/box", "--box-version", v]);
    }
    for v in ["1.0", "3.0"] {
        env.ok(&["box", "add", &f, "--name", "q/box", "--box-version", v]);
    }
    let project = tempfile::tempdir().unwrap();
    fs::write(
        project.path().join("kvmdrive.yml"),
        "machines:\n  - name: web\n    box: q/box\n    box_version: \"< 2\"\n",
    )
    .unwrap();
    // machine state that records the image of p/box 1.0
    let p10 = env
        .boxes()
        .join("p-VAGRANTSLASH-box/1.0")
        .join(kvmdrive::boxes::catalog::host_arch())
        .join("libvirt");
    fs::create_dir_all(project.path().join(".kvmdrive/db")).unwrap();
    fs::write(
        project.path().join(".kvmdrive/db/state.json"),
        format!("{{\"backing\": \"{}/box.img\"}}", p10.display()),
    )
    .unwrap();
    let dir = project.path().to_str().unwrap();

    let before = snapshot(&env.boxes());
    let dry = env.json(&["-C", dir, "box", "prune", "--dry-run"]);
    assert_eq!(snapshot(&env.boxes()), before, "--dry-run changes nothing");
    assert_eq!(
        dry["removed"],
        serde_json::json!([format!(
            "p/box 1.1 ({})",
            kvmdrive::boxes::catalog::host_arch()
        )])
    );

    let report = env.json(&["-C", dir, "box", "prune"]);
    assert_eq!(report["removed"].as_array().unwrap().len(), 1);
    let kept: Vec<String> = report["kept_in_use"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept
        .iter()
        .any(|k| k.starts_with("p/box 1.0") && k.contains("state.json")));
    assert!(kept
        .iter()
        .any(|k| k.starts_with("q/box 1.0") && k.contains("machine `web`")));
    let left: Vec<String> = env
        .json(&["box", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            format!(
                "{} {}",
                b["name"].as_str().unwrap(),
                b["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(left, ["p/box 1.0", "p/box 2.0", "q/box 1.0", "q/box 3.0"]);

    // remove refuses a box the project uses, unless forced
    let o = env.run(&["-C", dir, "box", "remove", "q/box", "--box-version", "1.0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("used by machine `web`"),
        "{}",
        stderr(&o)
    );
    env.ok(&[
        "-C",
        dir,
        "box",
        "remove",
        "q/box",
        "--box-version",
        "1.0",
        "--force",
    ]);
}

/// Serves every file of `dir` (recursively) at `/rel/path`.
fn serve_dir(server: &TestServer, dir: &Path) {
    for (rel, _) in snapshot(dir) {
        let p = dir.join(&rel);
        if p.is_file() {
            // static servers send what they guess; a catalog without extension is octet-stream
            server.route(
                &format!("/{}", rel.display()),
                Route::bytes(fs::read(&p).unwrap()),
            );
        }
    }
}

#[test]
fn index_a_directory_and_add_by_owner_name_then_outdated() {
    let env = Env::new();
    let server = TestServer::start();
    let site = tempfile::tempdir().unwrap();
    fs::write(
        site.path().join("web-1.0.0-amd64.box"),
        good_box(Pack::Gzip, "32M", 0),
    )
    .unwrap();
    fs::write(
        site.path().join("web-1.1.0.box"),
        good_box(Pack::Zstd, "48M", 0),
    )
    .unwrap();
    fs::write(
        site.path().join("web-9.0.0-arm64.box"),
        good_box(Pack::Gzip, "16M", 0),
    )
    .unwrap();
    fs::write(site.path().join("notes.box"), b"not a box").unwrap();
    let base = server.url("/");
    let idx = env.json(&[
        "box",
        "index",
        site.path().to_str().unwrap(),
        "--base-url",
        &base,
        "--name",
        "team/web",
        "--architecture",
        "amd64",
    ]);
    assert_eq!(idx["catalogs"][0]["name"], "team/web");
    assert_eq!(
        idx["catalogs"][0]["versions"],
        serde_json::json!(["9.0.0", "1.1.0", "1.0.0"])
    );
    assert_eq!(idx["skipped"].as_array().unwrap().len(), 1, "{idx}");
    let catalog: serde_json::Value =
        serde_json::from_slice(&fs::read(site.path().join("team/web.json")).unwrap()).unwrap();
    let v110 = &catalog["versions"][1];
    assert_eq!(v110["providers"][0]["architecture"], "amd64");
    assert_eq!(v110["providers"][0]["url"], server.url("/web-1.1.0.box"));
    assert_eq!(
        v110["providers"][0]["checksum"],
        sha256_hex(&fs::read(site.path().join("web-1.1.0.box")).unwrap())
    );
    assert_eq!(
        fs::read(site.path().join("team/web")).unwrap(),
        fs::read(site.path().join("team/web.json")).unwrap()
    );
    serve_dir(&server, site.path());

    let added = env.json_with_server(
        &server,
        &[
            "box",
            "add",
            "team/web",
            "--box-version",
            "~> 1.0",
            "--architecture",
            "amd64",
        ],
    );
    assert_eq!(added["version"], "1.1.0");
    assert_eq!(added["architecture"], "amd64");

    let out = env.json_with_server(&server, &["box", "outdated"]);
    assert_eq!(out[0]["current"], "1.1.0");
    assert_eq!(out[0]["outdated"], false, "9.0.0 is arm64 only: {out}");

    // a new amd64 release appears
    fs::write(
        site.path().join("web-1.2.0-amd64.box"),
        good_box(Pack::Gzip, "32M", 0),
    )
    .unwrap();
    env.ok(&[
        "box",
        "index",
        site.path().to_str().unwrap(),
        "--base-url",
        &base,
        "--name",
        "team/web",
    ]);
    serve_dir(&server, site.path());
    let out = env.json_with_server(&server, &["box", "outdated", "team/web"]);
    assert_eq!(out[0]["latest"], "1.2.0");
    assert_eq!(out[0]["outdated"], true);
}

impl Env {
    fn json_with_server(&self, server: &TestServer, args: &[&str]) -> serde_json::Value {
        let mut c = self.cmd(&[&["--json"], args].concat());
        c.env("VAGRANT_SERVER_URL", server.base());
        let out = c.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[test]
fn proxies_come_from_the_environment() {
    let env = Env::new();
    let proxy = TestServer::start();
    let bytes = good_box(Pack::Gzip, "32M", 0);
    proxy.route("/p.box", Route::bytes(bytes.clone()));
    let out = env
        .cmd(&[
            "box",
            "add",
            "http://boxes.example.invalid/p.box",
            "--name",
            "prox/box",
        ])
        .env("HTTP_PROXY", proxy.base())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = proxy.seen_for("/p.box");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].target, "http://boxes.example.invalid/p.box",
        "an absolute-form proxy request"
    );

    // NO_PROXY bypasses a proxy that does not even exist
    let direct = TestServer::start();
    direct.route("/d.box", Route::bytes(bytes));
    let out = env
        .cmd(&["box", "add", &direct.url("/d.box"), "--name", "direct/box"])
        .env("HTTP_PROXY", "http://127.0.0.1:1")
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(direct.seen_for("/d.box").len(), 1);
}

#[test]
fn two_processes_adding_the_same_box_download_it_once() {
    let env = Env::new();
    let server = TestServer::start();
    let bytes = good_box(Pack::Gzip, "32M", 3 << 20);
    server.route(
        "/two.box",
        Route::bytes(bytes.clone()).throttled(Duration::from_millis(15)),
    );
    let cat = serde_json::json!({"name": "two/procs", "versions": [{"version": "1.0", "providers": [
        {"name": "libvirt", "url": server.url("/two.box"), "checksum": sha256_hex(&bytes)}]}]});
    server.route("/two.json", Route::json(cat.to_string()));
    let url = server.url("/two.json");
    let children: Vec<_> = (0..2)
        .map(|_| {
            env.cmd(&["--json", "box", "add", &url])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut added = Vec::new();
    for o in &outs {
        assert!(o.status.success(), "{}", stderr(o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        added.push(v["added"].as_bool().unwrap());
    }
    added.sort();
    assert_eq!(added, [false, true]);
    assert_eq!(
        server.seen_for("/two.box").len(),
        1,
        "one download for two processes"
    );
    assert!(outs
        .iter()
        .any(|o| stderr(o).contains("another kvmdrive was adding it")));
}

/// `box prune` sees the machines of every registered project (Molecule and
/// `--state-dir` ones too), by the box each machine record names; a record
/// from before records named their box counts by the old byte search.
#[test]
fn prune_keeps_the_boxes_of_registered_projects() {
    let env = Env::new();
    let bytes = good_box(Pack::Gzip, "32M", 0);
    let f = env.file("b.box", &bytes);
    for v in ["1.0", "1.1", "1.2", "2.0"] {
        env.ok(&["box", "add", &f, "--name", "p/box", "--box-version", v]);
    }
    let dir_of = |v: &str| {
        env.boxes()
            .join("p-VAGRANTSLASH-box")
            .join(v)
            .join(kvmdrive::boxes::catalog::host_arch())
            .join("libvirt")
    };
    // a Molecule scenario's state dir: a record naming p/box 1.1
    let molecule = tempfile::tempdir().unwrap();
    fs::create_dir_all(molecule.path().join("machines/web")).unwrap();
    fs::write(
        molecule.path().join("machines/web/machine.json"),
        serde_json::json!({"name": "web", "box_dir": dir_of("1.1")}).to_string(),
    )
    .unwrap();
    // an older record without `box_dir`, in a state dir that mentions p/box 1.0
    let old = tempfile::tempdir().unwrap();
    fs::create_dir_all(old.path().join("machines/db")).unwrap();
    fs::write(
        old.path().join("machines/db/machine.json"),
        format!(
            "{{\"name\": \"db\", \"backing\": \"{}/box.img\"}}",
            dir_of("1.0").display()
        ),
    )
    .unwrap();
    let gone = tempfile::tempdir().unwrap().path().to_owned();
    fs::write(
        env.home.path().join("projects"),
        format!(
            "{}\n{}\n{}\n",
            molecule.path().display(),
            gone.display(),
            old.path().display()
        ),
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let report = env.json(&["-C", elsewhere.path().to_str().unwrap(), "box", "prune"]);
    let removed: Vec<&str> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(removed.len(), 1, "{report}");
    assert!(removed[0].starts_with("p/box 1.2"), "{report}");
    let kept = report["kept_in_use"].to_string();
    assert!(
        kept.contains("p/box 1.1") && kept.contains("machine `web`"),
        "{kept}"
    );
    assert!(kept.contains("p/box 1.0"), "{kept}");
    let registry = fs::read_to_string(env.home.path().join("projects")).unwrap();
    assert!(
        !registry.contains(gone.to_str().unwrap()),
        "gone dirs are dropped: {registry}"
    );
}
