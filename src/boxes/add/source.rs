//! What a SOURCE of `box add` (or a machine's `box`) points at: a local
//! file, an `http(s)://` or `file://` URL, or an `owner/name` shorthand
//! ([`classify`]); and for `up`, whether a `box` is a direct file or URL
//! reference and the box name such a reference is added under.

use std::path::{Path, PathBuf};

use reqwest::Url;

use crate::boxes::BoxError;

/// Where a SOURCE points.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Source {
    File(PathBuf),
    Url(Url),
    Shorthand(String),
}

pub(super) fn is_shorthand(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    matches!(s.split_once('/'), Some((owner, name)) if part(owner) && part(name))
}

pub(super) fn classify(s: &str) -> Result<Source, BoxError> {
    let unknown = || BoxError::UnknownSource {
        source_text: s.to_owned(),
    };
    if s.contains("://") {
        let url = Url::parse(s).map_err(|_| unknown())?;
        return match url.scheme() {
            "file" => url.to_file_path().map(Source::File).map_err(|_| unknown()),
            "http" | "https" => Ok(Source::Url(url)),
            _ => Err(unknown()),
        };
    }
    let path = Path::new(s);
    if path.exists() {
        return Ok(Source::File(path.to_owned()));
    }
    if s.ends_with(".box") || s.ends_with(".json") || s.starts_with('.') || s.starts_with('/') {
        return Err(BoxError::Io {
            context: format!("cannot read {s}"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    if is_shorthand(s) {
        return Ok(Source::Shorthand(s.to_owned()));
    }
    Err(unknown())
}

/// Whether a machine's `box` names a file or URL rather than a cached box.
pub(super) fn is_direct_reference(s: &str) -> bool {
    s.contains("://") || s.ends_with(".box") || Path::new(s).is_file()
}

/// Box name for a `box: path/or/url.box` machine: the file name without `.box`.
pub(super) fn name_from_reference(s: &str) -> String {
    let last = s.trim_end_matches('/').rsplit('/').next().unwrap_or(s);
    let last = last.split(['?', '#']).next().unwrap_or(last);
    last.strip_suffix(".box").unwrap_or(last).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn sources_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.box");
        fs::write(&file, "x").unwrap();
        assert_eq!(
            classify(file.to_str().unwrap()).unwrap(),
            Source::File(file.clone())
        );
        assert_eq!(
            classify(&format!("file://{}", file.display())).unwrap(),
            Source::File(file.clone())
        );
        assert!(matches!(
            classify("https://example.test/x.box").unwrap(),
            Source::Url(_)
        ));
        assert_eq!(
            classify("debian/bookworm64").unwrap(),
            Source::Shorthand("debian/bookworm64".into())
        );
        assert_eq!(
            classify("generic/debian12").unwrap(),
            Source::Shorthand("generic/debian12".into())
        );
        assert!(matches!(classify("missing.box"), Err(BoxError::Io { .. })));
        assert!(matches!(
            classify("./missing/thing"),
            Err(BoxError::Io { .. })
        ));
        assert!(matches!(
            classify("ftp://x/y.box"),
            Err(BoxError::UnknownSource { .. })
        ));
        assert!(matches!(
            classify("a/b/c"),
            Err(BoxError::UnknownSource { .. })
        ));
        assert!(matches!(
            classify("justaname"),
            Err(BoxError::UnknownSource { .. })
        ));
    }

    #[test]
    fn direct_references_and_their_names() {
        assert!(is_direct_reference("https://x.test/boxes/deb.box"));
        assert!(is_direct_reference("out/deb.box"));
        assert!(!is_direct_reference("debian/bookworm64"));
        assert_eq!(
            name_from_reference("https://x.test/boxes/deb-12.box?sig=1"),
            "deb-12"
        );
        assert_eq!(name_from_reference("/tmp/a/b.box"), "b");
        assert_eq!(name_from_reference("plain"), "plain");
    }
}
