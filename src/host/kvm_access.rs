//! Can the user libvirt runs qemu as open /dev/kvm?
//!
//! libvirt answers this itself, as that user (virFileAccessibleAs with the
//! user's uid, the configured group and the user's group list). When the
//! answer is no, a KVM domain fails to start ("Could not access KVM kernel
//! module: Permission denied"), and libvirt also throws its qemu
//! capabilities cache away on every define and start ("KVM was enabled when
//! probing ..., but it is not available now") and re-probes qemu, about 40 s
//! each time. Without udev, /dev/kvm is root:root 0600, so this is the normal
//! state of a CI container.
//!
//! [`DevNode::stat`] and [`Identity::resolve`] do the I/O; [`can_open_rw`]
//! is the pure verdict.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

pub const DEV_KVM: &str = "/dev/kvm";

/// Owner and mode of a device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DevNode {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (e.g. 0o660).
    pub mode: u32,
}

impl DevNode {
    pub fn stat(path: &Path) -> Option<DevNode> {
        let m = std::fs::metadata(path).ok()?;
        Some(DevNode {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
        })
    }

    /// `root:kvm 0660`, with names where they resolve.
    pub fn describe(&self) -> String {
        format!(
            "{}:{} {:04o}",
            user_name(self.uid).unwrap_or_else(|| self.uid.to_string()),
            group_name(self.gid).unwrap_or_else(|| self.gid.to_string()),
            self.mode
        )
    }
}

/// A user as libvirt would run qemu: uid, the primary group (the configured
/// `group`) and every group the process would carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Identity {
    /// Resolves `user`/`group` as qemu.conf names them (`+N` means uid/gid N).
    /// The group list is what libvirt computes: the user's group list
    /// (including its primary group from passwd) plus the configured group.
    pub fn resolve(user: &str, group: &str) -> Result<Identity, String> {
        use nix::unistd::{Gid, Group, Uid, User};
        let pw = match user.strip_prefix('+') {
            Some(n) => {
                let uid: u32 = n.parse().map_err(|_| format!("bad uid {user:?}"))?;
                User::from_uid(Uid::from_raw(uid)).ok().flatten()
            }
            None => User::from_name(user).ok().flatten(),
        }
        .ok_or_else(|| format!("no such user {user:?}"))?;
        let gid = match group.strip_prefix('+') {
            Some(n) => n.parse().map_err(|_| format!("bad gid {group:?}"))?,
            None => Group::from_name(group)
                .ok()
                .flatten()
                .ok_or_else(|| format!("no such group {group:?}"))?
                .gid
                .as_raw(),
        };
        let cname = std::ffi::CString::new(pw.name.clone()).map_err(|e| e.to_string())?;
        let mut groups: Vec<u32> = nix::unistd::getgrouplist(&cname, pw.gid)
            .map(|g| g.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_else(|_| vec![pw.gid.as_raw()]);
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        Ok(Identity {
            user: pw.name,
            uid: pw.uid.as_raw(),
            gid,
            groups,
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Whether `who` may open a node with `node`'s owner and mode for reading
/// and writing (root always may; otherwise owner, then group, then other
/// bits decide, as the kernel does without ACLs).
pub fn can_open_rw(who: &Identity, node: &DevNode) -> bool {
    if who.is_root() {
        return true;
    }
    let bits = if who.uid == node.uid {
        (node.mode >> 6) & 0o7
    } else if who.gid == node.gid || who.groups.contains(&node.gid) {
        (node.mode >> 3) & 0o7
    } else {
        node.mode & 0o7
    };
    bits & 0o6 == 0o6
}

/// The node udev's usual rule makes: root:kvm 0660.
pub fn udev_node(kvm_gid: u32) -> DevNode {
    DevNode {
        uid: 0,
        gid: kvm_gid,
        mode: 0o660,
    }
}

/// gid of the `kvm` group, if there is one.
pub fn kvm_gid() -> Option<u32> {
    nix::unistd::Group::from_name("kvm")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

pub fn user_name_exists(name: &str) -> bool {
    nix::unistd::User::from_name(name).ok().flatten().is_some()
}

pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

pub fn group_name(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_user() -> Identity {
        // Debian's libvirt-qemu: primary group kvm (107), configured group
        // libvirt-qemu (64055).
        Identity {
            user: "libvirt-qemu".into(),
            uid: 64055,
            gid: 64055,
            groups: vec![107, 64055],
        }
    }

    #[test]
    fn root_only_node_shuts_out_the_qemu_user() {
        let node = DevNode {
            uid: 0,
            gid: 0,
            mode: 0o600,
        };
        assert!(!can_open_rw(&qemu_user(), &node));
        let root = Identity {
            user: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
        };
        assert!(can_open_rw(&root, &node));
    }

    #[test]
    fn udev_node_lets_the_kvm_group_in() {
        assert!(can_open_rw(&qemu_user(), &udev_node(107)));
        let stranger = Identity {
            user: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        };
        assert!(!can_open_rw(&stranger, &udev_node(107)));
    }

    #[test]
    fn world_rw_and_owner_bits() {
        let node = DevNode {
            uid: 0,
            gid: 0,
            mode: 0o666,
        };
        let stranger = Identity {
            user: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        assert!(can_open_rw(&stranger, &node));
        // The owner's bits decide for the owner, even when group bits would allow.
        let node = DevNode {
            uid: 64055,
            gid: 107,
            mode: 0o460,
        };
        assert!(!can_open_rw(&qemu_user(), &node));
    }
}
