//! Synced folders at work: the `<filesystem>` devices 9p and virtiofs
//! folders add to a machine's domain, mounting them in the guest once it is
//! up, and the one-way rsync copy over the machine's SSH (at `up` and with
//! `kvmdrive rsync`). The folders themselves are typed in
//! [`crate::project::synced_folder`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::lifecycle::{self, Env, IfDown, LifecycleError, Run};
use super::project::MachineRecord;
use super::provision;
use super::ssh::{shell_quote, SshTarget, CLIENT_OPTIONS};
use crate::project::config::{Config, Machine};
use crate::project::synced_folder::{SyncType, SyncedFolder};
use crate::virt::filesystem::{FilesystemSpec, FsDriver, VIRTIOFSD};

/// Exit status of the mount script when the guest kernel lacks the module.
const NO_MODULE: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("synced folder {src}: no such directory on the host")]
    MissingSource { src: PathBuf },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("the guest kernel cannot mount {kind} (module {module} missing) for {dest}")]
    NoModule {
        kind: &'static str,
        module: &'static str,
        dest: String,
    },
    #[error("mounting {dest} ({kind}) in the guest failed: {message}")]
    Mount {
        kind: &'static str,
        dest: String,
        message: String,
    },
    #[error("rsync of {src} to {dest} failed (exit {code}): {message}")]
    Rsync {
        src: PathBuf,
        dest: String,
        code: i32,
        message: String,
    },
}

impl SyncError {
    pub fn hint(&self) -> Option<String> {
        match self {
            SyncError::MissingSource { .. } => {
                Some("create it, or fix `src` (relative paths start at the project directory)".into())
            }
            SyncError::Spawn { program, .. } => Some(format!(
                "install {program} on this host (apt-get install {program})"
            )),
            SyncError::NoModule { module, .. } => Some(format!(
                "use a box whose kernel has {module} (Debian's linux-image-amd64 does), or `type: rsync`"
            )),
            SyncError::Mount { .. } => None,
            SyncError::Rsync { .. } => Some(
                "the box needs rsync installed and passwordless sudo for the SSH user".into(),
            ),
        }
    }
}

/// The `<filesystem>` devices for a machine's 9p and virtiofs folders;
/// relative sources are taken from `base`.
pub fn filesystems(machine: &Machine, base: &Path) -> Vec<FilesystemSpec> {
    machine
        .synced_folders
        .iter()
        .filter_map(|f| {
            let driver = match f.kind {
                SyncType::Rsync => return None,
                SyncType::NineP => FsDriver::NineP,
                SyncType::Virtiofs => FsDriver::Virtiofs {
                    binary: VIRTIOFSD.into(),
                },
            };
            Some(FilesystemSpec {
                driver,
                source: f.host_dir(base),
                tag: f.mount_tag(),
            })
        })
        .collect()
}

/// Guest script that mounts one shared folder (nothing when it is mounted).
pub fn mount_script(f: &SyncedFolder) -> String {
    let (fstype, modules, options) = match f.kind {
        SyncType::NineP => (
            "9p",
            "9pnet_virtio 9p",
            "trans=virtio,version=9p2000.L,msize=262144",
        ),
        _ => ("virtiofs", "virtiofs", "defaults"),
    };
    let dest = shell_quote(&f.dest.0);
    format!(
        "set -e; if mountpoint -q {dest}; then exit 0; fi; \
         if ! grep -qw {fstype} /proc/filesystems; then sudo -n modprobe -a {modules} 2>/dev/null || true; fi; \
         grep -qw {fstype} /proc/filesystems || exit {NO_MODULE}; \
         sudo -n mkdir -p {dest}; sudo -n mount -t {fstype} -o {options} {tag} {dest}",
        tag = shell_quote(&f.mount_tag())
    )
}

/// Mounts a machine's 9p and virtiofs folders in the guest.
pub fn mount_all(target: &SshTarget, folders: &[SyncedFolder]) -> Result<(), SyncError> {
    for f in folders.iter().filter(|f| f.kind != SyncType::Rsync) {
        let out = target
            .run(&mount_script(f), 10)
            .map_err(|source| SyncError::Spawn {
                program: "ssh",
                source,
            })?;
        let (kind, module) = match f.kind {
            SyncType::NineP => ("9p", "9p/9pnet_virtio"),
            _ => ("virtiofs", "virtiofs"),
        };
        match out.status.code() {
            Some(0) => {}
            Some(NO_MODULE) => {
                return Err(SyncError::NoModule {
                    kind,
                    module,
                    dest: f.dest.0.clone(),
                })
            }
            _ => {
                return Err(SyncError::Mount {
                    kind,
                    dest: f.dest.0.clone(),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                })
            }
        }
    }
    Ok(())
}

/// The rsync command line that copies `f` into the guest of `r`.
pub fn rsync_command(r: &MachineRecord, f: &SyncedFolder, base: &Path) -> Command {
    let mut ssh = String::from("ssh");
    for (k, v) in CLIENT_OPTIONS {
        ssh.push_str(&format!(" -o {k}={v}"));
    }
    ssh.push_str(&format!(
        " -o BatchMode=yes -p {} -i {}",
        r.port,
        shell_quote(&r.identity_file.display().to_string())
    ));
    if let Some(j) = &r.jump {
        ssh.push_str(&format!(" {}", j.ssh_args_line()));
    }
    let owner = f.owner.clone().unwrap_or_else(|| r.user.clone());
    let group = f.group.clone().unwrap_or_else(|| owner.clone());
    let mut cmd = Command::new("rsync");
    cmd.args(["-a", "--delete", "--rsync-path", "sudo rsync", "-e"])
        .arg(ssh)
        .arg(format!("--chown={owner}:{group}"));
    // Never copy kvmdrive's or Vagrant's state (machine keys) into a guest.
    for pattern in [".kvmdrive/", ".vagrant/"]
        .iter()
        .map(|s| s.to_string())
        .chain(f.exclude.clone())
    {
        cmd.arg(format!("--exclude={pattern}"));
    }
    let mut src = f.host_dir(base).into_os_string();
    src.push("/");
    cmd.arg(src)
        .arg(format!("{}@{}:{}/", r.user, r.address, f.dest.0));
    cmd
}

/// Copies every rsync folder of a machine into its guest.
pub fn rsync_all(
    r: &MachineRecord,
    folders: &[SyncedFolder],
    base: &Path,
) -> Result<usize, SyncError> {
    let target = SshTarget::from_record(r);
    let mut n = 0;
    for f in folders.iter().filter(|f| f.kind == SyncType::Rsync) {
        let src = f.host_dir(base);
        if !src.is_dir() {
            return Err(SyncError::MissingSource { src });
        }
        let dest = shell_quote(&f.dest.0);
        let prep = target
            .run(&format!("sudo -n mkdir -p {dest}"), 10)
            .map_err(|source| SyncError::Spawn {
                program: "ssh",
                source,
            })?;
        let out = if prep.status.success() {
            rsync_command(r, f, base)
                .stdin(Stdio::null())
                .output()
                .map_err(|source| SyncError::Spawn {
                    program: "rsync",
                    source,
                })?
        } else {
            prep
        };
        if !out.status.success() {
            return Err(SyncError::Rsync {
                src,
                dest: f.dest.0.clone(),
                code: out.status.code().unwrap_or(-1),
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        n += 1;
    }
    Ok(n)
}

/// `kvmdrive rsync [NAME...]`: copies the rsync folders of the selected
/// running machines again, host after host; machines on a host that does
/// not answer are named after the others are done.
pub fn rsync_machines(env: &Env, config: &Config, names: &[String]) -> Result<(), LifecycleError> {
    let machines = lifecycle::select(config, names)?;
    lifecycle::for_each_host(
        env,
        config,
        &machines,
        IfDown::Skip,
        Run::Sequential,
        rsync_on_host,
    )
    .1
}

/// `rsync` of `machines` on the host of `env`.
fn rsync_on_host(env: &Env, machines: &[Machine]) -> Result<(), LifecycleError> {
    let results: Vec<(String, Result<(), String>)> = machines
        .iter()
        .map(|m| {
            let r = provision::running_record(env, m).and_then(|rec| {
                let n =
                    rsync_all(&rec, &m.synced_folders, &env.project.dir).map_err(|e| {
                        match e.hint() {
                            Some(h) => format!("{e}\nhint: {h}"),
                            None => e.to_string(),
                        }
                    })?;
                env.out
                    .step(Some(&m.name.0), format!("rsync: {n} folder(s) copied"));
                Ok(())
            });
            (m.name.0.clone(), r)
        })
        .collect();
    provision::outcome(env.out, results)
}

/// A cheap fingerprint of a directory tree: (files, total size, newest
/// modification). Any edit, addition or removal changes it.
pub fn tree_stamp(dir: &Path) -> (u64, u64, std::time::SystemTime) {
    let mut stamp = (0, 0, std::time::UNIX_EPOCH);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name == ".kvmdrive" || name == ".git" {
                continue; // kvmdrive's state and git's churn are never synced
            }
            let Ok(meta) = e.metadata() else { continue };
            if let Ok(m) = meta.modified() {
                stamp.2 = stamp.2.max(m);
            }
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                stamp.0 += 1;
                stamp.1 += meta.len();
            }
        }
    }
    stamp
}

/// `kvmdrive rsync-auto [NAME...]`: copies the rsync folders once, then again
/// whenever a file under them changes (polled twice a second; a change is
/// copied once the tree has been quiet for half a second), until Ctrl-C.
pub fn rsync_auto(env: &Env, config: &Config, names: &[String]) -> Result<(), LifecycleError> {
    rsync_machines(env, config, names)?;
    let machines = lifecycle::select(config, names)?;
    let dirs: Vec<PathBuf> = machines
        .iter()
        .flat_map(|m| &m.synced_folders)
        .filter(|f| f.kind == SyncType::Rsync)
        .map(|f| f.host_dir(&env.project.dir))
        .collect();
    env.out.step(
        None,
        format!("watching {} folder(s); Ctrl-C stops", dirs.len()),
    );
    let stamps = || dirs.iter().map(|d| tree_stamp(d)).collect::<Vec<_>>();
    let mut last = stamps();
    let tick = std::time::Duration::from_millis(500);
    while !super::cancel::is_cancelled() {
        std::thread::sleep(tick);
        let now = stamps();
        if now == last {
            continue;
        }
        // Debounce: wait until the tree stops changing.
        let mut settled = now;
        loop {
            std::thread::sleep(tick);
            let again = stamps();
            if again == settled || super::cancel::is_cancelled() {
                break;
            }
            settled = again;
        }
        last = settled;
        if let Err(e) = rsync_machines(env, config, names) {
            env.out.warn(None, e.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::synced_folder::GuestPath;

    fn record() -> MachineRecord {
        crate::testutil::machine_record()
    }

    fn folder(kind: SyncType) -> SyncedFolder {
        SyncedFolder {
            kind,
            exclude: vec![".git/".into()],
            ..SyncedFolder::vagrant_default()
        }
    }

    #[test]
    fn rsync_runs_as_root_in_the_guest_with_excludes_and_owner() {
        let cmd = rsync_command(&record(), &folder(SyncType::Rsync), Path::new("/proj"));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(&args[..4], ["-a", "--delete", "--rsync-path", "sudo rsync"]);
        assert!(
            args[5].contains("-i '/p/.kvmdrive/machines/web/id_ed25519'"),
            "{args:?}"
        );
        assert!(args[5].contains("StrictHostKeyChecking=no"), "{args:?}");
        assert!(args.contains(&"--chown=vagrant:vagrant".to_owned()));
        assert!(args.contains(&"--exclude=.kvmdrive/".to_owned()));
        assert!(args.contains(&"--exclude=.git/".to_owned()));
        assert_eq!(args[args.len() - 2], "/proj/./");
        assert_eq!(args[args.len() - 1], "vagrant@192.168.121.10:/vagrant/");
    }

    #[test]
    fn only_9p_and_virtiofs_folders_become_devices() {
        let yaml = "machines:\n  - name: a\n    synced_folders:\n      - {src: ., dest: /r}\n      - {src: x, dest: /n, type: 9p}\n      - {src: /abs, dest: /v, type: virtiofs}\n";
        let m = crate::project::config::Config::parse(yaml, Path::new("k.yml"))
            .unwrap()
            .machines()
            .remove(0);
        let fs = filesystems(&m, Path::new("/proj"));
        assert_eq!(fs.len(), 2);
        assert_eq!(fs[0].driver, FsDriver::NineP);
        assert_eq!(fs[0].source, PathBuf::from("/proj/x"));
        assert_eq!(fs[1].source, PathBuf::from("/abs"));
        assert!(matches!(fs[1].driver, FsDriver::Virtiofs { .. }));
    }

    #[test]
    fn tree_stamps_change_with_any_edit_and_skip_state() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("sub/a"), "1").unwrap();
        let a = tree_stamp(tmp.path());
        assert_eq!(a, tree_stamp(tmp.path()));
        std::fs::write(tmp.path().join("sub/a"), "12").unwrap();
        let b = tree_stamp(tmp.path());
        assert_ne!(a, b);
        std::fs::create_dir(tmp.path().join(".kvmdrive")).unwrap();
        std::fs::write(tmp.path().join(".kvmdrive/lock"), "x").unwrap();
        assert_eq!(tree_stamp(tmp.path()), b, "state files are not watched");
        std::fs::remove_file(tmp.path().join("sub/a")).unwrap();
        assert_ne!(tree_stamp(tmp.path()).0, b.0);
    }

    #[test]
    fn mount_scripts_name_their_filesystem_and_tag() {
        let mut f = folder(SyncType::NineP);
        f.dest = GuestPath("/srv/it's".into());
        let s = mount_script(&f);
        assert!(s.contains("mount -t 9p -o trans=virtio"), "{s}");
        assert!(s.contains(&f.mount_tag()), "{s}");
        assert!(s.contains(r"'/srv/it'\''s'"), "{s}");
        let s = mount_script(&folder(SyncType::Virtiofs));
        assert!(s.contains("mount -t virtiofs"), "{s}");
        assert!(s.contains("exit 3"), "{s}");
    }
}
