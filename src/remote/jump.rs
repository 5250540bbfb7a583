//! Reaching guests of a remote hypervisor host: their addresses live on the
//! host's NAT network, so every SSH connection to a guest goes through the
//! host (`ssh -W`), logging in there as libvirt does for a `qemu+ssh://`
//! URI (same user, port, key and host-key policy). A [`Jump`] is stored in
//! each machine's record; `ssh`, `ssh-config`, rsync, forwarded ports and the
//! Ansible inventory all take it from there. [`wait_for_banner`] is the
//! readiness wait through it.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::uri::RemoteUri;
use crate::machine::cancel;
use crate::machine::ssh::{shell_quote, WaitError};

/// The hypervisor host as an SSH hop.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Jump {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The URI's `keyfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<PathBuf>,
    /// The URI's `no_verify=1`: the host's key is not checked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_verify: bool,
    /// The URI's `known_hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
}

impl Jump {
    /// The hop for guests of the libvirt at `uri`; `None` when it is local.
    pub fn from_uri(uri: &str) -> Option<Jump> {
        let r = RemoteUri::parse(uri)?;
        Some(Jump {
            port: if r.is_ssh() { r.port } else { None },
            identity: r.param("keyfile").map(PathBuf::from),
            no_verify: r.param("no_verify").is_some_and(|v| v == "1"),
            known_hosts: r.param("known_hosts").map(PathBuf::from),
            user: r.user,
            host: r.host,
        })
    }

    /// `user@host` (or `host`).
    pub fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// Options of the `ssh` that logs in to the host, before the destination.
    fn options(&self) -> Vec<String> {
        let mut args = vec!["-o".to_owned(), "ConnectTimeout=10".to_owned()];
        if let Some(p) = self.port {
            args.extend(["-p".to_owned(), p.to_string()]);
        }
        if let Some(k) = &self.identity {
            args.extend(["-i".to_owned(), k.display().to_string()]);
        }
        if self.no_verify {
            args.extend(
                ["-o", "StrictHostKeyChecking=no"]
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
        if let Some(k) = &self.known_hosts {
            args.extend([
                "-o".to_owned(),
                format!("UserKnownHostsFile={}", k.display()),
            ]);
        }
        args
    }

    /// The `ProxyCommand` that carries a guest connection through the host
    /// (a shell command line; `%h`/`%p` are the guest's address and port).
    pub fn proxy_command(&self) -> String {
        let mut words = vec!["ssh".to_owned()];
        words.extend(self.options().iter().map(|w| quote_word(w)));
        words.extend(["-W".to_owned(), "%h:%p".to_owned()]);
        words.push(quote_word(&self.destination()));
        words.join(" ")
    }

    /// `ssh` running the shell command line `remote` on the host itself.
    pub fn command(&self, remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.options())
            .args(["-o", "BatchMode=yes"])
            .arg(self.destination())
            .arg("--")
            .arg(remote);
        cmd
    }

    /// `-o ProxyCommand=...` as two arguments of `ssh`.
    pub fn ssh_args(&self) -> [String; 2] {
        [
            "-o".to_owned(),
            format!("ProxyCommand={}", self.proxy_command()),
        ]
    }

    /// The same as one string for a shell-like split (rsync's `-e`,
    /// Ansible's `ansible_ssh_common_args`).
    pub fn ssh_args_line(&self) -> String {
        format!(
            "-o {}",
            shell_quote(&format!("ProxyCommand={}", self.proxy_command()))
        )
    }
}

/// Quotes a word for the shell only when it needs it (keeps config readable).
fn quote_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c))
    {
        w.to_owned()
    } else {
        shell_quote(w)
    }
}

/// Polls `addr` (a guest's SSH port) through `jump` until it sends an SSH
/// banner; without a jump this is [`crate::machine::ssh::wait_for_banner`].
/// Every attempt is one `ssh -W` to the host; `check` runs between attempts.
pub fn wait_for_banner(
    jump: Option<&Jump>,
    addr: SocketAddr,
    deadline: Instant,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), WaitError> {
    let Some(jump) = jump else {
        return crate::machine::ssh::wait_for_banner(addr, deadline, check);
    };
    let step = Duration::from_secs(1);
    loop {
        if cancel::is_cancelled() {
            return Err(WaitError::Cancelled);
        }
        if Instant::now() >= deadline {
            return Err(WaitError::TimedOut);
        }
        let started = Instant::now();
        if banner_through(jump, addr) {
            return Ok(());
        }
        check().map_err(WaitError::Aborted)?;
        if let Some(rest) = step.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// One attempt: `ssh -W addr host`, and whether the first bytes are `SSH-`.
fn banner_through(jump: &Jump, addr: SocketAddr) -> bool {
    let child = Command::new("ssh")
        .args(jump.options())
        .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-W"])
        .arg(addr.to_string())
        .arg(jump.destination())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4];
        let _ = tx.send(stdout.read_exact(&mut buf).is_ok() && &buf == b"SSH-");
    });
    let seen = rx.recv_timeout(Duration::from_secs(15)).unwrap_or(false);
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_follows_the_uri() {
        let j = Jump::from_uri(
            "qemu+ssh://root@10.250.1.2:2222/system?keyfile=/k/my%20key&no_verify=1",
        )
        .unwrap();
        assert_eq!(j.destination(), "root@10.250.1.2");
        assert_eq!(
            j.proxy_command(),
            "ssh -o ConnectTimeout=10 -p 2222 -i '/k/my key' -o StrictHostKeyChecking=no -W %h:%p root@10.250.1.2"
        );
        assert!(Jump::from_uri("qemu:///system").is_none());
        // tls: the URI's port is libvirt's, not SSH's.
        let tls = Jump::from_uri("qemu://hv:16514/system").unwrap();
        assert_eq!(tls.proxy_command(), "ssh -o ConnectTimeout=10 -W %h:%p hv");
    }

    #[test]
    fn a_command_on_the_host_logs_in_as_libvirt_does() {
        let j = Jump::from_uri("qemu+ssh://root@hv:2222/system?keyfile=/k/id").unwrap();
        let cmd = j.command("ss -K");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(cmd.get_program(), "ssh");
        assert_eq!(
            args.join(" "),
            "-o ConnectTimeout=10 -p 2222 -i /k/id -o BatchMode=yes root@hv -- ss -K"
        );
    }

    #[test]
    fn one_line_form_splits_back_into_one_option() {
        let j = Jump::from_uri("qemu+ssh://root@hv/system?keyfile=/k/id").unwrap();
        let line = j.ssh_args_line();
        assert_eq!(
            line,
            "-o 'ProxyCommand=ssh -o ConnectTimeout=10 -i /k/id -W %h:%p root@hv'"
        );
        let [o, v] = j.ssh_args();
        assert_eq!(o, "-o");
        assert_eq!(format!("-o '{v}'"), line);
    }

    /// Every way out of kvmdrive to a guest carries the hop of its record.
    #[test]
    fn records_with_a_jump_go_through_it() {
        let mut r = crate::testutil::machine_record();
        r.jump = Jump::from_uri("qemu+ssh://root@10.250.1.2/system");
        let proxy = "ssh -o ConnectTimeout=10 -W %h:%p root@10.250.1.2";
        let cfg = crate::machine::ssh::ssh_config_entry(&r);
        assert!(cfg.contains(&format!("  ProxyCommand {proxy}\n")), "{cfg}");
        let cmd = crate::machine::ssh::SshTarget::from_record(&r).command();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&format!("ProxyCommand={proxy}")), "{args:?}");
        let vars = crate::roletest::ansible::host_vars(&r);
        let common = vars["ansible_ssh_common_args"].as_str().unwrap();
        assert!(
            common.contains(&format!(
                " -o 'ProxyCommand={proxy}' -o ControlPath=/tmp/kvmdrive-ssh-"
            )),
            "{common}"
        );
        // Without a hop nothing changes.
        r.jump = None;
        assert!(!crate::machine::ssh::ssh_config_entry(&r).contains("Proxy"));
    }

    #[test]
    fn record_form_round_trips() {
        let j = Jump::from_uri("qemu+ssh://hv/system").unwrap();
        let text = serde_json::to_string(&j).unwrap();
        assert_eq!(text, r#"{"host":"hv"}"#);
        assert_eq!(serde_json::from_str::<Jump>(&text).unwrap(), j);
    }
}
