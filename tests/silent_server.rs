//! A server that stops answering without closing anything, a hung process (SIGSTOP) or a
//! partition that drops packets (iptables DROP on its port), holds no file operation for
//! long: the heartbeat notices it within 2 s and the mount works offline. What was written
//! meanwhile reaches the server once it answers again.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cubby_proto::ContentHash;
use cubby_testkit::{TestServer, fuse_available, must_run_privileged, random_bytes};

mod common;

use common::*;

/// The longest one command may take against a silent server: the heartbeat's 2 s,
/// with room for a loaded machine (it took 20 s, the read timeout, before).
const BOUND: Duration = Duration::from_secs(6);

/// Runs `command` in `dir`, returning whether it succeeded and how long it took.
fn timed(dir: &Path, command: &str) -> (bool, Duration) {
    let start = Instant::now();
    let ok = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    (ok, start.elapsed())
}

/// A way of making the server silent, and of ending it.
trait Silence {
    fn begin(&mut self, server: &TestServer);
    fn end(&mut self, server: &TestServer);
}

/// The server process is stopped (SIGSTOP), then continued.
struct Frozen;

impl Silence for Frozen {
    fn begin(&mut self, server: &TestServer) {
        server.freeze();
    }
    fn end(&mut self, server: &TestServer) {
        server.thaw();
    }
}

/// Packets to the server's port are dropped (an iptables rule on loopback), then let
/// through again. The rule goes when this is dropped, even when the test fails.
struct Partitioned {
    rule: Option<Vec<String>>,
}

impl Partitioned {
    fn iptables(action: &str, rule: &[String]) -> bool {
        Command::new("iptables")
            .args(["-w", action])
            .args(rule)
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Silence for Partitioned {
    fn begin(&mut self, server: &TestServer) {
        let rule: Vec<String> = ["INPUT", "-i", "lo", "-p", "tcp", "--dport"]
            .iter()
            .map(|s| s.to_string())
            .chain([server.port().to_string(), "-j".into(), "DROP".into()])
            .collect();
        assert!(Self::iptables("-I", &rule), "iptables -I {rule:?}");
        self.rule = Some(rule);
    }
    fn end(&mut self, _server: &TestServer) {
        if let Some(rule) = self.rule.take() {
            assert!(Self::iptables("-D", &rule), "iptables -D {rule:?}");
        }
    }
}

impl Drop for Partitioned {
    fn drop(&mut self) {
        if let Some(rule) = self.rule.take() {
            Self::iptables("-D", &rule);
        }
    }
}

/// Writes through the mount while the server is silent, checks that nothing waited
/// long, and that all of it arrives once the server answers again.
fn works_through(silence: &mut impl Silence) {
    let setup = setup();
    let mount = mount(&setup);
    let root = mount.path();
    fs::create_dir(root.join("docs")).unwrap();
    write_synced(&root.join("docs/known.txt"), "read before the silence\n");
    assert_eq!(
        fs::read_to_string(root.join("docs/known.txt")).unwrap(),
        "read before the silence\n"
    );
    let source = tempfile::NamedTempFile::new().unwrap();
    fs::write(source.path(), random_bytes(5 << 20, 7)).unwrap();
    wait_synced(root, Duration::from_secs(10));
    // Every cached entry and listing expires: the next lookup asks the server.
    std::thread::sleep(Duration::from_millis(1500));

    silence.begin(&setup.server);
    let copy = format!("cp {} docs/big.bin", source.path().display());
    let steps = [
        copy.as_str(),
        "ls -la docs >/dev/null",
        "cat docs/known.txt >/dev/null",
        "mkdir docs/made-while-silent && echo new > docs/made-while-silent/new.txt",
        "mv docs/known.txt docs/renamed.txt",
    ];
    for step in steps {
        let (ok, took) = timed(root, step);
        assert!(ok, "`{step}` failed against a silent server");
        assert!(
            took < BOUND,
            "`{step}` took {took:?} against a silent server"
        );
    }
    let offline = status(root);
    assert_eq!(offline["online"], false, "{offline}");
    assert!(
        offline["queue_depth"].as_u64().unwrap() >= 1,
        "nothing waits for the server: {offline}"
    );

    silence.end(&setup.server);
    wait_synced(root, Duration::from_secs(60));
    // A second mount, with nothing cached, reads what the first wrote while silent.
    let other = common::mount(&setup);
    let there = other.path();
    assert_eq!(
        hash_file(&there.join("docs/big.bin")),
        hash_file(source.path())
    );
    assert_eq!(
        fs::read_to_string(there.join("docs/made-while-silent/new.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(
        fs::read_to_string(there.join("docs/renamed.txt")).unwrap(),
        "read before the silence\n"
    );
    assert!(!there.join("docs/known.txt").exists());
}

#[test]
fn a_stopped_server_holds_no_file_operation_for_long() {
    if fuse_available("a_stopped_server_holds_no_file_operation_for_long") {
        works_through(&mut Frozen);
    }
}

#[test]
fn a_partition_that_drops_packets_holds_no_file_operation_for_long() {
    let name = "a_partition_that_drops_packets_holds_no_file_operation_for_long";
    if !fuse_available(name) {
        return;
    }
    let can = nix::unistd::geteuid().is_root()
        && Command::new("iptables")
            .args(["-w", "-L", "INPUT", "-n"])
            .output()
            .is_ok_and(|out| out.status.success());
    if !can {
        assert!(
            !must_run_privileged(),
            "{name}: needs root and iptables (tests/install-deps.sh installs it)"
        );
        eprintln!("skipped {name}: needs root and iptables");
        return;
    }
    works_through(&mut Partitioned { rule: None });
}

#[test]
fn a_replay_after_a_crash_never_undoes_what_another_client_did_since() {
    // Before: the server applied a journaled change, the daemon died before its journal
    // said so, and the next start replayed it over a later change from another mount
    // (the rename moved back, the old mode set again).
    if !fuse_available("a_replay_after_a_crash_never_undoes_what_another_client_did_since") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let setup = setup();
    let mut mount = common::mount(&setup);
    let root = mount.path().to_path_buf();
    write_synced(&root.join("a.txt"), "a\n");
    write_synced(&root.join("m.txt"), "m\n");
    wait_synced(&root, Duration::from_secs(10));

    // Journaled while the server is silent, then applied when it answers again.
    setup.server.freeze();
    let offline = || status(&root)["online"] == false;
    eventually(Duration::from_secs(10), "offline", offline);
    sh(&root, "mv a.txt b.txt && chmod 600 m.txt");
    let log = mount.staging_dir().join("journal/log");
    let journaled = fs::read(&log).unwrap();
    assert!(
        String::from_utf8_lossy(&journaled).lines().count() >= 2,
        "both changes are journaled"
    );
    setup.server.thaw();
    wait_synced(&root, Duration::from_secs(30));

    // Another mount changes both again.
    let other = common::mount(&setup);
    sh(other.path(), "mv b.txt c.txt && chmod 644 m.txt");
    wait_synced(other.path(), Duration::from_secs(30));

    // The first daemon dies as if before its journal recorded the changes as applied.
    mount.kill_and_restart_after(|| fs::write(&log, &journaled).unwrap());
    let root = mount.path().to_path_buf();
    wait_synced(&root, Duration::from_secs(30));
    for there in [&root, other.path()] {
        eventually(Duration::from_secs(5), "the other mount's changes", || {
            there.join("c.txt").exists()
                && !there.join("b.txt").exists()
                && fs::metadata(there.join("m.txt"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
                    == 0o644
        });
        assert_eq!(fs::read_to_string(there.join("c.txt")).unwrap(), "a\n");
    }
}

#[test]
fn a_mount_starts_offline_with_what_it_knew_and_its_pending_work() {
    // Before: a mount could not start without its server ("cannot start the mount").
    if !fuse_available("a_mount_starts_offline_with_what_it_knew_and_its_pending_work") {
        return;
    }
    let setup = setup();
    let mut mount = common::mount(&setup);
    let root = mount.path().to_path_buf();
    let data = random_bytes(3 << 20, 9);
    sh(&root, "mkdir -p docs/deep && ln -s ../notes.txt docs/link");
    write_synced(&root.join("notes.txt"), "known before\n");
    write_synced(&root.join("docs/data.bin"), &data);
    wait_synced(&root, Duration::from_secs(10));
    // Read once, so the mount knows the listings and the content.
    sh(
        &root,
        "ls -laR . >/dev/null && cat notes.txt docs/data.bin >/dev/null",
    );

    setup.server.freeze();
    // An unmount and a new start, with the server silent all along.
    mount.restart();
    let root = mount.path().to_path_buf();
    let offline = status(&root);
    assert_eq!(offline["online"], false, "{offline}");
    assert_eq!(
        sh(&root, "ls docs | sort")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["data.bin", "deep", "link"]
    );
    assert_eq!(
        fs::read_to_string(root.join("docs/link")).unwrap(),
        "known before\n"
    );
    assert_eq!(
        hash_file(&root.join("docs/data.bin")),
        ContentHash::of(&data)
    );
    // Work done offline waits, and is sent once the server answers.
    write_synced(&root.join("docs/deep/offline.txt"), "written offline\n");
    sh(&root, "mv notes.txt renamed.txt");
    setup.server.thaw();
    wait_synced(&root, Duration::from_secs(30));
    let other = common::mount(&setup);
    let there = other.path();
    assert_eq!(
        fs::read_to_string(there.join("docs/deep/offline.txt")).unwrap(),
        "written offline\n"
    );
    assert_eq!(
        fs::read_to_string(there.join("renamed.txt")).unwrap(),
        "known before\n"
    );
    assert!(!there.join("notes.txt").exists());
}

#[test]
fn a_directory_made_here_is_known_empty_without_asking_the_server() {
    // Before: a directory the mount had made, once the server had it, was a listing the
    // mount had never seen: the next lookup in it asked the server (an untar or rsync
    // paid a round trip per directory) and, with the server silent, failed with EIO.
    if !fuse_available("a_directory_made_here_is_known_empty_without_asking_the_server") {
        return;
    }
    let setup = setup();
    let mount = common::mount(&setup);
    let root = mount.path();
    fs::create_dir_all(root.join("made/inner")).unwrap();
    wait_synced(root, Duration::from_secs(10));
    // The cached listings expire; what the mount knows stays.
    std::thread::sleep(Duration::from_millis(1500));

    setup.server.freeze();
    for absent in ["made/absent.txt", "made/inner/absent.txt"] {
        let error = fs::metadata(root.join(absent)).unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::NotFound,
            "{absent}: {error}"
        );
    }
    assert_eq!(sh(root, "ls made"), "inner\n");
    assert_eq!(sh(root, "ls made/inner"), "");
    write_synced(&root.join("made/inner/offline.txt"), "written offline\n");
    setup.server.thaw();
    wait_synced(root, Duration::from_secs(30));
    let other = common::mount(&setup);
    assert_eq!(
        fs::read_to_string(other.path().join("made/inner/offline.txt")).unwrap(),
        "written offline\n"
    );
}
