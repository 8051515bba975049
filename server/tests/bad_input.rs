//! Bad input gets a clear error and leaves nothing half-written.

mod common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{SmallDisk, TestServer, expect_error, files_under, random_bytes};
use cubby_proto::ErrorCode;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::json;

#[tokio::test]
async fn bad_names_are_refused_everywhere() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let long = format!("/{}", "n".repeat(256));
    let bad = [
        "/.",
        "/..",
        "/a/../b",
        "/a//b",
        "relative",
        "/nul\0byte",
        long.as_str(),
        "",
    ];
    for path in bad {
        expect_error(
            alice.upload_raw(path, b"x".to_vec(), None).await,
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidName,
        )
        .await;
        expect_error(
            alice.mkdir(path, true).await,
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidName,
        )
        .await;
        expect_error(
            alice.stat(path).await,
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidName,
        )
        .await;
    }
    // 255 bytes is the longest name, and it works.
    let longest = format!("/{}", "n".repeat(255));
    alice.upload(&longest, b"ok", None).await;
    // Nothing from the refused uploads reached metadata.
    let listing: serde_json::Value = alice
        .get("/list?path=/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["children"].as_array().unwrap().len(), 1);
    // Uploading to the root directory itself.
    expect_error(
        alice.upload_raw("/", b"x".to_vec(), None).await,
        StatusCode::CONFLICT,
        ErrorCode::IsADirectory,
    )
    .await;
}

#[tokio::test]
async fn missing_and_malformed_fields() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let no_file = alice
        .post("/upload")
        .multipart(Form::new().text("path", "/f"))
        .send()
        .await;
    expect_error(
        no_file.unwrap(),
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
    )
    .await;
    let no_path = alice
        .post("/upload")
        .multipart(Form::new().part("file", Part::bytes(vec![1])))
        .send()
        .await;
    expect_error(
        no_path.unwrap(),
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
    )
    .await;
    let bad_version = Form::new()
        .text("path", "/f")
        .text("base_version", "seven")
        .part("file", Part::bytes(vec![1]));
    let response = alice
        .post("/upload")
        .multipart(bad_version)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    let extra = Form::new()
        .text("path", "/f")
        .text("colour", "red")
        .part("file", Part::bytes(vec![1]));
    let response = alice.post("/upload").multipart(extra).send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    let two_files = Form::new()
        .text("path", "/f")
        .part("file", Part::bytes(vec![1]))
        .part("file", Part::bytes(vec![2]));
    let response = alice
        .post("/upload")
        .multipart(two_files)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    // Not multipart at all.
    let response = alice.post("/upload").body("plain").send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    // Malformed JSON, and JSON missing a field.
    let response = alice
        .post("/mkdir")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    let response = alice
        .post("/mkdir")
        .json(&json!({"parents": true}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
    let response = alice.get("/download?file_id=abc").send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    let response = alice.get("/download").send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    let response = alice.get("/no/such/endpoint").send().await.unwrap();
    expect_error(response, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    // None of it created anything.
    expect_error(
        alice.stat("/f").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
}

#[tokio::test]
async fn broken_multipart_stores_nothing() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let payload = random_bytes(300_000, 5);
    let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n/broken\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n".to_vec();
    body.extend_from_slice(&payload);
    // The body ends without the closing boundary, as when a client dies mid-upload.
    let response = alice
        .post("/upload")
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, ErrorCode::BadRequest).await;
    expect_error(
        alice.stat("/broken").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
}

#[tokio::test]
async fn oversize_uploads_are_refused() {
    let server = TestServer::start_with(&["--max-upload-bytes", "1048576"]);
    let alice = server.user("alice").await;
    // A client that declares its length and waits for `100 Continue` (as curl does for
    // large bodies) is told 413 before it sends a byte of the body.
    let host = server.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        alice.token,
        3 << 20
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"payload_too_large\""), "{answer}");
    // A body that streams past the limit is cut off; the client may see 413 or a closed
    // connection, and nothing is stored either way.
    let streamed = random_bytes(3 << 20, 6);
    let stream = futures_util::stream::iter(
        streamed
            .chunks(64 << 10)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let form = Form::new()
        .text("path", "/big")
        .part("file", Part::stream(reqwest::Body::wrap_stream(stream)));
    if let Ok(response) = alice.post("/upload").multipart(form).send().await {
        expect_error(
            response,
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
        )
        .await;
    }
    // A new connection: the server closed the one whose body it refused.
    let alice = server.login("alice").await;
    expect_error(
        alice.stat("/big").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
    // Under the limit is fine.
    alice.upload("/small", &random_bytes(1000, 7), None).await;
    // Oversize JSON bodies too.
    let huge = json!({"path": format!("/{}", "a".repeat(100_000))});
    let response = alice.post("/mkdir").json(&huge).send().await.unwrap();
    expect_error(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
    )
    .await;
}

#[tokio::test]
async fn a_full_disk_is_507_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount("6m") else {
        eprintln!("skipping: cannot mount a tmpfs here (not root?)");
        return;
    };
    let blob_dir = disk.dir.path().join("blobs");
    let server = TestServer::start_with(&["--blob-dir", blob_dir.to_str().unwrap()]);
    let alice = server.user("alice").await;
    let first = random_bytes(2 << 20, 8);
    let kept = alice.upload("/kept", &first, None).await;
    let response = alice
        .upload_raw("/too-big", random_bytes(12 << 20, 9), None)
        .await;
    expect_error(
        response,
        StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::InsufficientStorage,
    )
    .await;
    expect_error(
        alice.stat("/too-big").await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    // No partial blob is left in the store's temp area, and earlier data is intact.
    assert!(files_under(&blob_dir.join("tmp")).is_empty());
    assert_eq!(alice.download(kept.file_id).await, first);
    drop(server);
}

#[tokio::test]
async fn a_refused_upload_leaves_no_chunk_and_succeeds_once_space_is_freed() {
    let Some(disk) = SmallDisk::mount("8m") else {
        eprintln!("skipping: cannot mount a tmpfs here (not root?)");
        return;
    };
    let blob_dir = disk.dir.path().join("blobs");
    // GC would not touch the chunks for an hour: what goes, goes at the refusal.
    let server = TestServer::start_logged(&["--blob-dir", blob_dir.to_str().unwrap()], None);
    let alice = server.user("alice").await;
    let first = random_bytes(1 << 20, 10);
    alice.upload("/kept", &first, None).await;
    let kept_chunks = files_under(&blob_dir.join("chunks"));
    // Something else fills the disk.
    let filler = disk.dir.path().join("filler");
    std::fs::write(&filler, vec![7u8; 5 << 20]).unwrap();
    let wanted = random_bytes(3 << 20, 11);
    let response = alice.upload_raw("/wanted", wanted.clone(), None).await;
    expect_error(
        response,
        StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::InsufficientStorage,
    )
    .await;
    assert_eq!(
        files_under(&blob_dir.join("chunks")),
        kept_chunks,
        "the refused upload's chunks are gone at once"
    );
    std::fs::remove_file(&filler).unwrap();
    let done = alice.upload("/wanted", &wanted, None).await;
    assert_eq!(alice.download(done.file_id).await, wanted);
    assert!(server.log().contains("storage is full"), "{}", server.log());
}
