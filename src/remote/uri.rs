//! libvirt connection URIs, as far as kvmdrive must understand them: local
//! or remote, and for a remote one the SSH login libvirt itself would use
//! (user, host, port, `keyfile`, `no_verify`, `known_hosts` parameters; see
//! <https://libvirt.org/uri.html>).

use url::Url;

/// A remote libvirt URI, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUri {
    /// `ssh`, `libssh`, `libssh2`, `tcp`, `tls` (`qemu://host/` means tls).
    pub transport: String,
    pub host: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// `(name, value)` of the query string, in order.
    pub params: Vec<(String, String)>,
}

impl RemoteUri {
    /// `None` for a local URI (no host part: `qemu:///system`,
    /// `qemu+unix:///system`, `test:///default`) or one that does not parse.
    pub fn parse(uri: &str) -> Option<RemoteUri> {
        let url = Url::parse(uri).ok()?;
        let host = url.host_str().filter(|h| !h.is_empty())?;
        let transport = match url.scheme().split_once('+') {
            Some((_, t)) => t.to_owned(),
            None => "tls".to_owned(),
        };
        if transport == "unix" || transport == "ext" {
            return None;
        }
        Some(RemoteUri {
            transport,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            user: Some(url.username().to_owned()).filter(|u| !u.is_empty()),
            port: url.port(),
            params: url
                .query_pairs()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        })
    }

    /// The value of query parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether libvirt itself reaches the host over SSH (then the URI's
    /// port is the SSH port).
    pub fn is_ssh(&self) -> bool {
        matches!(self.transport.as_str(), "ssh" | "libssh" | "libssh2")
    }
}

/// Whether `uri` names a libvirt on another machine.
pub fn is_remote(uri: &str) -> bool {
    RemoteUri::parse(uri).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris_are_local() {
        for u in [
            "qemu:///system",
            "qemu:///session",
            "qemu+unix:///system",
            "test:///default",
            "not a uri",
        ] {
            assert!(!is_remote(u), "{u}");
        }
    }

    #[test]
    fn ssh_uri_parts() {
        let r = RemoteUri::parse(
            "qemu+ssh://admin@hv1.example.com:2222/system?keyfile=/k/id&no_verify=1",
        )
        .unwrap();
        assert_eq!(r.transport, "ssh");
        assert_eq!(r.host, "hv1.example.com");
        assert_eq!(r.user.as_deref(), Some("admin"));
        assert_eq!(r.port, Some(2222));
        assert_eq!(r.param("keyfile"), Some("/k/id"));
        assert_eq!(r.param("no_verify"), Some("1"));
        assert!(r.is_ssh());
        let tls = RemoteUri::parse("qemu://hv2/system").unwrap();
        assert_eq!((tls.transport.as_str(), tls.user.as_deref()), ("tls", None));
        assert!(!tls.is_ssh());
    }
}
