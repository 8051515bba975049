//! The `Range` header, single ranges only, as RFC 9110 §14 reads.
//!
//! A syntactically invalid header, another unit, or several ranges are ignored (the
//! whole content is sent, which the RFC allows); a range that starts past the end is
//! unsatisfiable (416); a suffix longer than the content means the whole content.

/// What to send for a `Range` header against content of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    /// First and last byte, inclusive.
    Partial {
        first: u64,
        last: u64,
    },
    Unsatisfiable,
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub fn parse(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    match (start, end) {
        ("", suffix) => match digits(suffix) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial {
                first: size - n.min(size),
                last: size - 1,
            },
        },
        (start, end) => {
            let Some(first) = digits(start) else {
                return RangeRequest::Full;
            };
            let last = if end.is_empty() {
                u64::MAX
            } else {
                match digits(end) {
                    Some(last) if last >= first => last,
                    _ => return RangeRequest::Full,
                }
            };
            if first >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial {
                    first,
                    last: last.min(size - 1),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::*;
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse(None, 10), Full);
        assert_eq!(parse(Some("bytes=0-4"), 10), Partial { first: 0, last: 4 });
        assert_eq!(parse(Some("bytes=5-"), 10), Partial { first: 5, last: 9 });
        assert_eq!(
            parse(Some("bytes=5-100"), 10),
            Partial { first: 5, last: 9 }
        );
        assert_eq!(parse(Some("bytes=-3"), 10), Partial { first: 7, last: 9 });
        assert_eq!(parse(Some("bytes=-30"), 10), Partial { first: 0, last: 9 });
        assert_eq!(parse(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse(Some("bytes=4-2"), 10), Full);
        assert_eq!(parse(Some("bytes=0-1,4-5"), 10), Full);
        assert_eq!(parse(Some("items=0-1"), 10), Full);
        assert_eq!(parse(Some("bytes=x-1"), 10), Full);
        assert_eq!(parse(Some("bytes=+1-2"), 10), Full);
    }
}
