//! Signed, expiring URLs for chunk transfers.
//!
//! A signed URL is a capability: whoever holds it may `PUT` (or `GET`) one chunk until
//! it expires, without a token, so a CDN or a proxy can carry chunk traffic. The MAC is
//! BLAKE3 in keyed mode, with a key derived from the server secret for this purpose
//! only; it covers the method, the hash, the size and session (for `PUT`) and the
//! expiry, so changing any of them voids the signature. Comparison is constant-time.

use cubby_proto::ContentHash;

const CONTEXT: &str = "cubby 2026-11 signed chunk URLs v1";

/// The key that signs and checks URLs.
pub struct UrlSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(<redacted>)")
    }
}

/// Why a signed URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL's signature does not match")]
    BadSignature,
    #[error("the URL has expired")]
    Expired,
}

impl UrlSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: blake3::derive_key(CONTEXT, secret),
        }
    }

    fn mac(&self, message: &str) -> blake3::Hash {
        blake3::keyed_hash(&self.key, message.as_bytes())
    }

    fn put_message(hash: &ContentHash, size: u32, upload: &str, expires: i64) -> String {
        format!("PUT\n{hash}\n{size}\n{upload}\n{expires}")
    }

    fn get_message(hash: &ContentHash, expires: i64) -> String {
        format!("GET\n{hash}\n{expires}")
    }

    /// `/chunks/{hash}?upload=..&size=..&expires=..&sig=..`
    pub fn put_url(&self, hash: &ContentHash, size: u32, upload: &str, expires: i64) -> String {
        let sig = self
            .mac(&Self::put_message(hash, size, upload, expires))
            .to_hex();
        format!("/chunks/{hash}?upload={upload}&size={size}&expires={expires}&sig={sig}")
    }

    /// `/chunks/{hash}?expires=..&sig=..`
    pub fn get_url(&self, hash: &ContentHash, expires: i64) -> String {
        let sig = self.mac(&Self::get_message(hash, expires)).to_hex();
        format!("/chunks/{hash}?expires={expires}&sig={sig}")
    }

    fn check(&self, message: &str, sig: &str, expires: i64, now: i64) -> Result<(), UrlError> {
        let given = blake3::Hash::from_hex(sig).map_err(|_| UrlError::BadSignature)?;
        // blake3::Hash equality is constant-time.
        if given != self.mac(message) {
            return Err(UrlError::BadSignature);
        }
        if now >= expires {
            return Err(UrlError::Expired);
        }
        Ok(())
    }

    pub fn check_put(
        &self,
        hash: &ContentHash,
        size: u32,
        upload: &str,
        expires: i64,
        sig: &str,
        now: i64,
    ) -> Result<(), UrlError> {
        self.check(
            &Self::put_message(hash, size, upload, expires),
            sig,
            expires,
            now,
        )
    }

    pub fn check_get(
        &self,
        hash: &ContentHash,
        expires: i64,
        sig: &str,
        now: i64,
    ) -> Result<(), UrlError> {
        self.check(&Self::get_message(hash, expires), sig, expires, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_field() {
        let signer = UrlSigner::new(b"secret");
        let hash = ContentHash::of(b"x");
        let url = signer.put_url(&hash, 1, "up", 100);
        let sig = url.rsplit("sig=").next().unwrap();
        assert_eq!(signer.check_put(&hash, 1, "up", 100, sig, 50), Ok(()));
        assert_eq!(
            signer.check_put(&hash, 2, "up", 100, sig, 50),
            Err(UrlError::BadSignature)
        );
        assert_eq!(
            signer.check_put(&hash, 1, "other", 100, sig, 50),
            Err(UrlError::BadSignature)
        );
        assert_eq!(
            signer.check_put(&hash, 1, "up", 101, sig, 50),
            Err(UrlError::BadSignature)
        );
        let other = ContentHash::of(b"y");
        assert_eq!(
            signer.check_put(&other, 1, "up", 100, sig, 50),
            Err(UrlError::BadSignature)
        );
        assert_eq!(
            signer.check_put(&hash, 1, "up", 100, sig, 100),
            Err(UrlError::Expired)
        );
        assert_eq!(
            signer.check_put(&hash, 1, "up", 100, "zz", 50),
            Err(UrlError::BadSignature)
        );
        // A PUT signature is not a GET signature.
        assert_eq!(
            signer.check_get(&hash, 100, sig, 50),
            Err(UrlError::BadSignature)
        );
        let other_key = UrlSigner::new(b"other");
        assert_eq!(
            other_key.check_put(&hash, 1, "up", 100, sig, 50),
            Err(UrlError::BadSignature)
        );
    }
}
