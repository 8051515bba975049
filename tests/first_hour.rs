//! What a new user meets in the first hour: quiet logs for ordinary work, and a
//! history without noise.

use std::fs;
use std::path::Path;

use cubby_testkit::{Mount, fuse_available};

mod common;

use common::*;

#[test]
fn ordinary_copies_leave_the_mounts_log_empty() {
    if !fuse_available("ordinary_copies_leave_the_mounts_log_empty") {
        return;
    }
    let setup = setup();
    let mut mount = Mount::start_logged(Path::new(CUBBY), &setup.config);
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("source.bin");
    fs::write(&source, cubby_testkit::random_bytes(3 << 20, 16)).unwrap();
    // coreutils' cp tries copy_file_range and lseek(SEEK_DATA) first, Python's
    // copy_file_range goes straight to it, fallocate(1) asks for a reservation.
    sh(
        mount.path(),
        &format!(
            "cp {src} in.bin && cp in.bin again.bin && cp --sparse=always in.bin sparse.bin \
             && cp in.bin {out} && cmp {src} {out} && cmp in.bin again.bin \
             && python3 -c 'import os; a = os.open(\"in.bin\", os.O_RDONLY); \
                b = os.open(\"py.bin\", os.O_WRONLY | os.O_CREAT); \
                n = os.copy_file_range(a, b, 1 << 22) if hasattr(os, \"copy_file_range\") else 0' \
             ; fallocate -l 1M reserved.bin; true",
            src = source.display(),
            out = local.path().join("out.bin").display(),
        ),
    );
    // Unmounted while uploads are still going: nothing to report, nothing lost.
    let pending = cubby_testkit::random_bytes(24 << 20, 17);
    fs::write(mount.path().join("pending.bin"), &pending).unwrap();
    sh(
        mount.path(),
        "for i in $(seq 50); do echo $i > small-$i.txt; done",
    );
    mount.stop();
    let log = mount.log();
    assert!(
        !log.contains("Not Implemented") && !log.contains("WARN") && !log.contains("panicked"),
        "the mount's log after ordinary copies and an unmount with uploads going:\n{log}"
    );
    mount.restart();
    wait_synced(mount.path(), std::time::Duration::from_secs(60));
    assert_eq!(fs::read(mount.path().join("pending.bin")).unwrap(), pending);
    assert_eq!(
        fs::read_to_string(mount.path().join("small-50.txt")).unwrap(),
        "50\n"
    );
}

#[test]
fn status_shows_an_error_as_past_once_sync_recovers() {
    if !fuse_available("status_shows_an_error_as_past_once_sync_recovers") {
        return;
    }
    let mut setup = setup();
    let mount = mount(&setup);
    let root = mount.path();
    sh(root, "echo before > before.txt");
    wait_synced(root, std::time::Duration::from_secs(20));
    setup.server.stop();
    fs::write(
        root.join("while-down.txt"),
        "written while the server was down\n",
    )
    .unwrap();
    let start = std::time::Instant::now();
    let down = loop {
        let now = status(root);
        if now["online"] == false && now["last_error"].is_string() && now["retries"] != 0 {
            break now;
        }
        assert!(
            start.elapsed().as_secs() < 30,
            "never offline with an error: {now}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(down["last_error_note"]["current"], true, "{down}");
    assert!(down["last_error_note"]["at"].is_string(), "{down}");
    let text = status_text(root);
    assert!(text.contains("last error ("), "{text}");

    setup.server.resume();
    let synced = wait_synced(root, std::time::Duration::from_secs(30));
    // The next pass that goes through clears what no longer holds.
    let start = std::time::Instant::now();
    let now = loop {
        let now = status(root);
        if now["last_error"].is_null() || start.elapsed().as_secs() > 10 {
            break now;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        now["last_error"].is_null(),
        "still a current error: {now} (synced: {synced})"
    );
    assert_eq!(now["retries"], 0, "{now}");
    assert!(now["retries_total"].as_u64().unwrap() > 0, "{now}");
    assert_eq!(now["last_error_note"]["current"], false, "{now}");
    let text = status_text(root);
    assert!(text.contains("everything is synced"), "{text}");
    assert!(!text.contains("last error"), "{text}");
    assert!(text.contains("sync has gone through since"), "{text}");
}

#[test]
fn a_file_created_and_written_once_has_one_version() {
    if !fuse_available("a_file_created_and_written_once_has_one_version") {
        return;
    }
    let setup = setup();
    let mount = mount(&setup);
    let root = mount.path();
    sh(
        root,
        "echo 'first words' > notes.txt && mkdir -p d && cp notes.txt d/copy.txt",
    );
    wait_synced(root, std::time::Duration::from_secs(20));
    for remote in ["/notes.txt", "/d/copy.txt"] {
        let history = json_of(
            std::process::Command::new(CUBBY)
                .arg("--config")
                .arg(&setup.config)
                .args(["versions", remote, "--json"]),
        );
        let versions = history["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1, "{remote}: {history}");
        assert_eq!(versions[0]["size"], 12, "{remote}: {history}");
    }
    // A later edit is a version of its own, as always.
    sh(root, "echo 'more words' >> notes.txt");
    wait_synced(root, std::time::Duration::from_secs(20));
    let history = json_of(
        std::process::Command::new(CUBBY)
            .arg("--config")
            .arg(&setup.config)
            .args(["versions", "/notes.txt", "--json"]),
    );
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        2,
        "{history}"
    );
}
