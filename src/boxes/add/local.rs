//! Local-file helpers of an add: whether a file is the one a cached box
//! came from (size, time, SHA-256), refreshing a recorded time, telling a
//! catalog file from a box, paths for messages, and the name of a partial
//! download.

use std::fs;
use std::path::{Path, PathBuf};

use reqwest::Url;
use sha2::Digest;

use crate::boxes::checksum::{self, Digests};
use crate::boxes::store::{SourceRecord, RECORD_FILE};
use crate::boxes::{io_err, BoxError};

/// Whether `path` is the file the record describes: same size and SHA-256.
/// The digest is kept in `digests` for the add that may follow.
pub(super) fn same_local_file(
    path: &Path,
    record: &SourceRecord,
    also: Option<checksum::ChecksumType>,
    digests: &mut Option<Digests>,
) -> Result<bool, BoxError> {
    let meta = fs::metadata(path).map_err(io_err(format!("cannot read {}", path.display())))?;
    if meta.len() != record.size {
        return Ok(false);
    }
    let unchanged = record.source == absolute(path).display().to_string()
        && record.source_mtime_ns.is_some()
        && record.source_mtime_ns == SourceRecord::mtime_ns(&meta);
    if unchanged {
        return Ok(true);
    }
    let d = checksum::hash_file(path, also)
        .map_err(io_err(format!("cannot read {}", path.display())))?;
    let same = d.sha256 == record.sha256;
    *digests = Some(d);
    Ok(same)
}

/// Records a touched but unchanged source file's new time, so the next
/// look needs no hashing. Best effort: a stale time only costs a rehash.
pub(super) fn refresh_mtime(dir: &Path, mut record: SourceRecord, path: &Path) {
    let Some(mtime) = fs::metadata(path)
        .ok()
        .and_then(|m| SourceRecord::mtime_ns(&m))
    else {
        return;
    };
    if record.source != absolute(path).display().to_string()
        || record.source_mtime_ns == Some(mtime)
    {
        return;
    }
    record.source_mtime_ns = Some(mtime);
    let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    let mut text = serde_json::to_vec_pretty(&record).expect("serializable");
    text.push(b'\n');
    if std::io::Write::write_all(&mut tmp, &text).is_ok() {
        let _ = tmp.persist(dir.join(RECORD_FILE));
    }
}

/// A path for messages: `./x.box` under the current directory, else absolute.
pub(super) fn shown(path: &Path) -> String {
    let abs = absolute(path);
    match std::env::current_dir()
        .ok()
        .and_then(|cwd| abs.strip_prefix(&cwd).ok().map(Path::to_owned))
    {
        Some(rel) if !rel.as_os_str().is_empty() => format!("./{}", rel.display()),
        _ => abs.display().to_string(),
    }
}

/// A catalog file starts with `{` (after blanks); a box never does.
pub(super) fn is_catalog_file(path: &Path) -> Result<bool, BoxError> {
    use std::io::Read;
    let mut head = [0u8; 64];
    let mut f = fs::File::open(path).map_err(io_err(format!("cannot open {}", path.display())))?;
    let n = f
        .read(&mut head)
        .map_err(io_err(format!("cannot read {}", path.display())))?;
    Ok(head[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'))
}

pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Name of the partial download of `url` for box `name`.
pub(super) fn partial_key(name: &str, url: &Url) -> String {
    let digest = sha2::Sha256::digest(format!("{name}\n{url}").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_keys_differ_per_box_and_url() {
        let u = Url::parse("http://127.0.0.1/a.box").unwrap();
        let v = Url::parse("http://127.0.0.1/b.box").unwrap();
        assert_ne!(partial_key("a", &u), partial_key("b", &u));
        assert_ne!(partial_key("a", &u), partial_key("a", &v));
        assert_eq!(partial_key("a", &u).len(), 24);
    }
}
