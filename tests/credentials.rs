//! A mount outlives its login token: when the server refuses an expired token, the mount
//! renews it with the login's refresh token, saves it, and goes on.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cubby_testkit::{Mount, TestServer, cubby_login, fuse_available};

mod common;

use common::*;

fn saved(config: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(config).unwrap()).unwrap()
}

#[test]
fn a_mount_renews_its_expired_login_token_and_keeps_working() {
    if !fuse_available("a_mount_renews_its_expired_login_token_and_keeps_working") {
        return;
    }
    // Tokens live 2 s (and the server's 5 s of clock leeway).
    let server = TestServer::start_with(&["--token-ttl-secs", "2"]);
    server.add_user("alice");
    let configs = tempfile::tempdir().unwrap();
    let config = cubby_login(Path::new(CUBBY), &server, "alice", configs.path());
    let first = saved(&config);
    assert!(first["refresh_token"].is_string(), "{first}");
    let mount = Mount::start(Path::new(CUBBY), &config);
    let root = mount.path();
    write_synced(&root.join("before.txt"), "written with the first token\n");

    std::thread::sleep(Duration::from_secs(9));
    // The first token is refused by now: this fsync needs a renewed one.
    write_synced(&root.join("after.txt"), "written after it expired\n");
    let synced = wait_synced(root, Duration::from_secs(20));
    assert!(synced["last_error"].is_null(), "{synced}");

    let renewed = saved(&config);
    assert_ne!(renewed["token"], first["token"], "the new token is saved");
    assert_eq!(renewed["refresh_token"], first["refresh_token"]);
    let mode = fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the configuration stays private");

    // Another client with the saved configuration finds both files on the server.
    let other = Mount::start(Path::new(CUBBY), &config);
    assert_eq!(
        fs::read_to_string(other.path().join("before.txt")).unwrap(),
        "written with the first token\n"
    );
    assert_eq!(
        fs::read_to_string(other.path().join("after.txt")).unwrap(),
        "written after it expired\n"
    );
}

#[test]
fn a_bad_refresh_token_renews_nothing() {
    let server = TestServer::start();
    server.add_user("alice");
    let configs = tempfile::tempdir().unwrap();
    let config = cubby_login(Path::new(CUBBY), &server, "alice", configs.path());
    let good = saved(&config)["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["-H", "content-type: application/json", "--data"])
            .arg(serde_json::json!({ "refresh_token": token }).to_string())
            .arg(format!("{}/auth/refresh", server.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(refresh(&good), "200");
    let mut wrong = good.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    assert_eq!(refresh(&String::from_utf8(wrong).unwrap()), "401");
    assert_eq!(refresh(""), "401");
}
