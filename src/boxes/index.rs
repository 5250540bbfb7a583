//! `kvmdrive box index`: catalogs for a directory of `.box` files, so a team
//! can serve its boxes from any static web server.
//!
//! Files are named `NAME-VERSION[-ARCH].box` (`debian-12-1.2.0-amd64.box`);
//! `--name` overrides NAME. The architecture comes from the file name, else
//! from the box's `metadata.json`, else `--architecture`, else the host's.
//! For each box name the catalog goes to `DIR/NAME.json`; an `owner/name`
//! box also gets `DIR/owner/name`, so `VAGRANT_SERVER_URL=BASE_URL kvmdrive
//! box add owner/name` finds it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use reqwest::Url;

use super::archive;
use super::catalog::{
    host_arch, normalize_arch, Catalog, CatalogProvider, CatalogVersion, PROVIDER,
};
use super::checksum;
use super::version::Version;
use super::{io_err, BoxError};

const KNOWN_ARCHES: [&str; 10] = [
    "amd64", "x86_64", "arm64", "aarch64", "i386", "i686", "ppc64le", "s390x", "riscv64", "armv7",
];

/// What to index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub dir: PathBuf,
    pub base_url: String,
    pub name: Option<String>,
    pub architecture: Option<String>,
}

/// A catalog written by [`index`].
#[derive(Debug, Clone)]
pub struct WrittenCatalog {
    pub catalog: Catalog,
    /// Files written (`NAME.json`, and `owner/name` for `owner/name` boxes).
    pub files: Vec<PathBuf>,
    /// URLs they are served at under the base URL.
    pub urls: Vec<String>,
}

/// Everything [`index`] did.
#[derive(Debug, Clone)]
pub struct IndexReport {
    pub catalogs: Vec<WrittenCatalog>,
    /// Box files that were skipped, and why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Splits `NAME-VERSION[-ARCH]` (the file name without `.box`).
pub fn parse_file_stem(
    stem: &str,
    name_override: Option<&str>,
) -> Option<(String, Version, Option<String>)> {
    let mut rest = stem;
    let mut arch = None;
    if let Some((head, last)) = rest.rsplit_once('-') {
        if KNOWN_ARCHES.contains(&last.to_ascii_lowercase().as_str()) {
            arch = Some(normalize_arch(last));
            rest = head;
        }
    }
    let (name, version_text) = match rest.rsplit_once('-') {
        Some((n, v))
            if v.starts_with(|c: char| c.is_ascii_digit()) && Version::parse(v).is_ok() =>
        {
            (n.to_owned(), v)
        }
        _ if name_override.is_some() => (String::new(), rest),
        _ => return None,
    };
    let version = Version::parse(version_text).ok()?;
    let name = name_override.map(str::to_owned).unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    Some((name, version, arch))
}

/// Writes the catalogs for `opts.dir`.
pub fn index(opts: &IndexOptions) -> Result<IndexReport, BoxError> {
    let mut base = opts.base_url.trim().to_owned();
    if !base.ends_with('/') {
        base.push('/');
    }
    let base_url = Url::parse(&base).map_err(|e| BoxError::BadCatalog {
        url: opts.base_url.clone(),
        message: format!("not a valid base URL: {e}"),
    })?;
    let entries =
        fs::read_dir(&opts.dir).map_err(io_err(format!("cannot read {}", opts.dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "box") && p.is_file())
        .collect();
    files.sort();

    type Versions = BTreeMap<String, (Version, Vec<CatalogProvider>)>;
    let mut boxes: BTreeMap<String, Versions> = BTreeMap::new();
    let mut skipped: Vec<(PathBuf, String)> = Vec::new();
    for path in files {
        let file_name = path
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .into_owned();
        let stem = file_name.trim_end_matches(".box");
        let Some((name, version, file_arch)) = parse_file_stem(stem, opts.name.as_deref()) else {
            skipped.push((path, "name is not NAME-VERSION[-ARCH].box".into()));
            continue;
        };
        let meta = match archive::metadata_from_archive(&path) {
            Ok(m) => m,
            Err(e) => {
                skipped.push((path, e));
                continue;
            }
        };
        let arch = file_arch
            .or(meta.architecture.as_deref().map(normalize_arch))
            .or(opts.architecture.as_deref().map(normalize_arch))
            .unwrap_or_else(|| host_arch().to_owned());
        let digests = checksum::hash_file(&path, None)
            .map_err(io_err(format!("cannot read {}", path.display())))?;
        let url = base_url
            .join(&file_name)
            .map_err(|e| BoxError::BadCatalog {
                url: opts.base_url.clone(),
                message: e.to_string(),
            })?;
        let providers = &mut boxes
            .entry(name)
            .or_default()
            .entry(version.to_string())
            .or_insert_with(|| (version.clone(), Vec::new()))
            .1;
        if providers
            .iter()
            .any(|p| p.architecture.as_deref() == Some(arch.as_str()))
        {
            skipped.push((
                path,
                format!("another file already provides {version} for {arch}"),
            ));
            continue;
        }
        providers.push(CatalogProvider {
            name: PROVIDER.into(),
            url: url.to_string(),
            checksum_type: Some("sha256".into()),
            checksum: Some(digests.sha256),
            architecture: Some(arch),
            default_architecture: Some(false),
        });
    }

    let mut written = Vec::new();
    for (name, versions) in boxes {
        let mut versions: Vec<(Version, Vec<CatalogProvider>)> = versions.into_values().collect();
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        let catalog = Catalog {
            name: Some(name.clone()),
            description: None,
            versions: versions
                .into_iter()
                .map(|(v, mut providers)| {
                    providers.sort_by(|a, b| a.architecture.cmp(&b.architecture));
                    let default = providers
                        .iter()
                        .position(|p| p.architecture.as_deref() == Some("amd64"))
                        .unwrap_or(0);
                    providers[default].default_architecture = Some(true);
                    CatalogVersion {
                        version: v.to_string(),
                        providers,
                    }
                })
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&catalog).expect("serializable");
        text.push('\n');
        let mut rels = vec![format!("{name}.json")];
        if name.contains('/') {
            rels.push(name.clone());
        }
        let mut files = Vec::new();
        let mut urls = Vec::new();
        for rel in rels {
            let path = opts.dir.join(&rel);
            write_atomically(&path, text.as_bytes())?;
            urls.push(base_url.join(&rel).map(|u| u.to_string()).unwrap_or(rel));
            files.push(path);
        }
        written.push(WrittenCatalog {
            catalog,
            files,
            urls,
        });
    }
    if written.is_empty() && !skipped.is_empty() {
        let reasons: Vec<String> = skipped
            .iter()
            .map(|(p, why)| format!("{}: {why}", p.display()))
            .collect();
        return Err(BoxError::BadArchive {
            path: opts.dir.clone(),
            message: format!("no usable .box files ({})", reasons.join("; ")),
        });
    }
    Ok(IndexReport {
        catalogs: written,
        skipped,
    })
}

/// Writes through a temporary file and a rename, so a web server never
/// serves half a catalog.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BoxError> {
    let dir = path.parent().expect("inside DIR");
    fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(io_err(format!("cannot write in {}", dir.display())))?;
    use std::io::Write;
    tmp.write_all(bytes)
        .map_err(io_err(format!("cannot write {}", path.display())))?;
    let file = tmp
        .persist(path)
        .map_err(|e| io_err(format!("cannot write {}", path.display()))(e.error))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = file.set_permissions(fs::Permissions::from_mode(0o644));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(stem: &str, name: Option<&str>) -> Option<(String, String, Option<String>)> {
        parse_file_stem(stem, name).map(|(n, v, a)| (n, v.to_string(), a))
    }

    #[test]
    fn file_names() {
        assert_eq!(
            parsed("debian-12-1.2.0-amd64", None),
            Some(("debian-12".into(), "1.2.0".into(), Some("amd64".into())))
        );
        assert_eq!(
            parsed("debian-12-1.2.0-x86_64", None),
            Some(("debian-12".into(), "1.2.0".into(), Some("amd64".into())))
        );
        assert_eq!(
            parsed("web-2.0.0.rc1", None),
            Some(("web".into(), "2.0.0.rc1".into(), None))
        );
        assert_eq!(parsed("web", None), None);
        assert_eq!(parsed("1.0-amd64", None), None, "no name");
        assert_eq!(
            parsed("1.0-amd64", Some("acme/web")),
            Some(("acme/web".into(), "1.0".into(), Some("amd64".into())))
        );
        assert_eq!(
            parsed("whatever-3", Some("acme/web")),
            Some(("acme/web".into(), "3".into(), None))
        );
    }
}
