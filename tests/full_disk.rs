//! Full disks lose nothing. The server's disk filling up is not this machine's: an
//! `fsync` keeps the data durably in the staging area and succeeds, and the sync worker
//! sends it once the server has room again.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cubby_proto::ContentHash;
use cubby_testkit::{Mount, TestServer, cubby_login, fuse_available, must_run_privileged};

mod common;

use common::*;

/// A small tmpfs, unmounted when dropped (even when the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one of `mib` MiB, or `None` when this user cannot mount (not root).
    fn mount(mib: u32, test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = nix::unistd::geteuid().is_root()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|status| status.success());
        if !mounted {
            assert!(!must_run_privileged(), "{test}: cannot mount a tmpfs");
            eprintln!("skipped {test}: mounting a tmpfs needs root");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left with one file, which is returned.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.path().join("filler");
        let status = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k", "status=none"])
            .arg(format!("of={}", filler.display()))
            .status()
            .unwrap();
        assert!(!status.success(), "dd ends with ENOSPC");
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn an_fsync_while_the_servers_disk_is_full_succeeds_and_the_data_arrives_later() {
    let name = "an_fsync_while_the_servers_disk_is_full_succeeds_and_the_data_arrives_later";
    if !fuse_available(name) {
        return;
    }
    let Some(blobs) = Tmpfs::mount(16, name) else {
        return;
    };
    let blob_dir = blobs.path().join("blobs");
    let server = TestServer::start_with(&["--blob-dir", blob_dir.to_str().unwrap()]);
    server.add_user("alice");
    let configs = tempfile::tempdir().unwrap();
    let config = cubby_login(Path::new(CUBBY), &server, "alice", configs.path());
    let mount = Mount::start(Path::new(CUBBY), &config);
    let root = mount.path();
    write_synced(&root.join("before.txt"), "while there was room\n");

    let filler = blobs.fill();
    let data = cubby_testkit::random_bytes(3 << 20, 11);
    // fsync succeeds: the bytes are durable here, and the server's full disk is not
    // this machine's (no ENOSPC, no EIO).
    write_synced(&root.join("while-full.bin"), &data);
    write_synced(&root.join("small.txt"), "a small one too\n");
    let waiting = status(root);
    assert_eq!(waiting["online"], true, "{waiting}");
    assert!(
        waiting["pending_upload_count"].as_u64().unwrap() >= 1,
        "{waiting}"
    );
    eventually(
        Duration::from_secs(10),
        "the status names the full disk",
        || {
            status(root)["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("full"))
        },
    );

    fs::remove_file(filler).unwrap();
    wait_synced(root, Duration::from_secs(60));
    let other = Mount::start(Path::new(CUBBY), &config);
    let there = other.path();
    assert_eq!(
        hash_file(&there.join("while-full.bin")),
        cubby_proto::ContentHash::of(&data)
    );
    assert_eq!(
        fs::read_to_string(there.join("small.txt")).unwrap(),
        "a small one too\n"
    );
    assert_eq!(
        fs::read_to_string(there.join("before.txt")).unwrap(),
        "while there was room\n"
    );
}

#[test]
fn a_full_local_disk_answers_enospc_and_loses_nothing() {
    let name = "a_full_local_disk_answers_enospc_and_loses_nothing";
    if !fuse_available(name) {
        return;
    }
    let Some(local) = Tmpfs::mount(24, name) else {
        return;
    };
    let setup = setup();
    // No reserve: the disk fills to the last byte.
    let no_reserve = ["--staging-reserve-mib", "0"];
    let mount = Mount::start_with_state(Path::new(CUBBY), &setup.config, local.path(), &no_reserve);
    let root = mount.path();
    write_synced(&root.join("before.txt"), "while there was room\n");
    // Written elsewhere, so reading it here needs the (full) chunk cache.
    let other = common::mount(&setup);
    let elsewhere = cubby_testkit::random_bytes(2 << 20, 5);
    write_synced(&other.path().join("elsewhere.bin"), &elsewhere);
    wait_synced(root, Duration::from_secs(10));

    let filler = local.fill();
    let data = cubby_testkit::random_bytes(4 << 20, 12);
    let written = fs::write(root.join("too-big.bin"), &data);
    let error = written.expect_err("a write to a full disk fails");
    assert_eq!(
        error.raw_os_error(),
        Some(libc::ENOSPC),
        "this machine's full disk is ENOSPC: {error}"
    );
    // What was there reads on, including what the cache has no room for.
    assert_eq!(
        fs::read_to_string(root.join("before.txt")).unwrap(),
        "while there was room\n"
    );
    assert_eq!(
        hash_file(&root.join("elsewhere.bin")),
        ContentHash::of(&elsewhere)
    );
    let full = status(root);
    assert_eq!(full["online"], true, "{full}");

    // Room again: the failed file is removed as an application would, and work goes on.
    let _ = fs::remove_file(root.join("too-big.bin"));
    fs::remove_file(filler).unwrap();
    write_synced(&root.join("after.bin"), &data);
    wait_synced(root, Duration::from_secs(30));
    let there = other.path();
    eventually(Duration::from_secs(5), "the other mount sees it", || {
        there.join("after.bin").exists() && !there.join("too-big.bin").exists()
    });
    assert_eq!(hash_file(&there.join("after.bin")), ContentHash::of(&data));
    assert_eq!(
        fs::read_to_string(there.join("before.txt")).unwrap(),
        "while there was room\n"
    );
}

#[test]
fn writes_leave_the_staging_disks_reserve_free() {
    let name = "writes_leave_the_staging_disks_reserve_free";
    if !fuse_available(name) {
        return;
    }
    let Some(local) = Tmpfs::mount(32, name) else {
        return;
    };
    let setup = setup();
    let reserve = ["--staging-reserve-mib", "20"];
    let mount = Mount::start_with_state(Path::new(CUBBY), &setup.config, local.path(), &reserve);
    let root = mount.path();
    // Room within what the reserve leaves.
    let small = cubby_testkit::random_bytes(2 << 20, 3);
    write_synced(&root.join("small.bin"), &small);
    // More than that is refused though the disk itself has room.
    let big = cubby_testkit::random_bytes(16 << 20, 4);
    let error = fs::write(root.join("big.bin"), &big).expect_err("the reserve stays free");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    let free = nix::sys::statvfs::statvfs(local.path()).unwrap();
    assert!(
        free.blocks_available() * free.fragment_size() >= 20 << 20,
        "the reserve is free"
    );
    let _ = fs::remove_file(root.join("big.bin"));
    wait_synced(root, Duration::from_secs(30));
    let other = common::mount(&setup);
    assert_eq!(
        hash_file(&other.path().join("small.bin")),
        ContentHash::of(&small)
    );
}

#[test]
fn mounts_sharing_a_chunk_cache_share_its_budget() {
    // Before: each mount held the folder to its own budget, so two mounts filled it to
    // twice the size given.
    if !fuse_available("mounts_sharing_a_chunk_cache_share_its_budget") {
        return;
    }
    let setup = setup();
    let writer = common::mount(&setup);
    let sizes: Vec<Vec<u8>> = (0..6)
        .map(|seed| cubby_testkit::random_bytes(2 << 20, 100 + seed))
        .collect();
    for (i, data) in sizes.iter().enumerate() {
        write_synced(&writer.path().join(format!("f{i}.bin")), data);
    }
    let shared = tempfile::tempdir().unwrap();
    let cache = shared.path().to_str().unwrap();
    let args = ["--cache-dir", cache, "--cache-mib", "4"];
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let readers: Vec<Mount> = states
        .iter()
        .map(|state| Mount::start_with_state(Path::new(CUBBY), &setup.config, state.path(), &args))
        .collect();
    // Each reads other files: 6 MiB of chunks each, through one 4 MiB folder.
    for (i, data) in sizes.iter().enumerate() {
        let reader = &readers[i % 2];
        assert_eq!(
            hash_file(&reader.path().join(format!("f{i}.bin"))),
            ContentHash::of(data)
        );
    }
    let held = || -> u64 {
        cubby_testkit::files_under(shared.path())
            .iter()
            .map(|file| fs::metadata(file).map_or(0, |m| m.len()))
            .sum()
    };
    // Swept on a thread of its own, moments after the last chunk came in.
    eventually(
        Duration::from_secs(5),
        "the folder within its budget",
        || held() <= 4 << 20,
    );
    assert!(held() > 0, "the folder caches something");
    // What the other mount removed is fetched again.
    assert_eq!(
        hash_file(&readers[1].path().join("f0.bin")),
        ContentHash::of(&sizes[0])
    );
}
