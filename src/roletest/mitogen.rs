//! Mitogen for Ansible (the driver's `mitogen: true`): playbooks run with
//! the `mitogen_linear` strategy, which keeps one Python per machine (and
//! per become user) for all tasks instead of starting one per task, and
//! sends each module once. Under TCG, where a guest Python costs seconds to
//! start and import Ansible's module code, that makes a converge of the
//! sample role about 3x faster (docs/benchmarks.md). Ansible loads the
//! strategy from a directory of the installed `mitogen` package, found here
//! with the Python that runs ansible-playbook.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ansible::AnsibleError;
use crate::host::programs::find_program;

/// The strategy Mitogen's linear variant registers (Ansible's default is `linear`).
pub const STRATEGY: &str = "mitogen_linear";

/// Asks `python` where Mitogen's strategy plugins are.
const FIND_STRATEGY_DIR: &str =
    "import os, ansible_mitogen.plugins.strategy as s; print(os.path.dirname(s.__file__))";

/// Environment that selects Mitogen's strategy, or nothing when the user
/// already chose a strategy (`ANSIBLE_STRATEGY` in `user_env`): theirs wins.
/// Their own strategy directories stay on the path after Mitogen's.
pub fn strategy_env(
    strategy_dir: &Path,
    user_env: impl Fn(&str) -> Option<OsString>,
) -> Vec<(String, OsString)> {
    if user_env("ANSIBLE_STRATEGY").is_some() {
        return Vec::new();
    }
    let mut dirs = vec![strategy_dir.to_owned()];
    if let Some(old) = user_env("ANSIBLE_STRATEGY_PLUGINS") {
        dirs.extend(std::env::split_paths(&old));
    }
    vec![
        (
            "ANSIBLE_STRATEGY_PLUGINS".into(),
            std::env::join_paths(dirs).unwrap_or_default(),
        ),
        ("ANSIBLE_STRATEGY".into(), STRATEGY.into()),
    ]
}

/// The environment for `mitogen: true` in this process's environment, with
/// Mitogen found beside `ansible_playbook` (a program name or path).
pub fn env_for(ansible_playbook: &OsString) -> Result<Vec<(String, OsString)>, AnsibleError> {
    let user_env = |k: &str| std::env::var_os(k);
    if user_env("ANSIBLE_STRATEGY").is_some() {
        return Ok(Vec::new());
    }
    let dir = strategy_dir(ansible_playbook)?;
    Ok(strategy_env(&dir, user_env))
}

/// Mitogen's strategy directory for `ansible_playbook`, asked of its Python
/// once per process (`kvmdrive test` runs up to four playbooks).
fn strategy_dir(ansible_playbook: &OsString) -> Result<PathBuf, AnsibleError> {
    use std::sync::Mutex;
    static FOUND: Mutex<Vec<(OsString, PathBuf)>> = Mutex::new(Vec::new());
    let mut known = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, dir)) = known.iter().find(|(p, _)| p == ansible_playbook) {
        return Ok(dir.clone());
    }
    let python = python_of(ansible_playbook);
    let out = Command::new(&python)
        .args(["-c", FIND_STRATEGY_DIR])
        .output();
    let missing = |detail: String| AnsibleError::MitogenMissing {
        python: python.to_string_lossy().into_owned(),
        detail,
    };
    let out = out.map_err(|e| missing(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("no output").trim().to_owned();
        return Err(missing(last));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    known.push((ansible_playbook.clone(), dir.clone()));
    Ok(dir)
}

/// The Python that runs `program`: the interpreter of its `#!` line (also
/// through `/usr/bin/env NAME`), else `python3`.
fn python_of(program: &OsString) -> OsString {
    let path = if Path::new(program).components().count() > 1 {
        Some(PathBuf::from(program))
    } else {
        find_program(&program.to_string_lossy())
    };
    path.and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| interpreter(&bytes))
        .unwrap_or_else(|| "python3".into())
}

/// The interpreter named by a script's first line.
fn interpreter(script: &[u8]) -> Option<OsString> {
    let first = script.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(first.strip_prefix(b"#!")?).ok()?;
    let mut words = line.split_whitespace();
    let program = words.next()?;
    if Path::new(program).file_name()? == "env" {
        words.find(|w| !w.starts_with('-')).map(OsString::from)
    } else {
        Some(program.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn selects_the_strategy_and_its_directory() {
        let env = strategy_env(Path::new("/venv/ansible_mitogen/plugins/strategy"), none);
        assert_eq!(
            env,
            vec![
                (
                    "ANSIBLE_STRATEGY_PLUGINS".to_owned(),
                    OsString::from("/venv/ansible_mitogen/plugins/strategy")
                ),
                (
                    "ANSIBLE_STRATEGY".to_owned(),
                    OsString::from("mitogen_linear")
                ),
            ]
        );
    }

    #[test]
    fn keeps_the_users_strategy_directories_after_mitogens() {
        let env = strategy_env(Path::new("/m"), |k| {
            (k == "ANSIBLE_STRATEGY_PLUGINS").then(|| "/a:/b".into())
        });
        assert_eq!(env[0].1, OsString::from("/m:/a:/b"));
    }

    #[test]
    fn a_strategy_the_user_chose_wins() {
        let env = strategy_env(Path::new("/m"), |k| {
            (k == "ANSIBLE_STRATEGY").then(|| "free".into())
        });
        assert!(env.is_empty());
    }

    /// An executable file `name` in `dir` with `text`.
    fn script(dir: &Path, name: &str, text: &str) -> OsString {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.into()
    }

    #[test]
    fn asks_the_python_of_ansible_playbook_where_mitogen_is() {
        let dir = tempfile::tempdir().unwrap();
        let python = script(dir.path(), "python", "#!/bin/sh\necho /venv/strategy\n");
        let playbook = script(
            dir.path(),
            "ansible-playbook",
            &format!("#!{}\n", python.to_string_lossy()),
        );
        let env = env_for(&playbook).unwrap();
        if std::env::var_os("ANSIBLE_STRATEGY").is_none() {
            assert_eq!(env[0].1, OsString::from("/venv/strategy"));
            assert_eq!(env[1].1, OsString::from(STRATEGY));
        }
    }

    #[test]
    fn a_python_without_mitogen_is_a_clear_error() {
        if std::env::var_os("ANSIBLE_STRATEGY").is_some() {
            return; // the user's strategy wins: Mitogen is not looked for
        }
        let dir = tempfile::tempdir().unwrap();
        let python = script(
            dir.path(),
            "python",
            "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ansible_mitogen'\" >&2\nexit 1\n",
        );
        let playbook = script(
            dir.path(),
            "ansible-playbook",
            &format!("#!{}\n", python.to_string_lossy()),
        );
        let err = env_for(&playbook).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("No module named 'ansible_mitogen'"), "{text}");
        assert!(text.contains(&*python.to_string_lossy()), "{text}");
        assert!(err.hint().unwrap().contains("pip install mitogen"));
    }

    #[test]
    fn reads_the_interpreter_of_a_script() {
        assert_eq!(
            interpreter(b"#!/venv/bin/python3\nimport sys\n"),
            Some("/venv/bin/python3".into())
        );
        assert_eq!(
            interpreter(b"#!/usr/bin/env -S python3 -X dev\n"),
            Some("python3".into())
        );
        assert_eq!(interpreter(b"\x7fELF..."), None);
        assert_eq!(interpreter(b"#!/usr/bin/env\n"), None);
    }
}
