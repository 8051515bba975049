//! Names for conflicted copies: when the server refuses a write as stale, the local
//! bytes are kept beside the winner as `NAME (conflicted copy HOST DATE).EXT`.

use std::time::SystemTime;

/// This machine's name, as conflicted copies show it.
pub fn host_name() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    let name: String = name.chars().filter(|c| *c != '/' && *c != '\0').collect();
    if name.is_empty() {
        "unknown host".into()
    } else {
        name
    }
}

/// How many conflicted names are tried for one copy before giving up.
pub const ATTEMPTS: u32 = 20;

/// The longest name an entry can have, in bytes.
const NAME_MAX: usize = cubby_proto::path::NAME_MAX;

/// `report.txt` -> `report (conflicted copy HOST 2026-11-28).txt`; `attempt` > 1 adds a
/// counter for when that name is taken too. A leading dot is part of the name, not an
/// extension (`.bashrc` -> `.bashrc (conflicted copy ...)`). The result is never longer
/// than a name may be (255 bytes): a long name loses the end of its stem, cut between
/// characters, and keeps its tag and extension.
pub fn conflicted_name(name: &str, host: &str, when: SystemTime, attempt: u32) -> String {
    let date = humantime::format_rfc3339_seconds(when).to_string();
    let date = &date[..10];
    let counter = if attempt > 1 {
        format!(" {attempt}")
    } else {
        String::new()
    };
    let tag = format!(
        " (conflicted copy {} {date}{counter})",
        prefix_within(host, 64)
    );
    let (stem, ext) = match name.rfind('.') {
        // An "extension" longer than a short one is part of the name.
        Some(dot) if dot > 0 && name.len() - dot <= 16 => name.split_at(dot),
        _ => (name, ""),
    };
    let stem = prefix_within(stem, NAME_MAX.saturating_sub(tag.len() + ext.len()));
    format!("{stem}{tag}{ext}")
}

/// The conflicted names for `name` in the order to try them (see [`conflicted_name`]).
pub fn conflicted_names(name: &str, host: &str, when: SystemTime) -> impl Iterator<Item = String> {
    (1..=ATTEMPTS).map(move |attempt| conflicted_name(name, host, when, attempt))
}

/// The longest prefix of `text` of at most `bytes` bytes that ends between characters.
fn prefix_within(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names() {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_852_800);
        assert_eq!(
            conflicted_name("report.txt", "laptop", when, 1),
            "report (conflicted copy laptop 2026-11-28).txt"
        );
        assert_eq!(
            conflicted_name("archive.tar.gz", "h", when, 2),
            "archive.tar (conflicted copy h 2026-11-28 2).gz"
        );
        assert_eq!(
            conflicted_name(".bashrc", "h", when, 1),
            ".bashrc (conflicted copy h 2026-11-28)"
        );
        assert_eq!(
            conflicted_name("README", "h", when, 1),
            "README (conflicted copy h 2026-11-28)"
        );
    }

    #[test]
    fn long_names_stay_within_255_bytes() {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_852_800);
        // 2-byte characters, so a cut at a fixed byte could split one.
        let long = format!("{}.txt", "é".repeat(125));
        assert_eq!(long.len(), 254);
        let names: Vec<String> = conflicted_names(&long, "laptop", when).collect();
        assert_eq!(names.len(), ATTEMPTS as usize);
        for name in &names {
            assert!(name.len() <= 255, "{} bytes: {name}", name.len());
            assert!(name.ends_with(").txt"), "{name}");
            assert!(name.starts_with("éé"), "{name}");
        }
        assert!(names[19].ends_with(" 20).txt"), "{}", names[19]);
        // Distinct, so each attempt tries a new name.
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        // A long host name and a long dotted tail are cut too.
        let odd = format!("a.{}", "b".repeat(250));
        let name = conflicted_name(&odd, &"h".repeat(300), when, 3);
        assert!(name.len() <= 255, "{} bytes", name.len());
        assert!(name.ends_with(" 3)"), "{name}");
    }
}
