//! The typed HTTP client of the server API. The only module of the client that knows
//! HTTP: everything above it speaks in wire types and [`RemoteError`].

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use cubby_proto::api::{
    BeginUploadRequest, BeginUploadResponse, CompleteUploadRequest, DeleteResponse, Entry,
    FileManifest, LoginRequest, LoginResponse, RestoreRequest, TrashResponse, TrashRestoreRequest,
    UploadResponse, VersionsResponse,
};
use cubby_proto::{ErrorBody, ErrorCode, RemotePath};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server answered with an error body.
    #[error("server: {} ({})", .body.error.message, .status)]
    Api { status: StatusCode, body: ErrorBody },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the server at {}: {}", server_of(.0), reason_of(.0))]
    Transport(#[from] reqwest::Error),
    /// The server answered something that is not the protocol.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

/// The server's address (scheme, host, port) a failed request went to.
pub fn server_of(error: &reqwest::Error) -> String {
    error.url().map_or_else(
        || "the configured address".to_owned(),
        |url| url.origin().ascii_serialization(),
    )
}

/// Why a request did not get through, in the words of the deepest cause ("Connection
/// refused", "no answer in time") rather than reqwest's outer "error sending request".
pub fn reason_of(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer in time".to_owned();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl RemoteError {
    /// The stable error code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RemoteError::Api { body, .. } => Some(body.error.code),
            _ => None,
        }
    }

    /// With `version_conflict`: the version that is current on the server.
    pub fn current_version(&self) -> Option<u64> {
        match self {
            RemoteError::Api { body, .. } => body.current_version,
            _ => None,
        }
    }
}

tokio::task_local! {
    /// The idempotency key the changes sent by the current task carry, if any.
    static IDEMPOTENCY_KEY: Option<String>;
}

/// Runs `request` with every change it sends (any request but a GET or HEAD) carrying
/// idempotency key `key`: the server applies a change sent again with its key once,
/// and answers the copy as it answered the first (see docs/spec.md).
pub async fn with_idempotency_key<F: std::future::Future>(
    key: Option<String>,
    request: F,
) -> F::Output {
    IDEMPOTENCY_KEY.scope(key, request).await
}

/// A client of one server, authenticated as one user.
#[derive(Clone)]
pub struct Remote {
    http: reqwest::Client,
    /// The `X-Cubby-Origin` of every request this client (and its clones) makes: the
    /// changes they make carry it in the change feed.
    origin: Arc<str>,
    base: String,
    /// The bearer token, shared by every clone (a renewal serves them all).
    token: Arc<RwLock<String>>,
    renewal: Option<Arc<Renewal>>,
}

/// How a refused token is renewed: the login's refresh token, and the configuration
/// file the new token is saved to (so the next run starts with it).
struct Renewal {
    refresh_token: String,
    config: Option<PathBuf>,
    /// One renewal at a time: requests refused together renew once.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A new `X-Cubby-Origin` (see [`Remote::origin`]).
fn new_origin() -> String {
    let mut random = [0u8; 12];
    // Without randomness an origin only has to differ from other processes'.
    if getrandom::fill(&mut random).is_err() {
        random[..4].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(random)
}

fn http_client(origin: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(Ok(origin)) = origin.map(reqwest::header::HeaderValue::from_str) {
        headers.insert("x-cubby-origin", origin);
    }
    if let Ok(device) = reqwest::header::HeaderValue::from_str(&crate::conflict::host_name()) {
        headers.insert("x-cubby-device", device);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(5))
        // A server that accepts but never answers is as good as unreachable.
        .read_timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client builds")
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, RemoteError> {
    let status = response.status();
    let bytes = response.bytes().await?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| {
            RemoteError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&bytes)))
        });
    }
    Err(error_from(status, &bytes))
}

/// Success, or the error the server sent.
async fn expect_success(response: reqwest::Response) -> Result<(), RemoteError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    Err(error_from(status, &response.bytes().await?))
}

fn authorize(request: &mut reqwest::Request, token: &str) {
    if let Ok(value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
        request
            .headers_mut()
            .insert(reqwest::header::AUTHORIZATION, value);
    }
}

fn error_from(status: StatusCode, bytes: &[u8]) -> RemoteError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => RemoteError::Api { status, body },
        Err(_) => RemoteError::Protocol(format!("{status}: {}", String::from_utf8_lossy(bytes))),
    }
}

impl Remote {
    pub fn new(base: &str, token: &str) -> Self {
        let origin = new_origin();
        Self {
            http: http_client(Some(&origin)),
            origin: origin.into(),
            base: base.trim_end_matches('/').to_owned(),
            token: Arc::new(RwLock::new(token.into())),
            renewal: None,
        }
    }

    /// The same client, renewing its token with `refresh_token` when the server refuses
    /// it (expired), and saving the new one in the configuration at `config`.
    pub fn renewing(mut self, refresh_token: &str, config: Option<PathBuf>) -> Self {
        self.renewal = Some(Arc::new(Renewal {
            refresh_token: refresh_token.into(),
            config,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }));
        self
    }

    /// The server's base URL.
    /// What this client's requests name as their origin (see [`http_client`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn server(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn token(&self) -> String {
        self.token
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A request to a path of the API (authenticated when sent by [`Self::send`]).
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// Sends an authenticated request. A refused token (401) is renewed, when this
    /// client can, and the request sent once more (unless its body was a stream, which
    /// cannot be sent twice: its caller retries, with the new token).
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RemoteError> {
        let mut request = request.build()?;
        let key = IDEMPOTENCY_KEY.try_with(Clone::clone).ok().flatten();
        if let Some(key) = key
            && !request.method().is_safe()
            && let Ok(value) = reqwest::header::HeaderValue::from_str(&key)
        {
            request
                .headers_mut()
                .insert(cubby_proto::api::IDEMPOTENCY_KEY, value);
        }
        let again = request.try_clone();
        let token = self.token();
        authorize(&mut request, &token);
        let response = self.http.execute(request).await?;
        if response.status() != StatusCode::UNAUTHORIZED || self.renewal.is_none() {
            return Ok(response);
        }
        if !self.renew(&token).await? {
            return Ok(response);
        }
        let Some(mut again) = again else {
            return Ok(response);
        };
        authorize(&mut again, &self.token());
        Ok(self.http.execute(again).await?)
    }

    /// Renews the token `refused` (unless another request already did): whether there
    /// is a new one to try.
    async fn renew(&self, refused: &str) -> Result<bool, RemoteError> {
        let Some(renewal) = &self.renewal else {
            return Ok(false);
        };
        let _one = renewal.one_at_a_time.lock().await;
        if self.token() != refused {
            return Ok(true);
        }
        let request = cubby_proto::api::RefreshRequest {
            refresh_token: renewal.refresh_token.clone(),
        };
        let response = self
            .http
            .post(self.url("/auth/refresh"))
            .json(&request)
            .send()
            .await?;
        let renewed: LoginResponse = match decode(response).await {
            Ok(renewed) => renewed,
            Err(error @ RemoteError::Api { .. }) => {
                tracing::error!(%error, "the login cannot be renewed: run `cubby login` again");
                return Ok(false);
            }
            Err(error) => return Err(error),
        };
        *self
            .token
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = renewed.token.clone();
        tracing::info!("login token renewed");
        if let Some(path) = &renewal.config {
            let saved = crate::config::ClientConfig::load(path).and_then(|mut config| {
                config.token = renewed.token;
                config.expires_at = renewed.expires_at;
                config.save(path)
            });
            if let Err(error) = saved {
                tracing::warn!(%error, "the renewed token could not be saved");
            }
        }
        Ok(true)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RemoteError> {
        decode(self.send(request).await?).await
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        self.call(self.request(reqwest::Method::GET, path)).await
    }

    async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, RemoteError> {
        self.call(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `GET /healthz`: whether the server process answers at all (it needs no
    /// authentication and touches no store), within `within`.
    pub async fn alive(&self, within: Duration) -> Result<(), RemoteError> {
        let response = self
            .http
            .get(self.url("/healthz"))
            .timeout(within)
            .send()
            .await?;
        expect_success(response).await
    }

    /// `POST /auth/login`.
    pub async fn login(
        base: &str,
        username: &str,
        password: &str,
    ) -> Result<LoginResponse, RemoteError> {
        let request = LoginRequest {
            username: username.into(),
            password: password.into(),
        };
        let url = format!("{}/auth/login", base.trim_end_matches('/'));
        decode(http_client(None).post(url).json(&request).send().await?).await
    }

    /// `GET /stat?path=`; `None` when nothing is there.
    pub async fn stat(&self, path: &RemotePath) -> Result<Option<Entry>, RemoteError> {
        let request = self
            .request(reqwest::Method::GET, "/stat")
            .query(&[("path", path.to_string())]);
        match self.call(request).await {
            Ok(entry) => Ok(Some(entry)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /stat?path=/`: the user's root directory.
    pub async fn root(&self) -> Result<Entry, RemoteError> {
        self.call(
            self.request(reqwest::Method::GET, "/stat")
                .query(&[("path", "/")]),
        )
        .await
    }

    /// `GET /file/{id}`.
    pub async fn entry(&self, id: u64) -> Result<Entry, RemoteError> {
        self.get_json(&format!("/file/{id}")).await
    }

    /// `GET /changes`: this user's changes after `cursor` (none: just the current
    /// cursor), waiting up to `wait` for one.
    pub async fn changes(
        &self,
        cursor: Option<u64>,
        wait: Duration,
    ) -> Result<cubby_proto::api::ChangesResponse, RemoteError> {
        let mut request = self
            .request(reqwest::Method::GET, "/changes")
            .query(&[("timeout_secs", wait.as_secs())]);
        if let Some(cursor) = cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        self.call(request).await
    }

    /// `GET /list?id=`: the children of a directory.
    pub async fn children(&self, dir: u64) -> Result<Vec<Entry>, RemoteError> {
        let request = self
            .request(reqwest::Method::GET, "/list")
            .query(&[("id", dir)]);
        let listing: cubby_proto::api::ListResponse = self.call(request).await?;
        Ok(listing.children)
    }

    /// `POST /batch`: namespace changes in order, in one request.
    pub async fn batch(
        &self,
        request: &cubby_proto::api::BatchRequest,
    ) -> Result<cubby_proto::api::BatchResponse, RemoteError> {
        self.post_json("/batch", request).await
    }

    /// `POST /upload/begin`.
    pub async fn begin_upload(
        &self,
        request: &BeginUploadRequest,
    ) -> Result<BeginUploadResponse, RemoteError> {
        self.post_json("/upload/begin", request).await
    }

    /// `PUT` of one chunk to its signed URL (no token: the URL is the capability).
    pub async fn put_chunk(&self, url: &str, data: Bytes) -> Result<(), RemoteError> {
        expect_success(self.http.put(self.url(url)).body(data).send().await?).await
    }

    /// `POST /upload/complete`.
    pub async fn complete_upload(&self, upload_id: &str) -> Result<UploadResponse, RemoteError> {
        let request = CompleteUploadRequest {
            upload_id: upload_id.into(),
        };
        self.post_json("/upload/complete", &request).await
    }

    /// `POST /upload` of a small file's whole content as a new version of `file_id`, in
    /// one request (the server chunks it).
    pub async fn upload_version(
        &self,
        file_id: u64,
        base_version: Option<u64>,
        data: Vec<u8>,
    ) -> Result<UploadResponse, RemoteError> {
        let mut form = reqwest::multipart::Form::new().text("file_id", file_id.to_string());
        if let Some(base) = base_version {
            form = form.text("base_version", base.to_string());
        }
        form = form.part("file", reqwest::multipart::Part::bytes(data));
        self.call(
            self.request(reqwest::Method::POST, "/upload")
                .multipart(form),
        )
        .await
    }

    /// `POST /upload/batch`: new versions of small files (each at most one chunk), in
    /// one request; a result per file, in order.
    pub async fn upload_batch(
        &self,
        files: Vec<(cubby_proto::api::UploadBatchItem, Vec<u8>)>,
    ) -> Result<cubby_proto::api::UploadBatchResponse, RemoteError> {
        let mut form = reqwest::multipart::Form::new();
        for (item, data) in files {
            let described = serde_json::to_string(&item)
                .map_err(|e| RemoteError::Protocol(format!("upload batch item: {e}")))?;
            form = form
                .text("item", described)
                .part("file", reqwest::multipart::Part::bytes(data));
        }
        self.call(
            self.request(reqwest::Method::POST, "/upload/batch")
                .multipart(form),
        )
        .await
    }

    /// `GET /file/{id}/chunks`.
    pub async fn manifest(
        &self,
        file_id: u64,
        version: Option<u64>,
    ) -> Result<FileManifest, RemoteError> {
        let mut request = self.request(reqwest::Method::GET, &format!("/file/{file_id}/chunks"));
        if let Some(version) = version {
            request = request.query(&[("version", version)]);
        }
        self.call(request).await
    }

    /// `GET` of one chunk from its signed URL.
    pub async fn get_chunk(&self, url: &str) -> Result<Bytes, RemoteError> {
        let response = self.http.get(self.url(url)).send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(error_from(status, &bytes))
        }
    }

    /// `GET /file/{id}/versions`.
    pub async fn versions(&self, file_id: u64) -> Result<VersionsResponse, RemoteError> {
        self.get_json(&format!("/file/{file_id}/versions")).await
    }

    /// `POST /file/{id}/restore`.
    pub async fn restore(
        &self,
        file_id: u64,
        version: u64,
        base_version: Option<u64>,
    ) -> Result<Entry, RemoteError> {
        let body = RestoreRequest {
            version,
            base_version,
        };
        self.post_json(&format!("/file/{file_id}/restore"), &body)
            .await
    }

    /// `POST /delete`: to the trash.
    pub async fn delete(
        &self,
        path: &RemotePath,
        recursive: bool,
    ) -> Result<DeleteResponse, RemoteError> {
        let body = serde_json::json!({"path": path.to_string(), "recursive": recursive});
        self.post_json("/delete", &body).await
    }

    /// `DELETE /file/{id}`: to the trash.
    pub async fn delete_id(&self, id: u64, recursive: bool) -> Result<DeleteResponse, RemoteError> {
        let request = self
            .request(reqwest::Method::DELETE, &format!("/file/{id}"))
            .query(&[("recursive", recursive)]);
        self.call(request).await
    }

    /// `GET /trash`.
    pub async fn trash(&self) -> Result<TrashResponse, RemoteError> {
        self.get_json("/trash").await
    }

    /// `POST /trash/restore`.
    pub async fn restore_trash(
        &self,
        id: u64,
        to: Option<&RemotePath>,
    ) -> Result<Entry, RemoteError> {
        let body = TrashRestoreRequest {
            id,
            to: to.map(|p| p.to_string()),
        };
        self.post_json("/trash/restore", &body).await
    }

    /// `POST /create`: an empty file, in one request.
    pub async fn create(
        &self,
        request: &cubby_proto::api::CreateRequest,
    ) -> Result<Entry, RemoteError> {
        self.post_json("/create", request).await
    }

    /// `POST /mkdir` by parent id and name.
    pub async fn mkdir_in(&self, parent: u64, name: &str, mode: u32) -> Result<Entry, RemoteError> {
        let body = serde_json::json!({"parent_id": parent, "name": name, "mode": mode});
        self.post_json("/mkdir", &body).await
    }

    /// `POST /symlink` by parent id and name.
    /// `POST /symlink` in directory `parent`; `time_ns`, when given, is when the link
    /// was made (a journaled one is sent later).
    pub async fn symlink_in(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        time_ns: Option<i64>,
    ) -> Result<Entry, RemoteError> {
        let request = cubby_proto::api::SymlinkRequest {
            path: None,
            parent_id: Some(parent),
            name: Some(name.to_owned()),
            target: target.to_owned(),
            time_ns,
        };
        self.post_json("/symlink", &request).await
    }

    /// `POST /mknod`.
    pub async fn mknod(
        &self,
        request: &cubby_proto::api::MknodRequest,
    ) -> Result<Entry, RemoteError> {
        self.post_json("/mknod", request).await
    }

    /// `POST /move` of entry `id` to `name` inside `parent`.
    pub async fn move_to(
        &self,
        id: u64,
        parent: u64,
        name: &str,
        replace: bool,
    ) -> Result<Entry, RemoteError> {
        let body = serde_json::json!({
            "id": id, "to_parent_id": parent, "to_name": name, "replace": replace
        });
        self.post_json("/move", &body).await
    }

    /// `POST /file/{id}/attrs`.
    pub async fn set_attrs(
        &self,
        id: u64,
        attrs: &cubby_proto::api::AttrsRequest,
    ) -> Result<Entry, RemoteError> {
        self.post_json(&format!("/file/{id}/attrs"), attrs).await
    }

    /// The URL of an entry's attributes, or of one of them (the name percent-encoded).
    fn xattr_url(&self, id: u64, name: Option<&str>) -> Result<reqwest::Url, RemoteError> {
        let mut url = reqwest::Url::parse(&self.url(&format!("/file/{id}/xattrs")))
            .map_err(|e| RemoteError::Protocol(e.to_string()))?;
        if let Some(name) = name {
            url.path_segments_mut()
                .map_err(|()| RemoteError::Protocol("base URL cannot have paths".into()))?
                .push(name);
        }
        Ok(url)
    }

    /// `GET /file/{id}/xattrs`.
    pub async fn xattr_names(&self, id: u64) -> Result<Vec<String>, RemoteError> {
        #[derive(serde::Deserialize)]
        struct Names {
            names: Vec<String>,
        }
        let url = self.xattr_url(id, None)?;
        let names: Names = self.call(self.http.get(url)).await?;
        Ok(names.names)
    }

    /// `GET /file/{id}/xattrs/{name}`; `None` when the entry has no such attribute.
    pub async fn xattr(&self, id: u64, name: &str) -> Result<Option<Bytes>, RemoteError> {
        let url = self.xattr_url(id, Some(name))?;
        let response = self.send(self.http.get(url)).await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            return Ok(Some(bytes));
        }
        match error_from(status, &bytes) {
            e if e.code() == Some(ErrorCode::NotFound) => {
                // Either the attribute or the entry is missing; ask which.
                self.entry(id).await?;
                Ok(None)
            }
            e => Err(e),
        }
    }

    /// `PUT /file/{id}/xattrs/{name}?mode=`; mode is `any`, `create` or `replace`.
    pub async fn set_xattr(
        &self,
        id: u64,
        name: &str,
        value: &[u8],
        mode: &str,
    ) -> Result<(), RemoteError> {
        let url = self.xattr_url(id, Some(name))?;
        let request = self
            .http
            .put(url)
            .query(&[("mode", mode)])
            .body(value.to_vec());
        expect_success(self.send(request).await?).await
    }

    /// `DELETE /file/{id}/xattrs/{name}`.
    pub async fn remove_xattr(&self, id: u64, name: &str) -> Result<(), RemoteError> {
        let url = self.xattr_url(id, Some(name))?;
        expect_success(self.send(self.http.delete(url)).await?).await
    }
}
