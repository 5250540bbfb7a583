//! Where the host's programs are: a PATH lookup that also tries the sbin
//! directories a non-login PATH lacks. Its own module so that the daemon
//! starter and the fact gatherer (which reads the daemons' state) both use
//! it without depending on each other.

use std::path::PathBuf;

/// Finds a program on PATH, then in the sbin directories that a non-login
/// PATH often lacks.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
