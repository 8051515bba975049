//! What the server logs: at its default level, starts, stops and logins, never a line
//! per request; with `--log-level debug` (or RUST_LOG), every request.

mod common;

use common::TestServer;

async fn some_requests(server: &TestServer) {
    let alice = server.user("alice").await;
    for i in 0..20 {
        alice.upload(&format!("/logs/{i}.txt"), b"x", None).await;
    }
    let refused = alice
        .upload_raw("/logs/0.txt", b"stale".to_vec(), Some(7))
        .await
        .status();
    assert_eq!(refused, reqwest::StatusCode::CONFLICT);
}

fn request_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(" request ") || l.ends_with(" request"))
        .count()
}

#[tokio::test]
async fn the_default_level_logs_no_line_per_request() {
    let mut server = TestServer::start_logged(&[], None);
    some_requests(&server).await;
    server.stop();
    let log = server.log();
    assert!(log.contains("serving"), "the start is logged:\n{log}");
    assert!(log.contains("login"), "logins are logged:\n{log}");
    assert!(log.contains("stopped"), "the stop is logged:\n{log}");
    assert_eq!(request_lines(&log), 0, "no request lines at INFO:\n{log}");
    assert!(!log.contains("/upload"), "no paths at INFO:\n{log}");
}

#[tokio::test]
async fn log_level_debug_logs_every_request() {
    let mut server = TestServer::start_logged(&["--log-level", "debug"], Some("warn"));
    some_requests(&server).await;
    server.stop();
    let log = server.log();
    // Beats RUST_LOG=warn: every request shows, with its path and status.
    assert!(request_lines(&log) >= 21, "a line per request:\n{log}");
    assert!(log.contains("status=409"), "the refused one too:\n{log}");
}

#[tokio::test]
async fn rust_log_is_honoured_without_log_level() {
    let mut server = TestServer::start_logged(&[], Some("cubby_server=debug"));
    some_requests(&server).await;
    server.stop();
    assert!(request_lines(&server.log()) >= 21, "{}", server.log());
}

#[test]
fn a_log_level_that_does_not_parse_is_refused() {
    let out = std::process::Command::new(common::server_bin())
        .args(["--log-level", "cubby=[", "serve", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run cubby-server");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--log-level"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
