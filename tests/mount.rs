//! The mount against a real server: the promises of docs/SEMANTICS.md, through the
//! kernel, with the shell tools people use. Every test unmounts, even when it fails.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cubby_proto::ContentHash;
use cubby_testkit::{Mount, fuse_available, random_bytes};

mod common;

use common::*;

#[test]
fn files_copy_in_and_out_byte_for_byte() {
    if !fuse_available("files_copy_in_and_out_byte_for_byte") {
        return;
    }
    let setup = setup();
    let mount = mount(&setup);
    let local = tempfile::tempdir().unwrap();
    for (name, size) in [
        ("zero", 0),
        ("one", 1),
        ("mib", 1 << 20),
        ("big", 100 << 20),
    ] {
        let data = random_bytes(size, size as u64);
        let source = local.path().join(name);
        fs::write(&source, &data).unwrap();
        fs::copy(&source, mount.path().join(name)).unwrap();
        assert_eq!(
            fs::metadata(mount.path().join(name)).unwrap().len(),
            size as u64
        );
        let out = local.path().join(format!("{name}.out"));
        fs::copy(mount.path().join(name), &out).unwrap();
        assert_eq!(hash_file(&out), ContentHash::of(&data), "{name}");
        // Once uploaded, the server has it, byte for byte.
        wait_synced(mount.path(), Duration::from_secs(30));
        let report = cli_json(
            &setup,
            &[
                "download",
                &format!("/{name}"),
                out.to_str().unwrap(),
                "--json",
            ],
        );
        assert_eq!(report["hash"], ContentHash::of(&data).to_string(), "{name}");
    }
    let listing = sh(mount.path(), "ls -l");
    for name in ["zero", "one", "mib", "big"] {
        assert!(listing.contains(name), "{listing}");
    }
    assert!(listing.contains(&format!("{}", 100 << 20)), "{listing}");
}

#[test]
fn shell_tools_mkdir_mv_rm_append_truncate() {
    if !fuse_available("shell_tools_mkdir_mv_rm_append_truncate") {
        return;
    }
    let setup = setup();
    let mount = mount(&setup);
    let root = mount.path();
    sh(
        root,
        "mkdir -p a/b/c && echo one > a/b/c/f && mv a/b/c/f a/g && mv a/b a/moved",
    );
    assert_eq!(fs::read_to_string(root.join("a/g")).unwrap(), "one\n");
    assert!(root.join("a/moved/c").is_dir());
    assert!(!root.join("a/b").exists());
    // A symlink waits for the journaled folders it goes in; a folder's mode and a move
    // are journaled after it. All of it reaches the server, in order.
    sh(
        root,
        "mkdir -p s/t && ln -s ../../a/g s/t/link && chmod 700 s && mv s s2",
    );
    assert_eq!(
        fs::read_link(root.join("s2/t/link")).unwrap(),
        Path::new("../../a/g")
    );
    assert_eq!(fs::metadata(root.join("s2")).unwrap().mode() & 0o777, 0o700);
    wait_synced(root, Duration::from_secs(10));
    let fresh = Mount::start(Path::new(CUBBY), &setup.config);
    assert_eq!(
        fs::read_to_string(fresh.path().join("s2/t/link")).unwrap(),
        "one\n"
    );
    assert_eq!(
        fs::metadata(fresh.path().join("s2")).unwrap().mode() & 0o777,
        0o700
    );
    drop(fresh);
    sh(root, "rm -r s2");
    // Append.
    let mut file = OpenOptions::new()
        .append(true)
        .open(root.join("a/g"))
        .unwrap();
    file.write_all(b"two\n").unwrap();
    drop(file);
    assert_eq!(fs::read_to_string(root.join("a/g")).unwrap(), "one\ntwo\n");
    // Truncate, shorter and longer, with and without an open handle.
    OpenOptions::new()
        .write(true)
        .open(root.join("a/g"))
        .unwrap()
        .set_len(3)
        .unwrap();
    assert_eq!(fs::read(root.join("a/g")).unwrap(), b"one");
    sh(root, "truncate -s 5 a/g");
    assert_eq!(fs::read(root.join("a/g")).unwrap(), b"one\0\0");
    sh(root, ": > a/g");
    assert_eq!(fs::metadata(root.join("a/g")).unwrap().len(), 0);
    // Random writes through one handle.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(root.join("a/g"))
        .unwrap();
    file.write_all(b"hello world").unwrap();
    file.seek(SeekFrom::Start(6)).unwrap();
    file.write_all(b"cubby").unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut back = String::new();
    file.read_to_string(&mut back).unwrap();
    assert_eq!(back, "hello cubby");
    drop(file);
    // A directory's new mode shows at once (its listing was cached at its creation).
    assert_eq!(sh(root, "mkdir m && chmod 111 m && stat -c %a m"), "111\n");
    sh(root, "chmod 755 m && rmdir m");
    // chmod and mtime.
    sh(root, "chmod 600 a/g && touch -d '2001-02-03 04:05:06' a/g");
    let meta = fs::metadata(root.join("a/g")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.mtime(), 981_173_106);
    // Removing.
    let not_empty = Command::new("rmdir").arg(root.join("a")).output().unwrap();
    assert!(!not_empty.status.success());
    sh(root, "rm -r a");
    assert!(!root.join("a").exists());
    assert_eq!(sh(root, "ls -A"), "");
    // Symlinks.
    sh(root, "echo target > t && ln -s t link");
    assert_eq!(fs::read_link(root.join("link")).unwrap(), Path::new("t"));
    assert_eq!(fs::read_to_string(root.join("link")).unwrap(), "target\n");
    // Hard links are refused with a clear errno.
    let err = fs::hard_link(root.join("t"), root.join("hard")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
}

#[test]
fn an_editors_save_is_a_new_version_of_the_same_file() {
    if !fuse_available("an_editors_save_is_a_new_version_of_the_same_file") {
        return;
    }
    let setup = setup();
    let mount = mount(&setup);
    let root = mount.path();
    write_synced(&root.join("notes.txt"), "draft 1\n");
    let before = cli_json(&setup, &["versions", "/notes.txt", "--json"]);
    // What vim does: write a temporary file, fsync it, rename it over the original.
    let temp = root.join(".notes.txt.swp");
    let mut file = fs::File::create(&temp).unwrap();
    file.write_all(b"draft 2\n").unwrap();
    file.sync_all().unwrap();
    drop(file);
    fs::rename(&temp, root.join("notes.txt")).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("notes.txt")).unwrap(),
        "draft 2\n"
    );
    // The rename reaches the server in the background.
    wait_synced(root, Duration::from_secs(10));
    let after = cli_json(&setup, &["versions", "/notes.txt", "--json"]);
    assert_eq!(
        after["file_id"], before["file_id"],
        "the save kept the file's id"
    );
    assert!(after["current_version"].as_u64() > before["current_version"].as_u64());
    assert!(!temp.exists());
    // The previous content is still in the history.
    let out = tempfile::tempdir().unwrap();
    let old = out.path().join("old");
    let version = before["current_version"].to_string();
    let status = Command::new(CUBBY)
        .arg("--config")
        .arg(&setup.config)
        .args([
            "download",
            "/notes.txt",
            old.to_str().unwrap(),
            "--version",
            &version,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fs::read_to_string(old).unwrap(), "draft 1\n");
}

#[test]
fn git_works_on_the_mount() {
    if !fuse_available("git_works_on_the_mount") {
        return;
    }
    let setup = setup();
    let mount = mount(&setup);
    sh(
        mount.path(),
        "git init -q repo && cd repo && git config user.email t@example.com && \
         git config user.name Tester && echo one > f && git add f && git commit -qm one && \
         echo two >> f && mkdir sub && echo three > sub/g && git add -A && git commit -qm two && \
         git fsck --strict && git status --porcelain",
    );
    let log = sh(&mount.path().join("repo"), "git log --oneline | wc -l");
    assert_eq!(log.trim(), "2");
}

#[test]
fn a_tar_of_2000_small_files_extracts_identically() {
    if !fuse_available("a_tar_of_2000_small_files_extracts_identically") {
        return;
    }
    let setup = setup();
    let mount = mount(&setup);
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    for i in 0..2000u64 {
        let dir = tree.join(format!("d{}", i % 25));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("f{i}")),
            random_bytes((i as usize * 37) % 8192, i),
        )
        .unwrap();
    }
    sh(local.path(), "tar cf small.tar tree");
    let archive = local.path().join("small.tar");
    sh(mount.path(), &format!("tar xf {}", archive.display()));
    sh(mount.path(), &format!("diff -r {} tree", tree.display()));
}

#[test]
fn two_mounts_editing_one_file_keep_both_versions() {
    if !fuse_available("two_mounts_editing_one_file_keep_both_versions") {
        return;
    }
    let setup = setup();
    let a = mount(&setup);
    let b = mount(&setup);
    write_synced(&a.path().join("shared.txt"), "base\n");
    // A opens (based on version 1) and writes; meanwhile B saves its own edit.
    let mut from_a = OpenOptions::new()
        .write(true)
        .open(a.path().join("shared.txt"))
        .unwrap();
    from_a.write_all(b"a longer edit from A\n").unwrap();
    write_synced(&b.path().join("shared.txt"), "edit from B\n");
    // A's upload finds version 2 on the server: its bytes go to a conflicted copy.
    drop(from_a);
    let a_status = wait_synced(a.path(), Duration::from_secs(10));
    assert_eq!(a_status["conflicts"].as_array().unwrap().len(), 1);
    // A's kernel held the attributes of A's own edit: the name now holds B's version.
    let on_a = a.path().join("shared.txt");
    assert_eq!(fs::metadata(&on_a).unwrap().len(), 12);
    assert_eq!(fs::read_to_string(&on_a).unwrap(), "edit from B\n");
    let conflicted_copy = || {
        fs::read_dir(b.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("shared (conflicted copy ") && n.ends_with(").txt"))
    };
    eventually(Duration::from_secs(3), "the copy shows on B", || {
        conflicted_copy().is_some()
    });
    let copy = conflicted_copy().unwrap();
    assert_eq!(
        fs::read_to_string(b.path().join("shared.txt")).unwrap(),
        "edit from B\n"
    );
    assert_eq!(
        fs::read_to_string(b.path().join(copy)).unwrap(),
        "a longer edit from A\n"
    );
}

#[test]
fn a_restarted_daemon_keeps_its_cache_usable() {
    if !fuse_available("a_restarted_daemon_keeps_its_cache_usable") {
        return;
    }
    let setup = setup();
    let mut first = mount(&setup);
    let data = random_bytes(6 << 20, 77);
    write_synced(&first.path().join("cached.bin"), &data);
    // A read through a fresh handle fills the chunk cache.
    let other = mount(&setup);
    assert_eq!(
        hash_file(&other.path().join("cached.bin")),
        ContentHash::of(&data)
    );
    drop(other);
    assert_eq!(
        hash_file(&first.path().join("cached.bin")),
        ContentHash::of(&data)
    );
    first.restart();
    assert_eq!(
        hash_file(&first.path().join("cached.bin")),
        ContentHash::of(&data)
    );
    let cached = walk(&first.cache_dir());
    assert!(!cached.is_empty(), "the chunk cache survived the restart");
    drop(setup.server);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

#[test]
fn extended_attributes() {
    if !fuse_available("extended_attributes") {
        return;
    }
    let setup = setup();
    let mount = mount(&setup);
    fs::write(mount.path().join("f"), "x").unwrap();
    let script = r#"
import errno, os
os.setxattr("f", "user.color", b"blue")
os.setxattr("f", "user.empty", b"")
print(os.getxattr("f", "user.color").decode())
print(",".join(sorted(os.listxattr("f"))))
print(os.getxattr("f", "user.cubby.version").decode(), os.getxattr("f", "user.cubby.status").decode())
for call in (lambda: os.setxattr("f", "user.color", b"red", os.XATTR_CREATE),
             lambda: os.setxattr("f", "user.new", b"v", os.XATTR_REPLACE),
             lambda: os.getxattr("f", "user.missing"),
             lambda: os.setxattr("f", "user.cubby.version", b"9"),
             lambda: os.setxattr("f", "trusted.x", b"v")):
    try:
        call()
        print("no error")
    except OSError as e:
        print(errno.errorcode[e.errno])
os.removexattr("f", "user.color")
print(",".join(sorted(os.listxattr("f"))))
"#;
    let out = sh(mount.path(), &format!("python3 -c '{script}'"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "blue");
    assert_eq!(
        lines[1],
        "user.color,user.cubby.hash,user.cubby.status,user.cubby.version,user.empty"
    );
    assert_eq!(lines[2], "2 synced");
    assert_eq!(
        &lines[3..8],
        ["EEXIST", "ENODATA", "ENODATA", "EPERM", "ENOTSUP"]
    );
    assert_eq!(
        lines[8],
        "user.cubby.hash,user.cubby.status,user.cubby.version,user.empty"
    );
}

#[test]
fn a_write_the_server_missed_is_committed_by_the_next_mount() {
    if !fuse_available("a_write_the_server_missed_is_committed_by_the_next_mount") {
        return;
    }
    let mut setup = setup();
    let mut mount = mount(&setup);
    let path = mount.path().join("doc.txt");
    write_synced(&path, "version one\n");
    let mut file = OpenOptions::new().write(true).open(&path).unwrap();
    // The server goes away; the write and its fsync are durable locally.
    setup.server.stop();
    let edit = b"version two, written while the server was down\n";
    file.write_all(edit).unwrap();
    file.sync_all().unwrap();
    drop(file);
    let offline = status(mount.path());
    assert_eq!(offline["online"], false, "{offline}");
    assert_eq!(offline["queue_depth"], 1, "{offline}");
    let text = status_text(mount.path());
    assert!(text.contains(": offline"), "{text}");
    assert!(text.contains("doc.txt"), "{text}");
    assert!(text.contains("last error ("), "{text}");
    assert_eq!(offline["pending_bytes"], edit.len(), "{offline}");
    assert!(offline["last_error"].is_string(), "{offline}");
    mount.stop();
    // The staged edit has its record in the pending log: the last line about it.
    let log = fs::read_to_string(mount.staging_dir().join("pending/log")).unwrap();
    let last = log.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("rec "), "{log}");
    let staged_name = last.split(' ').nth(1).unwrap();
    assert!(mount.staging_dir().join(staged_name).is_file(), "{log}");
    // The server is back; the next mount commits the staged write.
    setup.server.resume();
    mount.restart();
    wait_synced(mount.path(), Duration::from_secs(30));
    let out = tempfile::tempdir().unwrap();
    let back = out.path().join("back");
    let report = cli_json(
        &setup,
        &["download", "/doc.txt", back.to_str().unwrap(), "--json"],
    );
    // Version 1 is the empty file of `create`, 2 the first write, 3 the recovered one.
    assert_eq!(report["version"], 3);
    assert_eq!(fs::read(&back).unwrap(), edit);
    // Emptied: what is left are spare files kept for reuse and an empty pending log.
    // (What the mount knows of the tree, under `known/`, is a cache, not staged work.)
    let known = mount.staging_dir().join("known");
    eventually(Duration::from_secs(2), "staging emptied", || {
        cubby_testkit::files_under(&mount.staging_dir())
            .iter()
            .filter(|f| !f.starts_with(&known))
            .all(|f| fs::read(f).unwrap().is_empty())
    });
}

#[test]
fn a_daemon_killed_before_upload_sends_everything_on_the_next_mount() {
    if !fuse_available("a_daemon_killed_before_upload_sends_everything_on_the_next_mount") {
        return;
    }
    let mut setup = setup();
    let mut mount = mount(&setup);
    write_synced(&mount.path().join("existing.txt"), "old\n");
    setup.server.stop();
    // Closed, never fsynced, never uploaded: an edit, a new folder and a new file.
    fs::write(mount.path().join("existing.txt"), "edited offline\n").unwrap();
    fs::create_dir(mount.path().join("dir")).unwrap();
    let data = random_bytes(3 << 20, 5);
    fs::write(mount.path().join("dir/new.bin"), &data).unwrap();
    assert_eq!(status(mount.path())["queue_depth"], 4);
    mount.kill_and_restart_after(|| setup.server.resume());
    wait_synced(mount.path(), Duration::from_secs(30));
    let out = tempfile::tempdir().unwrap();
    let back = out.path().join("back");
    cli_json(
        &setup,
        &[
            "download",
            "/existing.txt",
            back.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(fs::read_to_string(&back).unwrap(), "edited offline\n");
    let report = cli_json(
        &setup,
        &["download", "/dir/new.bin", back.to_str().unwrap(), "--json"],
    );
    assert_eq!(report["hash"], ContentHash::of(&data).to_string());
}

#[test]
fn offline_reads_cached_files_and_queues_changes_in_order() {
    if !fuse_available("offline_reads_cached_files_and_queues_changes_in_order") {
        return;
    }
    let mut setup = setup();
    let mount = mount(&setup);
    let root = mount.path();
    let cached = random_bytes(5 << 20, 9);
    write_synced(&root.join("cached.bin"), &cached);
    sh(
        root,
        "mkdir -p docs && echo keep > docs/a && echo gone > docs/b",
    );
    // A file the mount has listed but never read: its content is not cached.
    let local = tempfile::tempdir().unwrap();
    fs::write(local.path().join("remote.bin"), random_bytes(1 << 20, 3)).unwrap();
    cli_json(
        &setup,
        &[
            "upload",
            local.path().join("remote.bin").to_str().unwrap(),
            "/remote.bin",
            "--json",
        ],
    );
    wait_synced(root, Duration::from_secs(10));
    eventually(Duration::from_secs(3), "remote.bin listed", || {
        root.join("remote.bin").exists()
    });
    assert_eq!(
        hash_file(&root.join("cached.bin")),
        ContentHash::of(&cached)
    );
    // What was browsed and read is what is there offline.
    sh(root, "ls -R > /dev/null && cat docs/a docs/b > /dev/null");
    // A small file written here and never read back: its content was cached when
    // committed.
    write_synced(&root.join("written.txt"), "written here\n");

    setup.server.stop();
    // Cached content reads; content never fetched fails fast, with EIO.
    assert_eq!(
        hash_file(&root.join("cached.bin")),
        ContentHash::of(&cached)
    );
    assert_eq!(
        fs::read_to_string(root.join("written.txt")).unwrap(),
        "written here\n"
    );
    let started = Instant::now();
    let err = fs::read(root.join("remote.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Changes are accepted and shown at once.
    sh(
        root,
        "echo edited >> docs/a && mkdir new && echo fresh > new/f && mv docs/a new/a && \
         rm docs/b && mv new renamed",
    );
    assert_eq!(sh(root, "ls renamed | tr '\\n' ' '"), "a f ");
    assert_eq!(sh(root, "ls docs"), "");
    let offline = status(root);
    assert_eq!(offline["online"], false, "{offline}");
    assert!(
        offline["pending_operations"].as_u64().unwrap() >= 4,
        "{offline}"
    );

    // The server is back: everything arrives, in order, byte for byte.
    setup.server.resume();
    wait_synced(root, Duration::from_secs(30));
    let fresh = Mount::start(Path::new(CUBBY), &setup.config);
    let other = fresh.path();
    assert_eq!(sh(other, "ls renamed | tr '\\n' ' '"), "a f ");
    assert_eq!(
        fs::read_to_string(other.join("renamed/a")).unwrap(),
        "keep\nedited\n"
    );
    assert_eq!(
        fs::read_to_string(other.join("renamed/f")).unwrap(),
        "fresh\n"
    );
    assert_eq!(sh(other, "ls docs"), "");
    assert_eq!(
        hash_file(&other.join("cached.bin")),
        ContentHash::of(&cached)
    );
}

#[test]
fn a_hundred_files_written_while_the_server_restarts_twice_all_arrive() {
    if !fuse_available("a_hundred_files_written_while_the_server_restarts_twice_all_arrive") {
        return;
    }
    let mut setup = setup();
    let mount = mount(&setup);
    let dir = mount.path().to_owned();
    let (progress_tx, progress_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        for i in 0..100u64 {
            let data = random_bytes(1000 + (i as usize * 7919) % 200_000, i);
            fs::write(dir.join(format!("f{i:03}")), &data).unwrap();
            progress_tx.send(i).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    for restart_after in [20, 60] {
        while progress_rx.recv().unwrap() < restart_after {}
        setup.server.restart();
    }
    writer.join().unwrap();
    wait_synced(mount.path(), Duration::from_secs(30));
    let fresh = Mount::start(Path::new(CUBBY), &setup.config);
    for i in 0..100u64 {
        let data = random_bytes(1000 + (i as usize * 7919) % 200_000, i);
        assert_eq!(
            hash_file(&fresh.path().join(format!("f{i:03}"))),
            ContentHash::of(&data),
            "f{i:03}"
        );
    }
}

#[test]
fn an_open_right_after_another_mounts_fsync_reads_all_of_the_new_version() {
    if !fuse_available("an_open_right_after_another_mounts_fsync_reads_all_of_the_new_version") {
        return;
    }
    let setup = setup();
    let a = mount(&setup);
    let b = mount(&setup);
    write_synced(&a.path().join("grows"), "short");
    for round in 0..5 {
        // B's kernel holds the file's attributes (and its size) for a second...
        let seen = fs::read_to_string(b.path().join("grows")).unwrap();
        assert_eq!(
            fs::metadata(b.path().join("grows")).unwrap().len(),
            seen.len() as u64
        );
        // ...when A commits a longer version: B's next open reads all of it at once.
        let longer = format!("{seen} and longer {round}");
        write_synced(&a.path().join("grows"), &longer);
        assert_eq!(fs::read_to_string(b.path().join("grows")).unwrap(), longer);
    }
}

#[test]
fn a_file_being_written_is_listed_and_read_at_its_local_size() {
    if !fuse_available("a_file_being_written_is_listed_and_read_at_its_local_size") {
        return;
    }
    let setup = setup();
    let mount = mount(&setup);
    let path = mount.path().join("growing");
    let mut writer = fs::File::create(&path).unwrap();
    let mut written = Vec::new();
    for round in 0..20 {
        let more = random_bytes(1000 + round * 7919, round as u64);
        writer.write_all(&more).unwrap();
        written.extend_from_slice(&more);
        // A listing carries attributes the kernel keeps (readdirplus), while commits of
        // earlier closes may run: it must list the size written here, or the reads
        // below stop at a stale one.
        let listed: Vec<_> = fs::read_dir(mount.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() == "growing")
            .map(|e| e.metadata().unwrap().len())
            .collect();
        assert_eq!(listed, [written.len() as u64], "round {round}");
        assert_eq!(fs::read(&path).unwrap(), written, "round {round}");
        if round % 5 == 4 {
            // A close commits in the background while the next rounds write.
            drop(writer);
            writer = OpenOptions::new().append(true).open(&path).unwrap();
        }
    }
    drop(writer);
    wait_synced(mount.path(), Duration::from_secs(30));
    let fresh = common::mount(&setup);
    assert_eq!(fs::read(fresh.path().join("growing")).unwrap(), written);
}

#[test]
fn the_status_of_a_long_queue_names_the_first_hundred_and_counts_the_rest() {
    if !fuse_available("the_status_of_a_long_queue_names_the_first_hundred_and_counts_the_rest") {
        return;
    }
    let mut setup = setup();
    let mount = mount(&setup);
    // Listed once, so offline creates can be checked against it.
    assert_eq!(fs::read_dir(mount.path()).unwrap().count(), 0);
    setup.server.stop();
    // 300 such names do not fit in the status attribute's 64 KiB (E2BIG) if all are
    // listed.
    let long = "n".repeat(240);
    for i in 0..300 {
        fs::write(mount.path().join(format!("{long}{i:03}")), "waiting\n").unwrap();
    }
    let offline = status(mount.path());
    assert_eq!(offline["pending_upload_count"], 300, "{offline}");
    assert_eq!(offline["pending_uploads"].as_array().unwrap().len(), 100);
    assert_eq!(offline["pending_bytes"], 300 * 8);
    let text = status_text(mount.path());
    assert!(text.contains("pending: 300 upload(s)"), "{text}");
    assert!(text.contains("and 200 more"), "{text}");
    setup.server.resume();
    wait_synced(mount.path(), Duration::from_secs(30));
}

#[test]
fn another_mount_sees_a_change_within_two_seconds() {
    if !fuse_available("another_mount_sees_a_change_within_two_seconds") {
        return;
    }
    let setup = setup();
    let a = mount(&setup);
    let b = mount(&setup);
    let within = Duration::from_secs(2);
    // B has looked, so it has something cached to be wrong about: the listing, and
    // the name as missing (the kernel keeps that for a second too).
    assert_eq!(sh(b.path(), "ls -A"), "");
    assert!(!b.path().join("shared").exists());
    fs::write(a.path().join("shared"), "one").unwrap();
    let took = eventually(within, "a new file", || {
        fs::read_to_string(b.path().join("shared")).is_ok_and(|s| s == "one")
    });
    eprintln!("a new file reached the other mount in {took:?}");
    // A handle opened on B keeps reading the version it opened.
    let mut pinned = fs::File::open(b.path().join("shared")).unwrap();
    write_synced(&a.path().join("shared"), "two!");
    let mut old = String::new();
    pinned.read_to_string(&mut old).unwrap();
    assert_eq!(old, "one");
    eventually(within, "an edit", || {
        fs::read_to_string(b.path().join("shared")).is_ok_and(|s| s == "two!")
    });
    fs::rename(a.path().join("shared"), a.path().join("renamed")).unwrap();
    eventually(within, "a rename", || {
        !b.path().join("shared").exists() && b.path().join("renamed").exists()
    });
    // Deleting through a mount moves the file to the trash.
    fs::remove_file(b.path().join("renamed")).unwrap();
    eventually(within, "a delete", || !a.path().join("renamed").exists());
    let trash = cli_json(&setup, &["trash", "--json"]);
    assert_eq!(trash["items"][0]["path"], "/renamed");
}

#[test]
fn offline_a_deleted_file_sends_nothing_symlinks_are_journaled_and_special_files_fail_with_eio() {
    if !fuse_available(
        "offline_a_deleted_file_sends_nothing_symlinks_are_journaled_and_special_files_fail_with_eio",
    ) {
        return;
    }
    let mut setup = setup();
    let mount = mount(&setup);
    let root = mount.path();
    write_synced(&root.join("synced.txt"), "on the server\n");
    sh(root, "ls > /dev/null");
    setup.server.stop();
    // A file written and deleted while its upload waits: nothing of it is sent.
    fs::write(root.join("scratch.tmp"), "short-lived").unwrap();
    fs::remove_file(root.join("scratch.tmp")).unwrap();
    let offline = status(root);
    assert_eq!(
        offline["pending_uploads"].as_array().unwrap().len(),
        0,
        "{offline}"
    );
    // Not journaled: a special file fails at once.
    let fifo = Command::new("mkfifo")
        .arg("fifo")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(!fifo.status.success());
    assert!(String::from_utf8_lossy(&fifo.stderr).contains("Input/output error"));
    // Journaled: a symlink, shown at once.
    sh(root, "ln -s synced.txt link");
    assert_eq!(
        fs::read_link(root.join("link")).unwrap(),
        Path::new("synced.txt")
    );
    // Journaled: the mode of a synced file, shown at once.
    fs::set_permissions(
        root.join("synced.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(
        fs::metadata(root.join("synced.txt")).unwrap().mode() & 0o777,
        0o600
    );
    // A file whose content waits takes its mode along.
    fs::write(root.join("new.txt"), "new\n").unwrap();
    fs::set_permissions(
        root.join("new.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    assert_eq!(
        fs::metadata(root.join("new.txt")).unwrap().mode() & 0o777,
        0o640
    );

    setup.server.resume();
    let synced = wait_synced(root, Duration::from_secs(30));
    assert_eq!(synced["conflicts"].as_array().unwrap().len(), 0, "{synced}");
    let fresh = Mount::start(Path::new(CUBBY), &setup.config);
    let names = sh(fresh.path(), "ls -A | tr '\\n' ' '");
    assert_eq!(
        names, "link new.txt synced.txt ",
        "no copy of the deleted file came back"
    );
    assert_eq!(
        fs::read_link(fresh.path().join("link")).unwrap(),
        Path::new("synced.txt"),
        "the journaled symlink reached the server"
    );
    assert_eq!(
        fs::metadata(fresh.path().join("new.txt")).unwrap().mode() & 0o777,
        0o640
    );
    assert_eq!(
        fs::metadata(fresh.path().join("synced.txt"))
            .unwrap()
            .mode()
            & 0o777,
        0o600,
        "the journaled mode reached the server"
    );
    assert_eq!(
        fs::read_to_string(fresh.path().join("new.txt")).unwrap(),
        "new\n"
    );
}
