//! Download progress: an indicatif bar when stderr is a terminal, a plain
//! line every few seconds otherwise (CI logs), nothing with `--json`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Reporter;

enum Mode<'a> {
    Silent,
    Bar(ProgressBar),
    Lines {
        reporter: &'a Reporter,
        last: Instant,
        every: Duration,
    },
}

/// Progress of one download.
pub struct DownloadProgress<'a> {
    mode: Mode<'a>,
    label: String,
    total: Option<u64>,
    pos: u64,
    started: Instant,
    start_pos: u64,
}

impl<'a> DownloadProgress<'a> {
    /// Chooses the display for `reporter`: silent with `--json`, a bar on a
    /// terminal, periodic lines otherwise.
    pub fn new(reporter: &'a Reporter, label: impl Into<String>) -> DownloadProgress<'a> {
        let mode = if reporter.json() {
            Mode::Silent
        } else if std::io::stderr().is_terminal() {
            // hidden until the size is known (see `start`)
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            Mode::Bar(bar)
        } else {
            Mode::Lines {
                reporter,
                last: Instant::now(),
                every: Duration::from_secs(5),
            }
        };
        let label = label.into();
        if let Mode::Bar(bar) = &mode {
            bar.set_message(label.clone());
        }
        DownloadProgress {
            mode,
            label,
            total: None,
            pos: 0,
            started: Instant::now(),
            start_pos: 0,
        }
    }

    /// No output at all (tests, library callers without a reporter).
    pub fn silent() -> DownloadProgress<'static> {
        DownloadProgress {
            mode: Mode::Silent,
            label: String::new(),
            total: None,
            pos: 0,
            started: Instant::now(),
            start_pos: 0,
        }
    }

    /// A transfer starts (or restarts) at `pos` of `total` bytes.
    pub fn start(&mut self, pos: u64, total: Option<u64>) {
        self.pos = pos;
        self.start_pos = pos;
        self.total = total;
        self.started = Instant::now();
        if let Mode::Bar(bar) = &self.mode {
            if let Some(t) = total {
                bar.set_length(t);
            }
            bar.set_position(pos);
            bar.reset_eta();
            if bar.is_hidden() {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
    }

    pub fn set_position(&mut self, pos: u64) {
        self.pos = pos;
        let rate = self.rate();
        match &mut self.mode {
            Mode::Silent => {}
            Mode::Bar(bar) => bar.set_position(pos),
            Mode::Lines {
                reporter,
                last,
                every,
            } => {
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    let line = progress_line(&self.label, pos, self.total, rate);
                    reporter.step(None, line);
                }
            }
        }
    }

    /// A note in the middle of a download (retry, restart).
    pub fn note(&self, msg: impl AsRef<str>) {
        match &self.mode {
            Mode::Silent => {}
            Mode::Bar(bar) => bar.println(format!("{}: {}", self.label, msg.as_ref())),
            Mode::Lines { reporter, .. } => {
                reporter.step(None, format!("{}: {}", self.label, msg.as_ref()))
            }
        }
    }

    fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        (self.pos.saturating_sub(self.start_pos)) as f64 / secs
    }

    pub fn finish(&mut self) {
        match &self.mode {
            Mode::Silent => {}
            Mode::Bar(bar) => bar.finish_and_clear(),
            Mode::Lines { reporter, .. } => {
                reporter.step(
                    None,
                    progress_line(&self.label, self.pos, self.total, self.rate()),
                );
            }
        }
    }
}

impl Drop for DownloadProgress<'_> {
    fn drop(&mut self) {
        if let Mode::Bar(bar) = &self.mode {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// `1.5 GiB`, `20.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn progress_line(label: &str, pos: u64, total: Option<u64>, rate: f64) -> String {
    let rate = human_bytes(rate as u64);
    match total {
        Some(t) if t > 0 => format!(
            "{label}: {} of {} ({}%), {rate}/s",
            human_bytes(pos),
            human_bytes(t),
            pos * 100 / t
        ),
        _ => format!("{label}: {}, {rate}/s", human_bytes(pos)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(120 << 20), "120.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            progress_line("box a/b", 50 << 20, Some(100 << 20), (10 << 20) as f64),
            "box a/b: 50.0 MiB of 100.0 MiB (50%), 10.0 MiB/s"
        );
        assert_eq!(progress_line("x", 1024, None, 0.0), "x: 1.0 KiB, 0 B/s");
    }
}
