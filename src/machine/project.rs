//! A project: the directory holding `kvmdrive.yml` and its state directory
//! (`.kvmdrive/`, like Vagrant's `.vagrant/`), the lock that keeps two
//! kvmdrive processes from colliding, and the per-machine records written
//! once a machine is up.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::same_file::same_file;

/// Directory name of the state under the project directory.
pub const STATE_DIR: &str = ".kvmdrive";

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("another kvmdrive is working on this project ({holder}; lock {path} is held)")]
    Locked { path: PathBuf, holder: String },
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

impl ProjectError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ProjectError::Locked { .. } => {
                Some("wait for it to finish; the lock is released when that process exits".into())
            }
            ProjectError::Corrupt { .. } => Some(
                "`kvmdrive destroy` still finds the machines through libvirt; then remove the file"
                    .into(),
            ),
            _ => None,
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProjectError {
    let context = context.into();
    move |source| ProjectError::Io { context, source }
}

/// What a machine's record says about reaching it; what `status --json`,
/// `ssh-config` and the Molecule plugin read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub name: String,
    pub domain: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub identity_file: PathBuf,
    pub mac: String,
    /// `kvm` or `qemu` (TCG).
    pub domain_type: String,
    /// Extra NICs (private and public networks) and their addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<super::nics::NicAddress>,
    /// The hypervisor host to go through when it is not this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump: Option<crate::remote::Jump>,
    /// The cached box version the machine was made from (its `libvirt/`
    /// directory): what `box prune` keeps. `None` in records written
    /// before kvmdrive recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_dir: Option<PathBuf>,
    /// The libvirt URI of the host the machine runs on: with several
    /// `hosts:`, `status`, `halt` and `destroy` find it there. `None` in
    /// records written before kvmdrive recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The guest's Python for Ansible (`/usr/bin/python3` when the first
    /// login of `up` found it): the inventory sets it, so no playbook run
    /// pays Ansible's interpreter discovery (two SSH commands). `None`
    /// (no such file, or a record written before): discovery as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Project {
    /// Where `kvmdrive.yml` lives.
    pub dir: PathBuf,
    /// Where state lives (`dir/.kvmdrive` unless given explicitly).
    pub state_dir: PathBuf,
    /// Short stable id: names the project's libvirt objects.
    pub id: String,
    /// Readable part of libvirt object names (from the directory name).
    pub slug: String,
}

impl Project {
    /// A project at `dir`, keeping state in `state_dir` (default `dir/.kvmdrive`).
    pub fn new(dir: &Path, state_dir: Option<&Path>) -> Result<Project, ProjectError> {
        let dir = std::path::absolute(dir).map_err(io("cannot resolve the project directory"))?;
        let state_dir = match state_dir {
            Some(s) => std::path::absolute(s).map_err(io("cannot resolve the state directory"))?,
            None => dir.join(STATE_DIR),
        };
        let id = short_hash(state_dir.to_string_lossy().as_bytes());
        let base = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        Ok(Project {
            slug: slug(&base),
            dir,
            state_dir,
            id,
        })
    }

    pub fn has_state(&self) -> bool {
        self.state_dir.is_dir()
    }

    pub fn machine_dir(&self, machine: &str) -> PathBuf {
        self.state_dir.join("machines").join(machine)
    }

    /// Takes the project lock, creating the state directory, and writes
    /// this process's pid and command line into the lock file. Fails at once
    /// when another process holds it, naming that process.
    pub fn lock(&self) -> Result<ProjectLock, ProjectError> {
        let path = self.state_dir.join("lock");
        let me = format!("pid {}: ", std::process::id());
        // A lock this process released can still look held for a moment: a
        // child forked by another thread shares the lock's open file until
        // it execs (close-on-exec). Wait for that, up to 1 s.
        let mut own_waits = 0;
        // A holder that finishes removes `.kvmdrive/` (lock file included):
        // a lock taken on the removed file would lock nothing, so try again.
        let mut attempts = 0;
        while attempts < 10 {
            attempts += 1;
            fs::create_dir_all(&self.state_dir)
                .map_err(io(format!("cannot create {}", self.state_dir.display())))?;
            let mut file = File::options()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(format!("cannot open {}", path.display())))?;
            match file.try_lock() {
                Ok(()) => {
                    if !same_file(&file, &path) {
                        continue;
                    }
                    let holder = format!("{me}{}\n", command_line());
                    // Best effort: the lock itself is what counts.
                    let _ = file
                        .set_len(0)
                        .and_then(|()| file.write_all(holder.as_bytes()));
                    return Ok(ProjectLock { _file: file });
                }
                Err(fs::TryLockError::WouldBlock) => {
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "process unknown".into());
                    if holder.starts_with(&me) && own_waits < 50 {
                        own_waits += 1;
                        attempts -= 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        continue;
                    }
                    return Err(ProjectError::Locked { path, holder });
                }
                Err(fs::TryLockError::Error(e)) => {
                    return Err(io(format!("cannot lock {}", path.display()))(e))
                }
            }
        }
        Err(ProjectError::Locked {
            path,
            holder: "its state directory keeps being removed".into(),
        })
    }

    pub fn record(&self, machine: &str) -> Result<Option<MachineRecord>, ProjectError> {
        let path = self.machine_dir(machine).join("machine.json");
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ProjectError::Corrupt {
                    path,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("cannot read {}", path.display()))(e)),
        }
    }

    /// Writes a record atomically (temporary file, then rename).
    pub fn save_record(&self, record: &MachineRecord) -> Result<(), ProjectError> {
        let dir = self.machine_dir(&record.name);
        fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let json = serde_json::to_string_pretty(record).expect("records serialise");
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(io(format!("cannot write in {}", dir.display())))?;
        tmp.write_all(json.as_bytes())
            .map_err(io("cannot write a machine record"))?;
        crate::fault::point("up.state-write");
        tmp.persist(dir.join("machine.json"))
            .map_err(|e| io("cannot save a machine record")(e.error))?;
        Ok(())
    }

    /// Forgets a machine (its record and key).
    pub fn forget(&self, machine: &str) -> Result<(), ProjectError> {
        let dir = self.machine_dir(machine);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("cannot remove {}", dir.display()))(e))
            }
            _ => Ok(()),
        }
    }

    /// Removes the whole state directory (after the last machine is gone).
    pub fn remove_state(&self) -> Result<(), ProjectError> {
        match fs::remove_dir_all(&self.state_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("cannot remove {}", self.state_dir.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

/// `kvmdrive up ...` as this process was started (for the lock file).
fn command_line() -> String {
    let mut args = std::env::args();
    let first = args
        .next()
        .map(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(a)
        })
        .unwrap_or_else(|| "kvmdrive".into());
    std::iter::once(first)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Held while a command changes the project; released on drop.
pub struct ProjectLock {
    _file: File,
}

/// First 6 hex digits of SHA-256.
pub fn short_hash(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().take(3).map(|b| format!("{b:02x}")).collect()
}

/// `s` in lowercase letters, digits and `-` (anything else becomes `-`),
/// cut to `max` characters, without leading or trailing `-`.
pub fn hostname_safe(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(max);
    out.trim_matches('-').to_owned()
}

/// Lowercase letters, digits and `-`, at most 20 characters.
fn slug(s: &str) -> String {
    let out = hostname_safe(s, 20);
    if out.is_empty() {
        "project".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_differ_per_state_dir() {
        let a = Project::new(Path::new("/tmp/My Project"), None).unwrap();
        let b = Project::new(Path::new("/tmp/My Project"), None).unwrap();
        let c = Project::new(Path::new("/tmp/My Project"), Some(Path::new("/tmp/other"))).unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(a.id.len(), 6);
        assert_eq!(a.slug, "my-project");
    }

    #[test]
    fn second_lock_is_refused_while_the_first_is_held() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Project::new(tmp.path(), None).unwrap();
        let held = p.lock().unwrap();
        match p.lock() {
            Err(ProjectError::Locked { holder, .. }) => {
                assert!(
                    holder.starts_with(&format!("pid {}:", std::process::id())),
                    "{holder}"
                )
            }
            other => panic!("expected Locked, got {:?}", other.err()),
        }
        drop(held);
        p.lock().unwrap();
    }

    #[test]
    fn the_lock_works_again_after_the_state_directory_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Project::new(tmp.path(), None).unwrap();
        let held = p.lock().unwrap();
        // What `destroy` does as it finishes: the state goes, lock and all.
        p.remove_state().unwrap();
        let second = p.lock().unwrap();
        assert!(p.state_dir.join("lock").exists());
        assert!(matches!(p.lock(), Err(ProjectError::Locked { .. })));
        drop((held, second));
    }

    #[test]
    fn records_round_trip_and_forget() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Project::new(tmp.path(), None).unwrap();
        assert_eq!(p.record("web").unwrap(), None);
        let r = MachineRecord {
            python: Some("/usr/bin/python3".into()),
            ..crate::testutil::machine_record()
        };
        p.save_record(&r).unwrap();
        assert_eq!(p.record("web").unwrap(), Some(r));
        p.forget("web").unwrap();
        assert_eq!(p.record("web").unwrap(), None);
    }
}
