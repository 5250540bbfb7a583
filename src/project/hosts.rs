//! The hypervisor hosts of a project: `hosts:` in kvmdrive.yml (or the
//! Molecule driver's `hosts:`), a list of libvirt URIs, and a machine's
//! `host:`, which pins it to one of them. Both are parsed here while the file
//! is read (a URI with a scheme, no duplicates, a pin that names a listed
//! host); where each machine then runs is decided by
//! [`crate::machine::placement`].

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A libvirt connection URI (`qemu+ssh://root@hv1/system`, `qemu:///system`,
/// `test:///path/node.xml`), checked to have a scheme.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostUri(pub String);

impl HostUri {
    pub fn parse(s: &str) -> Result<HostUri, String> {
        let s = s.trim();
        let ok = url::Url::parse(s).is_ok_and(|u| !u.scheme().is_empty()) && s.contains("://");
        if !ok {
            return Err(format!(
                "host `{s}` is not a libvirt URI: write e.g. `qemu+ssh://root@hv1.example.com/system`"
            ));
        }
        Ok(HostUri(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HostUri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HostUri::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// `hosts:`: distinct libvirt URIs, in the order written (the order breaks
/// placement ties).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts(pub Vec<HostUri>);

impl Hosts {
    pub fn parse(list: Vec<HostUri>) -> Result<Hosts, String> {
        for (i, h) in list.iter().enumerate() {
            if list[..i].contains(h) {
                return Err(format!("hosts: `{h}` is listed twice"));
            }
        }
        Ok(Hosts(list))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks a machine's `host:` against the list.
    pub fn check_pin(&self, machine: &str, pin: &HostUri) -> Result<(), String> {
        if self.0.contains(pin) {
            return Ok(());
        }
        if self.0.is_empty() {
            return Err(format!(
                "machine `{machine}`: `host: {pin}` needs the project's `hosts:` list (add it there)"
            ));
        }
        Err(format!(
            "machine `{machine}`: `host: {pin}` is not one of `hosts:` ({})",
            self.0
                .iter()
                .map(HostUri::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

impl<'de> Deserialize<'de> for Hosts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Hosts::parse(Vec::<HostUri>::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_need_a_scheme() {
        assert!(HostUri::parse("qemu+ssh://root@hv1/system").is_ok());
        assert!(HostUri::parse("qemu:///system").is_ok());
        assert!(HostUri::parse("test:///tmp/node.xml").is_ok());
        let e = HostUri::parse("hv1.example.com").unwrap_err();
        assert!(e.contains("not a libvirt URI"), "{e}");
    }

    #[test]
    fn duplicates_are_refused() {
        let a = HostUri::parse("qemu+ssh://a/system").unwrap();
        let e = Hosts::parse(vec![a.clone(), a]).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn a_pin_must_name_a_listed_host() {
        let a = HostUri::parse("qemu+ssh://a/system").unwrap();
        let b = HostUri::parse("qemu+ssh://b/system").unwrap();
        let hosts = Hosts::parse(vec![a.clone()]).unwrap();
        assert!(hosts.check_pin("web", &a).is_ok());
        let e = hosts.check_pin("web", &b).unwrap_err();
        assert!(
            e.contains("machine `web`") && e.contains("not one of"),
            "{e}"
        );
        let e = Hosts::default().check_pin("web", &a).unwrap_err();
        assert!(e.contains("needs the project's `hosts:`"), "{e}");
    }
}
