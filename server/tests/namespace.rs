//! The namespace: mkdir, list, stat, move (ids stable), delete, symlinks.

mod common;

use common::{Client, TestServer, expect_error};
use cubby_proto::ErrorCode;
use cubby_proto::api::{Entry, EntryKind, ListResponse};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn mkdir_list_and_stat() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    assert_eq!(alice.mkdir("/a", false).await.status(), StatusCode::CREATED);
    expect_error(
        alice.mkdir("/a", false).await,
        StatusCode::CONFLICT,
        ErrorCode::AlreadyExists,
    )
    .await;
    expect_error(
        alice.mkdir("/x/y", false).await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    assert_eq!(
        alice.mkdir("/x/y/z", true).await.status(),
        StatusCode::CREATED
    );
    // mkdir -p of an existing directory succeeds.
    assert_eq!(
        alice.mkdir("/x/y", true).await.status(),
        StatusCode::CREATED
    );
    alice.upload("/a/f2", b"2", None).await;
    alice.upload("/a/f1", b"1", None).await;
    let listing: ListResponse = alice
        .get("/list?path=/a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listing.children.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["f1", "f2"]);
    // A file is not a directory.
    expect_error(
        alice.mkdir("/a/f1/sub", true).await,
        StatusCode::CONFLICT,
        ErrorCode::NotADirectory,
    )
    .await;
    let list_file = alice.get("/list?path=/a/f1").send().await.unwrap();
    expect_error(list_file, StatusCode::CONFLICT, ErrorCode::NotADirectory).await;
    let root = alice.stat_entry("/").await;
    assert_eq!((root.kind, root.parent_id), (EntryKind::Dir, None));
}

#[tokio::test]
async fn move_keeps_ids_and_refuses_cycles() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let file = alice.upload("/docs/report.txt", b"r1", None).await;
    alice.mkdir("/archive", false).await;
    let moved: Entry = alice
        .post("/move")
        .json(&json!({"from": "/docs/report.txt", "to": "/archive/2026.txt"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(moved.id, file.file_id);
    assert_eq!(moved.version, 1);
    expect_error(
        alice.stat("/docs/report.txt").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    assert_eq!(alice.download(file.file_id).await, b"r1");
    // A directory cannot move into itself or below itself.
    alice.mkdir("/archive/inner", false).await;
    for to in ["/archive/inner/archive", "/archive/archive"] {
        let response = alice
            .post("/move")
            .json(&json!({"from": "/archive", "to": to}))
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::InvalidMove).await;
    }
    // Moving onto an existing file needs `replace`, and then replaces it.
    let other = alice.upload("/other.txt", b"other", None).await;
    let clash = alice
        .post("/move")
        .json(&json!({"id": other.file_id, "to": "/archive/2026.txt"}))
        .send()
        .await
        .unwrap();
    expect_error(clash, StatusCode::CONFLICT, ErrorCode::AlreadyExists).await;
    let replaced = alice
        .post("/move")
        .json(&json!({"id": other.file_id, "to": "/archive/2026.txt", "replace": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    assert_eq!(
        alice.stat_entry("/archive/2026.txt").await.id,
        other.file_id
    );
    // A file cannot replace a directory.
    let onto_dir = alice
        .post("/move")
        .json(&json!({"id": other.file_id, "to": "/archive/inner", "replace": true}))
        .send()
        .await
        .unwrap();
    expect_error(onto_dir, StatusCode::CONFLICT, ErrorCode::IsADirectory).await;
}

#[tokio::test]
async fn delete_files_and_directories() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let file = alice.upload("/d/sub/f", b"x", None).await;
    let d = alice.stat_entry("/d").await;
    let not_empty = alice
        .delete(&format!("/file/{}", d.id))
        .send()
        .await
        .unwrap();
    expect_error(
        not_empty,
        StatusCode::CONFLICT,
        ErrorCode::DirectoryNotEmpty,
    )
    .await;
    let gone = alice
        .delete(&format!("/file/{}?recursive=true", d.id))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::OK);
    let body: serde_json::Value = gone.json().await.unwrap();
    assert_eq!(body["deleted"], 3);
    let download = alice
        .get(&format!("/download?file_id={}", file.file_id))
        .send()
        .await
        .unwrap();
    expect_error(download, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    // The name is free again.
    alice.upload("/d/sub/f", b"y", None).await;
    let by_path = alice
        .post("/delete")
        .json(&json!({"path": "/d/sub/f"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_path.status(), StatusCode::OK);
    let root = alice
        .post("/delete")
        .json(&json!({"path": "/", "recursive": true}))
        .send()
        .await;
    expect_error(
        root.unwrap(),
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidMove,
    )
    .await;
}

#[tokio::test]
async fn symlinks_hold_their_target() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let created = alice
        .post("/symlink")
        .json(&json!({"path": "/link", "target": "../some/where"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let entry = alice.stat_entry("/link").await;
    assert_eq!(entry.kind, EntryKind::Symlink);
    assert_eq!(entry.target.as_deref(), Some("../some/where"));
    assert_eq!(entry.size, 13);
    // Uploading over a symlink is refused.
    expect_error(
        alice.upload_raw("/link", b"x".to_vec(), None).await,
        StatusCode::CONFLICT,
        ErrorCode::AlreadyExists,
    )
    .await;
}

#[tokio::test]
async fn entries_by_parent_id_attrs_and_special_files() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let root = alice.stat_entry("/").await;
    let dir: Entry = alice
        .post("/mkdir")
        .json(&json!({"parent_id": root.id, "name": "d", "mode": 0o700}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((dir.parent_id, dir.mode), (Some(root.id), 0o700));
    let both = alice
        .post("/mkdir")
        .json(&json!({"path": "/x", "parent_id": root.id, "name": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(both, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    let fifo = alice
        .post("/mknod")
        .json(&json!({"parent_id": dir.id, "name": "pipe", "kind": "fifo", "mode": 0o644}))
        .send()
        .await
        .unwrap();
    assert_eq!(fifo.status(), StatusCode::CREATED);
    let fifo: Entry = fifo.json().await.unwrap();
    assert_eq!(fifo.kind, EntryKind::Fifo);
    let not_special = alice
        .post("/mknod")
        .json(&json!({"parent_id": dir.id, "name": "f", "kind": "file"}))
        .send()
        .await
        .unwrap();
    expect_error(not_special, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    let changed: Entry = alice
        .post(&format!("/file/{}/attrs", fifo.id))
        .json(&json!({"mode": 0o600, "uid": 1, "gid": 2, "mtime_ns": 5, "atime_ns": 6}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (changed.mode, changed.uid, changed.gid),
        (0o600, Some(1), Some(2))
    );
    assert_eq!((changed.mtime_ns, changed.atime_ns), (5, 6));
    // Another user's entry: not found.
    let bob = server.user("bob").await;
    let response = bob
        .post(&format!("/file/{}/attrs", fifo.id))
        .json(&json!({"mode": 0o777}))
        .send()
        .await;
    expect_error(
        response.unwrap(),
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    let response = bob
        .post("/mknod")
        .json(&json!({"parent_id": dir.id, "name": "p", "kind": "fifo"}))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
}

#[tokio::test]
async fn extended_attributes_over_http() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let f = alice.upload("/f", b"x", None).await.file_id;
    let url = |name: &str| format!("/file/{f}/xattrs/{name}");
    let put = alice
        .http
        .put(alice.url(&url("user.a")))
        .bearer_auth(&alice.token)
        .body("1");
    assert_eq!(put.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let value = alice
        .get(&url("user.a"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(value.as_ref(), b"1");
    let again = alice
        .http
        .put(alice.url(&format!("{}?mode=create", url("user.a"))))
        .bearer_auth(&alice.token)
        .body("2");
    expect_error(
        again.send().await.unwrap(),
        StatusCode::CONFLICT,
        ErrorCode::AlreadyExists,
    )
    .await;
    let names: serde_json::Value = alice
        .get(&format!("/file/{f}/xattrs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names["names"], json!(["user.a"]));
    let bad = alice
        .http
        .put(alice.url(&url("security.x")))
        .bearer_auth(&alice.token)
        .body("1");
    expect_error(
        bad.send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidName,
    )
    .await;
    let big = alice
        .http
        .put(alice.url(&url("user.big")))
        .bearer_auth(&alice.token)
        .body(vec![0u8; 70_000]);
    assert_eq!(
        big.send().await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let bob = server.user("bob").await;
    expect_error(
        bob.get(&url("user.a")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    let removed = alice.delete(&url("user.a")).send().await.unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let gone = alice.get(&url("user.a")).send().await.unwrap();
    expect_error(gone, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
}

#[tokio::test]
async fn create_makes_an_empty_file_in_one_request() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let root = alice.stat_entry("/").await;
    let body = json!({"parent_id": root.id, "name": "new.txt", "mode": 0o600, "uid": 7});
    let created = alice.post("/create").json(&body).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let entry: Entry = created.json().await.unwrap();
    assert_eq!(
        (entry.kind, entry.version, entry.size),
        (EntryKind::File, 1, 0)
    );
    assert_eq!((entry.mode, entry.uid), (0o600, Some(7)));
    assert!(alice.download(entry.id).await.is_empty());
    let again = alice.post("/create").json(&body).send().await.unwrap();
    expect_error(again, StatusCode::CONFLICT, ErrorCode::AlreadyExists).await;
    let bad = json!({"parent_id": root.id, "name": ".."});
    let response = alice.post("/create").json(&bad).send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::InvalidName).await;

    // Made earlier (journaled by a mount): its times are when it was made; a time
    // ahead of the server's clock is not taken.
    let create_at = |name: &str, time_ns: i64| {
        let body = json!({"parent_id": root.id, "name": name, "time_ns": time_ns});
        let request = alice.post("/create").json(&body);
        async move { request.send().await.unwrap().json::<Entry>().await.unwrap() }
    };
    let made = entry.ctime_ns - 5_000_000_000;
    let earlier = create_at("earlier.txt", made).await;
    assert_eq!(
        (earlier.mtime_ns, earlier.atime_ns, earlier.ctime_ns),
        (made, made, made)
    );
    let ahead = entry.ctime_ns + 3_600_000_000_000;
    let capped = create_at("ahead.txt", ahead).await;
    assert!(
        capped.ctime_ns < ahead && capped.ctime_ns >= entry.ctime_ns,
        "{capped:?}"
    );
}

#[tokio::test]
async fn a_change_sent_again_with_its_key_is_applied_once() {
    use cubby_proto::api::{IDEMPOTENCY_KEY, REPLAYED};
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let file = alice.upload("/a.txt", b"a", None).await;
    let move_to_b = || {
        alice
            .post("/move")
            .header(IDEMPOTENCY_KEY, "journal-1")
            .json(&json!({"id": file.file_id, "to": "/b.txt"}))
    };
    let first = move_to_b().send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get(REPLAYED).is_none());
    let first: Entry = first.json().await.unwrap();
    // Another client moves it on; the first client, not knowing its move was applied,
    // sends it again.
    alice
        .post("/move")
        .json(&json!({"id": file.file_id, "to": "/c.txt"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let again = move_to_b().send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()[REPLAYED], "true");
    let again: Entry = again.json().await.unwrap();
    assert_eq!((again.id, again.name.as_str()), (first.id, "b.txt"));
    assert_eq!(alice.stat_entry("/c.txt").await.id, file.file_id);
    expect_error(
        alice.stat("/b.txt").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    // The same key with another request is another request.
    let mkdir = alice
        .post("/mkdir")
        .header(IDEMPOTENCY_KEY, "journal-1")
        .json(&json!({"path": "/d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(mkdir.status(), StatusCode::CREATED);
    assert!(alice.stat("/d").await.status().is_success());
    // A refusal is an answer too: sent again, it is refused again, and not re-run.
    let clash = || {
        alice
            .post("/move")
            .header(IDEMPOTENCY_KEY, "journal-2")
            .json(&json!({"id": file.file_id, "to": "/d"}))
    };
    expect_error(
        clash().send().await.unwrap(),
        StatusCode::CONFLICT,
        ErrorCode::AlreadyExists,
    )
    .await;
    alice
        .post("/delete")
        .json(&json!({"path": "/d"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let refused_again = clash().send().await.unwrap();
    assert_eq!(refused_again.headers()[REPLAYED], "true");
    expect_error(
        refused_again,
        StatusCode::CONFLICT,
        ErrorCode::AlreadyExists,
    )
    .await;
    assert_eq!(alice.stat_entry("/c.txt").await.id, file.file_id);
    // Another user's identical request is theirs: nothing of alice's answers it.
    let theirs = bob
        .post("/mkdir")
        .header(IDEMPOTENCY_KEY, "journal-1")
        .json(&json!({"path": "/d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::CREATED);
    assert!(theirs.headers().get(REPLAYED).is_none());
    // A key that is no key is refused.
    let bad = alice
        .post("/mkdir")
        .header(IDEMPOTENCY_KEY, "k".repeat(500))
        .json(&json!({"path": "/e"}))
        .send()
        .await
        .unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
}

#[tokio::test]
async fn a_stored_reply_outlives_a_crash_of_the_server() {
    use cubby_proto::api::{IDEMPOTENCY_KEY, REPLAYED};
    let mut server = TestServer::start();
    let alice = server.user("alice").await;
    let file = alice.upload("/a.txt", b"a", None).await;
    let move_to_b = |client: &Client| {
        client
            .post("/move")
            .header(IDEMPOTENCY_KEY, "journal-7")
            .json(&json!({"id": file.file_id, "to": "/b.txt"}))
    };
    let first = move_to_b(&alice).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // The reply is kept without an fsync of its own: a killed process keeps it.
    server.kill_now();
    server.resume();
    let alice = server.login("alice").await;
    alice
        .post("/move")
        .json(&json!({"id": file.file_id, "to": "/c.txt"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let again = move_to_b(&alice).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()[REPLAYED], "true");
    assert_eq!(alice.stat_entry("/c.txt").await.id, file.file_id);
}
