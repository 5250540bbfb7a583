//! One result of one host check: ok / warn / fail, what was seen, and the
//! exact fix. Checks produce [`Finding`]s; `host check` prints them and the
//! rest of kvmdrive (preflight, error hints) reuses them.

use serde::Serialize;

/// How bad a finding is. `Fail` means a VM cannot run (or each define/start
/// is crippled) until it is fixed; `Warn` means it runs, but not as well as
/// it could, or something may bite later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable name of the check (`kvm-access`, `iptables-backend`, ...):
    /// error messages elsewhere refer to it.
    pub check: &'static str,
    pub status: Status,
    /// One line: what this means for running VMs.
    pub summary: String,
    /// What was observed, with the values that led to the verdict.
    pub saw: String,
    /// The exact fix, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: &'static str, summary: impl Into<String>, saw: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Ok,
            summary: summary.into(),
            saw: saw.into(),
            fix: None,
        }
    }

    pub fn warn(
        check: &'static str,
        summary: impl Into<String>,
        saw: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            status: Status::Warn,
            fix: Some(fix.into()),
            ..Finding::ok(check, summary, saw)
        }
    }

    pub fn fail(
        check: &'static str,
        summary: impl Into<String>,
        saw: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            status: Status::Fail,
            fix: Some(fix.into()),
            ..Finding::ok(check, summary, saw)
        }
    }

    /// The same finding with a warning instead of a failure (or vice versa).
    pub fn with_status(mut self, status: Status) -> Finding {
        self.status = status;
        self
    }

    /// `summary (check `name`): fix` — one line for error messages.
    pub fn one_line(&self) -> String {
        match &self.fix {
            Some(fix) => format!("{} (check `{}`): {}", self.summary, self.check, fix),
            None => format!("{} (check `{}`)", self.summary, self.check),
        }
    }
}

/// The worst status among findings (`Ok` for none).
pub fn worst(findings: &[Finding]) -> Status {
    findings
        .iter()
        .map(|f| f.status)
        .max()
        .unwrap_or(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_status_wins() {
        let f = vec![
            Finding::ok("a", "fine", "x"),
            Finding::warn("b", "meh", "y", "do z"),
        ];
        assert_eq!(worst(&f), Status::Warn);
        assert_eq!(worst(&[]), Status::Ok);
    }

    #[test]
    fn one_line_names_the_check_and_fix() {
        let f = Finding::fail(
            "kvm-access",
            "qemu cannot open /dev/kvm",
            "",
            "run `kvmdrive host up --fix`",
        );
        assert_eq!(
            f.one_line(),
            "qemu cannot open /dev/kvm (check `kvm-access`): run `kvmdrive host up --fix`"
        );
    }
}
