//! Versions, optimistic concurrency, restore, trash and retention through HTTP.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, TestServer, expect_error};
use cubby_proto::api::{Entry, TrashResponse, VersionsResponse};
use cubby_proto::{ContentHash, ErrorCode};
use reqwest::StatusCode;
use serde_json::json;

async fn versions(client: &Client, id: u64) -> VersionsResponse {
    client
        .get(&format!("/file/{id}/versions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn history_lists_who_wrote_what_and_restore_makes_a_new_version() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let first = alice
        .post("/upload")
        .header("x-cubby-device", "laptop")
        .multipart(
            reqwest::multipart::Form::new()
                .text("path", "/doc")
                .part("file", reqwest::multipart::Part::bytes(b"one".to_vec())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let id = alice.stat_entry("/doc").await.id;
    alice.upload("/doc", b"two", Some(1)).await;
    let history = versions(&alice, id).await;
    assert_eq!(history.current_version, 2);
    let listed: Vec<(u64, ContentHash)> = history
        .versions
        .iter()
        .map(|v| (v.number, v.hash))
        .collect();
    assert_eq!(
        listed,
        [(2, ContentHash::of(b"two")), (1, ContentHash::of(b"one"))]
    );
    assert_eq!(history.versions[1].author, "alice");
    assert_eq!(history.versions[1].device.as_deref(), Some("laptop"));
    assert!(history.versions[0].created_ns >= history.versions[1].created_ns);

    // Restore version 1: it becomes version 3, and version 2 stays in history.
    let stale = alice
        .post(&format!("/file/{id}/restore"))
        .json(&json!({"version": 1, "base_version": 1}))
        .send()
        .await
        .unwrap();
    expect_error(stale, StatusCode::CONFLICT, ErrorCode::VersionConflict).await;
    let restored: Entry = alice
        .post(&format!("/file/{id}/restore"))
        .json(&json!({"version": 1, "base_version": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(restored.version, 3);
    assert_eq!(alice.download(id).await, b"one");
    assert_eq!(versions(&alice, id).await.versions.len(), 3);
    // Other users see nothing of it.
    let bob = server.user("bob").await;
    let response = bob
        .get(&format!("/file/{id}/versions"))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    let response = bob
        .post(&format!("/file/{id}/restore"))
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
}

#[tokio::test]
async fn if_match_carries_the_base_version() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let v1 = alice.upload("/f", b"1", None).await;
    let upload = |if_match: &'static str| {
        let form = reqwest::multipart::Form::new()
            .text("path", "/f")
            .part("file", reqwest::multipart::Part::bytes(b"next".to_vec()));
        alice
            .post("/upload")
            .header("if-match", if_match)
            .multipart(form)
            .send()
    };
    let body = expect_error(
        upload("\"7\"").await.unwrap(),
        StatusCode::CONFLICT,
        ErrorCode::VersionConflict,
    )
    .await;
    assert_eq!(body.current_version, Some(1));
    assert_eq!(upload("\"1\"").await.unwrap().status(), StatusCode::OK);
    let response = alice
        .delete(&format!("/file/{}", v1.file_id))
        .header("if-match", "1")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::CONFLICT, ErrorCode::VersionConflict).await;
    let response = alice
        .post("/move")
        .header("if-match", "\"1\"")
        .json(&json!({"id": v1.file_id, "to": "/g"}))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::CONFLICT, ErrorCode::VersionConflict).await;
    let response = alice
        .post("/move")
        .json(&json!({"id": v1.file_id, "to": "/g", "base_version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = alice
        .delete(&format!("/file/{}?base_version=2", v1.file_id))
        .header("if-match", "3")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    let response = alice
        .delete(&format!("/file/{}", v1.file_id))
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// The brief's practice at scale: many writers on one file, each retrying on 409 with
/// the version it was told. No update is lost and version numbers are dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_writers_lose_nothing() {
    const WRITERS: usize = 20;
    const WRITES: usize = 20;
    let server = TestServer::start();
    let alice = Arc::new(server.user("alice").await);
    let id = alice.upload("/counter", b"start", None).await.file_id;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let alice = Arc::clone(&alice);
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut conflicts = 0;
            let mut base = 1;
            for write in 0..WRITES {
                let data = format!("writer {writer} write {write}").into_bytes();
                loop {
                    let response = alice.upload_raw("/counter", data.clone(), Some(base)).await;
                    match response.status() {
                        StatusCode::OK => {
                            let done: cubby_proto::api::UploadResponse =
                                response.json().await.unwrap();
                            acknowledged.push((done.version, ContentHash::of(&data)));
                            base = done.version;
                            break;
                        }
                        StatusCode::CONFLICT => {
                            let body: cubby_proto::ErrorBody = response.json().await.unwrap();
                            base = body.current_version.unwrap();
                            conflicts += 1;
                        }
                        other => panic!("unexpected {other}"),
                    }
                }
            }
            (acknowledged, conflicts)
        }));
    }
    let mut acknowledged = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        let (acks, c) = task.await.unwrap();
        acknowledged.extend(acks);
        conflicts += c;
    }
    assert_eq!(acknowledged.len(), WRITERS * WRITES);
    assert!(conflicts > 0, "the writers never raced");
    let history = versions(&alice, id).await;
    assert_eq!(history.current_version, (WRITERS * WRITES + 1) as u64);
    let numbers: Vec<u64> = history.versions.iter().rev().map(|v| v.number).collect();
    assert_eq!(
        numbers,
        (1..=(WRITERS * WRITES + 1) as u64).collect::<Vec<_>>()
    );
    let by_number: HashMap<u64, ContentHash> = history
        .versions
        .iter()
        .map(|v| (v.number, v.hash))
        .collect();
    for (version, hash) in acknowledged {
        assert_eq!(
            by_number[&version], hash,
            "acknowledged write {version} is not that version"
        );
    }
}

#[tokio::test]
async fn delete_goes_to_the_trash_and_comes_back() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let file = alice.upload("/photos/2026/cat.jpg", b"meow", None).await;
    let photos = alice.stat_entry("/photos").await;
    let response = alice
        .post("/delete")
        .json(&json!({"path": "/photos", "recursive": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    expect_error(
        alice.stat("/photos/2026/cat.jpg").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    let trash: TrashResponse = alice
        .get("/trash")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trash.items.len(), 1);
    assert_eq!(
        (trash.items[0].path.as_str(), trash.items[0].entries),
        ("/photos", 3)
    );
    // Another user's trash is their own.
    let bob = server.user("bob").await;
    let theirs: TrashResponse = bob
        .get("/trash")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(theirs.items.is_empty());
    let response = bob
        .post("/trash/restore")
        .json(&json!({"id": photos.id}))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    // Restore: same ids, same content, history intact.
    let response = alice
        .post("/trash/restore")
        .json(&json!({"id": photos.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let back = alice.stat_entry("/photos/2026/cat.jpg").await;
    assert_eq!(back.id, file.file_id);
    assert_eq!(alice.download(file.file_id).await, b"meow");
    let trash: TrashResponse = alice
        .get("/trash")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(trash.items.is_empty());
}

#[tokio::test]
async fn retention_prunes_old_versions_but_never_the_current_one() {
    let server = TestServer::start_with(&[
        "--retention-interval-secs",
        "1",
        "--retention-max-versions",
        "2",
    ]);
    let alice = server.user("alice").await;
    let id = alice.upload("/f", b"v1", None).await.file_id;
    // Keep committing while retention passes run.
    for base in 1..=30u64 {
        alice
            .upload("/f", format!("v{}", base + 1).as_bytes(), Some(base))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut kept = versions(&alice, id).await;
    for _ in 0..40 {
        if kept.versions.len() <= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        kept = versions(&alice, id).await;
    }
    let numbers: Vec<u64> = kept.versions.iter().map(|v| v.number).collect();
    assert_eq!(numbers, [31, 30]);
    assert_eq!(alice.download(id).await, b"v31");
}
