//! Progress bars on a terminal; nothing at all otherwise (pipes, `--json`).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte counter that may or may not be drawn.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Drawn only when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        Self { bar }
    }

    pub fn hidden() -> Self {
        Self { bar: None }
    }

    /// Starts a phase of `total` bytes.
    pub fn phase(&self, message: &'static str, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
            bar.set_length(total);
            bar.set_position(0);
        }
    }

    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
