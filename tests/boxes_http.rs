//! Boxes over HTTP, against a server on 127.0.0.1: catalogs (by URL and by
//! `owner/name`), version choice, redirects, Range and no-Range servers that
//! cut the connection, resume across runs, retries, wrong checksums, 404,
//! HTML instead of a catalog, tokens, and concurrent adds. After every
//! failure the cache holds nothing new.

mod boxes_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use boxes_support::*;
use kvmdrive::boxes::fetch::{NetConfig, RetryPolicy};
use kvmdrive::boxes::{add, ensure, AddRequest, BoxError, BoxSpec, BoxStore};
use kvmdrive::output::Reporter;

fn reporter() -> Reporter {
    Reporter::new(true, 0)
}

fn store_for(home: &Path, server: &TestServer) -> BoxStore {
    BoxStore::new(home).with_net(NetConfig {
        server_url: server.base(),
        retry: RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        },
        read_timeout: Duration::from_secs(10),
        ..NetConfig::default()
    })
}

fn add_source(
    store: &BoxStore,
    source: &str,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<kvmdrive::boxes::AddOutcome, BoxError> {
    add(
        store,
        &AddRequest {
            source: source.into(),
            name: name.map(Into::into),
            version: version.map(Into::into),
            ..Default::default()
        },
        &reporter(),
    )
}

fn host() -> &'static str {
    kvmdrive::boxes::catalog::host_arch()
}

/// A catalog for `name` with `versions`, each a libvirt provider for the host at `server/NAME-VERSION.box`.
fn catalog(server: &TestServer, name: &str, versions: &[(&str, &[u8])]) -> String {
    let versions: Vec<_> = versions
        .iter()
        .map(|(v, bytes)| {
            let file = format!("/{}-{v}.box", name.replace('/', "_"));
            server.route(&file, Route::bytes(bytes.to_vec()));
            serde_json::json!({"version": v, "providers": [{
                "name": "libvirt", "url": server.url(&file), "architecture": host(), "default_architecture": true,
                "checksum_type": "sha256", "checksum": sha256_hex(bytes)}]})
        })
        .collect();
    serde_json::json!({"name": name, "versions": versions}).to_string()
}

#[test]
fn catalog_url_resolves_the_newest_satisfying_version() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let (a, b, c) = (
        good_box(Pack::Gzip, "32M", 0),
        good_box(Pack::Gzip, "48M", 0),
        good_box(Pack::Zstd, "64M", 0),
    );
    server.route(
        "/catalog",
        Route::json(catalog(
            &server,
            "acme/web",
            &[("1.0.0", &a), ("1.1.0", &b), ("2.0.0", &c)],
        )),
    );
    let out = add_source(&store, &server.url("/catalog"), None, Some("~> 1.0")).unwrap();
    assert_eq!(out.installed.name, "acme/web");
    assert_eq!(out.installed.version, "1.1.0");
    assert_eq!(out.installed.virtual_size, 48 << 20);
    assert_eq!(out.installed.architecture, host());
    assert_eq!(server.seen_for("/acme_web-1.1.0.box").len(), 1);
    assert!(server.seen_for("/acme_web-2.0.0.box").is_empty());
    let metadata_url = home.path().join("boxes/acme-VAGRANTSLASH-web/metadata_url");
    assert_eq!(
        std::fs::read_to_string(metadata_url).unwrap(),
        server.url("/catalog")
    );

    // adding again from the same catalog is a no-op without another download
    let again = add_source(&store, &server.url("/catalog"), None, Some("~> 1.0")).unwrap();
    assert!(!again.added);
    assert_eq!(server.seen_for("/acme_web-1.1.0.box").len(), 1);

    // no version satisfies: clear error listing what exists, nothing new
    let before = snapshot(&home.path().join("boxes"));
    match add_source(&store, &server.url("/catalog"), None, Some("> 5")).unwrap_err() {
        BoxError::NoMatchingVersion { available, .. } => {
            assert_eq!(available, "2.0.0, 1.1.0, 1.0.0")
        }
        other => panic!("{other}"),
    }
    // --name that disagrees with the catalog
    assert!(matches!(
        add_source(&store, &server.url("/catalog"), Some("other/name"), None).unwrap_err(),
        BoxError::NameMismatch { .. }
    ));
    assert_nothing_new(home.path(), &before);
}

#[test]
fn owner_name_is_resolved_at_the_server_api_path_then_the_plain_path() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Gzip, "32M", 0);
    server.route(
        "/api/v2/vagrant/acme/api",
        Route::json(catalog(&server, "acme/api", &[("1.0", &bytes)])),
    );
    // served as text/plain: still a catalog by its content
    server.route(
        "/acme/plain",
        Route::json(catalog(&server, "acme/plain", &[("3.0", &bytes)])).content_type("text/plain"),
    );
    let a = add_source(&store, "acme/api", None, None).unwrap();
    assert_eq!(
        (a.installed.name.as_str(), a.installed.version.as_str()),
        ("acme/api", "1.0")
    );
    let b = add_source(&store, "acme/plain", None, None).unwrap();
    assert_eq!(
        (b.installed.name.as_str(), b.installed.version.as_str()),
        ("acme/plain", "3.0")
    );
    assert_eq!(server.seen_for("/api/v2/vagrant/acme/plain")[0].status, 404);

    let before = snapshot(&home.path().join("boxes"));
    let err = add_source(&store, "acme/missing", None, None).unwrap_err();
    assert!(matches!(err, BoxError::Http { status: 404, .. }), "{err}");
    assert_nothing_new(home.path(), &before);
}

#[test]
fn html_instead_of_a_catalog_is_a_clear_error() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let page = "<!DOCTYPE html><html><body>Vagrant Cloud has moved</body></html>";
    server.route("/api/v2/vagrant/hashicorp/bionic64", Route::html(page));
    server.route("/hashicorp/bionic64", Route::html(page));
    server.route("/page", Route::html(page));
    // HTML without an HTML content type
    server.route(
        "/sneaky",
        Route::bytes(page.as_bytes().to_vec()).content_type("application/octet-stream"),
    );
    // JSON content type, HTML body
    server.route(
        "/lying",
        Route::bytes(page.as_bytes().to_vec()).content_type("application/json"),
    );
    let before = snapshot(&home.path().join("boxes"));
    for source in [
        "hashicorp/bionic64".to_owned(),
        server.url("/page"),
        server.url("/sneaky"),
    ] {
        let err = add_source(&store, &source, Some("x/y"), None).unwrap_err();
        assert!(
            matches!(err, BoxError::HtmlCatalog { .. }),
            "{source}: {err}"
        );
        assert!(err.hint().unwrap().contains("VAGRANT_SERVER_URL"));
    }
    let err = add_source(&store, &server.url("/lying"), Some("x/y"), None).unwrap_err();
    assert!(matches!(err, BoxError::BadCatalog { .. }), "{err}");
    assert_nothing_new(home.path(), &before);
}

#[test]
fn a_box_url_is_a_box_whatever_its_content_type_and_through_redirects() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Gzip, "32M", 0);
    server.route(
        "/files/real.box",
        Route::bytes(bytes.clone()).content_type("text/html"),
    );
    server.route("/go", Route::redirect("/files/real.box"));
    server.route(
        "/jsonbox",
        Route::bytes(bytes.clone()).content_type("application/json"),
    );
    let out = add_source(&store, &server.url("/go"), Some("r/box"), None).unwrap();
    assert!(out.added);
    assert_eq!(out.download.as_ref().unwrap().bytes, bytes.len() as u64);
    assert_eq!(server.seen_for("/go").len(), 1);
    assert_eq!(
        server.seen_for("/files/real.box").len(),
        1,
        "the probe's response is the download"
    );
    assert!(
        add_source(&store, &server.url("/jsonbox"), Some("j/box"), None)
            .unwrap()
            .added
    );

    // a box URL needs a name
    let before = snapshot(&home.path().join("boxes"));
    assert!(matches!(
        add_source(&store, &server.url("/files/real.box"), None, None).unwrap_err(),
        BoxError::NeedName { .. }
    ));
    assert_nothing_new(home.path(), &before);
}

#[test]
fn redirected_catalog_with_relative_box_urls() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Tar, "32M", 0);
    server.route("/boxes/rel/1.0/rel.box", Route::bytes(bytes.clone()));
    let cat = serde_json::json!({"name": "team/rel", "versions": [{"version": "1.0", "providers": [
        {"name": "libvirt", "url": "1.0/rel.box", "checksum": sha256_hex(&bytes)}]}]});
    server.route("/boxes/rel/catalog.json", Route::json(cat.to_string()));
    server.route(
        "/team/rel",
        Route::redirect(server.url("/boxes/rel/catalog.json")),
    );
    let out = add_source(&store, &server.url("/team/rel"), None, None).unwrap();
    assert_eq!(out.installed.version, "1.0");
    assert_eq!(server.seen_for("/boxes/rel/1.0/rel.box").len(), 1);
}

#[test]
fn no_range_server_cut_mid_download_restarts_cleanly() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Tar, "32M", 2 << 20);
    server.route("/cut.box", Route::bytes(bytes.clone()).cut(700_000, 2));
    let out = add_source(&store, &server.url("/cut.box"), Some("cut/box"), None).unwrap();
    assert!(out.added);
    let seen = server.seen_for("/cut.box");
    assert_eq!(seen.len(), 3, "two cut responses, then a whole one");
    assert!(
        seen[1].header("range").is_some(),
        "the retry asked to resume"
    );
    assert_eq!(
        seen[2].status, 200,
        "the server cannot resume: a full response"
    );
    assert_eq!(seen[2].sent, bytes.len());
    let d = out.download.unwrap();
    assert_eq!(
        d.bytes,
        bytes.len() as u64,
        "checksummed size is the whole file"
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.installed.dir.join("kvmdrive-source.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["sha256"],
        sha256_hex(&bytes),
        "hash restarted with the data"
    );
    assert_eq!(tmp_files(home.path()), Vec::<PathBuf>::new());
}

#[test]
fn range_server_cut_mid_download_resumes() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Tar, "32M", 2 << 20);
    server.route(
        "/resume.box",
        Route::bytes(bytes.clone()).with_ranges().cut(900_000, 1),
    );
    let out = add(
        &store,
        &AddRequest {
            source: server.url("/resume.box"),
            name: Some("resume/box".into()),
            checksum: Some(sha256_hex(&bytes)),
            checksum_type: Some("sha256".into()),
            ..Default::default()
        },
        &reporter(),
    )
    .unwrap();
    let seen = server.seen_for("/resume.box");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].sent, 900_000);
    assert_eq!(seen[1].header("range"), Some("bytes=900000-"));
    assert_eq!(seen[1].status, 206);
    assert_eq!(seen[1].sent, bytes.len() - 900_000);
    assert_eq!(
        out.download.unwrap().transferred,
        bytes.len() as u64,
        "no byte fetched twice"
    );
}

#[test]
fn an_interrupted_download_resumes_in_the_next_run() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Tar, "32M", 3 << 20);
    // first run: one response cut after 1 MB, then the server answers 503 until retries give up
    server.route(
        "/flaky.box",
        Route::bytes(bytes.clone())
            .with_ranges()
            .cut(1_000_000, 1)
            .then_fail(503),
    );
    let before = snapshot(&home.path().join("boxes"));
    let err = add_source(&store, &server.url("/flaky.box"), Some("flaky/box"), None).unwrap_err();
    assert!(matches!(err, BoxError::Network { .. }), "{err}");
    assert!(err.hint().unwrap().contains("resume"));
    assert_eq!(
        snapshot(&home.path().join("boxes")),
        before,
        "the cache did not change"
    );
    let partial: Vec<PathBuf> = tmp_files(home.path());
    assert_eq!(
        partial.len(),
        2,
        "the partial download and its state stay for resuming: {partial:?}"
    );

    // second run: the server is back and resumes from the partial file
    server.clear_seen();
    server.route("/flaky.box", Route::bytes(bytes.clone()).with_ranges());
    let out = add_source(&store, &server.url("/flaky.box"), Some("flaky/box"), None).unwrap();
    let seen = server.seen_for("/flaky.box");
    assert_eq!(
        seen.len(),
        1,
        "no probe: the partial file is resumed directly"
    );
    assert_eq!(seen[0].header("range"), Some("bytes=1000000-"));
    assert!(
        seen[0].header("if-range").is_some(),
        "resumed only if the file is unchanged"
    );
    assert_eq!(seen[0].status, 206);
    assert_eq!(
        out.download.unwrap().transferred,
        (bytes.len() - 1_000_000) as u64
    );
    assert_eq!(tmp_files(home.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_changed_file_is_not_resumed_onto_an_old_partial() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let old = good_box(Pack::Tar, "32M", 2 << 20);
    server.route(
        "/moving.box",
        Route::bytes(old.clone())
            .with_ranges()
            .cut(500_000, 1)
            .then_fail(503),
    );
    assert!(add_source(&store, &server.url("/moving.box"), Some("m/box"), None).is_err());
    // the file changes (new ETag): If-Range fails, the server sends it whole
    let new = good_box(Pack::Tar, "48M", (2 << 20) + 1);
    assert_ne!(old.len(), new.len());
    server.clear_seen();
    server.route("/moving.box", Route::bytes(new.clone()).with_ranges());
    let out = add_source(&store, &server.url("/moving.box"), Some("m/box"), None).unwrap();
    assert_eq!(out.installed.virtual_size, 48 << 20);
    assert_eq!(server.seen_for("/moving.box")[0].status, 200);
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let mut store = store_for(home.path(), &server);
    store.net.retry.attempts = 10;
    let bytes = good_box(Pack::Gzip, "32M", 0);
    server.route("/busy.box", Route::status(503));
    let s = store.clone();
    let url = server.url("/busy.box");
    let t = std::thread::spawn(move || add_source(&s, &url, Some("busy/box"), None));
    while server.seen_for("/busy.box").len() < 2 {
        std::thread::sleep(Duration::from_millis(2));
    }
    server.route("/busy.box", Route::bytes(bytes));
    assert!(t.join().unwrap().unwrap().added);
    assert!(server.seen_for("/busy.box").len() >= 3);
}

#[test]
fn wrong_checksum_and_404_leave_nothing_behind() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Gzip, "32M", 0);
    let mut cat: serde_json::Value =
        serde_json::from_str(&catalog(&server, "sum/bad", &[("1.0", &bytes)])).unwrap();
    cat["versions"][0]["providers"][0]["checksum"] = sha256_hex(b"something else").into();
    server.route("/bad.json", Route::json(cat.to_string()));
    let before = snapshot(&home.path().join("boxes"));
    let err = add_source(&store, &server.url("/bad.json"), None, None).unwrap_err();
    match &err {
        BoxError::ChecksumMismatch { actual, .. } => assert_eq!(*actual, sha256_hex(&bytes)),
        other => panic!("{other}"),
    }
    assert_nothing_new(home.path(), &before);

    let err = add_source(&store, &server.url("/nothing.box"), Some("x/y"), None).unwrap_err();
    assert!(matches!(err, BoxError::Http { status: 404, .. }), "{err}");
    assert_nothing_new(home.path(), &before);

    // a catalog whose box is missing
    let cat = serde_json::json!({"name": "gone/box", "versions": [{"version": "1", "providers": [
        {"name": "libvirt", "url": server.url("/gone.box")}]}]});
    server.route("/gone.json", Route::json(cat.to_string()));
    let err = add_source(&store, &server.url("/gone.json"), None, None).unwrap_err();
    assert!(matches!(err, BoxError::Http { status: 404, .. }), "{err}");
    assert_nothing_new(home.path(), &before);

    // a box that is refused after a complete download
    server.route(
        "/evil.box",
        Route::bytes(tar_of(&[Entry::File("../x".into(), vec![1])], Pack::Gzip)),
    );
    let err = add_source(&store, &server.url("/evil.box"), Some("e/box"), None).unwrap_err();
    assert!(matches!(err, BoxError::BadArchive { .. }), "{err}");
    assert_nothing_new(home.path(), &before);
}

#[test]
fn the_token_goes_to_the_catalog_host_only() {
    let catalog_server = TestServer::start();
    let cdn = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let mut store = store_for(home.path(), &catalog_server);
    store.net.vagrant_cloud_token = Some("s3cret".into());
    let bytes = good_box(Pack::Gzip, "32M", 0);
    cdn.route("/box.box", Route::bytes(bytes.clone()));
    catalog_server.route("/hosted.box", Route::redirect(cdn.url("/box.box")));
    let cat = serde_json::json!({"name": "private/box", "versions": [
        {"version": "1", "providers": [{"name": "libvirt", "url": cdn.url("/box.box")}]},
        {"version": "2", "providers": [{"name": "libvirt", "url": catalog_server.url("/hosted.box")}]}]});
    catalog_server.route("/api/v2/vagrant/private/box", Route::json(cat.to_string()));
    add_source(&store, "private/box", None, Some("1")).unwrap();
    add_source(&store, "private/box", None, Some("2")).unwrap();
    let api = catalog_server.seen_for("/api/v2/vagrant/private/box");
    assert_eq!(api.len(), 2);
    assert!(api
        .iter()
        .all(|s| s.header("authorization") == Some("Bearer s3cret")));
    assert_eq!(
        catalog_server.seen_for("/hosted.box")[0].header("authorization"),
        Some("Bearer s3cret"),
        "a box on the catalog host gets it"
    );
    let cdn_seen = cdn.seen_for("/box.box");
    assert_eq!(cdn_seen.len(), 2);
    assert!(
        cdn_seen.iter().all(|s| s.header("authorization").is_none()),
        "never to another host, directly or after a redirect"
    );
}

#[test]
fn two_concurrent_adds_download_once() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Tar, "32M", 2 << 20);
    server.route(
        "/c.json",
        Route::json(catalog(&server, "con/current", &[("1.0", &bytes)])),
    );
    server.route(
        "/con_current-1.0.box",
        Route::bytes(bytes.clone()).throttled(Duration::from_millis(10)),
    );
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (s, url, b) = (store.clone(), server.url("/c.json"), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                add_source(&s, &url, None, None)
            })
        })
        .collect();
    let outcomes: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| o.added).count(),
        1,
        "one adds, the other waits and uses it"
    );
    assert_eq!(outcomes[0].installed, outcomes[1].installed);
    // One download: a stalled transfer under load may resume (a Range
    // request of the same download), but a second add never starts afresh.
    let seen = server.seen_for("/con_current-1.0.box");
    let fresh = seen.iter().filter(|s| s.header("range").is_none()).count();
    assert_eq!(
        fresh,
        1,
        "downloaded once: ranges {:?}",
        seen.iter().map(|s| s.header("range")).collect::<Vec<_>>()
    );
}

#[test]
fn ensure_in_parallel_threads_downloads_once_and_then_uses_the_cache() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Tar, "32M", 1 << 20);
    server.route(
        "/api/v2/vagrant/par/box",
        Route::json(catalog(
            &server,
            "par/box",
            &[("1.2", &bytes), ("2.0", &bytes)],
        )),
    );
    server.route(
        "/par_box-1.2.box",
        Route::bytes(bytes.clone()).throttled(Duration::from_millis(5)),
    );
    let spec = BoxSpec {
        name: "par/box".into(),
        version: Some("< 2".into()),
        ..Default::default()
    };
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (s, spec) = (store.clone(), spec.clone());
            std::thread::spawn(move || ensure(&s, &spec, &reporter()))
        })
        .collect();
    let boxes: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(boxes.iter().all(|b| *b == boxes[0] && b.version == "1.2"));
    assert_eq!(server.seen_for("/par_box-1.2.box").len(), 1);
    assert!(server.seen_for("/par_box-2.0.box").is_empty());
    // cached now: no network at all
    server.clear_seen();
    assert_eq!(ensure(&store, &spec, &reporter()).unwrap(), boxes[0]);
    assert!(server.seen().is_empty(), "{:?}", server.seen());
}

#[test]
fn ensure_with_box_url_and_with_a_url_as_box() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Gzip, "32M", 0);
    server.route(
        "/cat/local",
        Route::json(catalog(&server, "local/box", &[("0.5", &bytes)])),
    );
    server.route("/direct/deb-12.box", Route::bytes(bytes.clone()));
    let via_url = ensure(
        &store,
        &BoxSpec {
            name: "local/box".into(),
            url: Some(server.url("/cat/local")),
            ..Default::default()
        },
        &reporter(),
    )
    .unwrap();
    assert_eq!(via_url.version, "0.5");
    let direct = ensure(
        &store,
        &BoxSpec {
            name: server.url("/direct/deb-12.box"),
            ..Default::default()
        },
        &reporter(),
    )
    .unwrap();
    assert_eq!(
        (direct.name.as_str(), direct.version.as_str()),
        ("deb-12", "0")
    );
    // a plain name that is not cached and has no URL: NotFound with a hint
    let err = ensure(
        &store,
        &BoxSpec {
            name: "plain".into(),
            ..Default::default()
        },
        &reporter(),
    )
    .unwrap_err();
    assert!(matches!(err, BoxError::NotFound { .. }), "{err}");
    assert!(err.hint().is_some());
}

#[test]
fn a_catalog_cannot_name_its_box_out_of_the_cache() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let bytes = good_box(Pack::Gzip, "32M", 0);
    server.route("/evil.box", Route::bytes(bytes));
    let cat = serde_json::json!({"name": "../../escaped", "versions": [{"version": "1", "providers": [
        {"name": "libvirt", "url": server.url("/evil.box")}]}]});
    server.route("/evil.json", Route::json(cat.to_string()));
    let err = add_source(&store, &server.url("/evil.json"), None, None).unwrap_err();
    assert!(matches!(err, BoxError::InvalidName { .. }), "{err}");
    assert!(
        !home.path().join("escaped").exists()
            && !home.path().parent().unwrap().join("escaped").exists()
    );
    assert!(
        server.seen_for("/evil.box").is_empty(),
        "refused before downloading"
    );
    assert!(!home.path().join("boxes").exists());
}

#[test]
fn the_bundled_box_is_never_looked_up_on_a_server() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = store_for(home.path(), &server);
    let spec = BoxSpec {
        name: kvmdrive::project::config::BUNDLED_BOX.into(),
        ..Default::default()
    };
    let err = ensure(&store, &spec, &reporter()).unwrap_err();
    assert!(matches!(err, BoxError::NotFound { .. }), "{err}");
    assert!(err.hint().unwrap().contains("boxes/debian-12/build"));
    assert!(server.seen().is_empty(), "{:?}", server.seen());
}
