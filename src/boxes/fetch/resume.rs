//! Resuming downloads: the `.state` sidecar kept beside a partial file
//! ([`PartialState`]: URL and validator), whether a partial file can be
//! continued, re-hashing the bytes already there, and starting over.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::hash_worker::HashWorker;
use super::header_str;

/// Kept beside a partial download so a later run can resume it safely.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct PartialState {
    pub(super) url: String,
    pub(super) etag: Option<String>,
    pub(super) last_modified: Option<String>,
}

impl PartialState {
    pub(super) fn validator(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

/// Throws away a partial download to start from the first byte.
pub(super) fn restart(
    file: &mut fs::File,
    hasher: &mut HashWorker,
    offset: &mut u64,
) -> std::io::Result<()> {
    file.set_len(0)?;
    hasher.reset();
    *offset = 0;
    Ok(())
}

/// Whether `part` is a partial download of `url` that can be resumed.
pub fn has_partial(part: &Path, url: &Url) -> bool {
    let state: Option<PartialState> = fs::read(state_path(part))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    state.is_some_and(|s| s.url == url.as_str() && s.validator().is_some())
        && fs::metadata(part).is_ok_and(|m| m.len() > 0)
}

/// The sidecar file of a partial download.
pub fn state_path(part: &Path) -> PathBuf {
    let mut s = part.as_os_str().to_owned();
    s.push(".state");
    PathBuf::from(s)
}

pub(super) fn hash_prefix(part: &Path, hasher: &mut HashWorker) -> std::io::Result<u64> {
    let mut f = fs::File::open(part)?;
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        buf.truncate(n);
        total += n as u64;
        hasher.update(Bytes::from(buf));
    }
}

/// Start offset of `Content-Range: bytes START-END/TOTAL`.
pub(super) fn content_range_start(h: &HeaderMap) -> Option<u64> {
    let v = header_str(h, header::CONTENT_RANGE)?;
    let rest = v.trim().strip_prefix("bytes")?.trim();
    rest.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range_start(&h), Some(100));
        h.insert(header::CONTENT_RANGE, "bytes */200".parse().unwrap());
        assert_eq!(content_range_start(&h), None);
    }

    #[test]
    fn weak_etags_are_not_validators() {
        let s = PartialState {
            url: "u".into(),
            etag: Some("W/\"x\"".into()),
            last_modified: None,
        };
        assert_eq!(s.validator(), None);
        let s = PartialState {
            last_modified: Some("Tue, 01 Jan 2030 00:00:00 GMT".into()),
            ..s
        };
        assert_eq!(s.validator(), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
    }
}
