//! Users are isolated: another user's ids answer exactly as ids that do not exist.

mod common;

use common::{TestServer, expect_error};
use cubby_proto::ErrorCode;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn another_users_ids_are_not_found() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let file = alice
        .upload("/secret/plan.txt", b"alice's plan", None)
        .await
        .file_id;
    let dir = alice.stat_entry("/secret").await.id;
    let nonexistent = file + 1000;

    for id in [file, nonexistent] {
        let download = bob
            .get(&format!("/download?file_id={id}"))
            .send()
            .await
            .unwrap();
        expect_error(download, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
        let stat = bob.get(&format!("/file/{id}")).send().await.unwrap();
        expect_error(stat, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
        let stat = bob.get(&format!("/stat?id={id}")).send().await.unwrap();
        expect_error(stat, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
        let delete = bob.delete(&format!("/file/{id}")).send().await.unwrap();
        expect_error(delete, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
        let rename = bob
            .post("/move")
            .json(&json!({"id": id, "to": "/stolen"}))
            .send()
            .await;
        expect_error(rename.unwrap(), StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    }
    for id in [dir, nonexistent] {
        let list = bob.get(&format!("/list?id={id}")).send().await.unwrap();
        expect_error(list, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    }
    // Bob's paths are his own tree.
    expect_error(
        bob.stat("/secret/plan.txt").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    let bobs = bob.upload("/secret/plan.txt", b"bob's plan", None).await;
    assert_ne!(bobs.file_id, file);
    // Nothing of Alice's changed.
    assert_eq!(alice.download(file).await, b"alice's plan");
    let listing: serde_json::Value = bob
        .get("/list?path=/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["children"].as_array().unwrap().len(), 1);
}
