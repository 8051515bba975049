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

/// `report.txt` -> `report (conflicted copy HOST 2026-11-28).txt`; `attempt` > 1 adds a
/// counter for when that name is taken too. A leading dot is part of the name, not an
/// extension (`.bashrc` -> `.bashrc (conflicted copy ...)`).
pub fn conflicted_name(name: &str, host: &str, when: SystemTime, attempt: u32) -> String {
    let date = humantime::format_rfc3339_seconds(when).to_string();
    let date = &date[..10];
    let counter = if attempt > 1 {
        format!(" {attempt}")
    } else {
        String::new()
    };
    let tag = format!(" (conflicted copy {host} {date}{counter})");
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    format!("{stem}{tag}{ext}")
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
}
