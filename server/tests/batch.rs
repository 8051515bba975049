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

/// A multipart body of `POST /upload/batch`: each item, then its bytes.
fn upload_batch_form(files: Vec<(serde_json::Value, Vec<u8>)>) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    for (item, data) in files {
        form = form
            .text("item", item.to_string())
            .part("file", reqwest::multipart::Part::bytes(data));
    }
    form
}

#[tokio::test]
async fn an_upload_batch_commits_each_file_or_refuses_it_alone() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let a = alice.upload("/a", b"old a", None).await;
    let b = alice.upload("/b", b"old b", None).await;
    let c = alice.upload("/c", b"old c", None).await;
    let bobs = bob.upload("/mine", b"bob's", None).await;
    let form = upload_batch_form(vec![
        (
            json!({"file_id": a.file_id, "base_version": a.version, "attrs": {"mode": 0o600, "mtime_ns": 7_000}}),
            b"new a".to_vec(),
        ),
        // A stale base: refused, the others go on.
        (
            json!({"file_id": b.file_id, "base_version": b.version + 5}),
            b"new b".to_vec(),
        ),
        // Another user's file answers as a file that does not exist.
        (json!({"file_id": bobs.file_id}), b"stolen".to_vec()),
        (
            json!({"file_id": c.file_id, "base_version": c.version}),
            Vec::new(),
        ),
    ]);
    let response = alice
        .post("/upload/batch")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: cubby_proto::api::UploadBatchResponse = response.json().await.unwrap();
    assert_eq!(answer.results.len(), 4);
    let first = answer.results[0].entry.as_ref().expect("a committed");
    assert_eq!(
        (first.version, first.size, first.mode, first.mtime_ns),
        (a.version + 1, 5, 0o600, 7_000)
    );
    assert_eq!(alice.download(a.file_id).await, b"new a");
    let stale = &answer.results[1];
    assert_eq!(stale.status, Some(409));
    let body = stale.error.as_ref().unwrap();
    assert_eq!(
        (body.error.code, body.current_version),
        (ErrorCode::VersionConflict, Some(b.version))
    );
    assert_eq!(alice.download(b.file_id).await, b"old b");
    assert_eq!(answer.results[2].status, Some(404));
    assert_eq!(bob.download(bobs.file_id).await, b"bob's");
    let emptied = answer.results[3].entry.as_ref().expect("c committed");
    assert_eq!((emptied.size, emptied.version), (0, c.version + 1));

    // A file past one chunk, an item without its file, or no file at all: refused whole.
    let big = vec![7u8; cubby_proto::chunking::MIN_CHUNK as usize + 1];
    let malformed = [
        upload_batch_form(vec![(json!({"file_id": a.file_id}), big)]),
        reqwest::multipart::Form::new().text("item", json!({"file_id": a.file_id}).to_string()),
        reqwest::multipart::Form::new(),
        reqwest::multipart::Form::new()
            .part("file", reqwest::multipart::Part::bytes(b"x".to_vec())),
    ];
    for form in malformed {
        let response = alice
            .post("/upload/batch")
            .multipart(form)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    }
    assert_eq!(alice.download(a.file_id).await, b"new a");
    let unauthenticated = reqwest::Client::new()
        .post(alice.url("/upload/batch"))
        .multipart(upload_batch_form(vec![(
            json!({"file_id": a.file_id}),
            b"x".to_vec(),
        )]))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}
