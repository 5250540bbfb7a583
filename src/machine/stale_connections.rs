//! The host's TCP connections to a machine that a revert leaves out of step.
//!
//! A revert to a snapshot with memory puts the guest's TCP stack back to the
//! moment of the save. A connection the host opened before the save and kept
//! using after it (an SSH ControlMaster kept by `ControlPersist`: Ansible's,
//! Molecule's, the user's) now has sequence numbers the guest does not
//! accept: the guest drops its segments and the next client multiplexed over
//! it hangs (measured: `ssh` through such a master still waiting after 60 s).
//! A connection opened after the save fails at once instead and `ssh` falls
//! back to a new one. So after a revert the host closes every TCP connection
//! to the machine's addresses (the kernel's sock_diag `SOCK_DESTROY`, through
//! iproute2's `ss -K`, on the hypervisor host: through the jump host for a
//! remote one): a master then sees its connection gone and the next client
//! connects anew, as after a reboot.

use std::process::Command;

use super::lifecycle::Env;
use super::project::MachineRecord;
use crate::remote::Jump;

/// After a revert with memory: `kvmdrive ssh`'s own shared connection is
/// ended and the host's other connections to the machine are closed. Never
/// fatal; connections that stay open are a warning.
pub fn after_revert(env: &Env, record: &MachineRecord) {
    if env.hv.is_test_driver() {
        return; // its addresses are made up
    }
    // Also where `ss -K` may not close it (no CAP_NET_ADMIN).
    super::ssh::end_mux(record);
    match close(record) {
        Outcome::Closed(0) => {}
        Outcome::Closed(n) => env.out.trace(
            Some(&record.name),
            format!("closed {n} host connection(s) to it that the revert left out of step"),
        ),
        Outcome::Left(0, why) => env.out.detail(Some(&record.name), why),
        Outcome::Left(n, why) => env.out.warn(
            Some(&record.name),
            format!(
                "{n} connection(s) from this host to it were opened before the snapshot and could not be closed ({why}): \
                 an SSH ControlMaster among them hangs its next session; end it with `ssh -O exit` (or run kvmdrive as root)"
            ),
        ),
    }
}

/// `ss` arguments that list (`kill`: close) the TCP connections to `addrs`
/// (and, in tests, only to one port), one line per connection.
fn ss_args(kill: bool, addrs: &[&str], port: Option<u16>) -> Vec<String> {
    let mut args: Vec<String> = ["-t", "-n", "-H", "("]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if kill {
        args.insert(0, "-K".into());
    }
    for (i, a) in addrs.iter().enumerate() {
        if i > 0 {
            args.push("or".into());
        }
        args.extend(["dst".to_owned(), (*a).to_owned()]);
    }
    args.push(")".into());
    if let Some(p) = port {
        args.extend(["dport".into(), "=".into(), p.to_string()]);
    }
    args
}

/// The machine's addresses as the host reaches them: the management address
/// and those of its extra NICs.
fn addresses(record: &MachineRecord) -> Vec<String> {
    std::iter::once(record.address.clone())
        .chain(
            record
                .networks
                .iter()
                .filter_map(|n| n.ip)
                .map(|ip| ip.to_string()),
        )
        .collect()
}

/// Runs `ss` with `args` here, or on the hypervisor host through `jump`;
/// returns how many connections it listed (or closed).
fn ss(jump: Option<&Jump>, args: Vec<String>) -> Result<usize, String> {
    match jump {
        None => run(Command::new("ss").args(args)),
        Some(jump) => {
            let words: Vec<String> = std::iter::once("ss".to_owned())
                .chain(args)
                .map(|w| super::ssh::shell_quote(&w))
                .collect();
            run(&mut jump.command(&words.join(" ")))
        }
    }
}

/// What became of the host's connections to a machine after a revert.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// This many were closed (0: there were none).
    Closed(usize),
    /// This many are open and could not be closed, and why.
    Left(usize, String),
}

/// Closes the hypervisor host's connections to the machine after a revert
/// (through its jump host when the hypervisor is remote). When they cannot
/// be closed (no CAP_NET_ADMIN, a kernel without SOCK_DESTROY), counts them.
fn close(record: &MachineRecord) -> Outcome {
    let owned = addresses(record);
    let addrs: Vec<&str> = owned.iter().map(String::as_str).collect();
    let jump = record.jump.as_ref();
    match ss(jump, ss_args(true, &addrs, None)) {
        Ok(n) => Outcome::Closed(n),
        Err(why) => match ss(jump, ss_args(false, &addrs, None)) {
            Ok(0) => Outcome::Closed(0),
            Ok(n) => Outcome::Left(n, why),
            Err(_) => Outcome::Left(0, why),
        },
    }
}

fn run(cmd: &mut Command) -> Result<usize, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run `ss` (iproute2): {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("SOCK_DESTROY") {
        // `ss` says so on stderr when the kernel lacks SOCK_DESTROY
        // (CONFIG_INET_DIAG_DESTROY) or the caller lacks CAP_NET_ADMIN.
        return Err(format!("`ss -K` failed: {}", stderr.trim()));
    }
    Ok(closed(&String::from_utf8_lossy(&out.stdout)))
}

/// How many connections `ss -K -H` says it closed (one line each).
fn closed(stdout: &str) -> usize {
    stdout.lines().filter(|l| !l.trim().is_empty()).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn the_filter_names_every_address_and_the_port() {
        assert_eq!(
            ss_args(true, &["10.0.0.2", "192.168.56.10"], Some(22)).join(" "),
            "-K -t -n -H ( dst 10.0.0.2 or dst 192.168.56.10 ) dport = 22"
        );
        assert_eq!(
            ss_args(false, &["10.0.0.2"], None).join(" "),
            "-t -n -H ( dst 10.0.0.2 )"
        );
    }

    #[test]
    fn one_line_per_closed_connection() {
        assert_eq!(closed(""), 0);
        assert_eq!(
            closed("ESTAB 0 0 10.0.0.1:50000 10.0.0.2:22\nESTAB 0 0 10.0.0.1:50002 10.0.0.2:22\n"),
            2
        );
    }

    /// A loopback connection to a port of this test's own is closed under
    /// the client's feet (when this host can: root and SOCK_DESTROY).
    #[test]
    fn a_connection_is_closed_on_the_host() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        match ss(None, ss_args(true, &["127.0.0.1"], Some(port))) {
            Ok(n) => {
                assert_eq!(n, 1);
                let mut buf = [0u8; 1];
                let r = client.write_all(b"x").and_then(|()| client.read(&mut buf));
                let kind = r.expect_err("the connection is closed").kind();
                assert!(
                    matches!(
                        kind,
                        ErrorKind::ConnectionAborted
                            | ErrorKind::ConnectionReset
                            | ErrorKind::BrokenPipe
                    ),
                    "{kind:?}"
                );
            }
            Err(e) => eprintln!("skipped: this host cannot close sockets: {e}"),
        }
    }
}
