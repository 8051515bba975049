//! Bursts against a real server process: every request is answered, and no burst of
//! cheap requests wedges the commits running beside it.

mod common;

use std::time::Duration;

use common::{TestServer, random_bytes};
use cubby_proto::ContentHash;
use reqwest::StatusCode;

/// More than the blocking threads of the server's runtime (512): each used to hold one
/// waiting for the metadata lock, while the commit holding it waited for a thread.
const BURST: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_readiness_checks_during_commits_is_all_answered() {
    let server = TestServer::start();
    let alice = server.user("alice").await;
    // Files of several chunks: each commit checks that its chunks are stored.
    let writers: Vec<_> = (0..4u64)
        .map(|writer| {
            let alice = alice.clone();
            tokio::spawn(async move {
                for round in 0..5u64 {
                    let data = random_bytes(3 << 20, writer * 100 + round);
                    let path = format!("/load/{writer}-{round}.bin");
                    let done = alice.upload(&path, &data, None).await;
                    assert_eq!(done.hash, ContentHash::of(&data));
                }
            })
        })
        .collect();
    let probes = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let checks: Vec<_> = (0..BURST)
        .map(|_| {
            let (probes, url) = (probes.clone(), format!("{}/readyz", server.url));
            tokio::spawn(async move { probes.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    let everything = async {
        let mut ready = 0;
        for check in checks {
            if check.await.unwrap().expect("the server answers") == StatusCode::OK {
                ready += 1;
            }
        }
        for writer in writers {
            writer.await.expect("every commit succeeds");
        }
        ready
    };
    let ready = tokio::time::timeout(Duration::from_secs(120), everything)
        .await
        .expect("the server answered everything within 120 s");
    assert_eq!(ready, BURST, "every readiness check says ready");
    // And it still serves: a listing shows all twenty files.
    let listing = alice
        .get("/list")
        .query(&[("path", "/load")])
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), StatusCode::OK);
    let listed: cubby_proto::api::ListResponse = listing.json().await.unwrap();
    assert_eq!(listed.children.len(), 20);
}
