//! SSH keys: Vagrant's well-known insecure keys (what boxes accept on first
//! boot) and the ed25519 key kvmdrive generates for each machine.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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

/// Writes `contents` to `path` with mode 0600 (atomically replacing it).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Files holding the insecure keys under `dir` (written once).
pub fn insecure_key_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
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
        write_private(&private_path, pem.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", private_path.display()))?;
        key
    };
    let public_line = key
        .public_key()
        .to_openssh()
        .map_err(|e| format!("cannot encode a public key: {e}"))?;
    fs::write(dir.join("id_ed25519.pub"), format!("{public_line}\n"))
        .map_err(|e| format!("cannot write the public key: {e}"))?;
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
        let tmp = tempfile::tempdir().unwrap();
        for path in insecure_key_files(tmp.path()).unwrap() {
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
