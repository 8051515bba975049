//! A restarted server keeps every file, version, directory, user and token.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn restart_keeps_everything() {
    let mut server = TestServer::start();
    let alice = server.user("alice").await;
    let data = common::random_bytes(5 << 20, 4);
    let v1 = alice.upload("/keep/me.bin", &data, None).await;
    alice.upload("/keep/me.bin", b"second", Some(1)).await;
    alice.mkdir("/empty/dir", true).await;
    alice
        .post("/move")
        .json(&json!({"from": "/keep", "to": "/kept"}))
        .send()
        .await
        .unwrap();

    server.restart();

    // A new process (on the same address): the old process's connections are gone.
    let mut alice = alice;
    alice.http = reqwest::Client::new();
    alice.base = server.url.clone();
    // The old token still works: the signing secret persisted.
    assert_eq!(alice.download(v1.file_id).await, b"second");
    let old = alice
        .get(&format!("/download?file_id={}&version=1", v1.file_id))
        .send()
        .await;
    assert_eq!(old.unwrap().bytes().await.unwrap().as_ref(), &data[..]);
    let entry = alice.stat_entry("/kept/me.bin").await;
    assert_eq!((entry.id, entry.version), (v1.file_id, 2));
    assert_eq!(alice.stat("/empty/dir").await.status(), StatusCode::OK);
    // And logging in again works.
    let again = server.login("alice").await;
    assert_eq!(again.download(v1.file_id).await, b"second");
}
