//! Ordinary work on the mount, as a user does it, compared with what the same work
//! leaves on a local directory: rsync, SQLite, `rm -rf` of a tree just written, the
//! save-by-rename loop of compilers and linkers, `cargo build` and `git`, and writers
//! racing the commits of what they closed. Each test names the failure it
//! guards against. Every test unmounts, even when it fails.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;
use cubby_proto::ContentHash;
use cubby_testkit::{fuse_available, random_bytes};

/// What a tree holds, by relative path: kind and mode, modification time (not for
/// symlinks), and the content's hash or the link's target.
fn snapshot(root: &Path) -> BTreeMap<String, (u32, i64, String)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let (mtime, what) = if meta.file_type().is_symlink() {
                (0, format!("-> {}", fs::read_link(&path).unwrap().display()))
            } else if meta.is_dir() {
                pending.push(path.clone());
                (
                    meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                    String::new(),
                )
            } else {
                let hash = ContentHash::of(&fs::read(&path).unwrap());
                (
                    meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                    hash.to_hex(),
                )
            };
            out.insert(rel, (meta.mode(), mtime, what));
        }
    }
    out
}

/// The paths on which two snapshots differ, with both sides.
fn differences(
    local: &BTreeMap<String, (u32, i64, String)>,
    mounted: &BTreeMap<String, (u32, i64, String)>,
) -> Vec<String> {
    let mut paths: Vec<&String> = local.keys().chain(mounted.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|path| local.get(*path) != mounted.get(*path))
        .map(|path| {
            format!(
                "{path}: {:?} here, {:?} mounted",
                local.get(path),
                mounted.get(path)
            )
        })
        .collect()
}

/// Sets a file's or directory's modification time.
fn set_mtime(path: &Path, secs_ago: u64) {
    let when = SystemTime::now() - Duration::from_secs(secs_ago);
    fs::File::open(path).unwrap().set_modified(when).unwrap();
}

/// A tree like a package's documentation: nested directories with their own modes and
/// old times, files of several modes and sizes, symlinks (relative, absolute, dangling).
fn documentation_tree(root: &Path) {
    for d in 0..12u64 {
        let dir = root.join(format!("pkg{d}"));
        let nested = dir.join("examples").join("more");
        fs::create_dir_all(&nested).unwrap();
        for f in 0..30u64 {
            let at = if f % 3 == 0 { &nested } else { &dir };
            let file = at.join(format!("file{f}.txt"));
            fs::write(
                &file,
                random_bytes(((d * 31 + f * 977) % 20_000) as usize, d * 100 + f),
            )
            .unwrap();
            let mode = [0o644, 0o755, 0o600, 0o640][(f % 4) as usize];
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
            set_mtime(&file, 86_400 * (100 + d * 7 + f));
        }
        symlink("file1.txt", dir.join("link-relative")).unwrap();
        symlink("/usr/share/doc", dir.join("link-absolute")).unwrap();
        symlink("missing/target", dir.join("link-dangling")).unwrap();
        let modes = [0o755, 0o700, 0o750];
        for (at, mode) in [
            (&nested, modes[d as usize % 3]),
            (&dir.join("examples"), 0o755),
        ] {
            fs::set_permissions(at, fs::Permissions::from_mode(mode)).unwrap();
            set_mtime(at, 86_400 * (400 + d));
        }
        set_mtime(&dir, 86_400 * (500 + d));
    }
}

#[test]
fn rsync_a_keeps_content_modes_times_and_links() {
    // Before: rsync's last chmod and utimes of files and directories were lost or
    // undone by the commit of the content they were set on.
    if !fuse_available("rsync_a_keeps_content_modes_times_and_links") {
        return;
    }
    let setup = setup();
    let mut mount = mount(&setup);
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("doc");
    documentation_tree(&tree);
    let expected = snapshot(&tree);
    sh(mount.path(), &format!("rsync -a {}/ copy/", tree.display()));
    let copy = mount.path().join("copy");
    // The mount's own view, while the changes are sent: content, modes, links, and
    // the times of files and directories. (Before, a directory could show the server's
    // answer to an earlier change of its own times while changes inside it waited;
    // rsync then skipped its last touch-up, and the server kept the later change's.)
    let mut now = differences(&expected, &snapshot(&copy));
    for _ in 0..100 {
        if now.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        now = differences(&expected, &snapshot(&copy));
    }
    assert!(now.is_empty(), "on the mount:\n{}", now.join("\n"));
    let sent = wait_synced(mount.path(), Duration::from_secs(60));
    assert_eq!(sent["conflicts"], serde_json::json!([]), "{sent}");
    mount.restart();
    let synced = differences(&expected, &snapshot(&mount.path().join("copy")));
    assert!(synced.is_empty(), "on the server:\n{}", synced.join("\n"));
}

#[test]
fn sqlite_in_wal_mode_keeps_its_data_and_its_deleted_files_stay_gone() {
    // Before: SQLite's shared-memory file, written back through its mapping after
    // SQLite had deleted it, came back as `db (conflicted copy ..).sqlite-shm`.
    if !fuse_available("sqlite_in_wal_mode_keeps_its_data_and_its_deleted_files_stay_gone") {
        return;
    }
    let setup = setup();
    let mut mount = mount(&setup);
    let script = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
assert db.execute("pragma journal_mode=wal").fetchone()[0] == "wal"
db.execute("create table t (id integer primary key, body text)")
for i in range(20000):
    db.execute("insert into t (body) values (?)", ("row %d " % i * 4,))
    if i % 100 == 99:
        db.commit()
db.commit()
print(db.execute("pragma integrity_check").fetchone()[0], db.execute("select count(*) from t").fetchone()[0])
db.close()
"#;
    fs::create_dir(mount.path().join("app")).unwrap();
    let out = sh(
        mount.path(),
        &format!("python3 -c '{script}' app/db.sqlite"),
    );
    assert_eq!(out.trim(), "ok 20000");
    wait_synced(mount.path(), Duration::from_secs(60));
    // No conflicted copy at all: not of SQLite's own files, deleted at close, and not
    // of the database (a staged copy left under the local id of a file just created
    // was never sent, and the next open staged the empty file again beside it).
    let names = sh(mount.path(), "find . -name '*conflicted*'");
    assert_eq!(
        names.trim(),
        "",
        "conflicted copies of a single writer's files"
    );
    mount.restart();
    let count = sh(
        mount.path(),
        "python3 -c 'import sqlite3; d = sqlite3.connect(\"app/db.sqlite\"); \
         print(d.execute(\"pragma integrity_check\").fetchone()[0], \
         d.execute(\"select count(*) from t\").fetchone()[0])'",
    );
    assert_eq!(count.trim(), "ok 20000");
}

#[test]
fn rm_rf_of_a_tree_just_written_succeeds_the_first_time() {
    // Before: two edits of one cached listing raced (a replayed delete, a sibling's
    // new times) and a deleted directory came back: "Directory not empty".
    if !fuse_available("rm_rf_of_a_tree_just_written_succeeds_the_first_time") {
        return;
    }
    let setup = setup();
    let mut mount = mount(&setup);
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    for i in 0..1500u64 {
        let dir = tree.join(format!("a{}/b{}/c{}", i % 5, i % 15, i % 45));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("f{i}")),
            random_bytes((i as usize * 53) % 3000, i),
        )
        .unwrap();
    }
    sh(local.path(), "tar cf tree.tar tree");
    for round in 0..2 {
        sh(
            mount.path(),
            &format!(
                "mkdir r{round} && tar xf {} -C r{round} && rm -rf r{round}",
                local.path().join("tree.tar").display()
            ),
        );
        assert!(!mount.path().join(format!("r{round}")).exists());
    }
    let synced = wait_synced(mount.path(), Duration::from_secs(60));
    assert_eq!(synced["pending_upload_count"], 0, "{synced}");
    assert_eq!(synced["conflicts"], serde_json::json!([]), "{synced}");
    mount.restart();
    assert_eq!(fs::read_dir(mount.path()).unwrap().count(), 0);
}

/// Four threads write a temporary file, rename it into place (over the last one when
/// `over`, else to a new name), then open, `fstat` and map it, as compilers and linkers
/// do: the size and the bytes must be the renamed file's, at once.
fn rename_and_map_loop(over: bool) {
    let setup = setup();
    let mount = mount(&setup);
    let script = r#"
import mmap, os, sys, threading
OVER = sys.argv[1] == "true"
errors = []
def worker(t):
    for i in range(150):
        tmp, final = "t%d.tmp" % t, ("f%d.o" % t if OVER else "f%d-%d.o" % (t, i))
        data = os.urandom(1000 + (i * 37) % 5000) + b"Z"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, final)
        fd = os.open(final, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size != len(data):
                errors.append("%s: size %d, wrote %d" % (final, size, len(data)))
                return
            with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:
                if m[:] != data:
                    errors.append("%s: other bytes" % final)
                    return
        finally:
            os.close(fd)
threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print("; ".join(errors) or "ok")
"#;
    let out = sh(mount.path(), &format!("python3 -c '{script}' {over}"));
    assert_eq!(out.trim(), "ok");
    wait_synced(mount.path(), Duration::from_secs(60));
}

#[test]
fn a_file_saved_by_rename_is_whole_when_opened_and_mapped() {
    // Before: a listing fetched while the file was committed answered with its empty
    // first version, and fstat gave size 0.
    if !fuse_available("a_file_saved_by_rename_is_whole_when_opened_and_mapped") {
        return;
    }
    rename_and_map_loop(false);
}

#[test]
fn a_file_saved_by_rename_over_another_is_whole_when_opened_and_mapped() {
    // Before: the new file's staged copy could be left under its local id (staged after
    // its create was journaled, and the create replayed in between); opened by its
    // server id, it showed the empty file.
    if !fuse_available("a_file_saved_by_rename_over_another_is_whole_when_opened_and_mapped") {
        return;
    }
    rename_and_map_loop(true);
}

#[test]
fn a_file_deleted_while_open_keeps_working_and_nothing_of_it_comes_back() {
    // docs/SEMANTICS.md, "Deletes": the open handle reads and writes on; nothing
    // written after the delete is sent (before, it came back as a conflicted copy).
    if !fuse_available("a_file_deleted_while_open_keeps_working_and_nothing_of_it_comes_back") {
        return;
    }
    use std::io::{Read, Seek, SeekFrom, Write};
    let setup = setup();
    let mut mount = mount(&setup);
    let path = mount.path().join("scratch.db");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all(b"before").unwrap();
    file.sync_all().unwrap();
    fs::remove_file(&path).unwrap();
    file.write_all(b" after").unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut content = String::new();
    file.read_to_string(&mut content).unwrap();
    assert_eq!(content, "before after");
    drop(file);
    let synced = wait_synced(mount.path(), Duration::from_secs(30));
    assert_eq!(synced["conflicts"], serde_json::json!([]), "{synced}");
    mount.restart();
    assert_eq!(fs::read_dir(mount.path()).unwrap().count(), 0);
}

#[test]
fn a_file_renamed_over_another_while_open_keeps_its_last_writes() {
    // rustc renames dep-graph.part.bin over dep-graph.bin, then writes its tail and
    // closes. Before: the save committed what was written so far, and the tail became
    // a conflicted copy of the deleted source (the next build read a torn graph).
    if !fuse_available("a_file_renamed_over_another_while_open_keeps_its_last_writes") {
        return;
    }
    use std::io::Write;
    let setup = setup();
    let mut mount = mount(&setup);
    let root = mount.path().to_owned();
    fs::write(root.join("graph.bin"), b"the graph of the last build").unwrap();
    wait_synced(&root, Duration::from_secs(30));
    let head = random_bytes(300_000, 1);
    let tail = random_bytes(20_000, 2);
    let mut file = fs::File::create(root.join("graph.part.bin")).unwrap();
    file.write_all(&head).unwrap();
    fs::rename(root.join("graph.part.bin"), root.join("graph.bin")).unwrap();
    file.write_all(&tail).unwrap();
    drop(file);
    let whole = ContentHash::of(&[head, tail].concat());
    assert_eq!(hash_file(&root.join("graph.bin")), whole);
    let synced = wait_synced(&root, Duration::from_secs(30));
    assert_eq!(synced["conflicts"], serde_json::json!([]), "{synced}");
    // As the server has it.
    mount.restart();
    let names: Vec<String> = fs::read_dir(mount.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["graph.bin"]);
    assert_eq!(hash_file(&mount.path().join("graph.bin")), whole);
}

#[test]
fn every_committed_version_is_a_state_the_file_had_at_a_close() {
    // Before: a commit read the staged file while the next write went on, and committed
    // a mix of two closes (a version that never existed).
    if !fuse_available("every_committed_version_is_a_state_the_file_had_at_a_close") {
        return;
    }
    use std::io::Write;
    let setup = setup();
    let mount = mount(&setup);
    // One file sent in one request, one of several chunks' worth.
    let sizes = [("small.bin", 192 * 1024), ("large.bin", 3 << 20)];
    const CLOSES: u8 = 40;
    std::thread::scope(|scope| {
        for (name, size) in sizes {
            let path = mount.path().join(name);
            scope.spawn(move || {
                for k in 1..=CLOSES {
                    // Rewritten in place, piece by piece, so a commit that reads while
                    // a write goes on sees two closes at once.
                    let mut file = fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)
                        .unwrap();
                    let piece = vec![k; 16 * 1024];
                    for _ in 0..size / piece.len() {
                        file.write_all(&piece).unwrap();
                    }
                }
            });
        }
    });
    wait_synced(mount.path(), Duration::from_secs(120));
    for (name, size) in sizes {
        let closes: Vec<ContentHash> = (1..=CLOSES)
            .map(|k| ContentHash::of(&vec![k; size]))
            .collect();
        let listed = cli_json(&setup, &["versions", &format!("/{name}"), "--json"]);
        let versions = listed["versions"].as_array().unwrap();
        assert!(
            versions.iter().any(|version| version["size"] != 0),
            "{name}: no content was committed: {listed}"
        );
        for version in versions {
            let hash: ContentHash = version["hash"].as_str().unwrap().parse().unwrap();
            let empty = version["size"] == 0;
            assert!(
                empty || closes.contains(&hash),
                "{name}: version {version} is no state the file had at a close"
            );
        }
        assert_eq!(
            hash_file(&mount.path().join(name)),
            *closes.last().unwrap(),
            "{name}: the last close is current"
        );
    }
}

/// A small crate with a build script, a library, a binary and a test: what `cargo
/// build` does with it (scratch files renamed into place, object files mapped back,
/// lock files, hard-link-free incremental caches) is ordinary work on a folder.
fn small_crate(dir: &Path) {
    fs::create_dir_all(dir.join("src/bin")).unwrap();
    fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"small\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    )
    .unwrap();
    fs::write(
        dir.join("build.rs"),
        "fn main() {\n    let out = std::env::var(\"OUT_DIR\").unwrap();\n    std::fs::write(format!(\"{out}/answer.rs\"), \"pub const ANSWER: u32 = 42;\").unwrap();\n}\n",
    )
    .unwrap();
    fs::write(
        dir.join("src/lib.rs"),
        "include!(concat!(env!(\"OUT_DIR\"), \"/answer.rs\"));\n\npub mod words;\n\npub fn sum(values: &[u32]) -> u32 {\n    values.iter().sum()\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn sums() {\n        assert_eq!(super::sum(&[1, 2, 3]), 6);\n    }\n}\n",
    )
    .unwrap();
    fs::write(
        dir.join("src/words.rs"),
        "pub fn count(text: &str) -> usize {\n    text.split_whitespace().count()\n}\n",
    )
    .unwrap();
    fs::write(
        dir.join("src/bin/small.rs"),
        "fn main() {\n    println!(\"{} {}\", small::ANSWER + small::sum(&[1, 2]), small::words::count(\"a b c\"));\n}\n",
    )
    .unwrap();
}

#[test]
fn cargo_builds_tests_and_rebuilds_a_crate_on_the_mount() {
    // Before: rustc mapped object files it had just written and found them empty
    // ("memory map must have a non-zero length", or SIGBUS).
    if !fuse_available("cargo_builds_tests_and_rebuilds_a_crate_on_the_mount") {
        return;
    }
    let setup = setup();
    let mount = mount(&setup);
    let local = tempfile::tempdir().unwrap();
    for dir in [mount.path().join("small"), local.path().join("small")] {
        small_crate(&dir);
        let build = "cargo build --offline --quiet && cargo test --offline --quiet 2>&1 && ./target/debug/small";
        let out = sh(&dir, build);
        assert!(out.trim_end().ends_with("45 3"), "{}: {out}", dir.display());
        // An edit rebuilds incrementally.
        fs::write(
            dir.join("src/words.rs"),
            "pub fn count(text: &str) -> usize {\n    text.split_whitespace().count() * 2\n}\n",
        )
        .unwrap();
        let out = sh(
            &dir,
            "cargo build --offline --quiet && ./target/debug/small",
        );
        assert_eq!(out.trim(), "45 6", "{}", dir.display());
    }
    // A mount never conflicts with itself (rustc saves files over others while open).
    let synced = wait_synced(mount.path(), Duration::from_secs(120));
    assert_eq!(synced["conflicts"], serde_json::json!([]), "{synced}");
}

#[test]
fn git_init_commit_clone_fsck_and_status_on_the_mount() {
    if !fuse_available("git_init_commit_clone_fsck_and_status_on_the_mount") {
        return;
    }
    let setup = setup();
    let mount = mount(&setup);
    let root = mount.path();
    small_crate(&root.join("repo"));
    let git = "git -c user.name=t -c user.email=t@example.com";
    sh(
        &root.join("repo"),
        &format!(
            "git init -q -b main && git add -A && {git} commit -q -m one && \
             echo '// more' >> src/words.rs && {git} commit -q -am two && git gc -q"
        ),
    );
    sh(root, "git clone -q repo copy");
    for repo in ["repo", "copy"] {
        let dir = root.join(repo);
        sh(&dir, "git fsck --full --strict");
        assert_eq!(sh(&dir, "git status --porcelain"), "", "{repo} is clean");
        assert_eq!(sh(&dir, "git rev-list --count HEAD").trim(), "2");
    }
    assert_eq!(
        fs::read(root.join("copy/src/words.rs")).unwrap(),
        fs::read(root.join("repo/src/words.rs")).unwrap()
    );
    let synced = wait_synced(root, Duration::from_secs(60));
    assert_eq!(synced["conflicts"], serde_json::json!([]), "{synced}");
}
