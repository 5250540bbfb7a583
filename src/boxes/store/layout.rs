//! Where the box cache keeps things: the store's roots (`boxes/`, `tmp/`,
//! `locks/`, Vagrant's `boxes/`), how a box name becomes a directory name
//! (`-VAGRANTSLASH-`) and back, the directory of one box version, and the
//! checks that keep names, versions and architectures inside the cache.

use std::path::PathBuf;

use super::BoxStore;
use crate::boxes::catalog::PROVIDER;
use crate::boxes::fetch::NetConfig;

impl BoxStore {
    /// The store at `$KVMDRIVE_HOME` (default `~/.local/share/kvmdrive`),
    /// also reading `$VAGRANT_HOME` (default `~/.vagrant.d`), with network
    /// settings from the environment.
    pub fn from_env() -> BoxStore {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/root".into());
        let kvmdrive_home = std::env::var_os("KVMDRIVE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".local/share/kvmdrive"));
        let vagrant_home = std::env::var_os("VAGRANT_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".vagrant.d"));
        BoxStore {
            home: kvmdrive_home,
            vagrant_home: Some(vagrant_home),
            net: NetConfig::from_env(),
        }
    }

    /// A store at `home` alone, with default network settings (tests, tools).
    pub fn new(home: impl Into<PathBuf>) -> BoxStore {
        BoxStore {
            home: home.into(),
            vagrant_home: None,
            net: NetConfig::default(),
        }
    }

    pub fn with_vagrant_home(mut self, dir: impl Into<PathBuf>) -> BoxStore {
        self.vagrant_home = Some(dir.into());
        self
    }

    pub fn with_net(mut self, net: NetConfig) -> BoxStore {
        self.net = net;
        self
    }

    pub fn boxes_dir(&self) -> PathBuf {
        self.home.join("boxes")
    }

    pub fn vagrant_boxes_dir(&self) -> Option<PathBuf> {
        self.vagrant_home.as_ref().map(|h| h.join("boxes"))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.home.join("tmp")
    }

    pub(super) fn locks_dir(&self) -> PathBuf {
        self.home.join("locks")
    }

    /// `owner/name` -> `owner-VAGRANTSLASH-name`, as Vagrant names the directory.
    pub fn dir_name(name: &str) -> String {
        name.replace('/', "-VAGRANTSLASH-")
    }

    pub(super) fn box_name(dir_name: &str) -> String {
        dir_name.replace("-VAGRANTSLASH-", "/")
    }

    /// Directory a box version goes to in kvmdrive's cache.
    pub fn provider_dir(&self, name: &str, version: &str, arch: &str) -> PathBuf {
        self.boxes_dir()
            .join(Self::dir_name(name))
            .join(version)
            .join(arch)
            .join(PROVIDER)
    }
}

/// Box names become directory names: letters, digits, `.`, `_`, `-` in
/// `/`-separated parts, none of them empty, `.` or `..` (Vagrant's names).
pub fn check_name(name: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if name.len() <= 200 && name.split('/').all(part_ok) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid box name (use letters, digits, `.`, `_`, `-`, and `/` between parts)"
        ))
    }
}

/// A version or architecture used as one directory name.
pub fn check_component(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("`{value}` is not a valid {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::BoxError;

    #[test]
    fn names_and_components_that_would_leave_the_cache_are_refused() {
        for ok in ["acme/web", "debian-12", "a.b_c/d-e", "generic/ubuntu2204"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "../x", "a/../b", "/abs", "a//b", "a/", ".", "a b", "a\\b", "x/..",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_component("version", "1.2.3-rc1").is_ok());
        assert!(check_component("architecture", "../x").is_err());
        assert!(check_component("architecture", "..").is_err());
        assert!(check_component("architecture", "").is_err());
        let home = tempfile::tempdir().unwrap();
        let store = BoxStore::new(home.path());
        assert!(matches!(
            store.lock("../evil"),
            Err(BoxError::InvalidName { .. })
        ));
        assert!(store.versions_of("../..").is_empty());
    }
}
