//! The chunked protocol against a real server: begin, signed PUTs, complete, manifests,
//! signed GETs, and every way it can be misused.

mod common;

use std::time::Duration;

use common::{Client, TestServer, expect_error, random_bytes};
use cubby_proto::api::{BeginUploadResponse, ChunkSpec, FileManifest, UploadResponse};
use cubby_proto::chunking;
use cubby_proto::{ContentHash, ErrorCode};
use reqwest::StatusCode;
use serde_json::json;

struct Cut {
    chunks: Vec<(ChunkSpec, Vec<u8>)>,
    hash: ContentHash,
    size: u64,
}

fn cut(data: &[u8]) -> Cut {
    let chunks = chunking::chunks(data)
        .map(|c| {
            let c = c.unwrap();
            (
                ChunkSpec {
                    hash: c.hash,
                    size: c.data.len() as u32,
                },
                c.data,
            )
        })
        .collect();
    Cut {
        chunks,
        hash: ContentHash::of(data),
        size: data.len() as u64,
    }
}

async fn begin_raw(
    client: &Client,
    path: &str,
    base: Option<u64>,
    file: &Cut,
) -> reqwest::Response {
    let specs: Vec<ChunkSpec> = file.chunks.iter().map(|(spec, _)| *spec).collect();
    client
        .post("/upload/begin")
        .json(&json!({"path": path, "base_version": base, "size": file.size, "hash": file.hash, "chunks": specs}))
        .send()
        .await
        .unwrap()
}

async fn begin(client: &Client, path: &str, base: Option<u64>, file: &Cut) -> BeginUploadResponse {
    let response = begin_raw(client, path, base, file).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn data_of<'a>(file: &'a Cut, hash: &ContentHash) -> &'a [u8] {
    &file
        .chunks
        .iter()
        .find(|(spec, _)| spec.hash == *hash)
        .unwrap()
        .1
}

async fn put(client: &Client, url: &str, body: Vec<u8>) -> reqwest::Response {
    // Signed URLs need no token. A new connection each time: the server closes one
    // whose body it refused without reading.
    reqwest::Client::new()
        .put(client.url(url))
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn send_all(client: &Client, file: &Cut, begun: &BeginUploadResponse) {
    for chunk in &begun.missing {
        let response = put(client, &chunk.url, data_of(file, &chunk.hash).to_vec()).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
}

async fn complete_raw(client: &Client, upload_id: &str) -> reqwest::Response {
    client
        .post("/upload/complete")
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .unwrap()
}

async fn complete(client: &Client, upload_id: &str) -> UploadResponse {
    let response = complete_raw(client, upload_id).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn upload(
    client: &Client,
    path: &str,
    base: Option<u64>,
    data: &[u8],
) -> (UploadResponse, u64) {
    let file = cut(data);
    let begun = begin(client, path, base, &file).await;
    let sent: u64 = begun.missing.iter().map(|c| u64::from(c.size)).sum();
    send_all(client, &file, &begun).await;
    (complete(client, &begun.upload_id).await, sent)
}

#[tokio::test]
async fn a_large_file_goes_up_in_chunks_and_comes_back() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let data = random_bytes(100 << 20, 31);
    let (done, sent) = upload(&alice, "/big.bin", None, &data).await;
    assert_eq!(
        (done.version, done.size, done.hash),
        (1, data.len() as u64, ContentHash::of(&data))
    );
    assert_eq!(sent, data.len() as u64);
    // Through the manifest and signed chunk URLs...
    let manifest: FileManifest = alice
        .get(&format!("/file/{}/chunks", done.file_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        manifest.chunks.len() > 25,
        "{} chunks",
        manifest.chunks.len()
    );
    let mut whole = Vec::with_capacity(data.len());
    for chunk in &manifest.chunks {
        assert_eq!(chunk.offset, whole.len() as u64);
        let response = alice.http.get(alice.url(&chunk.url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(
            response.headers()["etag"],
            format!("\"{}\"", chunk.hash).as_str()
        );
        whole.extend_from_slice(&response.bytes().await.unwrap());
    }
    assert_eq!(ContentHash::of(&whole), ContentHash::of(&data));
    // ...and through the one-shot download.
    assert_eq!(
        ContentHash::of(&alice.download(done.file_id).await),
        ContentHash::of(&data)
    );
}

#[tokio::test]
async fn edits_resend_only_the_chunks_they_touch() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let data = random_bytes(100 << 20, 32);
    upload(&alice, "/f", None, &data).await;
    // The same content again: nothing to send.
    let (v2, sent) = upload(&alice, "/f", Some(1), &data).await;
    assert_eq!((v2.version, sent), (2, 0));
    // One byte changed in the middle: at most 2 chunks.
    let mut changed = data.clone();
    changed[50 << 20] ^= 0xff;
    let file = cut(&changed);
    let begun = begin(&alice, "/f", Some(2), &file).await;
    assert!(
        begun.missing.len() <= 2,
        "{} chunks requested",
        begun.missing.len()
    );
    send_all(&alice, &file, &begun).await;
    assert_eq!(complete(&alice, &begun.upload_id).await.version, 3);
    // One byte inserted at the start: at most 2 chunks.
    let mut inserted = vec![7u8];
    inserted.extend_from_slice(&data);
    let (v4, sent) = upload(&alice, "/f", Some(3), &inserted).await;
    assert_eq!(v4.version, 4);
    assert!(
        sent <= 2 * u64::from(chunking::MAX_CHUNK),
        "{sent} bytes sent"
    );
    let file = cut(&inserted);
    assert!(file.chunks.len() > 25);
    assert_eq!(
        ContentHash::of(&alice.download(v4.file_id).await),
        ContentHash::of(&inserted)
    );
}

#[tokio::test]
async fn a_wrong_hash_or_size_is_refused_and_not_kept() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let file = cut(&random_bytes(600_000, 33));
    let begun = begin(&alice, "/f", None, &file).await;
    let chunk = &begun.missing[0];
    let mut wrong = data_of(&file, &chunk.hash).to_vec();
    wrong[0] ^= 1;
    let response = put(&alice, &chunk.url, wrong).await;
    expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::HashMismatch,
    )
    .await;
    let short = data_of(&file, &chunk.hash)[1..].to_vec();
    let response = put(&alice, &chunk.url, short).await;
    expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::HashMismatch,
    )
    .await;
    let mut long = data_of(&file, &chunk.hash).to_vec();
    long.push(0);
    let response = put(&alice, &chunk.url, long).await;
    expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::HashMismatch,
    )
    .await;
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
    // Completing now finds the chunk missing, and commits nothing.
    let response = complete_raw(&alice, &begun.upload_id).await;
    expect_error(response, StatusCode::CONFLICT, ErrorCode::ChunksMissing).await;
    expect_error(
        alice.stat("/f").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
}

#[tokio::test]
async fn tampered_and_expired_urls_are_forbidden() {
    let server = TestServer::start_with(&["--upload-ttl-secs", "2"]);
    let alice = server.user("alice").await;
    let file = cut(&random_bytes(300_000, 34));
    let begun = begin(&alice, "/f", None, &file).await;
    let chunk = &begun.missing[0];
    let body = data_of(&file, &chunk.hash).to_vec();
    let other_hash = ContentHash::of(b"other");
    let tampered = [
        chunk
            .url
            .replace(&chunk.hash.to_string(), &other_hash.to_string()),
        chunk.url.replace(
            &format!("size={}", chunk.size),
            &format!("size={}", chunk.size + 1),
        ),
        chunk.url.replace(
            &format!("expires={}", begun.expires_at),
            &format!("expires={}", begun.expires_at + 3600),
        ),
        chunk.url.replace(&begun.upload_id, &"0".repeat(32)),
        {
            // The signature with its last hex digit changed.
            let (head, last) = chunk.url.split_at(chunk.url.len() - 1);
            format!("{head}{}", if last == "0" { "1" } else { "0" })
        },
    ];
    for url in &tampered {
        assert_ne!(url, &chunk.url);
        let response = put(&alice, url, body.clone()).await;
        expect_error(response, StatusCode::FORBIDDEN, ErrorCode::Forbidden).await;
    }
    // A PUT URL is not a GET URL.
    let response = alice.http.get(alice.url(&chunk.url)).send().await.unwrap();
    assert!(response.status().is_client_error());
    assert!(server.blob_files().is_empty());
    // Past the session's expiry (whole seconds, rounded up from its 2 s).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let expires = Duration::from_secs(begun.expires_at as u64);
    assert!(
        expires >= now + Duration::from_millis(1500),
        "lives its TTL"
    );
    tokio::time::sleep(expires - now + Duration::from_millis(100)).await;
    let response = put(&alice, &chunk.url, body).await;
    expect_error(response, StatusCode::FORBIDDEN, ErrorCode::Forbidden).await;
    let response = complete_raw(&alice, &begun.upload_id).await;
    expect_error(response, StatusCode::NOT_FOUND, ErrorCode::UploadExpired).await;
    assert!(server.blob_files().is_empty());
}

#[tokio::test]
async fn stale_base_versions_get_409_at_begin_and_at_complete() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    upload(&alice, "/f", None, b"version one").await;
    let mine = cut(b"my edit of version one");
    let begun = begin(&alice, "/f", Some(1), &mine).await;
    // Someone else commits version 2 first.
    upload(&alice, "/f", Some(1), b"their edit").await;
    send_all(&alice, &mine, &begun).await;
    let body = expect_error(
        complete_raw(&alice, &begun.upload_id).await,
        StatusCode::CONFLICT,
        ErrorCode::VersionConflict,
    )
    .await;
    assert_eq!(body.current_version, Some(2));
    let body = expect_error(
        begin_raw(&alice, "/f", Some(1), &mine).await,
        StatusCode::CONFLICT,
        ErrorCode::VersionConflict,
    )
    .await;
    assert_eq!(body.current_version, Some(2));
    let entry = alice.stat_entry("/f").await;
    assert_eq!(alice.download(entry.id).await, b"their edit");
    // Completing twice answers the same commit.
    let again = cut(b"third");
    let begun = begin(&alice, "/f", Some(2), &again).await;
    send_all(&alice, &again, &begun).await;
    let first = complete(&alice, &begun.upload_id).await;
    let second = complete(&alice, &begun.upload_id).await;
    assert_eq!(first, second);
    assert_eq!(alice.stat_entry("/f").await.version, 3);
}

#[tokio::test]
async fn another_users_chunk_hash_is_not_a_shortcut() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let data = random_bytes(2 << 20, 35);
    let (alices, _) = upload(&alice, "/secret", None, &data).await;
    let file = cut(&data);
    // Bob names Alice's chunks: the server still asks him for every one of them.
    let begun = begin(&bob, "/copy", None, &file).await;
    assert_eq!(begun.reused_bytes, 0);
    let distinct: std::collections::HashSet<_> = file.chunks.iter().map(|(s, _)| s.hash).collect();
    assert_eq!(begun.missing.len(), distinct.len());
    // Completing without sending them fails and creates nothing.
    let response = complete_raw(&bob, &begun.upload_id).await;
    expect_error(response, StatusCode::CONFLICT, ErrorCode::ChunksMissing).await;
    expect_error(
        bob.stat("/copy").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    // Bob cannot read Alice's manifest, nor a chunk without a signed URL.
    let response = bob
        .get(&format!("/file/{}/chunks", alices.file_id))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    let bare = format!("/chunks/{}", file.chunks[0].0.hash);
    let response = bob.get(&bare).send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    let forged = format!("{bare}?expires=99999999999&sig={}", "0".repeat(64));
    let response = bob.get(&forged).send().await.unwrap();
    expect_error(response, StatusCode::FORBIDDEN, ErrorCode::Forbidden).await;
}

#[tokio::test]
async fn malformed_begin_requests() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let h = ContentHash::of(b"abc");
    for (body, code) in [
        (
            json!({"path": "/f", "size": 3, "hash": h, "chunks": [{"hash": h, "size": 2}]}),
            ErrorCode::BadRequest,
        ),
        (
            json!({"path": "/f", "size": 3, "hash": h, "chunks": [{"hash": h, "size": 0}, {"hash": h, "size": 3}]}),
            ErrorCode::BadRequest,
        ),
        (
            json!({"path": "/f", "size": 5000000, "hash": h, "chunks": [{"hash": h, "size": 5000000}]}),
            ErrorCode::BadRequest,
        ),
        (
            json!({"path": "/../f", "size": 3, "hash": h, "chunks": [{"hash": h, "size": 3}]}),
            ErrorCode::InvalidName,
        ),
        (
            json!({"size": 3, "hash": h, "chunks": [{"hash": h, "size": 3}]}),
            ErrorCode::BadRequest,
        ),
        (
            json!({"path": "/f", "size": 0, "hash": h, "chunks": []}),
            ErrorCode::HashMismatch,
        ),
    ] {
        let response = alice
            .post("/upload/begin")
            .json(&body)
            .send()
            .await
            .unwrap();
        let got = expect_error(
            response,
            if code == ErrorCode::HashMismatch {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            },
            code,
        )
        .await;
        assert!(!got.error.message.is_empty());
    }
    let response = alice
        .post("/upload/begin")
        .json(&json!({"path": "/f"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
    // An empty file has no chunks.
    let (done, sent) = upload(&alice, "/empty", None, b"").await;
    assert_eq!((done.size, sent), (0, 0));
    assert!(alice.download(done.file_id).await.is_empty());
}

#[tokio::test]
async fn abandoned_uploads_expire_and_their_chunks_are_collected() {
    let server = TestServer::start_with(&[
        "--upload-ttl-secs",
        "1",
        "--gc-interval-secs",
        "1",
        "--gc-grace-secs",
        "1",
    ]);
    let alice = server.user("alice").await;
    let kept = random_bytes(400_000, 36);
    let (done, _) = upload(&alice, "/kept", None, &kept).await;
    let kept_blobs = server.blob_files();
    let abandoned = cut(&random_bytes(400_000, 37));
    let begun = begin(&alice, "/abandoned", None, &abandoned).await;
    send_all(&alice, &abandoned, &begun).await;
    assert!(server.blob_files().len() > kept_blobs.len());
    // Expiry (1 s), grace (1 s) and a pass (every 1 s) later, only the committed chunks stay.
    let mut remaining = server.blob_files();
    for _ in 0..50 {
        if remaining.len() == kept_blobs.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        remaining = server.blob_files();
    }
    remaining.sort();
    let mut kept_sorted = kept_blobs.clone();
    kept_sorted.sort();
    assert_eq!(remaining, kept_sorted);
    assert_eq!(alice.download(done.file_id).await, kept);
}

#[tokio::test]
async fn a_session_refused_for_a_full_disk_ends_and_its_chunks_go_at_once() {
    let Some(disk) = common::SmallDisk::mount("8m") else {
        eprintln!("skipping: cannot mount a tmpfs here (not root?)");
        return;
    };
    let blob_dir = disk.dir.path().join("blobs");
    let server = TestServer::start_with(&["--blob-dir", blob_dir.to_str().unwrap()]);
    let alice = server.user("alice").await;
    upload(&alice, "/kept", None, &random_bytes(1 << 20, 40)).await;
    let kept_chunks = common::files_under(&blob_dir.join("chunks"));
    let filler = disk.dir.path().join("filler");
    std::fs::write(&filler, vec![7u8; 5 << 20]).unwrap();
    let wanted = random_bytes(3 << 20, 41);
    let file = cut(&wanted);
    let begun = begin(&alice, "/wanted", None, &file).await;
    let mut refused = None;
    for (at, chunk) in begun.missing.iter().enumerate() {
        let response = put(&alice, &chunk.url, data_of(&file, &chunk.hash).to_vec()).await;
        if response.status() != StatusCode::NO_CONTENT {
            refused = Some(at);
            expect_error(
                response,
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorCode::InsufficientStorage,
            )
            .await;
            break;
        }
    }
    let refused = refused.expect("the disk filled up during the session");
    assert!(
        refused > 0,
        "some chunks were stored before the disk was full"
    );
    assert_eq!(
        common::files_under(&blob_dir.join("chunks")),
        kept_chunks,
        "the refused session's chunks are gone at once"
    );
    // The session is over: its other URLs and its completion are refused.
    let late = &begun.missing[refused];
    std::fs::remove_file(&filler).unwrap();
    let response = put(&alice, &late.url, data_of(&file, &late.hash).to_vec()).await;
    expect_error(response, StatusCode::NOT_FOUND, ErrorCode::UploadExpired).await;
    let response = complete_raw(&alice, &begun.upload_id).await;
    expect_error(response, StatusCode::NOT_FOUND, ErrorCode::UploadExpired).await;
    // Once space is freed, the same upload goes through.
    let (done, _) = upload(&alice, "/wanted", None, &wanted).await;
    assert_eq!(alice.download(done.file_id).await, wanted);
}
