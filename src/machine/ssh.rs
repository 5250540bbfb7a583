//! Reaching machines over SSH with the system's OpenSSH client: waiting for
//! the banner, running commands, replacing the insecure key, and the
//! `ssh-config` text `vagrant ssh-config` users expect.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::project::MachineRecord;
use crate::project::hardware::Hostname;
use crate::wait::{wait_until, Poll, PollError};

/// Options that make a scripted, non-interactive login to a fresh VM work:
/// its host key is new on every boot, so it is neither checked nor stored.
pub const CLIENT_OPTIONS: &[(&str, &str)] = &[
    ("UserKnownHostsFile", "/dev/null"),
    ("StrictHostKeyChecking", "no"),
    ("PasswordAuthentication", "no"),
    ("IdentitiesOnly", "yes"),
    ("LogLevel", "FATAL"),
];

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identities: Vec<PathBuf>,
    /// Through the (remote) hypervisor host.
    pub jump: Option<crate::remote::Jump>,
}

impl SshTarget {
    pub fn from_record(r: &MachineRecord) -> SshTarget {
        SshTarget {
            host: r.address.clone(),
            port: r.port,
            user: r.user.clone(),
            identities: vec![r.identity_file.clone()],
            jump: r.jump.clone(),
        }
    }

    /// `ssh` with every option set; append `--` and a remote command.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("ssh");
        for (k, v) in CLIENT_OPTIONS {
            cmd.arg("-o").arg(format!("{k}={v}"));
        }
        for id in &self.identities {
            cmd.arg("-i").arg(id);
        }
        cmd.args(self.jump.iter().flat_map(|j| j.ssh_args()));
        cmd.arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@{}", self.user, self.host));
        cmd
    }

    /// Runs `remote` non-interactively (stdin closed, output captured).
    pub fn run(&self, remote: &str, timeout_s: u32) -> std::io::Result<Output> {
        self.command()
            .args(["-o", "BatchMode=yes", "-o"])
            .arg(format!("ConnectTimeout={timeout_s}"))
            .arg("--")
            .arg(remote)
            .stdin(Stdio::null())
            .output()
    }
}

/// Why waiting stopped early.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitError {
    TimedOut,
    Cancelled,
    /// The caller's check (e.g. "is the domain still running?") failed.
    Aborted(String),
}

/// Polls `addr` until it sends an SSH banner. `check` runs between attempts
/// and may abort the wait (a guest that crashed will never answer).
pub fn wait_for_banner(
    addr: SocketAddr,
    deadline: Instant,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), WaitError> {
    let poll = Poll::until(Duration::from_millis(100), deadline).cancellable();
    wait_until(poll, || {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                return Ok(Some(()));
            }
        }
        check().map(|()| None)
    })
    .map_err(|e| match e {
        PollError::TimedOut => WaitError::TimedOut,
        PollError::Cancelled => WaitError::Cancelled,
        PollError::Failed(why) => WaitError::Aborted(why),
    })
}

/// Remote script run at each first login of an `up`: installs the machine's
/// own key as the only authorized key (removing the insecure ones) and, unless
/// `hostname` is `None`, sets the host name the way Vagrant does: the short
/// name in the kernel and /etc/hostname, and `127.0.1.1 FQDN SHORT` in
/// /etc/hosts so `hostname -f` answers the FQDN.
pub fn key_replacement_script(public_line: &str, hostname: Option<&Hostname>) -> String {
    let q = shell_quote;
    let mut script = format!(
        "set -e; umask 077; mkdir -p ~/.ssh; printf '%s\\n' {key} > ~/.ssh/authorized_keys.kvmdrive; \
         mv ~/.ssh/authorized_keys.kvmdrive ~/.ssh/authorized_keys",
        key = q(public_line),
    );
    if let Some(h) = hostname {
        let line = if h.fqdn() == h.short() {
            format!("127.0.1.1\t{}", h.short())
        } else {
            format!("127.0.1.1\t{} {}", h.fqdn(), h.short())
        };
        script.push_str(&format!(
            "; if [ \"$(hostname)\" != {short} ] || ! grep -qxF {line} /etc/hosts; then \
             sudo -n hostname {short} && echo {short} | sudo -n tee /etc/hostname >/dev/null \
             && sudo -n sed -i '/^127\\.0\\.1\\.1[[:space:]]/d' /etc/hosts \
             && printf '%s\\n' {line} | sudo -n tee -a /etc/hosts >/dev/null; fi",
            short = q(h.short()),
            line = q(&line),
        ));
    }
    script
}

/// Single-quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `vagrant ssh-config`-shaped text for one machine.
pub fn ssh_config_entry(r: &MachineRecord) -> String {
    let mut out = format!(
        "Host {}\n  HostName {}\n  User {}\n  Port {}\n",
        r.name, r.address, r.user, r.port
    );
    for (k, v) in CLIENT_OPTIONS {
        out.push_str(&format!("  {k} {v}\n"));
    }
    out.push_str(&format!(
        "  IdentityFile {}\n",
        quote_config_path(&r.identity_file)
    ));
    if let Some(j) = &r.jump {
        out.push_str(&format!("  ProxyCommand {}\n", j.proxy_command()));
    }
    out
}

fn quote_config_path(p: &Path) -> String {
    let s = p.display().to_string();
    if s.contains(' ') {
        format!("\"{s}\"")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn record() -> MachineRecord {
        crate::testutil::machine_record()
    }

    #[test]
    fn ssh_config_looks_like_vagrants() {
        let text = ssh_config_entry(&record());
        assert!(
            text.starts_with("Host web\n  HostName 192.168.121.10\n  User vagrant\n  Port 22\n")
        );
        assert!(text.contains("  StrictHostKeyChecking no\n"));
        assert!(text.ends_with("  IdentityFile /p/.kvmdrive/machines/web/id_ed25519\n"));
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        let web = Hostname::parse("web").unwrap();
        let s = key_replacement_script("ssh-ed25519 AAAA kvmdrive", Some(&web));
        assert!(s.contains(
            "printf '%s\\n' 'ssh-ed25519 AAAA kvmdrive' > ~/.ssh/authorized_keys.kvmdrive"
        ));
    }

    #[test]
    fn host_name_script_sets_short_name_and_fqdn_line() {
        let fqdn = Hostname::parse("node1.example.com").unwrap();
        let s = key_replacement_script("k", Some(&fqdn));
        assert!(s.contains("sudo -n hostname 'node1' &&"), "{s}");
        assert!(
            s.contains("echo 'node1' | sudo -n tee /etc/hostname"),
            "{s}"
        );
        assert!(
            s.contains(
                "printf '%s\\n' '127.0.1.1\tnode1.example.com node1' | sudo -n tee -a /etc/hosts"
            ),
            "{s}"
        );
        let kept = key_replacement_script("k", None);
        assert!(!kept.contains("hostname"), "{kept}");
        assert!(kept.ends_with("~/.ssh/authorized_keys"), "{kept}");
    }

    /// The script is valid shell and gives what `hostname -f` reads.
    #[test]
    fn host_name_script_runs_in_a_shell() {
        let fqdn = Hostname::parse("node1.example.com").unwrap();
        let s = key_replacement_script("k", Some(&fqdn));
        crate::testutil::assert_sh_syntax(&s);
    }

    #[test]
    fn banner_wait_sees_a_banner_on_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            std::io::Write::write_all(&mut s, b"SSH-2.0-test\r\n").unwrap();
        });
        wait_for_banner(addr, Instant::now() + Duration::from_secs(5), || Ok(())).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn banner_wait_times_out_and_aborts() {
        // A bound but never-accepting port that is then closed: connections are refused.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = wait_for_banner(addr, Instant::now() + Duration::from_millis(300), || Ok(()));
        assert_eq!(r, Err(WaitError::TimedOut));
        let r = wait_for_banner(addr, Instant::now() + Duration::from_secs(5), || {
            Err("crashed".into())
        });
        assert_eq!(r, Err(WaitError::Aborted("crashed".into())));
    }
}
