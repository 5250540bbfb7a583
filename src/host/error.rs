//! What can go wrong while `kvmdrive host up`/`down` start, stop and repair
//! things: [`HostError`], each with a hint that says what to run next. The
//! checks themselves never fail (they report findings); these are failures to
//! act.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot {action}: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    #[error("{program} is not installed")]
    NotInstalled {
        program: &'static str,
        package: &'static str,
    },
    #[error("`{command}` failed: {message}")]
    CommandFailed { command: String, message: String },
    #[error("{daemon} exited ({status}) before it answered on {socket}")]
    DaemonExited {
        daemon: &'static str,
        status: String,
        socket: String,
        log: PathBuf,
    },
    #[error("{daemon} (pid {pid}) did not answer on {socket} within {seconds} s")]
    DaemonSilent {
        daemon: &'static str,
        pid: u32,
        socket: String,
        seconds: u64,
        log: PathBuf,
    },
    #[error("{daemon} (pid {pid}) runs but does not answer on {socket}")]
    DaemonStuck {
        daemon: &'static str,
        pid: u32,
        socket: String,
    },
    #[error("libvirt does not answer after {seconds} s: {source}")]
    LibvirtSilent {
        seconds: u64,
        source: crate::virt::VirtError,
    },
    #[error("`iptables` is not managed by update-alternatives here")]
    NoAlternatives { wanted: String },
    #[error("{path} is not installed as an alternative for iptables")]
    NotAnAlternative { path: String },
    #[error("fix {check} ({description}): {source}")]
    Fix {
        check: &'static str,
        description: String,
        source: Box<HostError>,
    },
}

impl HostError {
    /// An I/O failure while doing `action` ("write /proc/sys/...").
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostError {
        let action = action.into();
        move |source| HostError::Io { action, source }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            HostError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some("run `kvmdrive host up` as root: it starts daemons and changes system files".into())
            }
            HostError::Io { .. } => Some("run `kvmdrive host check` to see what the host lacks".into()),
            HostError::NotInstalled { package, .. } => Some(format!(
                "install it: `apt-get install {package}` (`kvmdrive host check` lists what is missing)"
            )),
            HostError::CommandFailed { .. } => {
                Some("run `kvmdrive host check` to see what the host lacks".into())
            }
            HostError::DaemonExited { log, .. } | HostError::DaemonSilent { log, .. } => Some(format!(
                "read {} for why, and run `kvmdrive host check`",
                log.display()
            )),
            HostError::DaemonStuck { pid, .. } => Some(format!(
                "stop it (`kill {pid}`) and run `kvmdrive host up` again"
            )),
            HostError::LibvirtSilent { .. } => Some(
                "read /var/log/kvmdrive/libvirtd.log, run `kvmdrive host check`, or wait longer with `kvmdrive host up --timeout SECONDS`"
                    .into(),
            ),
            HostError::NoAlternatives { wanted } => {
                Some(format!("make `iptables` run {wanted} by hand"))
            }
            HostError::NotAnAlternative { path } => Some(format!(
                "install the package that provides {path} (apt-get install iptables)"
            )),
            HostError::Fix { source, .. } => source.hint().or_else(|| {
                Some("run `kvmdrive host check` for what the fix needs".into())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_says_what_to_run() {
        let missing = HostError::NotInstalled {
            program: "libvirtd",
            package: "libvirt-daemon-system",
        };
        assert!(missing
            .hint()
            .unwrap()
            .contains("apt-get install libvirt-daemon-system"));
        let denied = HostError::io("chmod 0660 /dev/kvm")(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ));
        assert!(denied.hint().unwrap().contains("as root"), "{denied}");
        let fix = HostError::Fix {
            check: "kvm-access",
            description: "make /dev/kvm root:kvm 0660".into(),
            source: Box::new(denied),
        };
        assert!(
            fix.to_string().starts_with(
                "fix kvm-access (make /dev/kvm root:kvm 0660): cannot chmod 0660 /dev/kvm"
            ),
            "{fix}"
        );
        assert!(fix.hint().unwrap().contains("as root"));
    }
}
