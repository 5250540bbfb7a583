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
/// The key exchange is [`KEX_ALGORITHMS`].
pub const CLIENT_OPTIONS: &[(&str, &str)] = &[
    ("UserKnownHostsFile", "/dev/null"),
    ("StrictHostKeyChecking", "no"),
    ("PasswordAuthentication", "no"),
    ("IdentitiesOnly", "yes"),
    ("KexAlgorithms", KEX_ALGORITHMS),
    ("LogLevel", "FATAL"),
];

/// OpenSSH's default key exchanges without the post-quantum hybrids
/// (sntrup761x25519, mlkem768x25519) and with ECDH P-256 first: in a guest
/// whose CPU is emulated (TCG) sntrup761 costs about 0.6 s more per login
/// than P-256 (OpenSSL's assembly), curve25519 (portable C) about 0.15 s.
/// The machines are throw-away test VMs on a host-local network. A full list
/// rather than a "^..." prepend, which older clients do not read.
/// (molecule-plugin's driver.py has the same list.)
pub const KEX_ALGORITHMS: &str = "ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,\
curve25519-sha256,curve25519-sha256@libssh.org,\
diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,\
diffie-hellman-group18-sha512,diffie-hellman-group14-sha256";

/// How long `kvmdrive ssh`'s shared connection stays open after its last
/// session (see [`mux_options`]).
const MUX_PERSIST: &str = "60s";

/// The directory of this user's shared-connection sockets: `/tmp/kvmdrive-UID`
/// (short: a socket path has about 100 bytes), made 0700. `None` when it
/// cannot be made, or is not this user's alone (then nothing is shared).
pub fn mux_dir() -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = nix::unistd::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("kvmdrive-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0).then_some(dir)
}

/// `ssh` options that share one connection per machine between the sessions
/// of `kvmdrive ssh` (ControlMaster): the first session's connection stays
/// open for [`MUX_PERSIST`] after the last one, so the next `kvmdrive ssh --
/// CMD` skips the key exchange and the login (about 0.5 s under TCG). The
/// socket is named by the domain and by OpenSSH's `%C` (address, port, user),
/// so a machine made again, or elsewhere, gets a connection of its own. A
/// revert closes it (see [`super::stale_connections`]).
pub fn mux_options(domain: &str) -> Option<Vec<String>> {
    let dir = mux_dir()?;
    let path = dir.join(format!(
        "{}-%C",
        super::project::short_hash(domain.as_bytes())
    ));
    Some(
        [
            "ControlMaster=auto".to_owned(),
            format!("ControlPath={}", path.display()),
            format!("ControlPersist={MUX_PERSIST}"),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect(),
    )
}

/// Asks the shared connection of `kvmdrive ssh` to `record`'s machine, if
/// there is one, to end (`ssh -O exit`); quiet when there is none.
pub fn end_mux(record: &MachineRecord) {
    let target = SshTarget::from_record(record).shared(&record.domain);
    if !target.shared.is_empty() {
        let _ = target
            .command()
            .args(["-O", "exit"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identities: Vec<PathBuf>,
    /// Through the (remote) hypervisor host.
    pub jump: Option<crate::remote::Jump>,
    /// Options of a shared connection ([`mux_options`]); empty: none.
    pub shared: Vec<String>,
}

impl SshTarget {
    pub fn from_record(r: &MachineRecord) -> SshTarget {
        SshTarget {
            host: r.address.clone(),
            port: r.port,
            user: r.user.clone(),
            identities: vec![r.identity_file.clone()],
            jump: r.jump.clone(),
            shared: Vec::new(),
        }
    }

    /// The same target through `kvmdrive ssh`'s shared connection to
    /// `domain` ([`mux_options`]): a session uses it when it is open, and
    /// opens it (kept [`MUX_PERSIST`]) when it is not.
    pub fn shared(mut self, domain: &str) -> SshTarget {
        self.shared = mux_options(domain).unwrap_or_default();
        self
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
        cmd.args(&self.shared);
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

/// How often [`wait_for_answer`] tries: the guest is on a local bridge, so
/// an attempt costs the host next to nothing, and the time between sshd
/// listening and us noticing is at most this.
const ANSWER_POLL: Duration = Duration::from_millis(50);

/// How long one attempt waits for a SYN-ACK or a refusal. A guest on a
/// local bridge answers in milliseconds; every tenth attempt waits longer
/// ([`SLOW_ANSWER`]) so that a guest slowed down by a busy host, which
/// answers but late, is still seen.
const QUICK_ANSWER: Duration = Duration::from_millis(250);
const SLOW_ANSWER: Duration = Duration::from_secs(2);

/// What a guest's SSH port did with a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAnswer {
    /// It accepted the connection: sshd listens.
    Listening,
    /// It refused: the guest's network is up, sshd is not (yet).
    Refused,
}

/// One connection attempt to `addr`, closed at once (no banner is read: the
/// login that follows is what counts, and reading a banner first would make
/// the guest start one more sshd child before it).
pub fn probe_port(addr: SocketAddr, timeout: Duration) -> Option<PortAnswer> {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Some(PortAnswer::Listening),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(PortAnswer::Refused),
        Err(_) => None,
    }
}

/// Polls `addr` every [`ANSWER_POLL`] until the guest answers on it at all
/// (accepts or refuses: either way its network is up and logging in can
/// start). `check` runs between attempts and may abort the wait (a guest
/// that crashed will never answer).
pub fn wait_for_answer(
    addr: SocketAddr,
    deadline: Instant,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<PortAnswer, WaitError> {
    let poll = Poll::until(ANSWER_POLL, deadline).cancellable();
    let mut attempt = 0u32;
    wait_until(poll, || {
        attempt += 1;
        let timeout = if attempt.is_multiple_of(10) {
            SLOW_ANSWER
        } else {
            QUICK_ANSWER
        };
        if let Some(answer) = probe_port(addr, timeout) {
            return Ok(Some(answer));
        }
        check().map(|()| None)
    })
    .map_err(wait_error)
}

fn wait_error(e: PollError<String>) -> WaitError {
    match e {
        PollError::TimedOut => WaitError::TimedOut,
        PollError::Cancelled => WaitError::Cancelled,
        PollError::Failed(why) => WaitError::Aborted(why),
    }
}

/// Polls `addr` until it sends an SSH banner. `check` runs between attempts
/// and may abort the wait (a guest that crashed will never answer).
pub fn wait_for_banner(
    addr: SocketAddr,
    deadline: Instant,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), WaitError> {
    let poll = Poll::until(ANSWER_POLL, deadline).cancellable();
    wait_until(poll, || {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, QUICK_ANSWER) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                return Ok(Some(()));
            }
        }
        check().map(|()| None)
    })
    .map_err(wait_error)
}

/// The line [`key_replacement_script`] prints when the file it replaced
/// already held a key we log in with: sshd reads that file (with the modes
/// it has), so the own key written there works, and the check login with it
/// can be skipped.
pub const KEY_FILE_IN_USE: &str = "kvmdrive: authorized_keys in use";

/// The line [`key_replacement_script`] prints, followed by the path, when
/// the guest has the Python Ansible should use.
const PYTHON_LINE: &str = "kvmdrive-python ";

/// `/usr/bin/python3` only, not whatever `python3` is first on the login's
/// PATH: it is what Ansible's discovery picks on the distributions that have
/// it, and the Python their packages' bindings (apt, dnf, selinux) are for.
const PYTHON: &str = "/usr/bin/python3";

/// The guest's Python as the output of [`key_replacement_script`] names it.
pub fn python_in(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(PYTHON_LINE))
        .map(str::to_owned)
}

/// Whether the output of [`key_replacement_script`] says the replaced file
/// was the one sshd let us in with.
pub fn key_file_in_use(stdout: &str) -> bool {
    stdout.lines().any(|l| l.trim() == KEY_FILE_IN_USE)
}

/// The key material (second field) of an OpenSSH public key line.
fn key_blob(public_line: &str) -> Option<&str> {
    public_line.split_whitespace().nth(1)
}

/// Remote script run at each first login of an `up`: installs the machine's
/// own key as the only authorized key (removing the insecure ones) and, unless
/// `hostname` is `None`, sets the host name the way Vagrant does: the short
/// name in the kernel and /etc/hostname, and `127.0.1.1 FQDN SHORT` in
/// /etc/hosts so `hostname -f` answers the FQDN, with one `sudo`. It prints
/// [`KEY_FILE_IN_USE`] when the file it replaced held the own key or one of
/// `login_keys` (the public keys we may have logged in with), and the guest's
/// Python for Ansible when it has one (read back by [`python_in`]).
///
/// The checks use shell builtins (`read` loops, `case`) rather than `grep`
/// and `hostname`: in a guest that has just booted under TCG every program
/// started costs tens of milliseconds, and this login is on the path of every
/// `up`. Only the atomic `mv` of the key file and, when the name is not yet
/// set, the `sudo` remain; a box that names itself at boot from the
/// `kvmdrive.hostname` credential ([`crate::machine::plan::HOSTNAME_CREDENTIAL`])
/// needs no `sudo`.
pub fn key_replacement_script(
    public_line: &str,
    login_keys: &[&str],
    hostname: Option<&Hostname>,
) -> String {
    let q = shell_quote;
    let patterns: Vec<String> = std::iter::once(public_line)
        .chain(login_keys.iter().copied())
        .filter_map(key_blob)
        .map(|b| format!("*{}*", q(b)))
        .collect();
    let mut script = String::from("set -e; umask 077; [ -d ~/.ssh ] || mkdir -p ~/.ssh; ");
    if !patterns.is_empty() {
        script.push_str(&on_first_line(
            "~/.ssh/authorized_keys",
            &patterns.join("|"),
            &format!("echo {}", q(KEY_FILE_IN_USE)),
        ));
        script.push_str("; ");
    }
    script.push_str(&format!(
        "printf '%s\\n' {key} > ~/.ssh/authorized_keys.kvmdrive; \
         mv ~/.ssh/authorized_keys.kvmdrive ~/.ssh/authorized_keys",
        key = q(public_line),
    ));
    script.push_str(&format!(
        "; if [ -x {PYTHON} ]; then echo {}; fi",
        q(&format!("{PYTHON_LINE}{PYTHON}"))
    ));
    if let Some(h) = hostname {
        let line = if h.fqdn() == h.short() {
            format!("127.0.1.1\t{}", h.short())
        } else {
            format!("127.0.1.1\t{} {}", h.fqdn(), h.short())
        };
        // $1: the short name, $2: the /etc/hosts line. Linux guests take the
        // kernel's name through /proc without starting `hostname`.
        let as_root =
            "if [ -w /proc/sys/kernel/hostname ]; then echo \"$1\" > /proc/sys/kernel/hostname; \
             else hostname \"$1\"; fi && echo \"$1\" > /etc/hostname \
             && sed -i '/^127\\.0\\.1\\.1[[:space:]]/d' /etc/hosts \
             && printf '%s\\n' \"$2\" >> /etc/hosts";
        script.push_str(&format!(
            "; if [ -r /proc/sys/kernel/hostname ]; then read -r n < /proc/sys/kernel/hostname; \
             else n=$(hostname); fi; h=; {find_line}; \
             if [ \"$n\" != {short} ] || [ -z \"$h\" ]; then \
             sudo -n sh -c {as_root} sh {short} {line}; fi",
            // A quoted `case` pattern matches the whole line, literally.
            find_line = on_first_line("/etc/hosts", &q(&line), "h=1"),
            short = q(h.short()),
            line = q(&line),
            as_root = q(as_root),
        ));
    }
    script
}

/// Shell code that runs `then` for the first line of `file` (if it exists)
/// that matches the `case` pattern `pattern`, with builtins only; a last
/// line without a newline counts.
fn on_first_line(file: &str, pattern: &str, then: &str) -> String {
    format!(
        "if [ -f {file} ]; then while IFS= read -r l || [ -n \"$l\" ]; do \
         case $l in {pattern}) {then}; break;; esac; done < {file}; fi"
    )
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
    fn every_login_skips_the_post_quantum_key_exchanges() {
        let line = format!("  KexAlgorithms {KEX_ALGORITHMS}\n");
        assert!(ssh_config_entry(&record()).contains(&line));
        let cmd = SshTarget::from_record(&record()).command();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert!(args.contains(&format!("KexAlgorithms={KEX_ALGORITHMS}").into()));
        assert!(KEX_ALGORITHMS.starts_with("ecdh-sha2-nistp256,"));
        assert!(!KEX_ALGORITHMS.contains("sntrup") && !KEX_ALGORITHMS.contains("mlkem"));
        assert!(!KEX_ALGORITHMS.contains(char::is_whitespace));
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        let web = Hostname::parse("web").unwrap();
        let s = key_replacement_script("ssh-ed25519 AAAA kvmdrive", &[], Some(&web));
        assert!(s.contains(
            "printf '%s\\n' 'ssh-ed25519 AAAA kvmdrive' > ~/.ssh/authorized_keys.kvmdrive"
        ));
    }

    #[test]
    fn host_name_script_sets_short_name_and_fqdn_line_with_one_sudo() {
        let fqdn = Hostname::parse("node1.example.com").unwrap();
        let s = key_replacement_script("k", &[], Some(&fqdn));
        assert_eq!(s.matches("sudo").count(), 1, "{s}");
        assert!(
            s.contains("echo \"$1\" > /proc/sys/kernel/hostname;"),
            "{s}"
        );
        assert!(s.contains("echo \"$1\" > /etc/hostname"), "{s}");
        assert!(
            s.contains("printf '\\''%s\\n'\\'' \"$2\" >> /etc/hosts"),
            "{s}"
        );
        assert!(
            s.contains(" sh 'node1' '127.0.1.1\tnode1.example.com node1'; fi"),
            "{s}"
        );
        let kept = key_replacement_script("k", &[], None);
        assert!(!kept.contains("hostname"), "{kept}");
        assert!(
            kept.contains("mv ~/.ssh/authorized_keys.kvmdrive ~/.ssh/authorized_keys;"),
            "{kept}"
        );
    }

    /// What [`run_script`] runs the script against.
    struct Guest<'a> {
        authorized_keys: Option<&'a str>,
        /// The kernel's host name.
        hostname: &'a str,
        hosts: &'a str,
    }

    const FRESH_GUEST: Guest = Guest {
        authorized_keys: Some("ssh-rsa INSECURE2 vagrant\n"),
        hostname: "debian12",
        hosts: "127.0.0.1\tlocalhost\n127.0.1.1\tdebian12\n",
    };

    /// Runs the script with HOME in a temporary directory, the guest's
    /// /proc/sys/kernel/hostname and /etc/hosts replaced by files there, and
    /// `sudo` and `hostname` replaced by stubs (sudo records its arguments,
    /// one per line; `hostname` fails: the script must not need it where
    /// /proc has the name); returns (stdout, authorized_keys, what sudo got).
    fn run_script(script: &str, guest: &Guest) -> (String, String, String) {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (name, body) in [
            ("hostname", "echo hostname-was-run >&2; exit 1\n"),
            ("sudo", "printf '%s\\n' \"$@\" > \"$HOME/sudo.args\"\n"),
        ] {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        if let Some(k) = guest.authorized_keys {
            std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
            std::fs::write(home.path().join(".ssh/authorized_keys"), k).unwrap();
        }
        let file = |name: &str, text: &str| {
            let p = home.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let script = script
            .replace(
                "/proc/sys/kernel/hostname",
                &file("kernel-hostname", &format!("{}\n", guest.hostname)),
            )
            .replace("/etc/hosts", &file("hosts", guest.hosts));
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("HOME", home.path())
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |p: &str| std::fs::read_to_string(home.path().join(p)).unwrap_or_default();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            read(".ssh/authorized_keys"),
            read("sudo.args"),
        )
    }

    #[test]
    fn key_script_asks_sudo_only_when_the_name_or_the_hosts_line_is_missing() {
        let fqdn = Hostname::parse("node1.example.com").unwrap();
        let s = key_replacement_script("ssh-ed25519 OWN k", &[], Some(&fqdn));
        let line = "127.0.1.1\tnode1.example.com node1";
        let named = format!("127.0.0.1\tlocalhost\n{line}\n");
        let done = Guest {
            hostname: "node1",
            hosts: &named,
            ..FRESH_GUEST
        };
        assert_eq!(run_script(&s, &done).2, "", "all set: no sudo");
        let name_differs = Guest {
            hostname: "debian12",
            ..done
        };
        assert_ne!(run_script(&s, &name_differs).2, "", "kernel name differs");
        let near = format!("127.0.1.1\tnode1\n{line} x\n");
        let no_exact_line = Guest {
            hosts: &near,
            ..done
        };
        assert_ne!(run_script(&s, &no_exact_line).2, "", "no exact hosts line");
        let no_newline = Guest {
            hosts: line,
            ..done
        };
        assert_eq!(
            run_script(&s, &no_newline).2,
            "",
            "last line without newline"
        );
        assert_ne!(run_script(&s, &FRESH_GUEST).2, "");
    }

    /// The bundled box names itself at boot from the credential kvmdrive
    /// passes (boxes/debian-12, kvmdrive-hostname.service): what it writes
    /// must be what the first login checks, or the login would `sudo` anyway.
    #[test]
    fn the_bundled_box_names_itself_as_the_first_login_expects() {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/boxes/debian-12/files/usr/local/libexec/kvmdrive/hostname"
        );
        for name in ["node1", "Node1.Example.com."] {
            let h = Hostname::parse(name).unwrap();
            let root = tempfile::tempdir().unwrap();
            for (path, text) in [
                ("proc/sys/kernel/hostname", "debian-12\n"),
                ("etc/hostname", "debian-12\n"),
                (
                    "etc/hosts",
                    "127.0.0.1\tlocalhost\n127.0.1.1\tdebian-12\n::1\tlocalhost\n",
                ),
                // As systemd writes a credential: no final newline.
                ("creds/kvmdrive.hostname", h.fqdn()),
            ] {
                let p = root.path().join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, text).unwrap();
            }
            let out = std::process::Command::new("sh")
                .arg(script)
                .env("ROOT", root.path())
                .env("CREDENTIALS_DIRECTORY", root.path().join("creds"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
            assert_eq!(read("etc/hostname"), format!("{}\n", h.short()));
            let (kernel, hosts) = (read("proc/sys/kernel/hostname"), read("etc/hosts"));
            let booted = Guest {
                hostname: kernel.trim_end(),
                hosts: &hosts,
                ..FRESH_GUEST
            };
            let login = key_replacement_script("ssh-ed25519 OWN k", &[], Some(&h));
            assert_eq!(run_script(&login, &booted).2, "", "{name}: no sudo");
        }
    }

    #[test]
    fn key_script_replaces_the_keys_and_says_whether_the_file_was_in_use() {
        let own = "ssh-ed25519 OWNKEY kvmdrive";
        let insecure = ["ssh-ed25519 INSECURE1 vagrant", "ssh-rsa INSECURE2 vagrant"];
        let fqdn = Hostname::parse("node1.example.com").unwrap();
        let s = key_replacement_script(own, &insecure, Some(&fqdn));
        crate::testutil::assert_sh_syntax(&s);

        // First boot: the box's file holds the insecure keys.
        let (out, keys, sudo) = run_script(&s, &FRESH_GUEST);
        assert!(key_file_in_use(&out), "{out}");
        assert_eq!(keys, format!("{own}\n"));
        let args: Vec<&str> = sudo.lines().collect();
        assert_eq!(args[..3], ["-n", "sh", "-c"], "{sudo}");
        assert_eq!(
            args[4..],
            ["sh", "node1", "127.0.1.1\tnode1.example.com node1"],
            "{sudo}"
        );

        // A later up: the file holds the own key.
        let (out, keys, _) = run_script(
            &s,
            &Guest {
                authorized_keys: Some(&format!("{own}\n")),
                ..FRESH_GUEST
            },
        );
        assert!(key_file_in_use(&out), "{out}");
        assert_eq!(keys, format!("{own}\n"));

        // No file, or one without any key we know: the own key must be tried.
        let (out, keys, _) = run_script(
            &s,
            &Guest {
                authorized_keys: None,
                ..FRESH_GUEST
            },
        );
        assert!(!key_file_in_use(&out), "{out}");
        assert_eq!(keys, format!("{own}\n"));
        let (out, _, _) = run_script(
            &s,
            &Guest {
                authorized_keys: Some("ssh-ed25519 SOMEONE else\n"),
                ..FRESH_GUEST
            },
        );
        assert!(!key_file_in_use(&out), "{out}");

        // The Python for Ansible: named exactly when the system's python3 is
        // there (this host stands in for the guest).
        let expected = Path::new("/usr/bin/python3")
            .exists()
            .then(|| "/usr/bin/python3".to_owned());
        assert_eq!(python_in(&out), expected, "{out}");
    }

    #[test]
    fn kvmdrive_ssh_shares_a_connection_through_a_private_short_socket() {
        use std::os::unix::fs::PermissionsExt;
        let opts = mux_options("proj-abc123-web").expect("a socket directory");
        assert_eq!(opts[0..2], ["-o", "ControlMaster=auto"]);
        assert_eq!(opts[4..6], ["-o", "ControlPersist=60s"]);
        let path = opts[3].strip_prefix("ControlPath=").unwrap();
        assert!(path.ends_with("-%C"), "{path}");
        // %C becomes 40 hex digits and ssh binds a temporary name 17 bytes
        // longer; a socket path has 108 bytes (104 on some systems).
        assert!(path.len() - 2 + 40 + 17 < 104, "{path}");
        let dir = Path::new(path).parent().unwrap();
        assert_eq!(
            std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_ne!(
            mux_options("proj-abc123-db").unwrap()[3],
            opts[3],
            "one connection per machine"
        );
    }

    #[test]
    fn the_python_line_is_read_back() {
        assert_eq!(
            python_in("kvmdrive: authorized_keys in use\nkvmdrive-python /usr/bin/python3\n"),
            Some("/usr/bin/python3".into())
        );
        assert_eq!(python_in("kvmdrive: authorized_keys in use\n"), None);
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

    #[test]
    fn answer_wait_tells_listening_from_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            wait_for_answer(addr, deadline, || Ok(())),
            Ok(PortAnswer::Listening)
        );
        drop(l);
        assert_eq!(
            wait_for_answer(addr, deadline, || Ok(())),
            Ok(PortAnswer::Refused)
        );
    }
}
