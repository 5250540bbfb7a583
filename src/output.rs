//! Output for people (one line per step on stderr) and for programs (`--json`
//! on stdout). Commands report through a [`Reporter`].

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

/// Where progress lines go. Thread-safe: machines come up in parallel.
pub struct Reporter {
    json: bool,
    verbose: u8,
    start: Instant,
    lock: Mutex<()>,
    tty: bool,
}

impl Reporter {
    pub fn new(json: bool, verbose: u8) -> Reporter {
        Reporter {
            json,
            verbose,
            start: Instant::now(),
            lock: Mutex::new(()),
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// A step, prefixed with the machine it concerns (if any). With `--json`
    /// progress still goes to stderr so stdout stays parseable.
    pub fn step(&self, machine: Option<&str>, msg: impl AsRef<str>) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = self.start.elapsed().as_secs_f32();
        let prefix = machine.map(|m| format!("{m}: ")).unwrap_or_default();
        let line = if self.tty || self.verbose > 0 {
            format!("[{elapsed:6.1}s] {prefix}{}", msg.as_ref())
        } else {
            format!("{prefix}{}", msg.as_ref())
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    /// A detail shown only with `-v`.
    pub fn detail(&self, machine: Option<&str>, msg: impl AsRef<str>) {
        if self.verbose > 0 {
            self.step(machine, msg);
        }
    }

    /// A warning: always shown.
    pub fn warn(&self, machine: Option<&str>, msg: impl AsRef<str>) {
        self.step(machine, format!("warning: {}", msg.as_ref()));
    }
}
