//! `POST /batch`: namespace changes in order, one request, one transaction.

mod common;

use common::{TestServer, expect_error};
use cubby_proto::ErrorCode;
use cubby_proto::api::{BatchResponse, Change, ChangesResponse, Entry, EntryKind};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_batch_applies_its_items_in_order_and_stops_at_a_refusal() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let root = alice.stat_entry("/").await;
    let taken = alice.upload("/taken", b"t", None).await;
    let batch = |items: serde_json::Value| alice.post("/batch").json(&json!({ "items": items }));
    let items = json!([
        {"op": "mkdir", "parent": root.id, "name": "d", "mode": 0o700, "key": "j1"},
        {"op": "create", "parent": {"item": 0}, "name": "f", "mode": 0o600, "key": "j2"},
        {"op": "attrs", "id": {"item": 1}, "mtime_ns": 5_000, "key": "j3"},
        {"op": "move", "id": {"item": 1}, "parent": root.id, "name": "g", "key": "j4"},
        {"op": "create", "parent": root.id, "name": "taken", "key": "j5"},
        {"op": "mkdir", "parent": root.id, "name": "never", "key": "j6"},
    ]);
    let response = batch(items.clone()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: BatchResponse = response.json().await.unwrap();
    assert_eq!(answer.done.len(), 4);
    let stop = answer.stopped.as_ref().expect("stopped at the taken name");
    assert_eq!((stop.index, stop.status), (4, 409));
    assert_eq!(stop.error.error.code, ErrorCode::AlreadyExists);
    let moved = alice.stat_entry("/g").await;
    assert_eq!(
        (moved.kind, moved.mode, moved.mtime_ns),
        (EntryKind::File, 0o600, 5_000)
    );
    assert_eq!(alice.stat_entry("/d").await.mode, 0o700);
    assert_eq!(alice.stat_entry("/taken").await.id, taken.file_id);
    expect_error(
        alice.stat("/never").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;

    // Sent again (its answer lost): the applied items answer as before, once.
    let again: BatchResponse = batch(items).send().await.unwrap().json().await.unwrap();
    assert_eq!(again.done, answer.done);
    assert_eq!(again.stopped.map(|s| s.index), Some(4));
    let listing: cubby_proto::api::ListResponse = alice
        .get("/list?path=/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listing.children.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["d", "g", "taken"]);

    // A name that is not valid stops the batch where it stands.
    let bad_name: BatchResponse = batch(json!([
        {"op": "mkdir", "parent": root.id, "name": "ok"},
        {"op": "mkdir", "parent": root.id, "name": ".."},
    ]))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(bad_name.done.len(), 1);
    let stop = bad_name.stopped.unwrap();
    assert_eq!(
        (stop.index, stop.error.error.code),
        (1, ErrorCode::InvalidName)
    );

    // Malformed batches are refused whole.
    for malformed in [
        json!([]),
        json!([{"op": "delete", "id": {"item": 0}}]),
        json!([{"op": "explode", "id": 1}]),
    ] {
        let status = batch(malformed).send().await.unwrap().status();
        assert!(
            [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY].contains(&status),
            "{status}"
        );
    }
    let too_many: Vec<_> = (0..cubby_proto::api::MAX_BATCH_ITEMS + 1)
        .map(|i| json!({"op": "mkdir", "parent": root.id, "name": format!("m{i}")}))
        .collect();
    let response = batch(json!(too_many)).send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;

    // Another user's entries answer as ids that do not exist.
    let theirs: BatchResponse = bob
        .post("/batch")
        .json(&json!({"items": [{"op": "delete", "id": moved.id}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs.done.len(), 0);
    assert_eq!(
        theirs.stopped.unwrap().error.error.code,
        ErrorCode::NotFound
    );
    assert_eq!(alice.stat_entry("/g").await.id, moved.id);
    let unauthenticated = reqwest::Client::new()
        .post(alice.url("/batch"))
        .json(&json!({"items": [{"op": "delete", "id": moved.id}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_change_feed_reports_every_item_of_a_batch() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let root = alice.stat_entry("/").await;
    let latest: ChangesResponse = alice
        .get("/changes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response: BatchResponse = alice
        .post("/batch")
        .json(&json!({"items": [
            {"op": "mkdir", "parent": root.id, "name": "d"},
            {"op": "create", "parent": {"item": 0}, "name": "f"},
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let made: Vec<Entry> = response
        .done
        .into_iter()
        .map(|d| d.entry.unwrap())
        .collect();
    let feed: ChangesResponse = alice
        .get(&format!("/changes?cursor={}", latest.cursor))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let changed: Vec<(u64, &str)> = feed
        .changes
        .iter()
        .map(|c: &Change| (c.entry_id, c.name.as_str()))
        .collect();
    assert!(changed.contains(&(made[0].id, "d")), "{changed:?}");
    assert!(changed.contains(&(made[1].id, "f")), "{changed:?}");
}
