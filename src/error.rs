//! The one error of the `kvmdrive` binary, in the style of the `just` crate:
//! [`Error`] wraps each module's error (`#[from]`) and the few failures that
//! belong to the command line itself, and decides in one place what the user
//! reads (`Display`), what to do next ([`Error::hint`]) and how the process
//! ends ([`Error::exit_code`]: 1 for failures, 130 when interrupted, a failed
//! playbook's own status as Molecule ends; 2 for bad usage comes from clap
//! before any command runs). `main` prints it once, as text on stderr and,
//! with `--json`, as one object on stdout ([`Error::to_json`]).

use std::path::PathBuf;

use crate::boxes::BoxError;
use crate::host::HostError;
use crate::machine::lifecycle::LifecycleError;
use crate::machine::project::ProjectError;
use crate::machine::snapshot::SnapshotError;
use crate::project::config::ConfigError;
use crate::project::scenario::ScenarioError;
use crate::roletest::steps::StepError;
use crate::virt::VirtError;

/// Exit status of a command that failed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status after Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Virt(#[from] VirtError),
    #[error(transparent)]
    Box(#[from] BoxError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("machine `{name}` is not up")]
    NotUp { name: String },
    #[error("no machine is up")]
    NothingUp,
    #[error("this project has several machines: name one")]
    NameOne { machines: Vec<String> },
    #[error("{} already exists", path.display())]
    ConfigExists { path: PathBuf },
    #[error("cannot read the current directory: {0}")]
    CurrentDir(std::io::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` has no --dry-run")]
    NoDryRun { command: &'static str },
    #[error("bad duration: {message}")]
    BadDuration { message: String },
    #[error("cannot run ssh: {0}")]
    Ssh(std::io::Error),
    #[error("cannot write the man page: {0}")]
    Man(std::io::Error),
    #[error("this command needs {}, which is not installed (looked at {})", crate::engine::ENGINE_NAME, tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    EngineMissing { tried: Vec<PathBuf> },
    #[error("cannot run {}: {source}", path.display())]
    EngineExec {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The command printed its own verdict (`host check` failures, `box
    /// outdated` catalogs it could not read) and ends with `code`; nothing
    /// more is printed.
    #[error("{what} exited with status {code}")]
    Reported { what: &'static str, code: i32 },
}

impl Error {
    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Config(e) => e.hint(),
            Error::Scenario(e) => e.hint(),
            Error::Project(e) => e.hint(),
            Error::Lifecycle(e) => e.hint(),
            Error::Virt(e) => e.hint(),
            Error::Box(e) => e.hint(),
            Error::Host(e) => e.hint(),
            Error::Step(e) => e.hint(),
            Error::Snapshot(e) => e.hint(),
            Error::NotUp { name } => Some(format!("run `kvmdrive up {name}`")),
            Error::NothingUp => Some("run `kvmdrive create` first".into()),
            Error::NameOne { machines } => Some(format!("machines: {}", machines.join(", "))),
            Error::ConfigExists { .. } => {
                Some("use `kvmdrive init --force` to overwrite it".into())
            }
            Error::Ssh(_) => Some("install the OpenSSH client".into()),
            Error::BadDuration { .. } => Some("e.g. `--older-than 7d`, `12h`, `30m`".into()),
            Error::NoDryRun { .. } => {
                Some("`kvmdrive up --dry-run` prints what `up` would do".into())
            }
            Error::EngineMissing { .. } | Error::EngineExec { .. } => Some(format!(
                "kvmdrive runs libvirt commands through {engine} installed beside it: install both \
                 (`cargo install` and the Molecule plugin's wheel do), or set {env} to its path",
                engine = crate::engine::ENGINE_NAME,
                env = crate::engine::ENGINE_ENV,
            )),
            Error::CurrentDir(_) | Error::Write { .. } | Error::Man(_) | Error::Reported { .. } => {
                None
            }
        }
    }

    /// The process's exit status: decided here and nowhere else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Lifecycle(LifecycleError::Cancelled)
            | Error::Step(StepError::Lifecycle(LifecycleError::Cancelled))
            | Error::Snapshot(SnapshotError::Lifecycle(LifecycleError::Cancelled))
            | Error::Step(StepError::Reuse(SnapshotError::Lifecycle(LifecycleError::Cancelled))) => {
                EXIT_INTERRUPTED
            }
            // As Molecule ends: with ansible-playbook's own status.
            Error::Step(StepError::PlaybookFailed { code, .. }) => {
                u8::try_from(*code).map_or(EXIT_FAILURE, |c| i32::from(c.max(1)))
            }
            Error::Reported { code, .. } => *code,
            _ => EXIT_FAILURE,
        }
    }

    /// False when the command already said what went wrong.
    pub fn is_reported(&self) -> bool {
        matches!(self, Error::Reported { .. })
    }

    /// The error as programs read it: `{"error", "hint", "exit_code"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.to_string(),
            "hint": self.hint(),
            "exit_code": self.exit_code(),
        })
    }
}

/// A command's verdict as an exit code (0: fine): an [`Error::Reported`]
/// when it is not 0.
pub fn verdict(what: &'static str, code: i32) -> Result<(), Error> {
    match code {
        0 => Ok(()),
        code => Err(Error::Reported { what, code }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_molecule() {
        let failed = StepError::PlaybookFailed {
            step: "converge",
            playbook: "c.yml".into(),
            code: 2,
        };
        assert_eq!(Error::from(failed).exit_code(), 2);
        assert_eq!(
            Error::from(StepError::NotIdempotent { tasks: vec![] }).exit_code(),
            1
        );
        assert_eq!(
            Error::from(StepError::Lifecycle(LifecycleError::Cancelled)).exit_code(),
            130
        );
        assert_eq!(Error::from(LifecycleError::Cancelled).exit_code(), 130);
        let odd = StepError::PlaybookFailed {
            step: "verify",
            playbook: "v.yml".into(),
            code: 300,
        };
        assert_eq!(Error::from(odd).exit_code(), 1);
    }

    #[test]
    fn json_has_error_hint_and_exit_code() {
        let v = Error::NotUp { name: "web".into() }.to_json();
        assert_eq!(v["error"], "machine `web` is not up");
        assert_eq!(v["hint"], "run `kvmdrive up web`");
        assert_eq!(v["exit_code"], 1);
        assert!(verdict("host check", 0).is_ok());
        let e = verdict("host check", 1).unwrap_err();
        assert!(e.is_reported());
        assert_eq!(e.exit_code(), 1);
    }
}
