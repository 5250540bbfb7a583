//! Output for people (one line per step on stderr, results on stdout) and for
//! programs (`--json`: one JSON document, or JSON lines, on stdout). Every
//! command reports through a [`Reporter`]; nothing else prints to stdout. A
//! closed stdout (`kvmdrive status | head -1`) is not an error.

use std::io::{IsTerminal, Write};

use serde::Serialize;
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
        let line = if self.verbose > 1 {
            // `-vv`: a timeline to the millisecond (see [`Reporter::trace`]).
            format!("[{elapsed:8.3}s] {prefix}{}", msg.as_ref())
        } else if self.tty || self.verbose > 0 {
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

    /// A point of the timeline, shown only with `-vv`: where a command
    /// spends its time (`up`: network, disk, define, start, SSH banner,
    /// logins; `snapshot restore`: revert, SSH).
    pub fn trace(&self, machine: Option<&str>, msg: impl AsRef<str>) {
        if self.verbose > 1 {
            self.step(machine, msg);
        }
    }

    /// A warning: always shown.
    pub fn warn(&self, machine: Option<&str>, msg: impl AsRef<str>) {
        self.step(machine, format!("warning: {}", msg.as_ref()));
    }

    /// A result for people on stdout, one line (e.g. a table row).
    pub fn line(&self, text: impl AsRef<str>) {
        self.stdout(&format!("{}\n", text.as_ref()));
    }

    /// Text for people or other tools on stdout, exactly as given (an
    /// ssh_config, an inventory file).
    pub fn text(&self, text: &str) {
        self.stdout(text);
    }

    /// The command's result for programs: one pretty-printed JSON document.
    pub fn json_doc<T: Serialize + ?Sized>(&self, value: &T) {
        self.stdout(&format!("{}\n", to_json(value, true)));
    }

    /// One JSON object per line, for results that stream (one per
    /// provisioner run).
    pub fn json_line<T: Serialize + ?Sized>(&self, value: &T) {
        self.stdout(&format!("{}\n", to_json(value, false)));
    }

    fn stdout(&self, text: &str) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = std::io::stdout().lock();
        // A reader that went away (a pipe into `head`) ends our output, not us.
        let _ = o.write_all(text.as_bytes()).and_then(|()| o.flush());
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T, pretty: bool) -> String {
    let s = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    s.expect("reports are plain data with string keys")
}
