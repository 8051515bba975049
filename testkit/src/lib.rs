//! Test harness: a real `cubby-server` process on 127.0.0.1:0 with its own temp data
//! directory, killed (by pid, only the process it started) when the guard drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cubby_proto::api::{Entry, LoginResponse, UploadResponse};
use cubby_proto::{ContentHash, ErrorBody, ErrorCode};
use reqwest::multipart::{Form, Part};
use reqwest::{Response, StatusCode};

pub const PASSWORD: &str = "correct horse battery staple";

/// The workspace's `target/<profile>` directory, found from the running test binary
/// (`target/<profile>/deps/<test>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// A binary of the workspace. Running the workspace's tests builds every binary first.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

pub fn server_bin() -> PathBuf {
    workspace_bin("cubby-server")
}

/// Waits up to 5 s for a process this harness started to exit, then kills it.
fn wait_or_kill(child: &mut Child) {
    for _ in 0..100 {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A running server process.
#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    pub url: String,
    pub data: tempfile::TempDir,
    extra_args: Vec<String>,
    /// Where stderr goes, with the RUST_LOG to run under (unset when `None`), for tests
    /// of what the server logs; without it, stderr is the test's and RUST_LOG is `warn`.
    logged: Option<(PathBuf, Option<String>)>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `serve` arguments.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let mut server = Self {
            child: None,
            url: String::new(),
            data,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            logged: None,
        };
        server.spawn();
        server
    }

    /// Starts a server whose stderr is kept (see [`TestServer::log`]), with `rust_log`
    /// as RUST_LOG, or with none set.
    pub fn start_logged(extra_args: &[&str], rust_log: Option<&str>) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let log = data.path().join("server-stderr.log");
        let mut server = Self {
            child: None,
            url: String::new(),
            data,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            logged: Some((log, rust_log.map(str::to_owned))),
        };
        server.spawn();
        server
    }

    /// What a server started with [`TestServer::start_logged`] wrote on stderr so far.
    pub fn log(&self) -> String {
        let (path, _) = self.logged.as_ref().expect("started with start_logged");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn spawn(&mut self) {
        // After the first start, the same address: clients find it again.
        let listen = self
            .url
            .strip_prefix("http://")
            .unwrap_or("127.0.0.1:0")
            .to_owned();
        let mut command = Command::new(server_bin());
        command
            .args(["serve", "--listen", &listen, "--data"])
            .arg(self.data.path())
            .args(&self.extra_args)
            .stdout(Stdio::piped());
        match &self.logged {
            None => {
                command.env("RUST_LOG", "warn").stderr(Stdio::inherit());
            }
            Some((path, rust_log)) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the server's log");
                command.env_remove("RUST_LOG").stderr(file);
                if let Some(rust_log) = rust_log {
                    command.env("RUST_LOG", rust_log);
                }
            }
        }
        let mut child = command.spawn().expect("start cubby-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("cubby-server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        self.url = format!("http://{addr}");
        self.child = Some(child);
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            wait_or_kill(&mut child);
        }
    }

    /// Kills the server process at once (SIGKILL), as a crash would, and waits for it.
    pub fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server process (SIGSTOP): its sockets stay open and nothing is
    /// answered, as with a hung server. Dropping the server still ends it.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let sent = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .is_ok_and(|status| status.success());
        assert!(sent, "kill {signal} {}", child.id());
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("the server's URL ends with its port")
    }

    /// Starts a stopped server again on the same data directory and address.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        self.spawn();
    }

    /// Stops and starts the server on the same data directory and address.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn add_user(&self, name: &str) {
        let out = Command::new(server_bin())
            .args(["user", "add", name, "--password", PASSWORD, "--data"])
            .arg(self.data.path())
            .output()
            .expect("run user add");
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds a user and logs in as them.
    pub async fn user(&self, name: &str) -> Client {
        self.add_user(name);
        self.login(name).await
    }

    pub async fn login(&self, name: &str) -> Client {
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{}/auth/login", self.url))
            .json(&serde_json::json!({"username": name, "password": PASSWORD}))
            .send()
            .await
            .expect("login request");
        assert_eq!(response.status(), StatusCode::OK);
        let login: LoginResponse = response.json().await.expect("login body");
        Client {
            http,
            base: self.url.clone(),
            token: login.token,
        }
    }

    pub fn blob_files(&self) -> Vec<PathBuf> {
        files_under(&self.data.path().join("blobs"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug)]
/// A tmpfs mounted for the length of a test (a full disk on demand), unmounted when
/// dropped, even when the test fails.
pub struct SmallDisk {
    pub dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts one of `size` (`8m`), or `None` when this user cannot mount (not root;
    /// a failure in CI).
    pub fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { dir }),
            _ if must_run_privileged() => panic!("CI must be able to mount a tmpfs"),
            _ => None,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(read) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in read.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// An HTTP client logged in as one user.
#[derive(Debug, Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.token)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(&self.token)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(&self.token)
    }

    pub async fn upload_raw(&self, path: &str, data: Vec<u8>, base: Option<u64>) -> Response {
        let mut form = Form::new().text("path", path.to_owned());
        if let Some(base) = base {
            form = form.text("base_version", base.to_string());
        }
        form = form.part("file", Part::bytes(data).file_name("upload"));
        self.post("/upload")
            .multipart(form)
            .send()
            .await
            .expect("upload request")
    }

    pub async fn upload(&self, path: &str, data: &[u8], base: Option<u64>) -> UploadResponse {
        let response = self.upload_raw(path, data.to_vec(), base).await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "upload {path}: {text}");
        let uploaded: UploadResponse = serde_json::from_str(&text).expect("upload body");
        assert_eq!(uploaded.hash, ContentHash::of(data));
        assert_eq!(uploaded.size, data.len() as u64);
        uploaded
    }

    pub async fn download(&self, file_id: u64) -> Vec<u8> {
        let response = self
            .get(&format!("/download?file_id={file_id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap().to_vec()
    }

    pub async fn stat(&self, path: &str) -> Response {
        self.get("/stat")
            .query(&[("path", path)])
            .send()
            .await
            .unwrap()
    }

    pub async fn stat_entry(&self, path: &str) -> Entry {
        let response = self.stat(path).await;
        assert_eq!(response.status(), StatusCode::OK, "stat {path}");
        response.json().await.unwrap()
    }

    pub async fn mkdir(&self, path: &str, parents: bool) -> Response {
        self.post("/mkdir")
            .json(&serde_json::json!({"path": path, "parents": parents}))
            .send()
            .await
            .unwrap()
    }
}

/// Asserts the status and the stable error code of a failed response.
pub async fn expect_error(response: Response, status: StatusCode, code: ErrorCode) -> ErrorBody {
    let got = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(got, status, "body: {text}");
    let body: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not an error body: {text}"));
    assert_eq!(body.error.code, code, "body: {text}");
    assert!(!body.error.message.is_empty());
    body
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for tens of MiB.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether tests that need root or FUSE-like privileges must run (CI) or may skip.
pub fn must_run_privileged() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether FUSE mounts can run here. Missing FUSE skips a test on a developer's
/// machine, and fails it in CI (`CI=true`), so a green CI run means the mounts ran.
pub fn fuse_available(test: &str) -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    assert!(
        !must_run_privileged(),
        "{test}: /dev/fuse is missing, and CI must run mount tests"
    );
    eprintln!("skipping {test}: /dev/fuse is missing");
    false
}

/// Logs `user` in with the `cubby` binary; returns the configuration file (in `dir`).
pub fn cubby_login(cubby: &Path, server: &TestServer, user: &str, dir: &Path) -> PathBuf {
    use std::io::Write;
    let config = dir.join(format!("{user}.json"));
    let mut child = Command::new(cubby)
        .arg("--config")
        .arg(&config)
        .args([
            "login",
            "--server",
            &server.url,
            "--username",
            user,
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cubby login");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "cubby login failed");
    config
}

fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.to_string_lossy();
    mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(&*dir))
}

/// A running `cubby mount`, unmounted and stopped (by pid) when dropped, even when the
/// test fails.
#[derive(Debug)]
pub struct Mount {
    pub dir: tempfile::TempDir,
    /// Staging area and chunk cache of this mount (kept across restarts).
    state: PathBuf,
    /// The temporary directory `state` is, unless the test gave its own.
    _own_state: Option<tempfile::TempDir>,
    cubby: PathBuf,
    config: PathBuf,
    /// More arguments for `cubby mount`.
    args: Vec<String>,
    /// Where stderr goes, under the mount's default log level, for tests of what the
    /// mount logs; without it, stderr is the test's and RUST_LOG is `cubby=warn`, or
    /// `CUBBY_TEST_MOUNT_LOG` when set (to see what a failing test's mount did).
    log: Option<PathBuf>,
    child: Option<Child>,
}

impl Mount {
    /// A mount at its default log level (no RUST_LOG), whose stderr is kept: see
    /// [`Mount::log`].
    pub fn start_logged(cubby: &Path, config: &Path) -> Self {
        let state = tempfile::tempdir().expect("state dir");
        let mut mount = Self {
            dir: tempfile::tempdir().expect("mount dir"),
            state: state.path().to_owned(),
            _own_state: None,
            cubby: cubby.to_owned(),
            config: config.to_owned(),
            args: Vec::new(),
            log: Some(state.path().join("mount-stderr.log")),
            child: None,
        };
        mount._own_state = Some(state);
        mount.spawn();
        mount
    }

    /// What a mount started with [`Mount::start_logged`] wrote on stderr so far.
    pub fn log(&self) -> String {
        let path = self.log.as_ref().expect("started with start_logged");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    pub fn start(cubby: &Path, config: &Path) -> Self {
        let state = tempfile::tempdir().expect("state dir");
        let mut mount = Self::start_with_state(cubby, config, state.path(), &[]);
        mount._own_state = Some(state);
        mount
    }

    /// A mount whose staging area and chunk cache live under `state` (a small tmpfs,
    /// say), which the caller keeps, started with more arguments `args`.
    pub fn start_with_state(cubby: &Path, config: &Path, state: &Path, args: &[&str]) -> Self {
        let mut mount = Self {
            dir: tempfile::tempdir().expect("mount dir"),
            state: state.to_owned(),
            _own_state: None,
            cubby: cubby.to_owned(),
            config: config.to_owned(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            log: None,
            child: None,
        };
        mount.spawn();
        mount
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.state.join("staging")
    }

    /// The chunk cache: under the state folder, unless `--cache-dir` was given.
    pub fn cache_dir(&self) -> PathBuf {
        self.args
            .iter()
            .position(|arg| arg == "--cache-dir")
            .and_then(|at| self.args.get(at + 1))
            .map_or_else(|| self.state.join("cache"), PathBuf::from)
    }

    /// The extra arguments, without `--cache-dir` and its value (given once, above).
    fn args_but_cache_dir(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if arg == "--cache-dir" {
                args.next();
            } else {
                out.push(arg.clone());
            }
        }
        out
    }

    fn spawn(&mut self) {
        let mut command = Command::new(&self.cubby);
        command
            .arg("--config")
            .arg(&self.config)
            .arg("mount")
            .arg(self.dir.path())
            .arg("--staging-dir")
            .arg(self.staging_dir())
            .args(["--cache-dir".as_ref(), self.cache_dir().as_os_str()])
            .args(self.args_but_cache_dir())
            .stdout(Stdio::null());
        match &self.log {
            None => command
                .env(
                    "RUST_LOG",
                    std::env::var("CUBBY_TEST_MOUNT_LOG").unwrap_or_else(|_| "cubby=warn".into()),
                )
                .stderr(Stdio::inherit()),
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the mount's log");
                command.env_remove("RUST_LOG").stderr(file)
            }
        };
        let child = command.spawn().expect("start cubby mount");
        self.child = Some(child);
        for _ in 0..200 {
            if is_mounted(self.dir.path()) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("cubby mount exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} was not mounted within 10 s", self.dir.path().display());
    }

    /// Unmounts and stops the daemon.
    pub fn stop(&mut self) {
        if is_mounted(self.dir.path()) {
            let unmounted = Command::new("fusermount3")
                .arg("-u")
                .arg(self.dir.path())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(self.dir.path())
                    .status();
            }
        }
        if let Some(mut child) = self.child.take() {
            wait_or_kill(&mut child);
        }
    }

    /// Stops the daemon and mounts again with the same staging area and cache.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Kills the daemon with SIGKILL (no clean shutdown), runs `between` (while no
    /// daemon runs), then mounts again with the same staging area and cache.
    pub fn kill_and_restart_after(&mut self, between: impl FnOnce()) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The kernel keeps a dead mount until it is unmounted.
        self.stop();
        between();
        self.spawn();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every argument, option and subcommand of `command` (by path from `name`) that
/// `--help` shows with no description.
pub fn undescribed_arguments(command: &clap::Command, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for arg in command.get_arguments() {
        let builtin = matches!(arg.get_id().as_str(), "help" | "version");
        if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
            out.push(format!("{name} {}", arg.get_id()));
        }
    }
    for sub in command.get_subcommands() {
        let path = format!("{name} {}", sub.get_name());
        if sub.get_about().is_none() {
            out.push(format!("{path} (the command itself)"));
        }
        out.extend(undescribed_arguments(sub, &path));
    }
    out
}
