//! Races in `box add` by URL (tier 2, a server on 127.0.0.1): two adds of
//! the same box URL at the same moment download it once, and an add of a
//! box already added from that URL makes no request at all. (Catalog adds
//! are covered by tests/boxes_http.rs.)

mod boxes_support;

use std::sync::Arc;
use std::time::Duration;

use boxes_support::*;
use kvmdrive::boxes::fetch::NetConfig;
use kvmdrive::boxes::{add, AddRequest, BoxStore};
use kvmdrive::output::Reporter;

fn add_url(store: &BoxStore, url: &str) -> kvmdrive::boxes::AddOutcome {
    add(
        store,
        &AddRequest {
            source: url.into(),
            name: Some("race/direct".into()),
            ..Default::default()
        },
        &Reporter::new(true, 0),
    )
    .unwrap()
}

#[test]
fn two_adds_of_one_box_url_download_it_once() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let store = BoxStore::new(home.path()).with_net(NetConfig {
        server_url: server.base(),
        ..NetConfig::default()
    });
    let bytes = good_box(Pack::Tar, "32M", 2 << 20);
    server.route(
        "/direct.box",
        Route::bytes(bytes).throttled(Duration::from_millis(10)),
    );
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (s, url, b) = (store.clone(), server.url("/direct.box"), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                add_url(&s, &url)
            })
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| o.added).count(), 1);
    assert_eq!(outcomes[0].installed, outcomes[1].installed);
    let fresh = |server: &TestServer| {
        server
            .seen_for("/direct.box")
            .iter()
            .filter(|s| s.header("range").is_none())
            .count()
    };
    assert_eq!(fresh(&server), 1, "one request without Range");

    // Added from this URL already: no request at all.
    let again = add_url(&store, &server.url("/direct.box"));
    assert!(!again.added);
    assert_eq!(fresh(&server), 1);
}
