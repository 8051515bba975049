//! The filesystem core without a kernel: the operations the mount serves, called
//! directly against a real server. Faster to debug than a mount, and the same code.

use std::ffi::OsStr;

use cubby::fs::{CubbyFs, FsConfig, FsError, Owner, ROOT_INO};
use cubby::remote::Remote;
use cubby_proto::api::EntryKind;
use cubby_testkit::{PASSWORD, TestServer};

struct Core {
    fs: CubbyFs,
    _state: tempfile::TempDir,
}

fn core(server: &TestServer, runtime: &tokio::runtime::Runtime) -> Core {
    let login = runtime
        .block_on(Remote::login(&server.url, "alice", PASSWORD))
        .unwrap();
    let remote = Remote::new(&server.url, &login.token);
    let state = tempfile::tempdir().unwrap();
    let config = FsConfig {
        staging_dir: state.path().join("staging"),
        cache_dir: state.path().join("cache"),
        cache_bytes: 64 << 20,
        staging_reserve_bytes: 0,
        metadata_ttl: std::time::Duration::from_secs(1),
        uid: 1000,
        gid: 1000,
    };
    let fs = CubbyFs::new(remote, runtime.handle().clone(), config).unwrap();
    Core { fs, _state: state }
}

const ME: Owner = Owner {
    uid: 1000,
    gid: 1000,
};

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[test]
fn create_write_commit_read_rename_delete() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = TestServer::start();
    server.add_user("alice");
    let Core { fs, .. } = &core(&server, &runtime);

    let (created, fh) = fs.create(ROOT_INO, name("a.txt"), 0o600, ME).unwrap();
    assert_eq!((created.size, created.mode), (0, 0o600));
    fs.write(fh, 0, b"hello").unwrap();
    let ino = fs.ino_of(created.id);
    assert_eq!(
        fs.xattr(ino, "user.cubby.status").unwrap().unwrap(),
        b"pending"
    );
    assert_eq!(
        fs.getattr(ino).unwrap().size,
        5,
        "stat shows uncommitted writes"
    );
    fs.fsync(fh).unwrap();
    assert_eq!(
        fs.xattr(ino, "user.cubby.status").unwrap().unwrap(),
        b"synced"
    );
    fs.release(fh).unwrap();

    let (reader, _) = fs.open(ino, false, false).unwrap();
    assert_eq!(fs.read(reader, 0, 100).unwrap(), b"hello");
    assert_eq!(fs.read(reader, 3, 100).unwrap(), b"lo");
    assert!(fs.read(reader, 10, 100).unwrap().is_empty());
    fs.release(reader).unwrap();
    let version = fs.xattr(ino, "user.cubby.version").unwrap().unwrap();
    assert_eq!(version, b"2");

    let dir = fs.mkdir(ROOT_INO, name("d"), 0o755, ME).unwrap();
    let dir_ino = fs.ino_of(dir.id);
    fs.rename(ROOT_INO, name("a.txt"), dir_ino, name("b.txt"), false)
        .unwrap();
    assert!(matches!(
        fs.lookup(ROOT_INO, name("a.txt")),
        Err(FsError::NotFound)
    ));
    let moved = fs.lookup(dir_ino, name("b.txt")).unwrap();
    assert_eq!(
        fs.ino_of(moved.id),
        fs.ino_of(created.id),
        "inodes survive renames"
    );
    let (_, listing) = fs.readdir(dir_ino).unwrap();
    assert_eq!(
        listing.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["b.txt"]
    );

    let err = fs.rmdir(ROOT_INO, name("d")).unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
    assert_eq!(
        fs.unlink(ROOT_INO, name("d")).unwrap_err().errno(),
        libc::EISDIR
    );
    fs.unlink(dir_ino, name("b.txt")).unwrap();
    fs.rmdir(ROOT_INO, name("d")).unwrap();
    assert_eq!(
        fs.lookup(ROOT_INO, name("d")).unwrap_err().errno(),
        libc::ENOENT
    );
    let long = "x".repeat(256);
    assert_eq!(
        fs.mkdir(ROOT_INO, name(&long), 0o755, ME)
            .unwrap_err()
            .errno(),
        libc::ENAMETOOLONG
    );

    let fifo = fs
        .mknod(ROOT_INO, name("pipe"), EntryKind::Fifo, 0o644, 0, ME)
        .unwrap();
    assert_eq!(fifo.kind, EntryKind::Fifo);
    let other = Owner {
        uid: 65534,
        gid: 65534,
    };
    let theirs = fs.mkdir(ROOT_INO, name("theirs"), 0o755, other).unwrap();
    assert_eq!((theirs.uid, theirs.gid), (Some(65534), Some(65534)));
}

#[test]
fn a_stale_close_keeps_a_conflicted_copy() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = TestServer::start();
    server.add_user("alice");
    let (a, b) = (core(&server, &runtime), core(&server, &runtime));
    let (entry, fh) = a.fs.create(ROOT_INO, name("n.txt"), 0o644, ME).unwrap();
    a.fs.write(fh, 0, b"base").unwrap();
    a.fs.fsync(fh).unwrap();
    a.fs.release(fh).unwrap();
    let ino = a.fs.ino_of(entry.id);
    // Created here with a local id; the other client knows the server's.
    let server_id = a.fs.getattr(ino).unwrap().id;
    let ino_at_b = b.fs.ino_of(server_id);

    let (from_a, _) = a.fs.open(ino, true, true).unwrap();
    a.fs.write(from_a, 0, b"from a").unwrap();
    let (from_b, _) = b.fs.open(ino_at_b, true, true).unwrap();
    b.fs.write(from_b, 0, b"from b").unwrap();
    b.fs.fsync(from_b).unwrap();
    b.fs.release(from_b).unwrap();
    // A's base is stale now: its fsync succeeds, and its bytes land in a copy.
    a.fs.fsync(from_a).unwrap();
    a.fs.release(from_a).unwrap();

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, listing) = a.fs.readdir(ROOT_INO).unwrap();
    let copy = listing
        .iter()
        .find(|e| e.name.starts_with("n (conflicted copy ") && e.name.ends_with(").txt"))
        .expect("a conflicted copy");
    let (reader, _) = a.fs.open(a.fs.ino_of(copy.id), false, false).unwrap();
    assert_eq!(a.fs.read(reader, 0, 64).unwrap(), b"from a");
    let (reader, _) = a.fs.open(ino, false, false).unwrap();
    assert_eq!(a.fs.read(reader, 0, 64).unwrap(), b"from b");
}

#[test]
fn fsync_while_another_handle_keeps_writing_commits_no_torn_write() {
    // Without a kernel nothing serialises the two (the kernel holds the inode's lock
    // across an fsync, but not across a shared mapping's write-back): every fsync's
    // reads are overtaken, and it commits a copy taken between two writes.
    use std::sync::atomic::{AtomicBool, Ordering};
    const PIECE: usize = 16 * 1024;
    const SIZE: usize = 4 << 20;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = TestServer::start();
    server.add_user("alice");
    let Core { fs, .. } = &core(&server, &runtime);
    let (created, writer) = fs.create(ROOT_INO, name("busy.bin"), 0o600, ME).unwrap();
    fs.write(writer, 0, &vec![0; SIZE]).unwrap();
    fs.fsync(writer).unwrap();
    let (other, _) = fs.open(fs.ino_of(created.id), true, false).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let (mut k, mut offset) = (0u8, 0);
            while !stop.load(Ordering::Relaxed) {
                k = k % 250 + 1;
                fs.write(writer, offset, &[k; PIECE]).unwrap();
                offset = (offset + PIECE as u64) % SIZE as u64;
            }
        });
        for _ in 0..4 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            fs.fsync(other).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let login = runtime
        .block_on(Remote::login(&server.url, "alice", PASSWORD))
        .unwrap();
    let remote = Remote::new(&server.url, &login.token);
    let id = fs.lookup(ROOT_INO, name("busy.bin")).unwrap().id;
    let versions = runtime.block_on(remote.versions(id)).unwrap();
    assert!(versions.versions.len() >= 4, "{versions:?}");
    for version in versions.versions.iter().filter(|v| v.size > 0) {
        let manifest = runtime
            .block_on(remote.manifest(id, Some(version.number)))
            .unwrap();
        let mut data = Vec::new();
        for chunk in &manifest.chunks {
            data.extend_from_slice(&runtime.block_on(remote.get_chunk(&chunk.url)).unwrap());
        }
        assert_eq!(data.len(), SIZE, "version {}", version.number);
        for (i, piece) in data.chunks(PIECE).enumerate() {
            assert!(
                piece.iter().all(|b| *b == piece[0]),
                "version {}: the write at {} is torn",
                version.number,
                i * PIECE
            );
        }
    }
    fs.release(other).unwrap();
    fs.release(writer).unwrap();
}
