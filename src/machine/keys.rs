//! SSH keys: Vagrant's well-known insecure keys (what boxes accept on first
//! boot) and the ed25519 key kvmdrive generates for each machine.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, LineEnding, PrivateKey};

/// Vagrant's insecure private keys, public knowledge, published by HashiCorp
/// so boxes can be reached before a machine gets its own key.
pub const INSECURE_KEYS: [(&str, &str); 2] = [
    (
        "insecure_ed25519",
        include_str!("../../boxes/keys/vagrant.key.ed25519"),
    ),
    ("insecure_rsa", include_str!("../../boxes/keys/vagrant")),
];

/// The public halves of [`INSECURE_KEYS`], as boxes list them in
/// `authorized_keys`.
pub const INSECURE_PUBLIC_KEYS: [&str; 2] = [
    include_str!("../../boxes/keys/vagrant.pub.ed25519"),
    include_str!("../../boxes/keys/vagrant.pub"),
];

/// A key file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the SSH key {}: {source}", path.display())]
pub struct KeyFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes `contents` to `path` with mode 0600, atomically replacing it
/// through a temporary file of its own: machines brought up in parallel
/// write the same shared file at once (a fixed temporary name made the
/// second rename fail with a bare "No such file or directory").
fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyFileError> {
    let err = |source| KeyFileError {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    // tempfile creates the file 0600.
    let mut f = tempfile::Builder::new()
        .prefix(".key-")
        .tempfile_in(dir)
        .map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.as_file().sync_all().map_err(err)?;
    f.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Files holding the insecure keys under `dir` (written once).
pub fn insecure_key_files(dir: &Path) -> Result<Vec<PathBuf>, KeyFileError> {
    INSECURE_KEYS
        .iter()
        .map(|(name, key)| {
            let path = dir.join(name);
            if !path.exists() {
                write_private(&path, key.as_bytes())?;
            }
            Ok(path)
        })
        .collect()
}

/// A machine's own key pair.
#[derive(Debug, Clone)]
pub struct MachineKey {
    pub private_path: PathBuf,
    /// `ssh-ed25519 AAAA... kvmdrive`
    pub public_line: String,
}

/// Loads `dir/id_ed25519`, or generates it (private key 0600).
pub fn machine_key(dir: &Path) -> Result<MachineKey, String> {
    let private_path = dir.join("id_ed25519");
    let key = if private_path.exists() {
        PrivateKey::read_openssh_file(&private_path)
            .map_err(|e| format!("{}: {e}", private_path.display()))?
    } else {
        let mut key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519)
            .map_err(|e| format!("cannot generate a key: {e}"))?;
        key.set_comment("kvmdrive");
        let pem = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| format!("cannot encode a key: {e}"))?;
        write_private(&private_path, pem.as_bytes()).map_err(|e| e.to_string())?;
        key
    };
    let public_line = key
        .public_key()
        .to_openssh()
        .map_err(|e| format!("cannot encode a public key: {e}"))?;
    let public_path = dir.join("id_ed25519.pub");
    fs::write(&public_path, format!("{public_line}\n"))
        .map_err(|e| format!("cannot write {}: {e}", public_path.display()))?;
    Ok(MachineKey {
        private_path,
        public_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn machine_key_is_private_stable_and_ed25519() {
        let tmp = tempfile::tempdir().unwrap();
        let a = machine_key(tmp.path()).unwrap();
        let mode = fs::metadata(&a.private_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            a.public_line.starts_with("ssh-ed25519 "),
            "{}",
            a.public_line
        );
        let b = machine_key(tmp.path()).unwrap();
        assert_eq!(a.public_line, b.public_line, "an existing key is reused");
    }

    #[test]
    fn insecure_keys_parse_and_are_written_0600() {
        let ed25519 = PrivateKey::from_openssh(INSECURE_KEYS[0].1).expect("embedded key parses");
        assert_eq!(ed25519.algorithm(), Algorithm::Ed25519);
        // The RSA key is PKCS#1 PEM, which OpenSSH reads as it is.
        assert!(INSECURE_KEYS[1]
            .1
            .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        // The public halves are those of the private keys.
        let public = ed25519.public_key().to_openssh().unwrap();
        assert_eq!(
            public.split_whitespace().nth(1),
            INSECURE_PUBLIC_KEYS[0].split_whitespace().nth(1)
        );
        assert!(INSECURE_PUBLIC_KEYS[1].starts_with("ssh-rsa AAAA"));
        let tmp = tempfile::tempdir().unwrap();
        for path in insecure_key_files(tmp.path()).unwrap() {
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    /// Machines brought up in parallel write the shared insecure keys at
    /// the same moment; every one of them must succeed.
    #[test]
    fn parallel_writers_of_the_insecure_keys_all_succeed() {
        for _ in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("state");
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| insecure_key_files(&dir)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for r in results {
                let paths = r.expect("a parallel writer failed");
                assert_eq!(fs::read_to_string(&paths[0]).unwrap(), INSECURE_KEYS[0].1);
            }
        }
        let e = insecure_key_files(Path::new("/proc/nonexistent/state")).unwrap_err();
        assert!(
            e.to_string()
                .contains("/proc/nonexistent/state/insecure_ed25519"),
            "{e}"
        );
    }
}
