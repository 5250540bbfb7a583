//! Guest architecture: kvmdrive runs guests of the host's architecture only,
//! so a box (or a `box_architecture`) for another one is refused before
//! anything is created, instead of booting it as the host's.

use crate::boxes::archive::BoxMetadata;
use crate::boxes::catalog::{host_arch, normalize_arch};
use crate::boxes::InstalledBox;

#[derive(Debug, thiserror::Error)]
#[error("box {box_name} is for {arch}, but this host runs {host} guests only")]
pub struct ArchError {
    pub box_name: String,
    pub arch: String,
    pub host: String,
    /// Whether the architecture came from the box itself (not `box_architecture`).
    pub from_box: bool,
}

impl ArchError {
    pub fn hint(&self) -> String {
        if self.from_box {
            format!("use a box built for {}", self.host)
        } else {
            format!(
                "remove `box_architecture: {}` (kvmdrive runs {} guests here)",
                self.arch, self.host
            )
        }
    }
}

/// Refuses an architecture (as Vagrant spells it, or an alias such as
/// `aarch64`) that is not the host's; `None`, `""` and `auto` are the host's.
pub fn check(box_name: &str, arch: Option<&str>) -> Result<(), ArchError> {
    let host = host_arch();
    match arch.map(str::trim) {
        None | Some("") | Some("auto") | Some("unknown") => Ok(()),
        Some(a) if normalize_arch(a) == host => Ok(()),
        Some(a) => Err(ArchError {
            box_name: box_name.to_owned(),
            arch: normalize_arch(a),
            host: host.to_owned(),
            from_box: false,
        }),
    }
}

/// Checks an installed box: the architecture its metadata.json declares,
/// else the one it is cached under.
pub fn check_box(b: &InstalledBox) -> Result<(), ArchError> {
    let declared = BoxMetadata::read(&b.dir).ok().and_then(|m| m.architecture);
    check(
        &b.name,
        Some(declared.as_deref().unwrap_or(&b.architecture)),
    )
    .map_err(|e| ArchError {
        from_box: true,
        ..e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hosts_architecture_passes() {
        let host = host_arch();
        assert!(check("b", None).is_ok());
        assert!(check("b", Some("auto")).is_ok());
        assert!(check("b", Some(host)).is_ok());
        let foreign = if host == "arm64" { "amd64" } else { "arm64" };
        let e = check("debian/12", Some(foreign)).unwrap_err();
        assert_eq!(e.arch, foreign);
        assert!(e.to_string().contains("debian/12"), "{e}");
        assert!(e.hint().contains(foreign));
        // aliases are normalised
        let alias = if host == "amd64" { "x86_64" } else { "aarch64" };
        assert!(check("b", Some(alias)).is_ok());
    }

    #[test]
    fn a_box_is_judged_by_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metadata.json"),
            r#"{"provider":"libvirt","format":"qcow2","architecture":"s390x"}"#,
        )
        .unwrap();
        let b = InstalledBox {
            name: "x/y".into(),
            version: "1".into(),
            architecture: host_arch().into(),
            dir: dir.path().to_owned(),
            image: dir.path().join("box.img"),
            virtual_size: 1,
        };
        let e = check_box(&b).unwrap_err();
        assert_eq!(e.arch, "s390x");
        assert!(!e.hint().contains("box_architecture"), "{}", e.hint());
    }
}
