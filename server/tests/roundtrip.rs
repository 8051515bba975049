//! Upload and download through a real server: content, hashes, ranges, versions.

mod common;

use common::{TestServer, expect_error, random_bytes};
use cubby_proto::{ContentHash, ErrorCode};
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH, RANGE};

#[tokio::test]
async fn empty_small_and_large_files_round_trip() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("/empty", Vec::new()),
        ("/one", vec![42]),
        ("/docs/small.txt", b"hello, cubby\n".to_vec()),
        ("/big/50MiB.bin", random_bytes(50 << 20, 1)),
    ];
    for (path, data) in &cases {
        let uploaded = alice.upload(path, data, None).await;
        assert_eq!(uploaded.version, 1);
        let downloaded = alice.download(uploaded.file_id).await;
        assert_eq!(downloaded.len(), data.len(), "{path}");
        assert_eq!(
            ContentHash::of(&downloaded),
            ContentHash::of(data),
            "{path}"
        );
        let entry = alice.stat_entry(path).await;
        assert_eq!(entry.id, uploaded.file_id);
        assert_eq!(entry.size, data.len() as u64);
        assert_eq!(entry.hash, Some(ContentHash::of(data)));
    }
    // The large file was stored as several content-defined chunks, not one blob.
    assert!(
        server.blob_files().len() > 10,
        "{} blobs",
        server.blob_files().len()
    );
}

#[tokio::test]
async fn range_reads() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let data = random_bytes(9 << 20, 2);
    let id = alice.upload("/r.bin", &data, None).await.file_id;
    let url = format!("/download?file_id={id}");
    let len = data.len();
    for (header, first, last) in [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        // Across several chunk boundaries.
        ("bytes=1000000-6000000", 1_000_000, 6_000_000),
        ("bytes=-10", len - 10, len - 1),
        ("bytes=9000000-", 9_000_000, len - 1),
        ("bytes=5-999999999", 5, len - 1),
    ] {
        let response = alice.get(&url).header(RANGE, header).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{header}");
        let content_range = response.headers()["content-range"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(content_range, format!("bytes {first}-{last}/{len}"));
        let body = response.bytes().await.unwrap();
        assert_eq!(&body[..], &data[first..=last], "{header}");
    }
    let response = alice
        .get(&url)
        .header(RANGE, format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );
    expect_error(
        response,
        StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorCode::RangeNotSatisfiable,
    )
    .await;
    // Several ranges are not supported: the whole content is sent.
    let response = alice
        .get(&url)
        .header(RANGE, "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), len);
}

#[tokio::test]
async fn etag_and_conditional_get() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let data = b"etag me".to_vec();
    let id = alice.upload("/e", &data, None).await.file_id;
    let url = format!("/download?file_id={id}");
    let response = alice.get(&url).send().await.unwrap();
    let etag = response.headers()[ETAG].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", ContentHash::of(&data)));
    let response = alice
        .get(&url)
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    let response = alice
        .get(&url)
        .header(IF_NONE_MATCH, "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn new_versions_need_the_current_base_version() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let v1 = alice.upload("/notes.txt", b"one", None).await;
    // Creating over an existing file without a base version is a conflict.
    let body = expect_error(
        alice
            .upload_raw("/notes.txt", b"clobber".to_vec(), None)
            .await,
        StatusCode::CONFLICT,
        ErrorCode::VersionConflict,
    )
    .await;
    assert_eq!(body.current_version, Some(1));
    let v2 = alice.upload("/notes.txt", b"two", Some(1)).await;
    assert_eq!((v2.file_id, v2.version), (v1.file_id, 2));
    // A writer still based on version 1 is refused and told the current version.
    let body = expect_error(
        alice
            .upload_raw("/notes.txt", b"stale".to_vec(), Some(1))
            .await,
        StatusCode::CONFLICT,
        ErrorCode::VersionConflict,
    )
    .await;
    assert_eq!(body.current_version, Some(2));
    assert_eq!(alice.download(v1.file_id).await, b"two");
    // Old versions stay readable.
    let old = alice
        .get(&format!("/download?file_id={}&version=1", v1.file_id))
        .send()
        .await;
    assert_eq!(old.unwrap().bytes().await.unwrap().as_ref(), b"one");
    let missing = alice
        .get(&format!("/download?file_id={}&version=9", v1.file_id))
        .send()
        .await;
    expect_error(missing.unwrap(), StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
}

#[tokio::test]
async fn identical_content_is_stored_once() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let data = random_bytes(6 << 20, 3);
    alice.upload("/a", &data, None).await;
    let blobs = server.blob_files().len();
    alice.upload("/b", &data, None).await;
    assert_eq!(server.blob_files().len(), blobs);
}

#[tokio::test]
async fn upload_by_file_id_follows_the_file_wherever_it_is() {
    use reqwest::multipart::{Form, Part};
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let first = alice.upload("/a/doc", b"one", None).await;
    alice
        .post("/move")
        .json(&serde_json::json!({"from": "/a/doc", "to": "/b"}))
        .send()
        .await
        .unwrap();
    let form = |base: &str, data: &'static [u8]| {
        Form::new()
            .text("file_id", first.file_id.to_string())
            .text("base_version", base.to_owned())
            .part("file", Part::bytes(data))
    };
    let stale = alice
        .post("/upload")
        .multipart(form("0", b"x"))
        .send()
        .await
        .unwrap();
    expect_error(stale, StatusCode::CONFLICT, ErrorCode::VersionConflict).await;
    let ok = alice
        .post("/upload")
        .multipart(form("1", b"two"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(alice.stat_entry("/b").await.version, 2);
    assert_eq!(alice.download(first.file_id).await, b"two");
    let both = Form::new()
        .text("path", "/c")
        .text("file_id", first.file_id.to_string())
        .part("file", Part::bytes(&b"x"[..]));
    let response = alice.post("/upload").multipart(both).send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
}
