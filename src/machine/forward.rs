//! Forwarded ports as vagrant-libvirt makes them: one `ssh -N -L` process per
//! machine (host_ip:host -> guest_ip:guest through the guest's sshd), started
//! at the end of `up`, its pid in the machine's state directory, stopped by
//! that pid on `halt` and `destroy`. No firewall rules, so it works whatever
//! iptables backend the host uses.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::project::MachineRecord;
use super::ssh::SshTarget;
use crate::project::net_config::ForwardedPort;
use crate::wait::{wait_until, Poll, PollError};

const PID_FILE: &str = "forward.pid";

/// Marks our forwarders' command lines, so a recycled pid is never killed.
const MARK: &str = "kvmdrive-forward";

fn pid_file(dir: &Path) -> PathBuf {
    dir.join(PID_FILE)
}

/// The `-L` argument of one port.
pub fn spec(p: &ForwardedPort) -> String {
    format!("{}:{}:{}:{}", p.host_ip, p.host, p.guest_ip, p.guest)
}

/// The forwarder's command: `ssh -N` with every port, exiting when a port
/// cannot be bound or the guest stops answering.
pub fn command(record: &MachineRecord, ports: &[ForwardedPort]) -> Command {
    let mut cmd = SshTarget::from_record(record).command();
    cmd.args([
        "-N",
        "-o",
        "BatchMode=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        &format!("SetEnv=KVMDRIVE={MARK}"),
    ]);
    for p in ports {
        cmd.arg("-L").arg(spec(p));
    }
    cmd
}

/// The pid of this machine's forwarder when it is running (and is ours).
pub fn running(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_our_forwarder(pid).then_some(pid)
}

fn is_our_forwarder(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_ssh = args
        .first()
        .is_some_and(|a| a.ends_with(b"ssh") || a == b"ssh");
    let marked = args
        .iter()
        .any(|a| *a == format!("SetEnv=KVMDRIVE={MARK}").as_bytes());
    is_ssh && marked
}

/// Stops the machine's forwarder, if any. Returns whether one was running.
pub fn stop(dir: &Path) -> bool {
    let pid = running(dir);
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = wait_until(
            Poll::every(Duration::from_millis(50), Duration::from_secs(3)),
            || Ok::<_, std::convert::Infallible>((!is_our_forwarder(pid)).then_some(())),
        );
    }
    let _ = std::fs::remove_file(pid_file(dir));
    pid.is_some()
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot start `ssh -N -L {ports}`: {source}")]
    Spawn {
        ports: String,
        source: std::io::Error,
    },
    #[error("forwarded ports {ports}: ssh exited: {stderr}")]
    Exited { ports: String, stderr: String },
    #[error("forwarded ports {ports}: {addr} did not start listening within 10 s")]
    NotListening { ports: String, addr: String },
    #[error("cannot write {path}: {source}")]
    StateFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ForwardError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ForwardError::Spawn { .. } => {
                "install the OpenSSH client (apt-get install openssh-client)".into()
            }
            ForwardError::Exited { .. } | ForwardError::NotListening { .. } => {
                "another program may hold the host port (`ss -ltnp`); pick another `host` port"
                    .into()
            }
            ForwardError::StateFile { .. } => {
                "the project's .kvmdrive directory must be writable".into()
            }
        })
    }
}

/// (Re)starts the forwarder and waits until every host port listens.
pub fn start(
    dir: &Path,
    record: &MachineRecord,
    ports: &[ForwardedPort],
) -> Result<Option<u32>, ForwardError> {
    stop(dir);
    if ports.is_empty() {
        return Ok(None);
    }
    let names = ports.iter().map(spec).collect::<Vec<_>>().join(", ");
    let err_path = dir.join("forward.log");
    let err_file = std::fs::File::create(&err_path).map_err(|source| ForwardError::StateFile {
        path: err_path.clone(),
        source,
    })?;
    let mut child = command(record, ports)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        // Its own process group: Ctrl-C in kvmdrive's terminal leaves it alone.
        .process_group(0)
        .spawn()
        .map_err(|source| ForwardError::Spawn {
            ports: names.clone(),
            source,
        })?;
    let pid = child.id();
    std::fs::write(pid_file(dir), format!("{pid}\n")).map_err(|source| {
        let _ = child.kill();
        ForwardError::StateFile {
            path: pid_file(dir),
            source,
        }
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in ports {
        let addr = SocketAddr::from((
            if p.host_ip.is_unspecified() {
                std::net::Ipv4Addr::LOCALHOST
            } else {
                p.host_ip
            },
            p.host,
        ));
        let listening = wait_until(Poll::until(Duration::from_millis(100), deadline), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Err(());
            }
            Ok(
                TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .is_ok()
                    .then_some(()),
            )
        });
        match listening {
            Ok(()) => {}
            Err(PollError::Failed(())) => {
                let _ = std::fs::remove_file(pid_file(dir));
                let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
                return Err(ForwardError::Exited {
                    ports: names,
                    stderr: stderr.trim().to_owned(),
                });
            }
            Err(PollError::TimedOut | PollError::Cancelled) => {
                stop(dir);
                return Err(ForwardError::NotListening {
                    ports: names,
                    addr: addr.to_string(),
                });
            }
        }
    }
    // The forwarder outlives this process: it is reaped by init, stopped by pid.
    drop(child);
    Ok(Some(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> MachineRecord {
        crate::testutil::machine_record()
    }

    #[test]
    fn command_forwards_every_port_and_exits_on_failure() {
        let ports = [
            ForwardedPort {
                guest: 80,
                host: 8080,
                host_ip: "127.0.0.1".parse().unwrap(),
                guest_ip: "127.0.0.1".parse().unwrap(),
            },
            ForwardedPort {
                guest: 443,
                host: 8443,
                host_ip: "0.0.0.0".parse().unwrap(),
                guest_ip: "10.0.0.5".parse().unwrap(),
            },
        ];
        let cmd = command(&record(), &ports);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("-L 127.0.0.1:8080:127.0.0.1:80"),
            "{joined}"
        );
        assert!(joined.contains("-L 0.0.0.0:8443:10.0.0.5:443"), "{joined}");
        assert!(joined.contains("ExitOnForwardFailure=yes"), "{joined}");
        assert!(
            joined.contains("-i /p/.kvmdrive/machines/web/id_ed25519"),
            "{joined}"
        );
        assert!(joined.contains("vagrant@192.168.121.10"), "{joined}");
        assert!(args.contains(&"-N".to_owned()));
    }

    #[test]
    fn a_pid_that_is_not_our_ssh_is_never_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(dir.path().join(PID_FILE), sleeper.id().to_string()).unwrap();
        assert_eq!(running(dir.path()), None);
        assert!(!stop(dir.path()));
        assert!(sleeper.try_wait().unwrap().is_none(), "sleep was killed");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(!dir.path().join(PID_FILE).exists());
    }
}
