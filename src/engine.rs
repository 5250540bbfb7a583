//! The engine binary, `kvmdrive-engine`: the commands that talk to libvirt run
//! there, so that `kvmdrive` itself (the front, `src/main.rs`) links no
//! libvirt and starts in about a millisecond instead of paying the loading,
//! relocation and initialisers of libvirt's library chain (gnutls, glib,
//! libxml2, ...) on every run. This module finds the engine and hands the
//! command line over to it with `exec`: same pid, same signals, the engine's
//! exit status, argv passed through untouched.
//!
//! Where the engine is, first match wins: `$KVMDRIVE_ENGINE` (explicit, the
//! only place looked at when set), the directory of the running front
//! (`/proc/self/exe`, so a symlink to `kvmdrive` on PATH still finds the real
//! one; `cargo install` and the Molecule plugin's wheel put both binaries
//! there), then `../libexec/kvmdrive/` beside it (for packagers).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::Error;

/// File name of the engine binary.
pub const ENGINE_NAME: &str = "kvmdrive-engine";
/// Environment variable naming the engine explicitly.
pub const ENGINE_ENV: &str = "KVMDRIVE_ENGINE";

/// Where to look for the engine, in order: `explicit` alone when given, else
/// beside `front` (the running binary), then in `../libexec/kvmdrive/`.
pub fn candidates(front: Option<&Path>, explicit: Option<OsString>) -> Vec<PathBuf> {
    if let Some(path) = explicit.filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    let Some(dir) = front.and_then(Path::parent) else {
        return Vec::new();
    };
    let mut out = vec![dir.join(ENGINE_NAME)];
    if let Some(prefix) = dir.parent() {
        out.push(prefix.join("libexec").join("kvmdrive").join(ENGINE_NAME));
    }
    out
}

/// The first candidate that is an executable file.
pub fn locate() -> Result<PathBuf, Error> {
    // argv[0] when /proc is not mounted, if it is a path at all.
    let front = std::env::current_exe().ok().or_else(|| {
        std::env::args_os()
            .next()
            .map(PathBuf::from)
            .filter(|p| p.components().count() > 1)
    });
    let tried = candidates(front.as_deref(), std::env::var_os(ENGINE_ENV));
    tried
        .iter()
        .find(|p| is_executable(p))
        .cloned()
        .ok_or(Error::EngineMissing { tried })
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Replaces this process with the engine, running the same command line.
/// Returns only when that failed.
pub fn exec() -> Error {
    let path = match locate() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("kvmdrive"));
    let source = std::process::Command::new(&path)
        .arg0(arg0)
        .args(args)
        .exec();
    Error::EngineExec { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_engine_is_the_only_candidate() {
        let c = candidates(
            Some(Path::new("/usr/bin/kvmdrive")),
            Some(OsString::from("/opt/e")),
        );
        assert_eq!(c, vec![PathBuf::from("/opt/e")]);
    }

    #[test]
    fn beside_the_front_then_libexec() {
        let c = candidates(Some(Path::new("/usr/local/bin/kvmdrive")), None);
        assert_eq!(
            c,
            vec![
                PathBuf::from("/usr/local/bin/kvmdrive-engine"),
                PathBuf::from("/usr/local/libexec/kvmdrive/kvmdrive-engine"),
            ]
        );
        // An empty variable counts as unset.
        let e = candidates(Some(Path::new("/b/kvmdrive")), Some(OsString::new()));
        assert_eq!(e[0], PathBuf::from("/b/kvmdrive-engine"));
    }

    #[test]
    fn only_executable_files_count() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(!is_executable(&plain));
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(is_executable(&plain));
        assert!(!is_executable(dir.path()));
        assert!(!is_executable(&dir.path().join("missing")));
    }
}
