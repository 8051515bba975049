//! The `MetaStore` conformance suite. Every engine runs every case: add an engine by
//! adding one `conformance!` line with a constructor.

use std::sync::Arc;

use cubby_proto::api::{Change, EntryKind};
use cubby_proto::{ContentHash, RemotePath};
use cubby_server::meta::ItemRef;
use cubby_server::meta::{
    AttrChange, BatchChange, BatchChangeItem, ChangeBatch, ChunkPresence, ChunkRef, CommitRequest,
    EntryId, Location, MetaError, MetaStore, NewContent, RetentionPolicy, RetentionReport,
    SqliteMetaStore, StoredReply, UploadSession, UserId, VersionRecord, XattrMode,
};

fn path(p: &str) -> Location {
    Location::Path(p.parse::<RemotePath>().unwrap())
}

fn content(data: &[u8]) -> NewContent {
    let hash = ContentHash::of(data);
    NewContent {
        size: data.len() as u64,
        hash,
        chunks: if data.is_empty() {
            vec![]
        } else {
            vec![ChunkRef {
                hash,
                size: data.len() as u32,
            }]
        },
    }
}

fn commit(p: &str, base: Option<u64>, data: &[u8]) -> CommitRequest {
    CommitRequest {
        location: path(p),
        base_version: base,
        create_parents: true,
        content: content(data),
        device: None,
        upload_id: None,
    }
}

/// A blob store that has everything, or nothing.
struct Present(bool);

impl ChunkPresence for Present {
    fn all_present(&self, _: &[ChunkRef]) -> Result<bool, String> {
        Ok(self.0)
    }
}

fn all() -> Arc<dyn ChunkPresence> {
    Arc::new(Present(true))
}

fn hours_from_now(hours: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_nanos() as i64 + hours * 3_600_000_000_000
}

fn session(id: &str, p: &str, base: Option<u64>, data: &[&[u8]], expires_ns: i64) -> UploadSession {
    let chunks: Vec<ChunkRef> = data
        .iter()
        .map(|d| ChunkRef {
            hash: ContentHash::of(d),
            size: d.len() as u32,
        })
        .collect();
    UploadSession {
        id: id.to_owned(),
        target: path(p),
        base_version: base,
        size: chunks.iter().map(|c| u64::from(c.size)).sum(),
        hash: ContentHash::of(&data.concat()),
        chunks,
        expires_ns,
    }
}

async fn upload_sessions(store: Arc<dyn MetaStore>) {
    let a = store.create_user("a", "h").await.unwrap();
    let b = store.create_user("b", "h").await.unwrap();
    // Alice holds chunk "x" after committing it.
    store
        .commit(a, commit("/has-x", None, b"x"), all())
        .await
        .unwrap();
    let s = session("s1", "/f", None, &[b"x", b"y"], hours_from_now(1));
    assert_eq!(store.begin_upload(a, s).await.unwrap(), [true, false]);
    // Bob does not hold Alice's chunk: dedup is per user.
    let s = session("s2", "/f", None, &[b"x"], hours_from_now(1));
    assert_eq!(store.begin_upload(b, s).await.unwrap(), [false]);
    let state = store.upload_state(a, "s1").await.unwrap();
    assert_eq!(state.available, [true, false]);
    assert!(state.committed.is_none());
    // Sessions are private.
    assert!(matches!(
        store.upload_state(b, "s1").await,
        Err(MetaError::NotFound)
    ));
    store
        .mark_received("s1", ContentHash::of(b"y"))
        .await
        .unwrap();
    assert!(matches!(
        store.mark_received("s1", ContentHash::of(b"z")).await,
        Err(MetaError::NotFound)
    ));
    assert_eq!(
        store.upload_state(a, "s1").await.unwrap().available,
        [true, true]
    );
    let mut request = commit("/f", None, b"xy");
    request.upload_id = Some("s1".into());
    let entry = store.commit(a, request, all()).await.unwrap();
    assert_eq!(
        store.upload_state(a, "s1").await.unwrap().committed,
        Some((entry.id, 1))
    );
    // Expired sessions are gone, and expiry deletes them.
    let old = session("s3", "/g", None, &[b"q"], hours_from_now(-1));
    store.begin_upload(a, old).await.unwrap();
    assert!(matches!(
        store.upload_state(a, "s3").await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        store.mark_received("s3", ContentHash::of(b"q")).await,
        Err(MetaError::NotFound)
    ));
    assert_eq!(store.expire_uploads(hours_from_now(0)).await.unwrap(), 1);
    // A refused session ends at once and names its chunks; a committed one stays.
    let refused = session("s4", "/h", None, &[b"r1", b"r2", b"r1"], hours_from_now(1));
    store.begin_upload(a, refused).await.unwrap();
    let mut ended = store.abort_upload("s4").await.unwrap();
    ended.sort();
    let mut expected = vec![ContentHash::of(b"r1"), ContentHash::of(b"r2")];
    expected.sort();
    assert_eq!(ended, expected);
    assert!(matches!(
        store.upload_state(a, "s4").await,
        Err(MetaError::NotFound)
    ));
    assert!(store.abort_upload("s4").await.unwrap().is_empty());
    assert!(store.abort_upload("s1").await.unwrap().is_empty());
    assert_eq!(
        store.upload_state(a, "s1").await.unwrap().committed,
        Some((entry.id, 1))
    );
}

async fn commits_check_presence(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    let result = store
        .commit(u, commit("/f", None, b"data"), Arc::new(Present(false)))
        .await;
    assert!(matches!(result, Err(MetaError::ChunksMissing)));
    assert!(matches!(
        store.resolve(u, &path("/f")).await,
        Err(MetaError::NotFound)
    ));
}

async fn collection_spares_referenced_chunks(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    store
        .commit(u, commit("/kept", None, b"kept"), all())
        .await
        .unwrap();
    let live = session("live", "/p", None, &[b"pending"], hours_from_now(1));
    store.begin_upload(u, live).await.unwrap();
    let dead = session("dead", "/d", None, &[b"dead"], hours_from_now(-1));
    store.begin_upload(u, dead).await.unwrap();
    let deleted = Arc::new(std::sync::Mutex::new(Vec::new()));
    for data in [&b"kept"[..], b"pending", b"dead", b"never-referenced"] {
        let hash = ContentHash::of(data);
        let log = Arc::clone(&deleted);
        let delete = Box::new(move || {
            log.lock().unwrap().push(hash);
            Ok(true)
        });
        let collected = store.collect_chunk(hash, delete).await.unwrap();
        let expected = data == b"dead" || data == b"never-referenced";
        assert_eq!(collected, expected, "{}", String::from_utf8_lossy(data));
    }
    assert_eq!(deleted.lock().unwrap().len(), 2);
    // Chunks of deleted files stay referenced (their versions remain).
    let gone = store
        .commit(u, commit("/gone", None, b"gone"), all())
        .await
        .unwrap();
    store
        .delete(u, EntryId(gone.id), false, None)
        .await
        .unwrap();
    let spared = store
        .collect_chunk(ContentHash::of(b"gone"), Box::new(|| Ok(true)))
        .await;
    assert!(!spared.unwrap());
    // A blob the store finds young again (put since the pass listed it) is not
    // collected, though nothing refers to it.
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let young = ContentHash::of(b"young-again");
    let was_asked = Arc::clone(&asked);
    let keep = Box::new(move || {
        was_asked.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(false)
    });
    assert!(!store.collect_chunk(young, keep).await.unwrap());
    assert!(asked.load(std::sync::atomic::Ordering::Relaxed));
    // A failed delete is an error, not a success.
    let failing = Box::new(|| Err("disk on fire".to_owned()));
    assert!(
        store
            .collect_chunk(ContentHash::of(b"other"), failing)
            .await
            .is_err()
    );
}

async fn users(store: Arc<dyn MetaStore>) {
    let alice = store.create_user("alice", "hash-a").await.unwrap();
    assert!(matches!(
        store.create_user("alice", "x").await,
        Err(MetaError::UserExists)
    ));
    let record = store.user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(
        (record.id, record.password_hash.as_str()),
        (alice, "hash-a")
    );
    assert!(store.user_by_name("nobody").await.unwrap().is_none());
    assert!(store.user_exists(alice).await.unwrap());
    assert!(!store.user_exists(UserId(alice.0 + 100)).await.unwrap());
    let root = store.resolve(alice, &path("/")).await.unwrap();
    assert_eq!((root.kind, root.parent_id), (EntryKind::Dir, None));
    assert!(
        store
            .children(alice, EntryId(root.id))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_create_and_its_first_content_are_one_version(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    let from = |device: &str, p: &str, base: Option<u64>, data: &[u8]| CommitRequest {
        device: Some(device.to_owned()),
        ..commit(p, base, data)
    };
    let numbers = |versions: Vec<VersionRecord>| -> Vec<u64> {
        versions.into_iter().map(|v| v.number).collect()
    };
    // Created empty, then written, by one device: one version (numbered 2).
    let made = store
        .commit(u, from("laptop", "/f", None, b""), all())
        .await
        .unwrap();
    let written = store
        .commit(u, from("laptop", "/f", Some(1), b"content"), all())
        .await
        .unwrap();
    assert_eq!(written.version, 2);
    assert_eq!(
        numbers(store.versions(u, EntryId(made.id)).await.unwrap()),
        [2]
    );
    // Later versions are all kept, empty ones too.
    store
        .commit(u, from("laptop", "/f", Some(2), b""), all())
        .await
        .unwrap();
    store
        .commit(u, from("laptop", "/f", Some(3), b"again"), all())
        .await
        .unwrap();
    assert_eq!(
        numbers(store.versions(u, EntryId(made.id)).await.unwrap()),
        [4, 3, 2]
    );
    // Written first from another device, or with content from the start: both kept.
    let other = store
        .commit(u, from("laptop", "/g", None, b""), all())
        .await
        .unwrap();
    store
        .commit(u, from("phone", "/g", Some(1), b"x"), all())
        .await
        .unwrap();
    assert_eq!(
        numbers(store.versions(u, EntryId(other.id)).await.unwrap()),
        [2, 1]
    );
    let full = store
        .commit(u, from("laptop", "/h", None, b"one"), all())
        .await
        .unwrap();
    store
        .commit(u, from("laptop", "/h", Some(1), b"two"), all())
        .await
        .unwrap();
    assert_eq!(
        numbers(store.versions(u, EntryId(full.id)).await.unwrap()),
        [2, 1]
    );
    // A create in a batch is the same create: its device's first content replaces it.
    let root = store.resolve(u, &path("/")).await.unwrap();
    let batched = store
        .apply_batch(
            u,
            Some("laptop".to_owned()),
            vec![BatchChangeItem {
                key: None,
                change: BatchChange::Create {
                    parent: ItemRef::Id(EntryId(root.id)),
                    name: "b".parse().unwrap(),
                    attrs: AttrChange::default(),
                },
            }],
        )
        .await
        .unwrap();
    let made = batched.done[0].entry.clone().unwrap();
    store
        .commit(u, from("laptop", "/b", Some(1), b"bytes"), all())
        .await
        .unwrap();
    assert_eq!(
        numbers(store.versions(u, EntryId(made.id)).await.unwrap()),
        [2]
    );
}

async fn commits_and_versions(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    let v1 = store
        .commit(u, commit("/a/b/f", None, b"one"), all())
        .await
        .unwrap();
    assert_eq!((v1.version, v1.size, v1.kind), (1, 3, EntryKind::File));
    assert!(matches!(
        store.commit(u, commit("/a/b/f", None, b"x"), all()).await,
        Err(MetaError::VersionConflict { current: 1 })
    ));
    assert!(matches!(
        store
            .commit(u, commit("/a/b/f", Some(7), b"x"), all())
            .await,
        Err(MetaError::VersionConflict { current: 1 })
    ));
    let v2 = store
        .commit(u, commit("/a/b/f", Some(1), b"two!"), all())
        .await
        .unwrap();
    assert_eq!((v2.id, v2.version, v2.size), (v1.id, 2, 4));
    let old = store
        .version_content(u, EntryId(v1.id), Some(1))
        .await
        .unwrap();
    assert_eq!(old.version.hash, ContentHash::of(b"one"));
    assert_eq!(old.chunks.len(), 1);
    let current = store
        .version_content(u, EntryId(v1.id), None)
        .await
        .unwrap();
    assert_eq!((current.version.number, current.version.size), (2, 4));
    assert!(matches!(
        store.version_content(u, EntryId(v1.id), Some(3)).await,
        Err(MetaError::NotFound)
    ));
    // A base version for a file that does not exist is a conflict with version 0.
    assert!(matches!(
        store.commit(u, commit("/new", Some(3), b"x"), all()).await,
        Err(MetaError::VersionConflict { current: 0 })
    ));
    // Without create_parents a missing parent is NotFound.
    let mut no_parents = commit("/missing/f", None, b"x");
    no_parents.create_parents = false;
    assert!(matches!(
        store.commit(u, no_parents, all()).await,
        Err(MetaError::NotFound)
    ));
    // Committing over a directory.
    assert!(matches!(
        store.commit(u, commit("/a/b", None, b"x"), all()).await,
        Err(MetaError::IsADirectory)
    ));
    // Under a file.
    assert!(matches!(
        store.commit(u, commit("/a/b/f/g", None, b"x"), all()).await,
        Err(MetaError::NotADirectory)
    ));
    let empty = store
        .commit(u, commit("/empty", None, b""), all())
        .await
        .unwrap();
    let empty = store
        .version_content(u, EntryId(empty.id), None)
        .await
        .unwrap();
    assert!(empty.chunks.is_empty());
}

async fn users_are_isolated(store: Arc<dyn MetaStore>) {
    let a = store.create_user("a", "h").await.unwrap();
    let b = store.create_user("b", "h").await.unwrap();
    let file = store
        .commit(a, commit("/f", None, b"a"), all())
        .await
        .unwrap();
    let dir = store.mkdir(a, &path("/d"), false, 0o755).await.unwrap();
    let id = EntryId(file.id);
    assert!(matches!(store.entry(b, id).await, Err(MetaError::NotFound)));
    assert!(matches!(
        store.version_content(b, id, None).await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        store.children(b, EntryId(dir.id)).await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        store.rename(b, id, &path("/x"), false, None).await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        store.delete(b, id, true, None).await,
        Err(MetaError::NotFound)
    ));
    let into_foreign = Location::Child {
        parent: EntryId(dir.id),
        name: "x".parse().unwrap(),
    };
    assert!(matches!(
        store.mkdir(b, &into_foreign, false, 0o755).await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        store.resolve(b, &path("/f")).await,
        Err(MetaError::NotFound)
    ));
    assert_eq!(store.entry(a, id).await.unwrap().id, file.id);
}

async fn mkdir_and_children(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    assert!(matches!(
        store.mkdir(u, &path("/a/b"), false, 0o755).await,
        Err(MetaError::NotFound)
    ));
    let b = store.mkdir(u, &path("/a/b"), true, 0o700).await.unwrap();
    assert_eq!(b.mode, 0o700);
    assert_eq!(
        store.mkdir(u, &path("/a/b"), true, 0o755).await.unwrap().id,
        b.id
    );
    assert!(matches!(
        store.mkdir(u, &path("/a/b"), false, 0o755).await,
        Err(MetaError::AlreadyExists)
    ));
    let a = store.resolve(u, &path("/a")).await.unwrap();
    let child = Location::Child {
        parent: EntryId(a.id),
        name: "c".parse().unwrap(),
    };
    store.mkdir(u, &child, false, 0o755).await.unwrap();
    store
        .commit(u, commit("/a/0file", None, b"z"), all())
        .await
        .unwrap();
    let names: Vec<String> = store
        .children(u, EntryId(a.id))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["0file", "b", "c"]);
    let link = store.symlink(u, &path("/a/l"), "b").await.unwrap();
    assert_eq!(
        (link.kind, link.target.as_deref()),
        (EntryKind::Symlink, Some("b"))
    );
    assert!(matches!(
        store.symlink(u, &path("/a/l"), "c").await,
        Err(MetaError::AlreadyExists)
    ));
}

async fn rename_rules(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    let f = store
        .commit(u, commit("/d1/f", None, b"f"), all())
        .await
        .unwrap();
    let g = store
        .commit(u, commit("/d1/g", None, b"g"), all())
        .await
        .unwrap();
    let d1 = store.resolve(u, &path("/d1")).await.unwrap();
    store.mkdir(u, &path("/d2/sub"), true, 0o755).await.unwrap();
    // Ids survive a move.
    let moved = store
        .rename(u, EntryId(f.id), &path("/d2/f2"), false, None)
        .await
        .unwrap();
    assert_eq!(
        (moved.id, moved.name.as_str(), moved.version),
        (f.id, "f2", 1)
    );
    assert!(matches!(
        store.resolve(u, &path("/d1/f")).await,
        Err(MetaError::NotFound)
    ));
    // A move onto itself changes nothing.
    assert_eq!(
        store
            .rename(u, EntryId(f.id), &path("/d2/f2"), false, None)
            .await
            .unwrap()
            .id,
        f.id
    );
    // Over an existing file: only with replace.
    assert!(matches!(
        store
            .rename(u, EntryId(g.id), &path("/d2/f2"), false, None)
            .await,
        Err(MetaError::AlreadyExists)
    ));
    store
        .rename(u, EntryId(g.id), &path("/d2/f2"), true, None)
        .await
        .unwrap();
    assert_eq!(store.resolve(u, &path("/d2/f2")).await.unwrap().id, g.id);
    assert!(matches!(
        store.entry(u, EntryId(f.id)).await,
        Err(MetaError::NotFound)
    ));
    // Directories: not into themselves, not over a non-empty directory, not onto a file.
    assert!(matches!(
        store
            .rename(u, EntryId(d1.id), &path("/d1/inside"), false, None)
            .await,
        Err(MetaError::InvalidMove)
    ));
    let d2 = store.resolve(u, &path("/d2")).await.unwrap();
    assert!(matches!(
        store
            .rename(u, EntryId(d2.id), &path("/d2/sub/deeper"), false, None)
            .await,
        Err(MetaError::InvalidMove)
    ));
    assert!(matches!(
        store
            .rename(u, EntryId(d1.id), &path("/d2"), true, None)
            .await,
        Err(MetaError::DirectoryNotEmpty)
    ));
    assert!(matches!(
        store
            .rename(u, EntryId(d1.id), &path("/d2/f2"), true, None)
            .await,
        Err(MetaError::NotADirectory)
    ));
    assert!(matches!(
        store
            .rename(u, EntryId(g.id), &path("/d2/sub"), true, None)
            .await,
        Err(MetaError::IsADirectory)
    ));
    // Over an empty directory, with replace.
    let sub = store.resolve(u, &path("/d2/sub")).await.unwrap();
    store
        .rename(u, EntryId(d1.id), &path("/d2/sub"), true, None)
        .await
        .unwrap();
    assert!(matches!(
        store.entry(u, EntryId(sub.id)).await,
        Err(MetaError::NotFound)
    ));
    let root = store.resolve(u, &path("/")).await.unwrap();
    assert!(matches!(
        store
            .rename(u, EntryId(root.id), &path("/x"), false, None)
            .await,
        Err(MetaError::InvalidMove)
    ));
}

async fn delete_rules(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    store
        .commit(u, commit("/d/e/f", None, b"f"), all())
        .await
        .unwrap();
    let d = store.resolve(u, &path("/d")).await.unwrap();
    assert!(matches!(
        store.delete(u, EntryId(d.id), false, None).await,
        Err(MetaError::DirectoryNotEmpty)
    ));
    assert_eq!(store.delete(u, EntryId(d.id), true, None).await.unwrap(), 3);
    assert!(matches!(
        store.resolve(u, &path("/d/e/f")).await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        store.delete(u, EntryId(d.id), true, None).await,
        Err(MetaError::NotFound)
    ));
    let root = store.resolve(u, &path("/")).await.unwrap();
    assert!(matches!(
        store.delete(u, EntryId(root.id), true, None).await,
        Err(MetaError::InvalidMove)
    ));
    // The name can be used again, by a new entry with a new id.
    let again = store
        .commit(u, commit("/d/e/f", None, b"g"), all())
        .await
        .unwrap();
    assert_eq!(again.version, 1);
}

async fn concurrent_commits_are_serialised(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    store
        .commit(u, commit("/race", None, b"0"), all())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .commit(u, commit("/race", Some(1), &[i]), all())
                .await
                .is_ok()
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one writer based on version 1 may win");
}

async fn base_versions_guard_moves_and_deletes(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    let f = store
        .commit(u, commit("/f", None, b"1"), all())
        .await
        .unwrap();
    store
        .commit(u, commit("/f", Some(1), b"2"), all())
        .await
        .unwrap();
    let id = EntryId(f.id);
    assert!(matches!(
        store.rename(u, id, &path("/g"), false, Some(1)).await,
        Err(MetaError::VersionConflict { current: 2 })
    ));
    assert!(matches!(
        store.delete(u, id, false, Some(1)).await,
        Err(MetaError::VersionConflict { current: 2 })
    ));
    store
        .rename(u, id, &path("/g"), false, Some(2))
        .await
        .unwrap();
    store.delete(u, id, false, Some(2)).await.unwrap();
}

async fn versions_and_restore(store: Arc<dyn MetaStore>) {
    let u = store.create_user("writer", "h").await.unwrap();
    let mut first = commit("/f", None, b"one");
    first.device = Some("laptop".into());
    let f = store.commit(u, first, all()).await.unwrap();
    store
        .commit(u, commit("/f", Some(1), b"two"), all())
        .await
        .unwrap();
    let id = EntryId(f.id);
    let versions = store.versions(u, id).await.unwrap();
    let numbers: Vec<u64> = versions.iter().map(|v| v.number).collect();
    assert_eq!(numbers, [2, 1]);
    assert_eq!(versions[1].hash, ContentHash::of(b"one"));
    assert_eq!(
        (versions[1].author.as_str(), versions[1].device.as_deref()),
        ("writer", Some("laptop"))
    );
    assert!(matches!(
        store.restore_version(u, id, 1, Some(1), None).await,
        Err(MetaError::VersionConflict { current: 2 })
    ));
    let restored = store
        .restore_version(u, id, 1, Some(2), None)
        .await
        .unwrap();
    assert_eq!(
        (restored.version, restored.hash),
        (3, Some(ContentHash::of(b"one")))
    );
    let content = store.version_content(u, id, None).await.unwrap();
    assert_eq!(
        content.chunks,
        store.version_content(u, id, Some(1)).await.unwrap().chunks
    );
    assert!(matches!(
        store.restore_version(u, id, 9, None, None).await,
        Err(MetaError::NotFound)
    ));
}

async fn trash_and_restore(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    let f = store
        .commit(u, commit("/docs/sub/f", None, b"f"), all())
        .await
        .unwrap();
    let docs = store.resolve(u, &path("/docs")).await.unwrap();
    assert_eq!(
        store.delete(u, EntryId(docs.id), true, None).await.unwrap(),
        3
    );
    let other = store
        .commit(u, commit("/other", None, b"o"), all())
        .await
        .unwrap();
    store
        .delete(u, EntryId(other.id), false, None)
        .await
        .unwrap();
    let trash = store.trash(u).await.unwrap();
    let listed: Vec<(&str, u64)> = trash.iter().map(|t| (t.path.as_str(), t.entries)).collect();
    assert_eq!(listed, [("/other", 1), ("/docs", 3)]);
    // Restoring the folder brings back everything inside, same ids.
    store
        .restore_trash(u, EntryId(docs.id), None)
        .await
        .unwrap();
    assert_eq!(
        store.resolve(u, &path("/docs/sub/f")).await.unwrap().id,
        f.id
    );
    assert_eq!(store.trash(u).await.unwrap().len(), 1);
    // A taken name: AlreadyExists, unless restored elsewhere.
    store
        .commit(u, commit("/other", None, b"new"), all())
        .await
        .unwrap();
    assert!(matches!(
        store.restore_trash(u, EntryId(other.id), None).await,
        Err(MetaError::AlreadyExists)
    ));
    let back = store
        .restore_trash(u, EntryId(other.id), Some(path("/docs/other-restored")))
        .await;
    assert_eq!(back.unwrap().id, other.id);
    // A live entry is not in the trash.
    assert!(matches!(
        store.restore_trash(u, EntryId(f.id), None).await,
        Err(MetaError::NotFound)
    ));
}

async fn retention_keeps_current_versions(store: Arc<dyn MetaStore>) {
    use std::time::Duration;
    let u = store.create_user("u", "h").await.unwrap();
    let f = store
        .commit(u, commit("/f", None, b"1"), all())
        .await
        .unwrap();
    for (base, data) in [(1, b"2"), (2, b"3"), (3, b"4")] {
        store
            .commit(u, commit("/f", Some(base), data), all())
            .await
            .unwrap();
    }
    let gone = store
        .commit(u, commit("/gone", None, b"g"), all())
        .await
        .unwrap();
    store
        .delete(u, EntryId(gone.id), false, None)
        .await
        .unwrap();
    let keep_two = RetentionPolicy {
        max_age: Duration::from_secs(86400),
        max_versions: 2,
        trash_max_age: Duration::from_secs(86400),
    };
    let now = hours_from_now(0);
    let report = store.apply_retention(keep_two, now).await.unwrap();
    assert_eq!(
        report,
        RetentionReport {
            versions_removed: 2,
            entries_purged: 0
        }
    );
    let numbers: Vec<u64> = store
        .versions(u, EntryId(f.id))
        .await
        .unwrap()
        .iter()
        .map(|v| v.number)
        .collect();
    assert_eq!(numbers, [4, 3]);
    // Everything old: only the current version survives, and old trash is purged.
    let later = hours_from_now(48);
    let report = store.apply_retention(keep_two, later).await.unwrap();
    assert_eq!(
        report,
        RetentionReport {
            versions_removed: 1,
            entries_purged: 1
        }
    );
    let numbers: Vec<u64> = store
        .versions(u, EntryId(f.id))
        .await
        .unwrap()
        .iter()
        .map(|v| v.number)
        .collect();
    assert_eq!(numbers, [4]);
    assert!(store.trash(u).await.unwrap().is_empty());
    assert_eq!(
        store
            .version_content(u, EntryId(f.id), None)
            .await
            .unwrap()
            .version
            .number,
        4
    );
    // The dropped chunks are no longer "held": they would be requested again.
    let s = session("again", "/x", None, &[b"1", b"4"], hours_from_now(1));
    assert_eq!(store.begin_upload(u, s).await.unwrap(), [false, true]);
}

async fn retention_racing_commits(store: Arc<dyn MetaStore>) {
    use std::time::Duration;
    let u = store.create_user("u", "h").await.unwrap();
    store
        .commit(u, commit("/hot", None, b"0"), all())
        .await
        .unwrap();
    let policy = RetentionPolicy {
        max_age: Duration::ZERO,
        max_versions: 1,
        trash_max_age: Duration::from_secs(86400),
    };
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for base in 1..=50u64 {
                let data = base.to_le_bytes();
                store
                    .commit(u, commit("/hot", Some(base), &data), all())
                    .await
                    .unwrap();
            }
        })
    };
    let cleaner = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for _ in 0..50 {
                store
                    .apply_retention(policy, hours_from_now(1))
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    writer.await.unwrap();
    cleaner.await.unwrap();
    let hot = store.resolve(u, &path("/hot")).await.unwrap();
    assert_eq!(hot.version, 51);
    let current = store
        .version_content(u, EntryId(hot.id), None)
        .await
        .unwrap();
    assert_eq!(current.version.hash, ContentHash::of(&50u64.to_le_bytes()));
}

async fn attributes_and_special_entries(store: Arc<dyn MetaStore>) {
    let u = store.create_user("u", "h").await.unwrap();
    let f = store
        .commit(u, commit("/f", None, b"x"), all())
        .await
        .unwrap();
    assert_eq!(
        (f.uid, f.gid, f.atime_ns, f.ctime_ns),
        (None, None, f.mtime_ns, f.mtime_ns)
    );
    let change = AttrChange {
        mode: Some(0o600),
        mtime_ns: Some(1_000_000_007),
        atime_ns: Some(2_000_000_009),
        uid: Some(65534),
        gid: Some(65534),
        ctime_ns: None,
    };
    let changed = store.set_attrs(u, EntryId(f.id), change).await.unwrap();
    assert_eq!(changed.mode, 0o600);
    assert_eq!(
        (changed.mtime_ns, changed.atime_ns),
        (1_000_000_007, 2_000_000_009)
    );
    assert_eq!((changed.uid, changed.gid), (Some(65534), Some(65534)));
    assert!(
        changed.ctime_ns > f.ctime_ns,
        "ctime moves on every attribute change"
    );
    let given = AttrChange {
        ctime_ns: Some(changed.ctime_ns + 11),
        ..AttrChange::default()
    };
    let stamped = store.set_attrs(u, EntryId(f.id), given).await.unwrap();
    assert_eq!(
        stamped.ctime_ns,
        changed.ctime_ns + 11,
        "a change time given is kept"
    );
    // Unchanged fields stay.
    let only_mode = AttrChange {
        mode: Some(0o644),
        ..AttrChange::default()
    };
    let again = store.set_attrs(u, EntryId(f.id), only_mode).await.unwrap();
    assert_eq!((again.mtime_ns, again.uid), (1_000_000_007, Some(65534)));
    // A rename moves ctime too.
    let moved = store
        .rename(u, EntryId(f.id), &path("/g"), false, None)
        .await
        .unwrap();
    assert!(moved.ctime_ns > again.ctime_ns);
    // Special entries: metadata only.
    let root = store.resolve(u, &path("/")).await.unwrap();
    let fifo_at = Location::Child {
        parent: EntryId(root.id),
        name: "pipe".parse().unwrap(),
    };
    let fifo = store
        .mknod(u, &fifo_at, EntryKind::Fifo, 0o640, 0)
        .await
        .unwrap();
    assert_eq!(
        (fifo.kind, fifo.mode, fifo.size),
        (EntryKind::Fifo, 0o640, 0)
    );
    let dev_at = Location::Child {
        parent: EntryId(root.id),
        name: "dev".parse().unwrap(),
    };
    let dev = store
        .mknod(u, &dev_at, EntryKind::CharDevice, 0o600, 0x0103)
        .await
        .unwrap();
    assert_eq!(dev.rdev, 0x0103);
    assert!(matches!(
        store.mknod(u, &fifo_at, EntryKind::Fifo, 0o640, 0).await,
        Err(MetaError::AlreadyExists)
    ));
    assert!(matches!(
        store.commit(u, commit("/pipe", None, b"no"), all()).await,
        Err(MetaError::AlreadyExists)
    ));
    assert!(matches!(
        store.version_content(u, EntryId(fifo.id), None).await,
        Err(MetaError::NotFound)
    ));
}

/// Every change after `cursor`, read in batches of two; moves `cursor` past them.
async fn changes_after(store: &Arc<dyn MetaStore>, user: UserId, cursor: &mut u64) -> Vec<Change> {
    let mut out = Vec::new();
    loop {
        let batch = store.changes_since(user, *cursor, 2).await.unwrap();
        assert!(!batch.reset);
        assert!(batch.changes.len() <= 2, "the limit holds");
        let Some(last) = batch.changes.last() else {
            assert_eq!(batch.latest, *cursor, "nothing after the newest change");
            return out;
        };
        assert!(batch.changes.iter().all(|c| c.seq > *cursor));
        *cursor = last.seq;
        out.extend(batch.changes);
    }
}

/// A change of `entry` to `parent`/`name` (and, for a move, from `old`).
fn change_of(
    entry: u64,
    parent: u64,
    name: &str,
    old: Option<(u64, &str)>,
) -> impl Fn(&Change) -> bool {
    let name = name.to_owned();
    let old = old.map(|(p, n)| (p, n.to_owned()));
    move |c: &Change| {
        c.entry_id == entry
            && c.parent_id == Some(parent)
            && c.name == name
            && c.old_parent_id == old.as_ref().map(|o| o.0)
            && c.old_name == old.as_ref().map(|o| o.1.clone())
    }
}

async fn change_feed(store: Arc<dyn MetaStore>) {
    let a = store.create_user("a", "h").await.unwrap();
    let b = store.create_user("b", "h").await.unwrap();
    let start = store.latest_change(a).await.unwrap();
    assert!(start > 0, "a new user's root is a change");
    let b_start = store.latest_change(b).await.unwrap();
    assert_eq!(
        store.changes_since(a, start, 100).await.unwrap(),
        ChangeBatch {
            changes: vec![],
            latest: start,
            reset: false
        }
    );
    let root = store.resolve(a, &path("/")).await.unwrap().id;
    let mut cursor = start;

    let dir = store.mkdir(a, &path("/d"), false, 0o755).await.unwrap().id;
    let seen = changes_after(&store, a, &mut cursor).await;
    assert!(seen.iter().any(change_of(dir, root, "d", None)), "{seen:?}");

    let file = store
        .commit(a, commit("/d/f", None, b"1"), all())
        .await
        .unwrap()
        .id;
    let seen = changes_after(&store, a, &mut cursor).await;
    assert!(seen.iter().any(change_of(file, dir, "f", None)), "{seen:?}");

    store
        .commit(a, commit("/d/f", Some(1), b"2"), all())
        .await
        .unwrap();
    let seen = changes_after(&store, a, &mut cursor).await;
    assert!(seen.iter().any(change_of(file, dir, "f", None)), "{seen:?}");

    store
        .rename(a, EntryId(file), &path("/g"), false, None)
        .await
        .unwrap();
    let seen = changes_after(&store, a, &mut cursor).await;
    let moved = change_of(file, root, "g", Some((dir, "f")));
    assert_eq!(seen.iter().filter(|c| moved(c)).count(), 1, "{seen:?}");
    // Both directories changed too (their times).
    assert!(seen.iter().any(|c| c.entry_id == dir));
    assert!(seen.iter().any(|c| c.entry_id == root));

    let mode = AttrChange {
        mode: Some(0o600),
        ..AttrChange::default()
    };
    store.set_attrs(a, EntryId(file), mode).await.unwrap();
    let seen = changes_after(&store, a, &mut cursor).await;
    assert!(
        seen.iter().any(change_of(file, root, "g", None)),
        "{seen:?}"
    );

    store
        .set_xattr(a, EntryId(file), "user.k", b"v", XattrMode::Any)
        .await
        .unwrap();
    let seen = changes_after(&store, a, &mut cursor).await;
    assert!(
        seen.iter().any(change_of(file, root, "g", None)),
        "{seen:?}"
    );
    store
        .remove_xattr(a, EntryId(file), "user.k")
        .await
        .unwrap();
    let seen = changes_after(&store, a, &mut cursor).await;
    assert!(
        seen.iter().any(change_of(file, root, "g", None)),
        "{seen:?}"
    );

    store.delete(a, EntryId(file), false, None).await.unwrap();
    let seen = changes_after(&store, a, &mut cursor).await;
    assert!(
        seen.iter().any(change_of(file, root, "g", None)),
        "{seen:?}"
    );

    store.restore_trash(a, EntryId(file), None).await.unwrap();
    let seen = changes_after(&store, a, &mut cursor).await;
    assert!(
        seen.iter().any(change_of(file, root, "g", None)),
        "{seen:?}"
    );
    // Restoring where it was is no move.
    assert!(seen.iter().all(|c| c.old_parent_id.is_none()), "{seen:?}");
    assert_eq!(store.latest_change(a).await.unwrap(), cursor);

    // Failed writes change nothing.
    assert!(store.mkdir(a, &path("/d"), false, 0o755).await.is_err());
    assert!(changes_after(&store, a, &mut cursor).await.is_empty());

    // Nothing of a's reaches b.
    let mut b_cursor = b_start;
    assert!(changes_after(&store, b, &mut b_cursor).await.is_empty());
    assert_eq!(store.latest_change(b).await.unwrap(), b_start);
    let b_root = store.resolve(b, &path("/")).await.unwrap().id;
    let mut b_cursor = 0;
    let all_of_b = changes_after(&store, b, &mut b_cursor).await;
    assert!(!all_of_b.is_empty());
    assert!(
        all_of_b.iter().all(|c| c.entry_id == b_root),
        "{all_of_b:?}"
    );

    // A cursor from elsewhere (newer than anything of the user's) resets.
    for unknown in [cursor + 1000, u64::MAX] {
        let batch = store.changes_since(a, unknown, 10).await.unwrap();
        assert!(batch.reset && batch.changes.is_empty());
        assert_eq!(batch.latest, cursor);
    }

    // Pruning: nothing is older than the epoch; everything is older than the future.
    assert_eq!(store.prune_changes(0).await.unwrap(), 0);
    assert!(store.prune_changes(hours_from_now(1)).await.unwrap() > 0);
    assert_eq!(
        store.latest_change(a).await.unwrap(),
        cursor,
        "never goes back"
    );
    assert_eq!(store.latest_change(b).await.unwrap(), b_start);
    // A cursor older than pruned changes resets, and says where to carry on from.
    let batch = store.changes_since(a, start, 100).await.unwrap();
    assert_eq!(
        batch,
        ChangeBatch {
            changes: vec![],
            latest: cursor,
            reset: true
        }
    );
    assert!(store.changes_since(b, 0, 100).await.unwrap().reset);
    // An up-to-date cursor does not, and sees what comes next.
    assert_eq!(changes_after(&store, b, &mut b_cursor).await, vec![]);
    let e = store.mkdir(a, &path("/e"), false, 0o755).await.unwrap().id;
    let seen = changes_after(&store, a, &mut cursor).await;
    assert!(seen.iter().any(change_of(e, root, "e", None)), "{seen:?}");
}

async fn login_sessions(store: Arc<dyn MetaStore>) {
    let alice = store.create_user("alice", "x").await.unwrap();
    let bob = store.create_user("bob", "x").await.unwrap();
    let (a, b, stale) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    store
        .add_session(alice, a, hours_from_now(1))
        .await
        .unwrap();
    store.add_session(bob, b, hours_from_now(1)).await.unwrap();
    store
        .add_session(alice, stale, hours_from_now(-1))
        .await
        .unwrap();
    // Each secret renews its own user's session, and moves its expiry on.
    let now = hours_from_now(0);
    let renewed = store
        .renew_session(a, now, hours_from_now(2))
        .await
        .unwrap();
    assert_eq!(renewed.map(|u| u.id), Some(alice));
    let renewed = store
        .renew_session(b, now, hours_from_now(2))
        .await
        .unwrap();
    assert_eq!(renewed.map(|u| u.name), Some("bob".to_owned()));
    let later = hours_from_now(1) + 60_000_000_000;
    let renewed = store
        .renew_session(a, later, hours_from_now(2))
        .await
        .unwrap();
    assert_eq!(
        renewed.map(|u| u.id),
        Some(alice),
        "the renewal moved it on"
    );
    // An expired secret, or one never issued, renews nothing.
    assert!(
        store
            .renew_session(stale, now, hours_from_now(2))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .renew_session([9u8; 32], now, hours_from_now(2))
            .await
            .unwrap()
            .is_none()
    );
    let past_expiry = hours_from_now(3);
    assert!(
        store
            .renew_session(a, past_expiry, hours_from_now(4))
            .await
            .unwrap()
            .is_none()
    );
}

async fn stored_replies(store: Arc<dyn MetaStore>) {
    let alice = store.create_user("alice", "x").await.unwrap();
    let bob = store.create_user("bob", "x").await.unwrap();
    let (request, other) = ([1u8; 32], [2u8; 32]);
    let reply = |status: u16, body: &str| StoredReply {
        status,
        body: body.as_bytes().to_vec(),
    };
    assert_eq!(store.stored_reply(alice, request).await.unwrap(), None);
    store
        .store_reply(alice, request, reply(200, "{\"id\":7}"))
        .await
        .unwrap();
    // The first answer stays: a second store (two copies of one request) keeps it.
    store
        .store_reply(alice, request, reply(404, "{}"))
        .await
        .unwrap();
    assert_eq!(
        store.stored_reply(alice, request).await.unwrap(),
        Some(reply(200, "{\"id\":7}"))
    );
    assert_eq!(store.stored_reply(alice, other).await.unwrap(), None);
    // Another user's request of the same hash is another request.
    assert_eq!(store.stored_reply(bob, request).await.unwrap(), None);
    store
        .store_reply(bob, request, reply(201, "{}"))
        .await
        .unwrap();
    assert_eq!(
        store.stored_reply(bob, request).await.unwrap(),
        Some(reply(201, "{}"))
    );
    // Pruning forgets answers stored before the cutoff, and only those.
    assert_eq!(store.prune_replies(hours_from_now(-1)).await.unwrap(), 0);
    assert_eq!(store.prune_replies(hours_from_now(1)).await.unwrap(), 2);
    assert_eq!(store.stored_reply(alice, request).await.unwrap(), None);
}

async fn batches(store: Arc<dyn MetaStore>) {
    let alice = store.create_user("alice", "x").await.unwrap();
    let bob = store.create_user("bob", "x").await.unwrap();
    let root = store.resolve(alice, &path("/")).await.unwrap();
    let name = |n: &str| n.parse().unwrap();
    let keyed = |key: &str, change: BatchChange| BatchChangeItem {
        key: Some(key.into()),
        change,
    };
    let at_root = ItemRef::Id(EntryId(root.id));
    let items = vec![
        keyed(
            "k1",
            BatchChange::Mkdir {
                parent: at_root,
                name: name("d"),
                mode: 0o750,
                attrs: AttrChange::default(),
            },
        ),
        keyed(
            "k2",
            BatchChange::Create {
                parent: ItemRef::Earlier(0),
                name: name("f"),
                attrs: AttrChange {
                    mode: Some(0o600),
                    ..AttrChange::default()
                },
            },
        ),
        keyed(
            "k3",
            BatchChange::SetAttrs {
                id: ItemRef::Earlier(1),
                attrs: AttrChange {
                    mtime_ns: Some(1_000),
                    ..AttrChange::default()
                },
            },
        ),
        keyed(
            "k4",
            BatchChange::Move {
                id: ItemRef::Earlier(1),
                parent: ItemRef::Earlier(0),
                name: name("g"),
                replace: false,
            },
        ),
        keyed(
            "k5",
            BatchChange::Create {
                parent: at_root,
                name: name("x"),
                attrs: AttrChange::default(),
            },
        ),
    ];
    let first = store.apply_batch(alice, None, items.clone()).await.unwrap();
    assert!(first.stopped.is_none(), "{:?}", first.stopped);
    assert_eq!(first.done.len(), 5);
    let dir = first.done[0].entry.clone().unwrap();
    assert_eq!((dir.kind, dir.mode), (EntryKind::Dir, 0o750));
    let in_dir = store.children(alice, EntryId(dir.id)).await.unwrap();
    assert_eq!(in_dir.len(), 1);
    let file = &in_dir[0];
    assert_eq!(
        (file.name.as_str(), file.kind, file.mode, file.mtime_ns),
        ("g", EntryKind::File, 0o600, 1_000)
    );
    assert_eq!(first.done[3].entry.as_ref().unwrap(), file);

    // Sent again with the same keys (its answer lost): answered as the first time,
    // applied once (a second mkdir of "d" would be refused).
    let again = store.apply_batch(alice, None, items).await.unwrap();
    assert!(again.stopped.is_none(), "{:?}", again.stopped);
    assert_eq!(again.done, first.done);
    let names: Vec<String> = store
        .children(alice, EntryId(root.id))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["d", "x"]);

    // A refusal stops the batch there: what came before stays, it and what follows
    // are not applied.
    let plain = |change| BatchChangeItem { key: None, change };
    let create = |n: &str| {
        plain(BatchChange::Create {
            parent: at_root,
            name: name(n),
            attrs: AttrChange::default(),
        })
    };
    let stopped = store
        .apply_batch(alice, None, vec![create("y"), create("x"), create("z")])
        .await
        .unwrap();
    assert_eq!(stopped.done.len(), 1);
    assert!(
        matches!(stopped.stopped, Some((1, MetaError::AlreadyExists))),
        "{:?}",
        stopped.stopped
    );
    assert!(store.resolve(alice, &path("/y")).await.is_ok());
    assert!(matches!(
        store.resolve(alice, &path("/z")).await,
        Err(MetaError::NotFound)
    ));

    // A directory that is not empty is refused, and nothing of the item is left.
    let refused = store
        .apply_batch(
            alice,
            None,
            vec![plain(BatchChange::Delete {
                id: ItemRef::Id(EntryId(dir.id)),
            })],
        )
        .await
        .unwrap();
    assert!(matches!(
        refused.stopped,
        Some((0, MetaError::DirectoryNotEmpty))
    ));
    assert!(store.entry(alice, EntryId(dir.id)).await.is_ok());

    // Another user's ids are not found, and nothing of theirs changes.
    let bobs = store
        .apply_batch(
            bob,
            None,
            vec![plain(BatchChange::Delete {
                id: ItemRef::Id(EntryId(file.id)),
            })],
        )
        .await
        .unwrap();
    assert!(matches!(bobs.stopped, Some((0, MetaError::NotFound))));
    assert!(store.entry(alice, EntryId(file.id)).await.is_ok());

    // An item naming a deleted one finds nothing.
    let x = store.resolve(alice, &path("/x")).await.unwrap();
    let gone = store
        .apply_batch(
            alice,
            None,
            vec![
                plain(BatchChange::Delete {
                    id: ItemRef::Id(EntryId(x.id)),
                }),
                plain(BatchChange::SetAttrs {
                    id: ItemRef::Earlier(0),
                    attrs: AttrChange::default(),
                }),
            ],
        )
        .await
        .unwrap();
    assert_eq!(gone.done[0].deleted, Some(1));
    assert!(matches!(gone.stopped, Some((1, MetaError::NotFound))));

    // Commits in a batch: each committed or refused on its own, attributes set after.
    let p = store
        .commit(alice, commit("/p", None, b"p1"), all())
        .await
        .unwrap();
    let q = store
        .commit(alice, commit("/q", None, b"q1"), all())
        .await
        .unwrap();
    let results = store
        .commit_batch(
            alice,
            vec![
                (
                    commit("/p", Some(p.version), b"p2"),
                    AttrChange {
                        mode: Some(0o640),
                        mtime_ns: Some(9_000),
                        ..AttrChange::default()
                    },
                ),
                (
                    commit("/q", Some(q.version + 3), b"q2"),
                    AttrChange::default(),
                ),
            ],
            all(),
        )
        .await
        .unwrap();
    let p2 = results[0].as_ref().unwrap();
    assert_eq!(
        (p2.version, p2.size, p2.mode, p2.mtime_ns),
        (p.version + 1, 2, 0o640, 9_000)
    );
    assert!(matches!(
        results[1],
        Err(MetaError::VersionConflict { current }) if current == q.version
    ));
    assert_eq!(store.entry(alice, EntryId(q.id)).await.unwrap(), q);
    let theirs = store
        .commit_batch(
            bob,
            vec![(
                CommitRequest {
                    location: Location::Entry(EntryId(p.id)),
                    ..commit("/p", Some(p2.version), b"x")
                },
                AttrChange::default(),
            )],
            all(),
        )
        .await
        .unwrap();
    // Alice's file id is not found for Bob, and stays as it was.
    assert!(matches!(theirs[0], Err(MetaError::NotFound)));
    assert_eq!(
        store.entry(alice, EntryId(p.id)).await.unwrap().version,
        p2.version
    );
}

macro_rules! conformance {
    ($engine:ident, $open:expr) => {
        mod $engine {
            use super::*;

            async fn store() -> (Arc<dyn MetaStore>, tempfile::TempDir) {
                let dir = tempfile::tempdir().unwrap();
                let open: fn(&std::path::Path) -> Arc<dyn MetaStore> = $open;
                (open(dir.path()), dir)
            }

            conformance!(@case users);
            conformance!(@case commits_and_versions);
            conformance!(@case a_create_and_its_first_content_are_one_version);
            conformance!(@case users_are_isolated);
            conformance!(@case mkdir_and_children);
            conformance!(@case rename_rules);
            conformance!(@case delete_rules);
            conformance!(@case concurrent_commits_are_serialised);
            conformance!(@case upload_sessions);
            conformance!(@case commits_check_presence);
            conformance!(@case collection_spares_referenced_chunks);
            conformance!(@case base_versions_guard_moves_and_deletes);
            conformance!(@case versions_and_restore);
            conformance!(@case trash_and_restore);
            conformance!(@case retention_keeps_current_versions);
            conformance!(@case retention_racing_commits);
            conformance!(@case attributes_and_special_entries);
            conformance!(@case change_feed);
            conformance!(@case login_sessions);
            conformance!(@case stored_replies);
            conformance!(@case batches);
        }
    };
    (@case $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, _dir) = store().await;
            super::$name(store).await;
        }
    };
}

conformance!(sqlite, |dir| Arc::new(
    SqliteMetaStore::open(&dir.join("meta.sqlite3")).unwrap()
));
