//! The origin of a request: the `X-Cubby-Origin` a client names (a mount names one per
//! run), kept for the request's task, so every change its writes record in the change
//! feed carries it. A client that follows the feed knows its own changes by it, exactly,
//! rather than by guessing from the entries it touched lately.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static ORIGIN: Option<String>;
}

/// Longest origin kept; a longer (or unprintable) one is ignored.
pub const MAX_ORIGIN_LEN: usize = 64;

/// The origin `headers` name, if it is a usable one.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get("x-cubby-origin")?.to_str().ok()?.trim();
    (!value.is_empty()
        && value.len() <= MAX_ORIGIN_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then(|| value.to_owned())
}

/// The origin of the request this task serves (`None` outside one, or when it named
/// none).
pub fn current() -> Option<String> {
    ORIGIN.try_with(Clone::clone).ok().flatten()
}

/// Middleware: runs the request with its origin.
pub async fn within_origin(request: Request, next: Next) -> Response {
    let origin = from_headers(request.headers());
    ORIGIN.scope(origin, next.run(request)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_origins_are_kept() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(from_headers(&headers), None);
        headers.insert("x-cubby-origin", "mount-3fa9_x".parse().unwrap());
        assert_eq!(from_headers(&headers).as_deref(), Some("mount-3fa9_x"));
        headers.insert("x-cubby-origin", "a b".parse().unwrap());
        assert_eq!(from_headers(&headers), None);
        headers.insert("x-cubby-origin", "a".repeat(65).parse().unwrap());
        assert_eq!(from_headers(&headers), None);
    }

    #[tokio::test]
    async fn a_task_sees_the_origin_it_runs_with() {
        assert_eq!(current(), None);
        let seen = ORIGIN.scope(Some("m1".into()), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("m1"));
    }
}
