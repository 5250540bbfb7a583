//! The three daemons a libvirt host needs: dbus-daemon (system bus),
//! virtlogd (qemu's logs) and libvirtd. Where systemd runs, `systemctl`
//! starts them; in a CI container without systemd kvmdrive starts them
//! itself, detached (own session, stdin from /dev/null, output appended to
//! a log file under [`log_dir`]), and writes what it started to a state
//! file under the run directory, so `host down` stops exactly those, by pid
//! (checked against the process start time, so a reused pid is never hit).

use std::fs::OpenOptions;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::error::HostError;
use serde::{Deserialize, Serialize};

use crate::wait::{wait_until, Poll, PollError};

/// Where the daemons' output goes (`KVMDRIVE_LOG_DIR` overrides it).
pub fn log_dir() -> PathBuf {
    std::env::var_os("KVMDRIVE_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/log/kvmdrive"))
}

/// Directory of the state file (`KVMDRIVE_RUN_DIR` overrides it).
pub fn run_dir() -> PathBuf {
    std::env::var_os("KVMDRIVE_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/kvmdrive"))
}

/// One of the daemons, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Daemon {
    Dbus,
    Virtlogd,
    Libvirtd,
}

pub const ALL: [Daemon; 3] = [Daemon::Dbus, Daemon::Virtlogd, Daemon::Libvirtd];

impl Daemon {
    /// The check name, which is also the program's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Dbus => "dbus",
            Daemon::Virtlogd => "virtlogd",
            Daemon::Libvirtd => "libvirtd",
        }
    }

    /// The Debian package that installs it.
    fn package(self) -> &'static str {
        match self {
            Daemon::Dbus => "dbus",
            Daemon::Virtlogd | Daemon::Libvirtd => "libvirt-daemon-system",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Daemon::Dbus => "dbus-daemon",
            Daemon::Virtlogd => "virtlogd",
            Daemon::Libvirtd => "libvirtd",
        }
    }

    /// Arguments to run it in the foreground (we detach it ourselves).
    fn args(self) -> &'static [&'static str] {
        match self {
            Daemon::Dbus => &["--system", "--nofork"],
            Daemon::Virtlogd | Daemon::Libvirtd => &[],
        }
    }

    /// The pid file the daemon itself writes.
    pub fn pid_file(self) -> &'static str {
        match self {
            Daemon::Dbus => "/run/dbus/pid",
            Daemon::Virtlogd => "/run/virtlogd.pid",
            Daemon::Libvirtd => "/run/libvirtd.pid",
        }
    }

    /// The socket that answers once it is ready.
    pub fn socket(self) -> &'static str {
        match self {
            Daemon::Dbus => "/run/dbus/system_bus_socket",
            Daemon::Virtlogd => "/run/libvirt/virtlogd-sock",
            Daemon::Libvirtd => "/run/libvirt/libvirt-sock",
        }
    }

    /// The systemd unit.
    pub fn unit(self) -> &'static str {
        match self {
            Daemon::Dbus => "dbus.service",
            Daemon::Virtlogd => "virtlogd.service",
            Daemon::Libvirtd => "libvirtd.service",
        }
    }

    pub fn log_file(self) -> PathBuf {
        log_dir().join(format!("{}.log", self.name()))
    }
}

/// Is it running, and does it answer on its socket?
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonStatus {
    pub daemon: Daemon,
    pub pid: Option<u32>,
    pub answering: bool,
}

/// True when systemd is the init (sd_booted(3)'s test).
pub fn has_systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub fn status(d: Daemon) -> DaemonStatus {
    DaemonStatus {
        daemon: d,
        pid: running_pid(d),
        answering: UnixStream::connect(d.socket()).is_ok(),
    }
}

/// The daemon's pid: from its pid file when that process is alive, is that
/// program and is ours, else the first process of ours with that name.
/// "Ours" means it shares our mount namespace: a sandbox or container on the
/// same host runs its own daemons, visible by pid but with their own /run,
/// and those are not the daemons this host's checks are about.
pub fn running_pid(d: Daemon) -> Option<u32> {
    let own = mount_ns(None);
    let ours = |pid: u32| same_mount_ns(mount_ns(Some(pid)).as_deref(), own.as_deref());
    let from_file = std::fs::read_to_string(d.pid_file())
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&pid| comm_is(pid, d.program()) && ours(pid));
    from_file.or_else(|| find_by_comm(d.program(), ours))
}

/// `/proc/PID/ns/mnt` (or `/proc/self/ns/mnt`), e.g. "mnt:[4026531841]".
fn mount_ns(pid: Option<u32>) -> Option<String> {
    let p = match pid {
        Some(pid) => format!("/proc/{pid}/ns/mnt"),
        None => "/proc/self/ns/mnt".to_owned(),
    };
    std::fs::read_link(p)
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

/// Pure: does a process in mount namespace `theirs` count as ours? When our
/// own namespace cannot be read nothing can be told apart, so every process
/// counts (the old behaviour); a process whose namespace cannot be read
/// (gone, or not ours to look at) does not.
pub fn same_mount_ns(theirs: Option<&str>, own: Option<&str>) -> bool {
    match (theirs, own) {
        (_, None) => true,
        (Some(t), Some(o)) => t == o,
        (None, Some(_)) => false,
    }
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// /proc/PID/comm holds at most 15 bytes of the name.
fn comm_is(pid: u32, program: &str) -> bool {
    let want = &program[..program.len().min(15)];
    comm(pid).is_some_and(|c| c == want)
}

fn find_by_comm(program: &str, ours: impl Fn(u32) -> bool) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter()
        .find(|&pid| comm_is(pid, program) && ours(pid))
}

/// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A daemon `host up` started (or restarted), as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub daemon: Daemon,
    /// `None` for a unit started with systemctl.
    pub pid: Option<u32>,
    pub start_time: Option<u64>,
    /// It was running before and `host up --fix` restarted it: `host down`
    /// leaves it running, as it found it.
    #[serde(default)]
    pub restarted: bool,
    pub log: Option<PathBuf>,
}

fn state_file() -> PathBuf {
    run_dir().join("host-up.json")
}

pub fn load_state() -> Vec<Started> {
    std::fs::read(state_file())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn save_state(started: &[Started]) -> Result<(), HostError> {
    let path = state_file();
    if started.is_empty() {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(HostError::io(format!("remove {}", path.display()))(e))
            }
            _ => return Ok(()),
        }
    }
    std::fs::create_dir_all(run_dir())
        .map_err(HostError::io(format!("create {}", run_dir().display())))?;
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(started).expect("plain data serialises");
    std::fs::write(&tmp, json).map_err(HostError::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(HostError::io(format!("write {}", path.display())))?;
    Ok(())
}

/// Adds or replaces the record of `s.daemon`.
pub fn record(s: Started) -> Result<(), HostError> {
    let mut all = load_state();
    all.retain(|o| o.daemon != s.daemon);
    all.push(s);
    save_state(&all)
}

/// Starts `d` detached and waits until its socket answers.
pub fn spawn(d: Daemon, timeout: Duration) -> Result<Started, HostError> {
    let program =
        super::programs::find_program(d.program()).ok_or_else(|| HostError::NotInstalled {
            program: d.program(),
            package: d.package(),
        })?;
    std::fs::create_dir_all(log_dir())
        .map_err(HostError::io(format!("create {}", log_dir().display())))?;
    if d == Daemon::Dbus {
        // dbus-daemon refuses to start over a stale pid file, and needs its
        // directory.
        std::fs::create_dir_all("/run/dbus").map_err(HostError::io("create /run/dbus"))?;
        if running_pid(d).is_none() {
            let _ = std::fs::remove_file(d.pid_file());
        }
    }
    let log_path = d.log_file();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(HostError::io(format!("open {}", log_path.display())))?;
    let log_out = log
        .try_clone()
        .map_err(HostError::io(format!("open {}", log_path.display())))?;
    let mut cmd = Command::new(&program);
    cmd.args(d.args())
        .stdin(Stdio::null())
        .stdout(log_out)
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(HostError::io(format!("start {}", program.display())))?;
    let pid = child.id();
    let answered = wait_until(Poll::every(Duration::from_millis(20), timeout), || {
        if UnixStream::connect(d.socket()).is_ok() {
            return Ok(Some(()));
        }
        match child.try_wait() {
            Ok(Some(st)) => Err(HostError::DaemonExited {
                daemon: d.program(),
                status: st.to_string(),
                socket: d.socket().to_string(),
                log: log_path.clone(),
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(HostError::io(format!("wait for {}", program.display()))(e)),
        }
    });
    match answered {
        Ok(()) => {}
        Err(PollError::Failed(e)) => return Err(e),
        Err(PollError::TimedOut | PollError::Cancelled) => {
            return Err(HostError::DaemonSilent {
                daemon: d.program(),
                pid,
                socket: d.socket().to_string(),
                seconds: timeout.as_secs(),
                log: log_path,
            })
        }
    }
    // The child outlives us; dropping `child` does not kill it.
    Ok(Started {
        daemon: d,
        pid: Some(pid),
        start_time: start_time(pid),
        restarted: false,
        log: Some(log_path),
    })
}

/// Sends SIGTERM to `pid` and waits for it to go (SIGKILL after `grace`).
/// Only if it is still the process recorded (same start time).
pub fn terminate(
    pid: u32,
    recorded_start: Option<u64>,
    grace: Duration,
) -> Result<bool, HostError> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let alive =
        || start_time(pid).is_some() && recorded_start.is_none_or(|t| start_time(pid) == Some(t));
    if !alive() {
        return Ok(false);
    }
    let target = Pid::from_raw(pid as i32);
    kill(target, Signal::SIGTERM)
        .map_err(|e| HostError::io(format!("kill -TERM {pid}"))(e.into()))?;
    let gone = wait_until(Poll::every(Duration::from_millis(20), grace), || {
        Ok::<_, std::convert::Infallible>((!alive() || is_zombie(pid)).then_some(()))
    });
    if gone.is_err() {
        let _ = kill(target, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Our own child (a restart in this process) must be reaped.
    let _ = nix::sys::wait::waitpid(target, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    Ok(true)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// `systemctl ACTION UNIT`.
pub fn systemctl(action: &str, unit: &str) -> Result<(), HostError> {
    let out = Command::new("systemctl")
        .args([action, unit])
        .output()
        .map_err(HostError::io("run systemctl"))?;
    if !out.status.success() {
        return Err(HostError::CommandFailed {
            command: format!("systemctl {action} {unit}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_this_process_is_readable() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert!(comm(me).is_some());
    }

    #[test]
    fn only_processes_in_our_mount_namespace_count() {
        let own = Some("mnt:[4026531841]");
        assert!(same_mount_ns(Some("mnt:[4026531841]"), own));
        // A sandbox's or container's libvirtd: same name, other namespace.
        assert!(!same_mount_ns(Some("mnt:[4026532290]"), own));
        assert!(!same_mount_ns(None, own));
        assert!(same_mount_ns(Some("mnt:[4026532290]"), None));
        // This process is in its own namespace.
        let me = mount_ns(Some(std::process::id()));
        assert!(me.is_some());
        assert!(same_mount_ns(me.as_deref(), mount_ns(None).as_deref()));
    }

    #[test]
    fn state_round_trips() {
        let s = Started {
            daemon: Daemon::Libvirtd,
            pid: Some(42),
            start_time: Some(7),
            restarted: false,
            log: Some("/var/log/kvmdrive/libvirtd.log".into()),
        };
        let json = serde_json::to_string(&[&s]).unwrap();
        let back: Vec<Started> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![s]);
    }
}
