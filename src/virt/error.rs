//! What went wrong in a libvirt call, typed: [`VirtError`] keeps what
//! kvmdrive was doing, libvirt's message and the [`VirtErrorKind`] decided
//! from libvirt's error code (never from the message), so callers ask
//! `is_no_such_object()` or `kind()` instead of matching text. The hint comes
//! from the host checks (`crate::host::diagnose_start_failure`) where one
//! explains the message.

use virt::error::ErrorNumber;

use super::qemu_log;

/// The kinds of libvirt failure kvmdrive tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtErrorKind {
    NoDomain,
    NoNetwork,
    NoStorageVol,
    NoStoragePool,
    /// The object is in the wrong state for the call (e.g. not running).
    OperationInvalid,
    /// qemu stopped the guest because KVM could not run it.
    KvmInternalError,
    /// No connection to libvirt (no daemon, no socket, refused, auth).
    ConnectionFailed,
    /// The connection died during the run (libvirtd restarted or stopped)
    /// and a new one could not take the call over.
    ConnectionLost,
    Other,
}

impl VirtErrorKind {
    /// The kind of a libvirt error code; `message` only to recognise qemu's
    /// KVM internal error, which libvirt reports as a generic failure.
    pub fn classify(code: Option<ErrorNumber>, message: &str) -> VirtErrorKind {
        if qemu_log::is_kvm_internal_error(message) {
            return VirtErrorKind::KvmInternalError;
        }
        match code {
            Some(ErrorNumber::NoDomain | ErrorNumber::NoDomainMetadata) => VirtErrorKind::NoDomain,
            Some(ErrorNumber::NoNetwork) => VirtErrorKind::NoNetwork,
            Some(ErrorNumber::NoStorageVolume) => VirtErrorKind::NoStorageVol,
            Some(ErrorNumber::NoStoragePool) => VirtErrorKind::NoStoragePool,
            Some(ErrorNumber::OperationInvalid) => VirtErrorKind::OperationInvalid,
            Some(
                ErrorNumber::NoConnect
                | ErrorNumber::AuthFailed
                | ErrorNumber::Rpc
                | ErrorNumber::InvalidConn,
            ) => VirtErrorKind::ConnectionFailed,
            _ => VirtErrorKind::Other,
        }
    }

    /// Of a `virt` crate error.
    pub fn of(e: &virt::error::Error) -> VirtErrorKind {
        let code: Result<ErrorNumber, _> = e.code().into();
        VirtErrorKind::classify(code.ok(), e.message())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VirtError {
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String },
    #[error("{action}: {message}")]
    Call {
        action: String,
        message: String,
        kind: VirtErrorKind,
    },
}

impl VirtError {
    /// A failed call, from the `virt` crate's error.
    pub fn call(action: impl Into<String>, e: &virt::error::Error) -> VirtError {
        VirtError::Call {
            action: action.into(),
            message: e.message().to_owned(),
            kind: VirtErrorKind::of(e),
        }
    }

    /// A failure of kvmdrive's own around a call (e.g. unreadable XML).
    pub fn other(action: impl Into<String>, message: impl Into<String>) -> VirtError {
        VirtError::Call {
            action: action.into(),
            message: message.into(),
            kind: VirtErrorKind::Other,
        }
    }

    /// The same failure, marked as caused by a lost connection (see
    /// `virt::link`): its message then says so.
    pub fn connection_lost(self) -> VirtError {
        match self {
            VirtError::Call {
                action, message, ..
            } => VirtError::Call {
                action,
                message: format!(
                    "{message} (the connection to libvirtd was lost: was libvirtd restarted?)"
                ),
                kind: VirtErrorKind::ConnectionLost,
            },
            e @ VirtError::Connect { .. } => e,
        }
    }

    pub fn kind(&self) -> VirtErrorKind {
        match self {
            VirtError::Connect { .. } => VirtErrorKind::ConnectionFailed,
            VirtError::Call { kind, .. } => *kind,
        }
    }

    /// True when libvirt says the domain, network, volume or pool does not exist.
    pub fn is_no_such_object(&self) -> bool {
        matches!(
            self.kind(),
            VirtErrorKind::NoDomain
                | VirtErrorKind::NoNetwork
                | VirtErrorKind::NoStorageVol
                | VirtErrorKind::NoStoragePool
        )
    }

    /// What to do about it: a finding of `kvmdrive host check` when the
    /// message matches one, else general advice.
    pub fn hint(&self) -> Option<String> {
        if let Some(finding) = crate::host::diagnose_start_failure(&self.to_string()) {
            return Some(finding);
        }
        match self {
            VirtError::Connect { .. } => Some(
                "is libvirtd running? Run `kvmdrive host up` (it starts dbus, virtlogd and libvirtd, \
                 also without systemd), or pass --connect / set LIBVIRT_DEFAULT_URI"
                    .into(),
            ),
            VirtError::Call {
                kind: VirtErrorKind::ConnectionLost,
                ..
            } => Some(
                "libvirtd went away while kvmdrive worked (restarted or stopped): once it answers \
                 again (`virsh version`), run the command again; `up` and `destroy` finish what was \
                 left half-way"
                    .into(),
            ),
            VirtError::Call { message, .. } if message.contains("Permission denied") => Some(
                "libvirt (or qemu running as its own user) cannot access a file: check ownership of the \
                 storage pool and of /dev/kvm (`kvmdrive host check`)"
                    .into(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_libvirt_codes() {
        use VirtErrorKind as K;
        let k = |c| VirtErrorKind::classify(Some(c), "whatever");
        assert_eq!(k(ErrorNumber::NoDomain), K::NoDomain);
        assert_eq!(k(ErrorNumber::NoNetwork), K::NoNetwork);
        assert_eq!(k(ErrorNumber::NoStorageVolume), K::NoStorageVol);
        assert_eq!(k(ErrorNumber::NoStoragePool), K::NoStoragePool);
        assert_eq!(k(ErrorNumber::OperationInvalid), K::OperationInvalid);
        assert_eq!(k(ErrorNumber::NoConnect), K::ConnectionFailed);
        assert_eq!(k(ErrorNumber::InternalError), K::Other);
        assert_eq!(VirtErrorKind::classify(None, "x"), K::Other);
        assert_eq!(
            VirtErrorKind::classify(
                Some(ErrorNumber::InternalError),
                "process exited: KVM internal error. Suberror: 1"
            ),
            K::KvmInternalError
        );
    }

    #[test]
    fn kind_of_a_virt_crate_error() {
        // The one `virt::error::Error` constructible outside the crate.
        let nul = std::ffi::CString::new("a\0b").unwrap_err();
        let e = VirtError::call("define domain x", &virt::error::Error::from(nul));
        assert_eq!(e.kind(), VirtErrorKind::Other);
        assert!(!e.is_no_such_object());
        assert!(e.to_string().starts_with("define domain x: "), "{e}");
    }

    #[test]
    fn no_such_object_and_connection_failures() {
        let missing = VirtError::Call {
            action: "find domain x".into(),
            message: "no such domain".into(),
            kind: VirtErrorKind::NoDomain,
        };
        assert!(missing.is_no_such_object());
        let c = VirtError::Connect {
            uri: "qemu:///system".into(),
            message: "Failed to connect socket".into(),
        };
        assert_eq!(c.kind(), VirtErrorKind::ConnectionFailed);
        assert!(!c.is_no_such_object());
        assert!(c.hint().is_some());
    }

    #[test]
    fn a_lost_connection_says_so() {
        let e = VirtError::Call {
            action: "define the domain".into(),
            message: "internal error: client socket is closed".into(),
            kind: VirtErrorKind::Other,
        }
        .connection_lost();
        assert_eq!(e.kind(), VirtErrorKind::ConnectionLost);
        assert!(
            e.to_string()
                .starts_with("define the domain: internal error: client socket is closed"),
            "{e}"
        );
        assert!(
            e.to_string().contains("connection to libvirtd was lost"),
            "{e}"
        );
        assert!(e.hint().unwrap().contains("run the command again"));
    }
}
