//! Users and tokens: argon2id password hashes, HS256 JWTs, and the [`AuthUser`]
//! extractor that every endpoint but health and login requires.
//!
//! Tokens pin the algorithm (HS256 only: `none` and every other algorithm are
//! refused), must carry `exp`, `iat`, `aud` and `sub`, and are accepted only for the
//! audience `cubby` and only while their user exists. The signing secret is 32 random
//! bytes created on first start in `DATA_DIR/jwt.secret` (mode 0600).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::meta::{UserId, UserRecord};

/// The audience every Cubby token names.
pub const AUDIENCE: &str = "cubby";

/// Tokens issued more than this far in the future are refused (clock skew allowance).
const LEEWAY_SECS: u64 = 5;

/// The claims of a Cubby token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a decimal string.
    pub sub: String,
    pub name: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// Signing and verification keys.
pub struct AuthKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for AuthKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKeys")
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Why a token was refused (the client hears only "unauthorized").
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token issued in the future")]
    FromTheFuture,
    #[error("token subject is not a user id")]
    BadSubject,
}

fn now_secs() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

impl AuthKeys {
    pub fn from_secret(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// A token for `user`, and when it expires (Unix seconds).
    pub fn issue(&self, user: &UserRecord) -> Result<(String, i64), jsonwebtoken::errors::Error> {
        let iat = now_secs();
        let exp = iat + self.ttl.as_secs() as i64;
        let claims = Claims {
            sub: user.id.0.to_string(),
            name: user.name.clone(),
            aud: AUDIENCE.into(),
            iat,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, exp))
    }

    /// The user a token was issued to, if the token is valid now.
    pub fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        if data.claims.iat > now_secs() + LEEWAY_SECS as i64 {
            return Err(TokenError::FromTheFuture);
        }
        data.claims
            .sub
            .parse()
            .map(UserId)
            .map_err(|_| TokenError::BadSubject)
    }
}

/// Reads the server secret at `path`, creating it (32 random bytes, hex, mode 0600,
/// fsynced, renamed into place) when absent. Tokens and signed URLs derive from it.
pub fn load_or_create_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = hex::decode(text.trim()).map_err(std::io::Error::other)?;
            if secret.len() < 32 {
                return Err(std::io::Error::other("the secret is shorter than 32 bytes"));
            }
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
            let tmp = path.with_extension("tmp");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(hex::encode(secret).as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(secret.to_vec())
        }
        Err(e) => Err(e),
    }
}

/// An argon2id hash of `password`, in PHC string form.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The authenticated caller. Extracting it checks `Authorization: Bearer <jwt>`.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: UserId,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;
        let id = state.keys.verify(token.trim()).map_err(|error| {
            tracing::debug!(%error, "token refused");
            ApiError::unauthorized("invalid or expired token")
        })?;
        let found = state
            .accounts_found
            .read()
            .is_ok_and(|found| found.contains(&id));
        if !found {
            if !state.meta.user_exists(id).await? {
                return Err(ApiError::unauthorized("invalid or expired token"));
            }
            if let Ok(mut found) = state.accounts_found.write() {
                found.insert(id);
            }
        }
        Ok(AuthUser { id })
    }
}
