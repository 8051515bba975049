//! Authentication: every endpoint but health and login needs a valid token.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{PASSWORD, TestServer, expect_error};
use cubby_proto::ErrorCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::json;

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn secret(server: &TestServer) -> Vec<u8> {
    let text = std::fs::read_to_string(server.data.path().join("jwt.secret")).unwrap();
    hex::decode(text.trim()).unwrap()
}

fn sign(claims: serde_json::Value, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key),
    )
    .unwrap()
}

async fn status_with(server: &TestServer, auth: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{}/list?path=/", server.url));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.unwrap()
}

async fn refused(server: &TestServer, auth: Option<&str>) {
    expect_error(
        status_with(server, auth).await,
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
    )
    .await;
}

#[tokio::test]
async fn health_needs_no_token() {
    let server = TestServer::start();
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let response = http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn valid_token_works_and_bad_tokens_are_refused() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    let good = format!("Bearer {}", alice.token);
    assert_eq!(
        status_with(&server, Some(&good)).await.status(),
        StatusCode::OK
    );

    let key = secret(&server);
    let claims = |aud: &str, iat: i64, exp: i64| json!({"sub": "1", "name": "alice", "aud": aud, "iat": iat, "exp": exp});
    // No token, and malformed headers.
    refused(&server, None).await;
    refused(&server, Some("Basic YWxpY2U6cHc=")).await;
    refused(&server, Some("Bearer not-a-jwt")).await;
    // Right claims, wrong key.
    let forged = sign(
        claims("cubby", now(), now() + 600),
        b"0123456789abcdef0123456789abcdef",
    );
    refused(&server, Some(&format!("Bearer {forged}"))).await;
    // Right key, expired.
    let expired = sign(claims("cubby", now() - 7200, now() - 3600), &key);
    refused(&server, Some(&format!("Bearer {expired}"))).await;
    // Right key, wrong audience.
    let other_aud = sign(claims("someone-else", now(), now() + 600), &key);
    refused(&server, Some(&format!("Bearer {other_aud}"))).await;
    // Right key, no expiry at all.
    let no_exp = sign(
        json!({"sub": "1", "aud": "cubby", "iat": now(), "name": "a"}),
        &key,
    );
    refused(&server, Some(&format!("Bearer {no_exp}"))).await;
    // Right key, issued in the future.
    let future = sign(claims("cubby", now() + 3600, now() + 7200), &key);
    refused(&server, Some(&format!("Bearer {future}"))).await;
    // A user that does not exist.
    let ghost = sign(
        json!({"sub": "99", "name": "x", "aud": "cubby", "iat": now(), "exp": now() + 600}),
        &key,
    );
    refused(&server, Some(&format!("Bearer {ghost}"))).await;
    // alg=none, unsigned.
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims("cubby", now(), now() + 600).to_string().as_bytes());
    refused(&server, Some(&format!("Bearer {header}.{payload}."))).await;
    // A good signature with the header switched to another algorithm.
    let parts: Vec<&str> = alice.token.split('.').collect();
    let hs512 = b64(br#"{"alg":"HS512","typ":"JWT"}"#);
    refused(
        &server,
        Some(&format!("Bearer {hs512}.{}.{}", parts[1], parts[2])),
    )
    .await;
    // Tampered payload keeps the old signature.
    let tampered = b64(
        json!({"sub": "1", "name": "alice", "aud": "cubby", "iat": now(), "exp": now() + 99999})
            .to_string()
            .as_bytes(),
    );
    refused(
        &server,
        Some(&format!("Bearer {}.{tampered}.{}", parts[0], parts[2])),
    )
    .await;
}

#[tokio::test]
async fn login_failures() {
    let server = TestServer::start();
    server.add_user("alice");
    let http = reqwest::Client::new();
    let login = |body: serde_json::Value| {
        http.post(format!("{}/auth/login", server.url))
            .json(&body)
            .send()
    };
    let wrong = login(json!({"username": "alice", "password": "nope"}))
        .await
        .unwrap();
    expect_error(
        wrong,
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidCredentials,
    )
    .await;
    let unknown = login(json!({"username": "mallory", "password": PASSWORD}))
        .await
        .unwrap();
    expect_error(
        unknown,
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidCredentials,
    )
    .await;
    let missing = login(json!({"username": "alice"})).await.unwrap();
    assert!(missing.status().is_client_error());
    let ok = login(json!({"username": "alice", "password": PASSWORD}))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert!(body["expires_at"].as_i64().unwrap() > now());
}

#[test]
fn user_add_refuses_duplicates_and_bad_names() {
    let server = TestServer::start();
    server.add_user("alice");
    let run = |args: &[&str]| {
        std::process::Command::new(common::server_bin())
            .args(args)
            .arg("--data")
            .arg(server.data.path())
            .output()
            .unwrap()
    };
    let again = run(&["user", "add", "alice", "--password", "x"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let bad = run(&["user", "add", "a/b", "--password", "x"]);
    assert!(!bad.status.success());
}

#[tokio::test]
async fn user_add_reads_the_password_from_stdin() {
    use std::io::Write;
    let server = TestServer::start();
    let mut child = std::process::Command::new(common::server_bin())
        .args(["user", "add", "carol", "--data"])
        .arg(server.data.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    // The password from stdin (without its newline) logs in.
    let carol = server.login("carol").await;
    assert!(!carol.token.is_empty());
}
