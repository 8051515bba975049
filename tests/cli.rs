//! The `cubby` command line against a real server: login, chunked upload and download,
//! what an edit re-sends, and conflicts that keep both sides.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cubby_proto::ContentHash;
use cubby_testkit::{TestServer, cubby_login, random_bytes};
use serde_json::Value;

/// A logged-in `cubby` with its own configuration file.
struct Cli {
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn login(server: &TestServer, user: &str) -> Self {
        server.add_user(user);
        let dir = tempfile::tempdir().unwrap();
        let config = cubby_login(
            Path::new(env!("CARGO_BIN_EXE_cubby")),
            server,
            user,
            dir.path(),
        );
        Cli { config, _dir: dir }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cubby"));
        command.arg("--config").arg(&self.config);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn upload(&self, local: &Path, remote: &str, extra: &[&str]) -> (Output, Value) {
        let mut args = vec!["upload", local.to_str().unwrap(), remote, "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, report)
    }

    fn upload_ok(&self, local: &Path, remote: &str, extra: &[&str]) -> Value {
        let (out, report) = self.upload(local, remote, extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        report
    }

    fn download_ok(&self, remote: &str, local: &Path) -> Value {
        let out = self.run(&["download", remote, local.to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn hash_of(path: &Path) -> ContentHash {
    ContentHash::of(&std::fs::read(path).unwrap())
}

#[test]
fn upload_download_and_what_edits_resend() {
    let server = TestServer::start();
    let cli = Cli::login(&server, "alice");
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("big.bin");
    let data = random_bytes(100 << 20, 41);
    std::fs::write(&original, &data).unwrap();

    let first = cli.upload_ok(&original, "/big.bin", &[]);
    assert_eq!(first["version"], 1);
    assert_eq!(first["bytes_sent"], data.len() as u64);
    assert_eq!(first["hash"], ContentHash::of(&data).to_string());
    let back = dir.path().join("back.bin");
    let report = cli.download_ok("/big.bin", &back);
    assert_eq!(report["version"], 1);
    assert_eq!(hash_of(&back), ContentHash::of(&data));

    // The same file again sends no chunk bytes.
    let again = cli.upload_ok(&original, "/big.bin", &[]);
    assert_eq!(
        (again["version"].as_u64(), again["bytes_sent"].as_u64()),
        (Some(2), Some(0))
    );

    // One byte changed in the middle: at most 2 chunks.
    let mut changed = data.clone();
    changed[data.len() / 2] ^= 0x55;
    std::fs::write(&original, &changed).unwrap();
    let edit = cli.upload_ok(&original, "/big.bin", &[]);
    assert!(edit["chunks_sent"].as_u64().unwrap() <= 2, "{edit}");

    // One byte inserted at the start: at most 2 chunks.
    let mut inserted = vec![0u8];
    inserted.extend_from_slice(&data);
    std::fs::write(&original, &inserted).unwrap();
    let insert = cli.upload_ok(&original, "/big.bin", &[]);
    assert!(insert["chunks_sent"].as_u64().unwrap() <= 2, "{insert}");
    assert_eq!(insert["version"], 4);
    cli.download_ok("/big.bin", &back);
    assert_eq!(hash_of(&back), ContentHash::of(&inserted));

    // Old versions stay downloadable.
    let out = cli.run(&[
        "download",
        "/big.bin",
        back.to_str().unwrap(),
        "--version",
        "3",
    ]);
    assert!(out.status.success());
    assert_eq!(hash_of(&back), ContentHash::of(&changed));
}

#[test]
fn two_uploads_from_the_same_base_keep_both() {
    let server = TestServer::start();
    let cli = Cli::login(&server, "alice");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"version one\n").unwrap();
    cli.upload_ok(&file, "/notes.txt", &["--new"]);

    let ours = dir.path().join("ours.txt");
    let theirs = dir.path().join("theirs.txt");
    std::fs::write(&ours, b"our edit\n").unwrap();
    std::fs::write(&theirs, b"their edit\n").unwrap();
    let won = cli.upload_ok(&theirs, "/notes.txt", &["--base-version", "1"]);
    assert_eq!(won["version"], 2);
    let (lost, report) = cli.upload(&ours, "/notes.txt", &["--base-version", "1"]);
    assert_eq!(
        lost.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&lost.stderr)
    );
    assert_eq!(report["conflict"]["current_version"], 2);
    let copy = report["conflict"]["conflicted_copy"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(copy.starts_with("/notes (conflicted copy "), "{copy}");
    assert!(copy.ends_with(").txt"), "{copy}");
    assert!(String::from_utf8_lossy(&lost.stderr).contains("conflict"));

    // The winner is current; the loser's bytes are in the copy.
    let back = dir.path().join("back");
    cli.download_ok("/notes.txt", &back);
    assert_eq!(std::fs::read(&back).unwrap(), b"their edit\n");
    cli.download_ok(&copy, &back);
    assert_eq!(std::fs::read(&back).unwrap(), b"our edit\n");
    // Creating with --new over an existing file is a conflict too, kept the same way.
    let (out, report) = cli.upload(&ours, "/notes.txt", &["--new"]);
    assert_eq!(out.status.code(), Some(3));
    assert_ne!(
        report["conflict"]["conflicted_copy"].as_str().unwrap(),
        copy
    );
}

#[test]
fn clear_errors() {
    let server = TestServer::start();
    let cli = Cli::login(&server, "alice");
    let dir = tempfile::tempdir().unwrap();
    let out = cli.run(&["download", "/nope", dir.path().join("x").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    assert!(!dir.path().join("x").exists());
    let out = cli.run(&["upload", dir.path().join("missing").to_str().unwrap(), "/x"]);
    assert_eq!(out.status.code(), Some(1));
    let out = cli.run(&["upload", "/etc/hostname", "relative/path"]);
    assert_eq!(out.status.code(), Some(1));
    // Not logged in.
    let out = Command::new(env!("CARGO_BIN_EXE_cubby"))
        .args([
            "--config",
            dir.path().join("none.json").to_str().unwrap(),
            "download",
            "/a",
            "b",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cubby login"));
    // Wrong password.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cubby"))
        .args(["--config", dir.path().join("c.json").to_str().unwrap()])
        .args([
            "login",
            "--server",
            &server.url,
            "--username",
            "alice",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"wrong\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(!dir.path().join("c.json").exists());
}

#[test]
fn versions_restore_rm_and_trash() {
    let server = TestServer::start();
    let cli = Cli::login(&server, "alice");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    for text in ["first\n", "second\n", "third\n"] {
        std::fs::write(&file, text).unwrap();
        cli.upload_ok(&file, "/notes/f.txt", &[]);
    }
    let out = cli.run(&["versions", "/notes/f.txt", "--json"]);
    assert!(out.status.success());
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history["current_version"], 3);
    assert_eq!(history["versions"].as_array().unwrap().len(), 3);
    assert_eq!(history["versions"][2]["author"], "alice");
    assert!(
        history["versions"][2]["device"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    let listing = cli.run(&["versions", "/notes/f.txt"]);
    assert_eq!(String::from_utf8_lossy(&listing.stdout).lines().count(), 3);

    let out = cli.run(&["restore", "/notes/f.txt", "--version", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("as version 4"));
    let back = dir.path().join("back");
    cli.download_ok("/notes/f.txt", &back);
    assert_eq!(std::fs::read(&back).unwrap(), b"first\n");

    let out = cli.run(&["rm", "/notes"]);
    assert_eq!(out.status.code(), Some(1), "a folder needs -r");
    let out = cli.run(&["rm", "-r", "/notes"]);
    assert!(out.status.success());
    let out = cli.run(&["download", "/notes/f.txt", back.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let out = cli.run(&["trash", "--json"]);
    let trash: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(trash["items"][0]["path"], "/notes");
    let out = cli.run(&["trash", "restore", "/notes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli.download_ok("/notes/f.txt", &back);
    assert_eq!(std::fs::read(&back).unwrap(), b"first\n");
    let out = cli.run(&["trash", "restore", "/notes"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn errors_say_which_server_and_what_to_try_and_are_json_with_json() {
    let mut server = TestServer::start();
    let cli = Cli::login(&server, "alice");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("off.txt");
    std::fs::write(&local, b"not sent").unwrap();
    server.stop();

    let (out, report) = cli.upload(&local, "/off.txt", &[]);
    assert_eq!(out.status.code(), Some(4), "{report}");
    let error = &report["error"];
    assert_eq!(error["code"], "unreachable", "{report}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&server.url) && !message.contains("/upload"),
        "names the server, not the request: {message}"
    );
    assert!(
        error["hint"].as_str().unwrap().contains("mount.sh"),
        "{report}"
    );

    let out = cli.run(&["versions", "/off.txt"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(out.stdout.is_empty());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("cannot reach the server at"), "{said}");
    assert!(said.contains("try: "), "{said}");

    server.resume();
    let out = cli.run(&["download", "/missing.txt", "/tmp/missing.txt", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["error"]["code"], "not_found", "{report}");

    let nobody = dir.path().join("nobody.json");
    let out = Command::new(env!("CARGO_BIN_EXE_cubby"))
        .arg("--config")
        .arg(&nobody)
        .args(["download", "/x", "/tmp/x", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["error"]["code"], "not_logged_in", "{report}");
}
