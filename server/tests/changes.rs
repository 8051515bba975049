//! The change feed: `GET /changes`, a long poll over the caller's own changes.

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestServer, expect_error};
use cubby_proto::ErrorCode;
use cubby_proto::api::{Change, ChangesResponse};
use reqwest::StatusCode;
use serde_json::json;

async fn changes(client: &Client, query: &str) -> ChangesResponse {
    let response = client
        .get(&format!("/changes{query}"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The cursor of a client that starts from now.
async fn cursor_now(client: &Client) -> u64 {
    let now = changes(client, "").await;
    assert!(now.changes.is_empty() && !now.reset, "{now:?}");
    now.cursor
}

/// Every change after `cursor`, without waiting; moves `cursor` past them.
async fn drain(client: &Client, cursor: &mut u64) -> Vec<Change> {
    let mut out = Vec::new();
    loop {
        let answer = changes(client, &format!("?cursor={cursor}&timeout_secs=0")).await;
        assert!(!answer.reset);
        let Some(last) = answer.changes.last() else {
            assert_eq!(answer.cursor, *cursor);
            return out;
        };
        assert_eq!(answer.cursor, last.seq);
        assert!(answer.changes.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(answer.changes[0].seq > *cursor);
        *cursor = answer.cursor;
        out.extend(answer.changes);
    }
}

/// Whether `changes` has one of `entry`, now at `parent`/`name`, moved from `old`.
fn has(changes: &[Change], entry: u64, parent: u64, name: &str, old: Option<(u64, &str)>) -> bool {
    changes.iter().any(|c| {
        c.entry_id == entry
            && c.parent_id == Some(parent)
            && c.name == name
            && c.old_parent_id == old.map(|o| o.0)
            && c.old_name.as_deref() == old.map(|o| o.1)
    })
}

#[tokio::test]
async fn tree_changes_appear_in_the_feed() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let root = alice.stat_entry("/").await.id;
    let mut cursor = cursor_now(&alice).await;
    assert!(drain(&alice, &mut cursor).await.is_empty());

    assert_eq!(
        alice.mkdir("/docs", false).await.status(),
        StatusCode::CREATED
    );
    let dir = alice.stat_entry("/docs").await.id;
    let seen = drain(&alice, &mut cursor).await;
    assert!(has(&seen, dir, root, "docs", None), "{seen:?}");

    let file = alice.upload("/docs/a.txt", b"draft", None).await.file_id;
    let seen = drain(&alice, &mut cursor).await;
    assert!(has(&seen, file, dir, "a.txt", None), "{seen:?}");

    let moved = alice
        .post("/move")
        .json(&json!({"id": file, "to": "/b.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::OK);
    let seen = drain(&alice, &mut cursor).await;
    assert!(
        has(&seen, file, root, "b.txt", Some((dir, "a.txt"))),
        "{seen:?}"
    );
    // Both directories' listings changed.
    assert!(seen.iter().any(|c| c.entry_id == dir));
    assert!(seen.iter().any(|c| c.entry_id == root));

    let deleted = alice
        .post("/delete")
        .json(&json!({"path": "/b.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let seen = drain(&alice, &mut cursor).await;
    assert!(has(&seen, file, root, "b.txt", None), "{seen:?}");
    // A client that asks about the entry learns that it is gone.
    let gone = alice.get(&format!("/file/{file}")).send().await.unwrap();
    expect_error(gone, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;

    // Without a cursor: the newest one, at once, whatever the timeout.
    let started = Instant::now();
    let now = changes(&alice, "?timeout_secs=30").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        (now.cursor, now.changes.len(), now.reset),
        (cursor, 0, false)
    );
}

#[tokio::test]
async fn a_waiting_poll_answers_soon_after_a_change() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let cursor = cursor_now(&alice).await;

    let poller = alice.clone();
    let poll = tokio::spawn(async move {
        let answer = changes(&poller, &format!("?cursor={cursor}&timeout_secs=20")).await;
        (answer, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "the poll waits while nothing changes");
    let file = alice.upload("/new.txt", b"hello", None).await.file_id;
    let uploaded = Instant::now();
    let (answer, answered) = poll.await.unwrap();
    assert!(
        answered.saturating_duration_since(uploaded) < Duration::from_secs(5),
        "answered {:?} after the upload",
        answered.saturating_duration_since(uploaded)
    );
    assert!(!answer.reset);
    assert!(
        answer.changes.iter().any(|c| c.entry_id == file),
        "{answer:?}"
    );
    assert_eq!(answer.cursor, answer.changes.last().unwrap().seq);

    // With nothing new, a poll waits out its timeout and keeps the cursor.
    let started = Instant::now();
    let quiet = changes(&alice, &format!("?cursor={}&timeout_secs=1", answer.cursor)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        (quiet.cursor, quiet.changes.len(), quiet.reset),
        (answer.cursor, 0, false)
    );
}

#[tokio::test]
async fn a_user_never_sees_another_users_changes() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let bob_cursor = cursor_now(&bob).await;

    let watcher = bob.clone();
    let poll = tokio::spawn(async move {
        changes(&watcher, &format!("?cursor={bob_cursor}&timeout_secs=2")).await
    });
    let mut ids = vec![alice.stat_entry("/").await.id];
    assert_eq!(alice.mkdir("/a", false).await.status(), StatusCode::CREATED);
    ids.push(alice.stat_entry("/a").await.id);
    ids.push(alice.upload("/a/f", b"alice's", None).await.file_id);
    let answer = poll.await.unwrap();
    assert_eq!(
        (answer.cursor, answer.changes.len(), answer.reset),
        (bob_cursor, 0, false)
    );
    // Bob's whole feed is his own.
    let mut from_start = 0;
    let all_of_bobs = drain(&bob, &mut from_start).await;
    assert!(!all_of_bobs.is_empty());
    assert!(
        all_of_bobs.iter().all(|c| !ids.contains(&c.entry_id)),
        "{all_of_bobs:?}"
    );
    assert_eq!(from_start, bob_cursor);
}

#[tokio::test]
async fn the_feed_needs_a_token_and_a_valid_query() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let anonymous = reqwest::Client::new()
        .get(format!("{}/changes?cursor=0", server.url))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized).await;
    let forged = reqwest::Client::new()
        .get(format!("{}/changes", server.url))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    expect_error(forged, StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized).await;
    for query in ["?cursor=abc", "?cursor=-1", "?cursor=0&timeout_secs=x"] {
        let bad = alice.get(&format!("/changes{query}")).send().await.unwrap();
        expect_error(bad, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_answers_waiting_polls() {
    let mut server = TestServer::start();
    let alice = server.user("alice").await;
    let cursor = cursor_now(&alice).await;
    let poller = alice.clone();
    let poll = tokio::spawn(async move {
        changes(&poller, &format!("?cursor={cursor}&timeout_secs=30")).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    // Stopping waits for requests in flight (and kills the server after 5 s).
    tokio::task::block_in_place(|| server.stop());
    assert!(started.elapsed() < Duration::from_secs(4));
    let answer = poll.await.unwrap();
    assert_eq!(
        (answer.cursor, answer.changes.len(), answer.reset),
        (cursor, 0, false)
    );
}

#[tokio::test]
async fn a_cursor_older_than_the_kept_feed_resets() {
    // Every retention pass (one a second) prunes the whole feed.
    let server = TestServer::start_with(&["--changes-days", "0", "--retention-interval-secs", "1"]);
    let alice = server.user("alice").await;
    let old = cursor_now(&alice).await;
    assert_eq!(alice.mkdir("/x", false).await.status(), StatusCode::CREATED);
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = changes(&alice, &format!("?cursor={old}&timeout_secs=0")).await;
        if answer.reset {
            break answer;
        }
        assert!(Instant::now() < deadline, "no reset after pruning");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(answer.changes.is_empty());
    assert!(answer.cursor > old);
    assert_eq!(answer.cursor, cursor_now(&alice).await);
    // From the cursor it gave, the feed carries on.
    let fresh = changes(&alice, &format!("?cursor={}&timeout_secs=0", answer.cursor)).await;
    assert!(!fresh.reset && fresh.changes.is_empty());
    // A cursor the server never gave resets too.
    let unknown = changes(&alice, &format!("?cursor={}&timeout_secs=0", u64::MAX)).await;
    assert!(unknown.reset);
    assert_eq!(unknown.cursor, answer.cursor);
}

#[tokio::test]
async fn a_change_carries_the_origin_its_request_named() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let mut cursor = cursor_now(&alice).await;
    let named = alice
        .post("/mkdir")
        .header("x-cubby-origin", "mount-a1")
        .json(&json!({"path": "/mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), StatusCode::CREATED);
    assert_eq!(
        alice.mkdir("/theirs", false).await.status(),
        StatusCode::CREATED
    );
    let bad = alice
        .post("/mkdir")
        .header("x-cubby-origin", "not an origin")
        .json(&json!({"path": "/odd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::CREATED);
    let seen = drain(&alice, &mut cursor).await;
    let origin_of = |name: &str| {
        let change = seen.iter().find(|c| c.name == name).unwrap();
        change.origin.clone()
    };
    assert_eq!(origin_of("mine").as_deref(), Some("mount-a1"), "{seen:?}");
    assert_eq!(origin_of("theirs"), None, "{seen:?}");
    assert_eq!(origin_of("odd"), None, "{seen:?}");
}
