//! Helpers shared by the suites that mount: a server with a logged-in user, a mount,
//! shell commands, the CLI's JSON and waiting for sync.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cubby_proto::ContentHash;
use cubby_testkit::{Mount, TestServer, cubby_login};

pub const CUBBY: &str = env!("CARGO_BIN_EXE_cubby");

pub struct Setup {
    pub server: TestServer,
    pub config: std::path::PathBuf,
    pub _configs: tempfile::TempDir,
}

pub fn setup() -> Setup {
    let server = TestServer::start();
    server.add_user("alice");
    let configs = tempfile::tempdir().unwrap();
    let config = cubby_login(Path::new(CUBBY), &server, "alice", configs.path());
    Setup {
        server,
        config,
        _configs: configs,
    }
}

pub fn mount(setup: &Setup) -> Mount {
    Mount::start(Path::new(CUBBY), &setup.config)
}

pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the CLI and parses what it printed as JSON (it must succeed).
pub fn json_of(command: &mut Command) -> serde_json::Value {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn cli_json(setup: &Setup, args: &[&str]) -> serde_json::Value {
    json_of(
        Command::new(CUBBY)
            .arg("--config")
            .arg(&setup.config)
            .args(args),
    )
}

/// `cubby status DIR --json`.
pub fn status(dir: &Path) -> serde_json::Value {
    json_of(Command::new(CUBBY).args(["status", "--json"]).arg(dir))
}

/// `cubby status DIR`, in words.
pub fn status_text(dir: &Path) -> String {
    let out = Command::new(CUBBY).arg("status").arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (up to `limit`) until the mount at `dir` is online with nothing left to send.
pub fn wait_synced(dir: &Path, limit: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let now = status(dir);
        if now["online"] == true && now["queue_depth"] == 0 {
            return now;
        }
        assert!(start.elapsed() < limit, "not synced after {limit:?}: {now}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `check` until it holds, failing after `limit`; returns how long it took.
pub fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Writes a file and fsyncs it: committed on the server when this returns.
pub fn write_synced(path: &Path, data: impl AsRef<[u8]>) {
    let mut file = fs::File::create(path).unwrap();
    file.write_all(data.as_ref()).unwrap();
    file.sync_all().unwrap();
}

pub fn hash_file(path: &Path) -> ContentHash {
    ContentHash::of(&fs::read(path).unwrap())
}
