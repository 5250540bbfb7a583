//! `synced_folders:` in kvmdrive.yml (and what Molecule's `synced_folder: true`
//! and `vm.synced_folder` lines become): a host directory made visible in the
//! guest, by rsync (a one-way copy over SSH, Vagrant's default for libvirt),
//! 9p or virtiofs (shared live through a `<filesystem>` device). Typed and
//! checked at load; `machine::sync` carries them out.

use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// How a folder reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncType {
    /// One-way copy over SSH at `up` and `kvmdrive rsync`.
    #[default]
    Rsync,
    /// virtio-9p, mapped access mode: live, both ways.
    #[serde(rename = "9p")]
    NineP,
    /// virtiofs (virtiofsd on the host, shared memory): live, both ways.
    Virtiofs,
}

impl SyncType {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncType::Rsync => "rsync",
            SyncType::NineP => "9p",
            SyncType::Virtiofs => "virtiofs",
        }
    }
}

/// An absolute path in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GuestPath(pub String);

impl GuestPath {
    pub fn parse(s: &str) -> Result<GuestPath, String> {
        if !s.starts_with('/') || s.contains('\0') || s.contains('\n') {
            return Err(format!(
                "guest path `{s}` must be absolute (start with `/`), e.g. /vagrant"
            ));
        }
        let trimmed = s.trim_end_matches('/');
        Ok(GuestPath(
            if trimmed.is_empty() { "/" } else { trimmed }.to_owned(),
        ))
    }
}

impl<'de> Deserialize<'de> for GuestPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        GuestPath::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// One synced folder as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncedFolder {
    /// Host directory; relative paths are taken from the project directory.
    pub src: PathBuf,
    /// Where it appears in the guest.
    pub dest: GuestPath,
    #[serde(rename = "type", default)]
    pub kind: SyncType,
    /// rsync only: patterns left out of the copy (rsync `--exclude`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// rsync only: guest owner of the copy (default: the SSH user).
    pub owner: Option<String>,
    /// rsync only: guest group of the copy (default: the owner's group).
    pub group: Option<String>,
    /// `true` removes a folder of the same `dest` set in `defaults`.
    #[serde(default)]
    pub disabled: bool,
}

impl SyncedFolder {
    /// Vagrant's default folder: the project directory at /vagrant, by rsync.
    pub fn vagrant_default() -> SyncedFolder {
        SyncedFolder {
            src: PathBuf::from("."),
            dest: GuestPath("/vagrant".into()),
            kind: SyncType::Rsync,
            exclude: vec![".vagrant/".into(), ".kvmdrive/".into()],
            owner: None,
            group: None,
            disabled: false,
        }
    }

    /// The host directory, relative paths taken from `base`.
    pub fn host_dir(&self, base: &Path) -> PathBuf {
        if self.src.is_absolute() {
            self.src.clone()
        } else {
            base.join(&self.src)
        }
    }

    /// The tag the guest mounts a 9p/virtiofs share by (at most 31 bytes, the
    /// 9p limit): stable for a destination.
    pub fn mount_tag(&self) -> String {
        format!(
            "kvmdrive-{}",
            crate::machine::project::short_hash(self.dest.0.as_bytes())
        )
    }
}

/// The folders a machine ends up with: `defaults`' first, then the machine's;
/// a later entry with the same `dest` replaces an earlier one (as Vagrant
/// merges by guest path), and `disabled: true` entries are dropped.
pub fn merge(defaults: &[SyncedFolder], machine: &[SyncedFolder]) -> Vec<SyncedFolder> {
    let mut out: Vec<SyncedFolder> = Vec::new();
    for f in defaults.iter().chain(machine) {
        out.retain(|o| o.dest != f.dest);
        out.push(f.clone());
    }
    out.retain(|f| !f.disabled);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<Vec<SyncedFolder>, String> {
        serde_norway::from_str(y).map_err(|e| e.to_string())
    }

    #[test]
    fn folders_parse_with_defaults_and_types() {
        let f = parse(
            "- {src: ., dest: /vagrant/, exclude: [.git/]}\n- {src: /srv, dest: /srv, type: 9p}\n- {src: d, dest: /d, type: virtiofs, owner: www-data}\n",
        )
        .unwrap();
        assert_eq!(f[0].kind, SyncType::Rsync);
        assert_eq!(f[0].dest.0, "/vagrant");
        assert_eq!(f[0].exclude, vec![".git/"]);
        assert_eq!(f[1].kind, SyncType::NineP);
        assert_eq!(f[2].kind, SyncType::Virtiofs);
        assert_eq!(f[2].owner.as_deref(), Some("www-data"));
        assert_eq!(f[2].host_dir(Path::new("/p")), PathBuf::from("/p/d"));
        assert_eq!(f[1].host_dir(Path::new("/p")), PathBuf::from("/srv"));
    }

    #[test]
    fn bad_folders_are_refused_naming_the_problem() {
        assert!(parse("- {src: ., dest: vagrant}\n")
            .unwrap_err()
            .contains("absolute"));
        assert!(parse("- {src: ., dest: /v, type: nfs}\n")
            .unwrap_err()
            .contains("nfs"));
        assert!(parse("- {src: ., dest: /v, exlude: [a]}\n")
            .unwrap_err()
            .contains("exlude"));
        assert!(parse("- {dest: /v}\n").unwrap_err().contains("src"));
    }

    #[test]
    fn machine_folders_replace_defaults_by_dest_and_disabled_drops() {
        let d = parse("- {src: ., dest: /vagrant}\n- {src: a, dest: /a}\n").unwrap();
        let m =
            parse("- {src: b, dest: /a, type: 9p}\n- {src: ., dest: /vagrant, disabled: true}\n")
                .unwrap();
        let out = merge(&d, &m);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].src, PathBuf::from("b"));
        assert_eq!(out[0].kind, SyncType::NineP);
    }

    #[test]
    fn mount_tags_are_short_and_differ_per_dest() {
        let a = SyncedFolder::vagrant_default();
        let mut b = a.clone();
        b.dest = GuestPath("/other".into());
        assert!(a.mount_tag().len() <= 31);
        assert_ne!(a.mount_tag(), b.mount_tag());
    }
}
