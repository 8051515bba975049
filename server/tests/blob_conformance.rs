//! The `BlobStore` conformance suite, run against every engine.

use std::sync::Arc;

use bytes::Bytes;
use cubby_proto::ContentHash;
use cubby_server::blob::{BlobError, BlobStore, LocalBlobStore, PutOutcome};

async fn put_get_delete(store: Arc<dyn BlobStore>) {
    let data = Bytes::from_static(b"chunk of content");
    let hash = ContentHash::of(&data);
    assert!(!store.contains(hash).await.unwrap());
    assert!(matches!(store.get(hash).await, Err(BlobError::NotFound(_))));
    assert_eq!(
        store.put(hash, data.clone()).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store.put(hash, data.clone()).await.unwrap(),
        PutOutcome::Existed
    );
    assert!(store.contains(hash).await.unwrap());
    assert_eq!(store.get(hash).await.unwrap(), data);
    store.delete(hash).await.unwrap();
    store.delete(hash).await.unwrap();
    assert!(!store.contains(hash).await.unwrap());
}

async fn wrong_hash_is_refused(store: Arc<dyn BlobStore>) {
    let claimed = ContentHash::of(b"what I say it is");
    let result = store.put(claimed, Bytes::from_static(b"what it is")).await;
    assert!(matches!(result, Err(BlobError::HashMismatch { .. })));
    assert!(!store.contains(claimed).await.unwrap());
}

async fn concurrent_puts_of_one_blob(store: Arc<dyn BlobStore>) {
    let data = Bytes::from(vec![7u8; 1 << 20]);
    let hash = ContentHash::of(&data);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, data) = (Arc::clone(&store), data.clone());
            tokio::spawn(async move { store.put(hash, data).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.get(hash).await.unwrap(), data);
}

async fn ages_for_collection(store: Arc<dyn BlobStore>) {
    use std::time::{Duration, SystemTime};
    let data = Bytes::from_static(b"aging");
    let hash = ContentHash::of(&data);
    store.put(hash, data.clone()).await.unwrap();
    let later = SystemTime::now() + Duration::from_secs(5);
    assert!(store.list_older_than(later).await.unwrap().contains(&hash));
    let earlier = SystemTime::now() - Duration::from_secs(3600);
    assert!(
        !store
            .list_older_than(earlier)
            .await
            .unwrap()
            .contains(&hash)
    );
    // Putting it again makes it young again.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.put(hash, data).await.unwrap(), PutOutcome::Existed);
    assert!(
        !store
            .list_older_than(between)
            .await
            .unwrap()
            .contains(&hash)
    );
    // Collection re-checks the age at deletion: a blob put after the cutoff stays.
    assert!(!store.delete_if_older_than(hash, between).await.unwrap());
    assert_eq!(store.get(hash).await.unwrap(), Bytes::from_static(b"aging"));
    let after = SystemTime::now() + Duration::from_secs(5);
    assert!(store.delete_if_older_than(hash, after).await.unwrap());
    assert!(!store.contains(hash).await.unwrap());
    assert!(
        store.delete_if_older_than(hash, after).await.unwrap(),
        "absent is gone"
    );
}

macro_rules! conformance {
    ($engine:ident, $open:expr) => {
        mod $engine {
            use super::*;

            fn store() -> (Arc<dyn BlobStore>, tempfile::TempDir) {
                let dir = tempfile::tempdir().unwrap();
                let open: fn(&std::path::Path) -> Arc<dyn BlobStore> = $open;
                (open(dir.path()), dir)
            }

            conformance!(@case put_get_delete);
            conformance!(@case wrong_hash_is_refused);
            conformance!(@case concurrent_puts_of_one_blob);
            conformance!(@case ages_for_collection);
        }
    };
    (@case $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, _dir) = store();
            super::$name(store).await;
        }
    };
}

conformance!(local, |dir| Arc::new(LocalBlobStore::open(dir).unwrap()));

/// Local-disk specifics: a corrupted blob is caught on read, and leftovers of a crash
/// in `tmp/` are cleared on open.
#[tokio::test]
async fn local_detects_corruption_and_clears_temp() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::open(dir.path()).unwrap();
    let data = Bytes::from_static(b"precious");
    let hash = ContentHash::of(&data);
    store.put(hash, data).await.unwrap();
    let hex = hash.to_hex();
    let file = dir.path().join("chunks").join(&hex[..2]).join(&hex);
    std::fs::write(&file, b"rotten!!").unwrap();
    assert!(matches!(store.get(hash).await, Err(BlobError::Corrupt(_))));
    std::fs::write(dir.path().join("tmp").join("leftover"), b"half").unwrap();
    LocalBlobStore::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
