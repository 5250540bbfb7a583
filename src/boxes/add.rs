//! Adding boxes, the way Vagrant resolves them: a `.box` file, an
//! `http(s)://` or `file://` URL of one, a catalog (by path or URL), or an
//! `owner/name` looked up at `$VAGRANT_SERVER_URL`. [`add`] serves
//! `kvmdrive box add`; [`ensure`] serves `up` (cache first, then the same path).
//!
//! Order of work for one box: resolve (catalog fetch, no lock) -> take the
//! box's lock -> if the cache already has it from the same source, done ->
//! download (resumable, hashed while streaming) or read the local file ->
//! verify the checksum -> unpack into `tmp/` -> check metadata and images ->
//! rename into `boxes/`. Every failure before the rename leaves the cache as
//! it was.

use std::fs;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Serialize;
use sha2::Digest;

use super::archive::{self, BoxMetadata};
use super::catalog::{ArchRequest, Catalog, ResolveError};
use super::checksum::{self, Checksum, Digests};
use super::fetch::{self, Auth, Fetcher, Opened, Probe};
use super::progress::{human_bytes, DownloadProgress};
use super::store::{check_image, BoxStore, CachedBox, Origin, SourceRecord, RECORD_FILE};
use super::version::{Constraint, Version};
use super::{io_err, BoxError, BoxSpec, InstalledBox};
use crate::output::Reporter;

/// What `kvmdrive box add` was asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddRequest {
    /// Path, URL, catalog or `owner/name`.
    pub source: String,
    pub name: Option<String>,
    /// Version constraint (catalogs), or an exact version to record (files).
    pub version: Option<String>,
    pub architecture: Option<String>,
    pub checksum: Option<String>,
    pub checksum_type: Option<String>,
    pub force: bool,
}

/// The result of an add.
#[derive(Debug, Clone)]
pub struct AddOutcome {
    pub installed: InstalledBox,
    /// `false` when the cache already held this box from the same source.
    pub added: bool,
    /// The file at the path the cached box came from had changed: its new
    /// content replaced the cached box.
    pub updated: bool,
    pub download: Option<DownloadStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DownloadStats {
    pub url: String,
    /// Size of the `.box` file.
    pub bytes: u64,
    /// Bytes received this time (less than `bytes` after a resume).
    pub transferred: u64,
    pub seconds: f64,
}

/// Where a SOURCE points.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    File(PathBuf),
    Url(Url),
    Shorthand(String),
}

fn is_shorthand(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    matches!(s.split_once('/'), Some((owner, name)) if part(owner) && part(name))
}

fn classify(s: &str) -> Result<Source, BoxError> {
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
fn is_direct_reference(s: &str) -> bool {
    s.contains("://") || s.ends_with(".box") || Path::new(s).is_file()
}

/// Box name for a `box: path/or/url.box` machine: the file name without `.box`.
fn name_from_reference(s: &str) -> String {
    let last = s.trim_end_matches('/').rsplit('/').next().unwrap_or(s);
    let last = last.split(['?', '#']).next().unwrap_or(last);
    last.strip_suffix(".box").unwrap_or(last).to_owned()
}

/// A local file the box is read from, or a URL it is downloaded from.
/// (One short-lived value per add: its size does not matter.)
#[allow(clippy::large_enum_variant)]
enum Fetch<'r> {
    Local(&'r Path),
    Remote {
        url: Url,
        opened: Option<Opened>,
        auth: Option<Auth>,
    },
}

impl Fetch<'_> {
    fn describe(&self) -> String {
        match self {
            Fetch::Local(p) => absolute(p).display().to_string(),
            Fetch::Remote { url, .. } => url.to_string(),
        }
    }
}

/// One add (or ensure) in progress: the store, output, and a lazily started
/// HTTP client (a cached box needs none).
struct Session<'a> {
    store: &'a BoxStore,
    reporter: &'a Reporter,
    fetcher: Option<Fetcher>,
    /// A box lock taken before probing a URL, handed on to `install`.
    held: Option<(String, super::store::BoxLock)>,
}

/// Parsed and validated request options.
struct Wanted {
    constraint: Option<Constraint>,
    arch: ArchRequest,
    checksum: Option<Checksum>,
    force: bool,
}

impl Wanted {
    fn from_request(req: &AddRequest) -> Result<Wanted, BoxError> {
        let constraint = match req
            .version
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            None => None,
            Some(text) => {
                Some(
                    Constraint::parse(text).map_err(|message| BoxError::BadConstraint {
                        constraint: text.to_owned(),
                        message,
                    })?,
                )
            }
        };
        let checksum = Checksum::from_parts(req.checksum.as_deref(), req.checksum_type.as_deref())
            .map_err(|message| BoxError::BadChecksum { message })?;
        Ok(Wanted {
            constraint,
            arch: ArchRequest::from_option(req.architecture.as_deref()),
            checksum,
            force: req.force,
        })
    }
}

/// `kvmdrive box add`: adds the box `req` names, or finds it already there.
pub fn add(
    store: &BoxStore,
    req: &AddRequest,
    reporter: &Reporter,
) -> Result<AddOutcome, BoxError> {
    let wanted = Wanted::from_request(req)?;
    let mut session = Session {
        store,
        reporter,
        fetcher: None,
        held: None,
    };
    session.add(req, &wanted)
}

/// Finds the box a machine needs, adding it first when the cache has no
/// satisfying version: from `spec.url` (a box or catalog URL), from
/// `spec.name` when that is a `.box` path or URL, or by resolving an
/// `owner/name` at `$VAGRANT_SERVER_URL`. Resolves exactly like `box add`.
/// Safe to call from several threads at once for the same box: the per-box
/// lock makes one of them download and the others use the result.
pub fn ensure(
    store: &BoxStore,
    spec: &BoxSpec,
    reporter: &Reporter,
) -> Result<InstalledBox, BoxError> {
    let req = AddRequest {
        source: spec.name.clone(),
        name: None,
        version: spec.version.clone(),
        architecture: spec.architecture.clone(),
        checksum: spec.checksum.clone(),
        checksum_type: spec.checksum_type.clone(),
        force: false,
    };
    let wanted = Wanted::from_request(&req)?;
    let mut session = Session {
        store,
        reporter,
        fetcher: None,
        held: None,
    };
    if is_direct_reference(&spec.name) {
        let req = AddRequest {
            name: Some(name_from_reference(&spec.name)),
            ..req
        };
        return session.add(&req, &wanted).map(|o| o.installed);
    }
    let constraint = wanted.constraint.clone().unwrap_or_else(Constraint::any);
    if let Some(found) = store.find_matching(&spec.name, &constraint, &wanted.arch)? {
        return Ok(found);
    }
    let source = match spec.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => url.to_owned(),
        // the bundled box is built here, never looked up on a server
        None if spec.name == crate::project::config::BUNDLED_BOX => {
            return Err(store.not_found(&spec.name, &constraint))
        }
        None if is_shorthand(&spec.name) => spec.name.clone(),
        None => return Err(store.not_found(&spec.name, &constraint)),
    };
    let req = AddRequest {
        source,
        name: Some(spec.name.clone()),
        ..req
    };
    session.add(&req, &wanted).map(|o| o.installed)
}

/// The box [`ensure`] would use, if the cache already holds it; never
/// fetches (a `.box` path or URL is looked up by the name it is added under).
/// `Err` carries where the box would be fetched from.
pub fn find_cached(
    store: &BoxStore,
    spec: &BoxSpec,
) -> Result<Result<InstalledBox, String>, BoxError> {
    let name = if is_direct_reference(&spec.name) {
        name_from_reference(&spec.name)
    } else {
        spec.name.clone()
    };
    let req = AddRequest {
        source: spec.name.clone(),
        name: None,
        version: spec.version.clone(),
        architecture: spec.architecture.clone(),
        checksum: spec.checksum.clone(),
        checksum_type: spec.checksum_type.clone(),
        force: false,
    };
    let wanted = Wanted::from_request(&req)?;
    let constraint = wanted.constraint.clone().unwrap_or_else(Constraint::any);
    if let Some(found) = store.find_matching(&name, &constraint, &wanted.arch)? {
        return Ok(Ok(found));
    }
    let url = spec.url.as_deref().map(str::trim).filter(|u| !u.is_empty());
    Ok(Err(url.unwrap_or(&spec.name).to_owned()))
}

impl Session<'_> {
    fn partial_path(&self, name: &str, url: &Url) -> PathBuf {
        self.store
            .tmp_dir()
            .join("downloads")
            .join(format!("{}.part", partial_key(name, url)))
    }

    fn fetcher(&mut self) -> Result<&Fetcher, BoxError> {
        if self.fetcher.is_none() {
            self.fetcher = Some(Fetcher::new(&self.store.net)?);
        }
        Ok(self.fetcher.as_ref().expect("just set"))
    }

    fn add(&mut self, req: &AddRequest, wanted: &Wanted) -> Result<AddOutcome, BoxError> {
        match classify(&req.source)? {
            Source::File(path) => {
                if is_catalog_file(&path)? {
                    let bytes = fs::read(&path)
                        .map_err(io_err(format!("cannot read {}", path.display())))?;
                    let url = Url::from_file_path(absolute(&path)).map_err(|_| {
                        BoxError::UnknownSource {
                            source_text: req.source.clone(),
                        }
                    })?;
                    let catalog =
                        Catalog::parse(&bytes).map_err(|message| BoxError::BadCatalog {
                            url: path.display().to_string(),
                            message,
                        })?;
                    self.add_from_catalog(req, wanted, &catalog, &url, &url, None, None)
                } else {
                    self.add_direct(req, wanted, Fetch::Local(&path))
                }
            }
            Source::Url(url) => {
                let auth = self.store.net.auth_for_catalog(&url);
                // A partial download of this box from this URL means an
                // earlier run found a box there: resume it without probing.
                if let Some(name) = req.name.as_deref().filter(|_| !wanted.force) {
                    if fetch::has_partial(&self.partial_path(name, &url), &url) {
                        let fetch = Fetch::Remote {
                            url,
                            opened: None,
                            auth,
                        };
                        return self.add_direct(req, wanted, fetch);
                    }
                }
                // Under the box's lock before any request: of several
                // processes adding the box from this URL, one downloads and
                // the others find it here, without a request of their own.
                if let Some(name) = req.name.as_deref().filter(|_| !wanted.force) {
                    let lock = self.store.lock(name)?;
                    if let Some(c) = self.cached_from(name, &url, wanted) {
                        self.reporter.detail(
                            None,
                            format!("box {name} {}: already in the cache", c.version),
                        );
                        return Ok(AddOutcome {
                            installed: self.store.installed(&c)?,
                            added: false,
                            updated: false,
                            download: None,
                        });
                    }
                    self.held = Some((name.to_owned(), lock));
                }
                match self.fetcher()?.probe(&url, auth.as_ref())? {
                    Probe::Catalog {
                        catalog,
                        url: final_url,
                    } => self.add_from_catalog(req, wanted, &catalog, &url, &final_url, auth, None),
                    Probe::Box(opened) => self.add_direct(
                        req,
                        wanted,
                        Fetch::Remote {
                            url,
                            opened: Some(opened),
                            auth,
                        },
                    ),
                }
            }
            Source::Shorthand(name) => {
                let (catalog, url, final_url, auth) = self.resolve_shorthand(&name)?;
                self.add_from_catalog(req, wanted, &catalog, &url, &final_url, auth, Some(&name))
            }
        }
    }

    /// The box `name` kvmdrive added from `url` before, if it satisfies
    /// what is wanted (version, architecture, SHA-256 when given).
    fn cached_from(&self, name: &str, url: &Url, wanted: &Wanted) -> Option<CachedBox> {
        let arch = wanted.arch.wanted();
        self.store.versions_of(name).into_iter().find(|c| {
            c.origin == Origin::Kvmdrive
                && c.arch_or_host() == arch
                && wanted
                    .constraint
                    .as_ref()
                    .is_none_or(|k| k.is_satisfied_by(&c.version))
                && c.record().is_some_and(|r| {
                    r.source == url.as_str()
                        && wanted.checksum.as_ref().is_none_or(|k| {
                            k.kind != checksum::ChecksumType::Sha256 || k.hex == r.sha256
                        })
                })
        })
    }

    /// Looks `owner/name` up at `$VAGRANT_SERVER_URL`: first Vagrant Cloud's
    /// `/api/v2/vagrant/owner/name`, then `/owner/name`.
    fn resolve_shorthand(
        &mut self,
        name: &str,
    ) -> Result<(Catalog, Url, Url, Option<Auth>), BoxError> {
        let server = self.store.net.server_url.trim_end_matches('/').to_owned();
        let mut first_error: Option<BoxError> = None;
        for candidate in [
            format!("{server}/api/v2/vagrant/{name}"),
            format!("{server}/{name}"),
        ] {
            let url = Url::parse(&candidate).map_err(|e| BoxError::BadCatalog {
                url: candidate.clone(),
                message: format!("VAGRANT_SERVER_URL does not make a valid URL: {e}"),
            })?;
            let auth = self.store.net.auth_for_catalog(&url);
            match self.fetcher()?.catalog(&url, auth.as_ref()) {
                Ok((catalog, final_url)) => return Ok((catalog, url, final_url, auth)),
                Err(
                    e @ (BoxError::Http {
                        status: 404 | 410, ..
                    }
                    | BoxError::HtmlCatalog { .. }),
                ) => {
                    // keep the more telling error: HTML beats 404
                    if first_error.is_none() || matches!(e, BoxError::HtmlCatalog { .. }) {
                        first_error = Some(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_error.expect("two candidates tried"))
    }

    #[allow(clippy::too_many_arguments)]
    fn add_from_catalog(
        &mut self,
        req: &AddRequest,
        wanted: &Wanted,
        catalog: &Catalog,
        catalog_url: &Url,
        final_url: &Url,
        auth: Option<Auth>,
        shorthand: Option<&str>,
    ) -> Result<AddOutcome, BoxError> {
        let catalog_name = catalog.name.clone().filter(|n| !n.trim().is_empty());
        let name = match (&req.name, &catalog_name) {
            (Some(asked), Some(listed)) if asked != listed => {
                return Err(BoxError::NameMismatch {
                    requested: asked.clone(),
                    catalog: listed.clone(),
                })
            }
            (_, Some(listed)) => listed.clone(),
            (Some(asked), None) => asked.clone(),
            (None, None) => match shorthand {
                Some(s) => s.to_owned(),
                None => {
                    return Err(BoxError::NeedName {
                        what: format!("the catalog {catalog_url} names no box, so it"),
                    })
                }
            },
        };
        let constraint = wanted.constraint.clone().unwrap_or_else(Constraint::any);
        let resolved = catalog
            .resolve(&constraint, &wanted.arch)
            .map_err(|e| match e {
                ResolveError::BadVersion(message) => BoxError::BadCatalog {
                    url: catalog_url.to_string(),
                    message,
                },
                ResolveError::NoVersion { available } => BoxError::NoMatchingVersion {
                    name: name.clone(),
                    constraint: constraint.to_string(),
                    available: if available.is_empty() {
                        "no versions".into()
                    } else {
                        available.join(", ")
                    },
                },
                ResolveError::NoProvider { version, offered } => BoxError::NoProvider {
                    name: name.clone(),
                    version,
                    architecture: wanted.arch.wanted(),
                    offered: if offered.is_empty() {
                        "no providers".into()
                    } else {
                        offered.join(", ")
                    },
                },
            })?;
        let box_url =
            final_url
                .join(resolved.provider.url.trim())
                .map_err(|e| BoxError::BadCatalog {
                    url: catalog_url.to_string(),
                    message: format!("provider url `{}`: {e}", resolved.provider.url),
                })?;
        let checksum = match &wanted.checksum {
            Some(c) => Some(c.clone()),
            None => Checksum::from_parts(
                resolved.provider.checksum.as_deref(),
                resolved.provider.checksum_type.as_deref(),
            )
            .map_err(|message| BoxError::BadCatalog {
                url: catalog_url.to_string(),
                message: format!("version {}: {message}", resolved.version),
            })?,
        };
        let fetch = match box_url.scheme() {
            "file" => {
                let path = box_url.to_file_path().map_err(|_| BoxError::BadCatalog {
                    url: catalog_url.to_string(),
                    message: format!("bad file URL {box_url}"),
                })?;
                return self.install(
                    &name,
                    &resolved.version.to_string(),
                    &resolved.architecture,
                    Fetch::Local(&path),
                    checksum.as_ref(),
                    Some(catalog_url),
                    wanted.force,
                );
            }
            "http" | "https" => Fetch::Remote {
                url: box_url,
                opened: None,
                auth,
            },
            other => {
                return Err(BoxError::BadCatalog {
                    url: catalog_url.to_string(),
                    message: format!(
                        "unsupported URL scheme `{other}` for version {}",
                        resolved.version
                    ),
                })
            }
        };
        self.install(
            &name,
            &resolved.version.to_string(),
            &resolved.architecture,
            fetch,
            checksum.as_ref(),
            Some(catalog_url),
            wanted.force,
        )
    }

    fn add_direct(
        &mut self,
        req: &AddRequest,
        wanted: &Wanted,
        fetch: Fetch<'_>,
    ) -> Result<AddOutcome, BoxError> {
        let name = req
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| BoxError::NeedName {
                what: format!("the box {}", fetch.describe()),
            })?;
        // A box file has no versions: Vagrant records it as version 0. An
        // exact version is recorded instead; other constraints must admit 0.
        let zero = Version::parse("0").expect("valid");
        let version = match &wanted.constraint {
            None => zero,
            Some(c) => match c.exact() {
                Some(v) => v.clone(),
                None if c.is_satisfied_by(&zero) => zero,
                None => {
                    return Err(BoxError::DirectVersion {
                        source_text: fetch.describe(),
                        constraint: c.to_string(),
                    })
                }
            },
        };
        let arch = wanted.arch.wanted();
        self.install(
            &name,
            &version.to_string(),
            &arch,
            fetch,
            wanted.checksum.as_ref(),
            None,
            wanted.force,
        )
    }

    /// Under the box's lock: no-op if already there from the same source,
    /// otherwise fetch, verify, unpack, check and rename into place.
    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        name: &str,
        version: &str,
        arch: &str,
        mut fetch: Fetch<'_>,
        checksum: Option<&Checksum>,
        catalog_url: Option<&Url>,
        force: bool,
    ) -> Result<AddOutcome, BoxError> {
        let store = self.store;
        let reporter = self.reporter;
        // name, version and architecture become directory names
        let invalid = |reason: String| BoxError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        super::store::check_name(name).map_err(invalid)?;
        super::store::check_component("version", version).map_err(invalid)?;
        super::store::check_component("architecture", arch).map_err(invalid)?;
        let label = format!("box {name} {version} ({arch})");
        let lock = match self.held.take() {
            Some((held, lock)) if held == name => lock,
            _ => store.lock(name)?,
        };
        if lock.waited {
            reporter.step(
                None,
                format!("{label}: another kvmdrive was adding it; continuing after it"),
            );
            if let Fetch::Remote { opened, .. } = &mut fetch {
                *opened = None; // the held response may have gone stale
            }
        }

        let source_text = fetch.describe();
        let mut local_digests: Option<Digests> = None;
        let parsed_version = Version::parse(version).map_err(|message| BoxError::BadBox {
            name: name.to_owned(),
            message,
        })?;
        let present = store
            .versions_of(name)
            .into_iter()
            .filter(|c| c.version.as_str() == version || c.version == parsed_version)
            .filter(|c| c.arch_or_host() == arch)
            .collect::<Vec<_>>();
        let ours = present.iter().find(|c| c.origin == Origin::Kvmdrive);
        // A changed file at the path the cached box came from is an update.
        let mut replace = force;
        let mut updated = false;
        if !force {
            if let Some(c) = ours {
                let record = c.record();
                let same = match (&fetch, &record) {
                    (_, None) => false,
                    (Fetch::Local(path), Some(record)) => {
                        same_local_file(path, record, checksum.map(|c| c.kind), &mut local_digests)?
                    }
                    (Fetch::Remote { url, .. }, Some(record)) => {
                        record.source == url.as_str()
                            && checksum.is_none_or(|c| {
                                c.kind != checksum::ChecksumType::Sha256 || c.hex == record.sha256
                            })
                    }
                };
                if same {
                    if let (Fetch::Local(path), Some(record)) = (&fetch, record) {
                        refresh_mtime(&c.dir, record, path);
                    }
                    reporter.detail(None, format!("{label}: already in the cache"));
                    return Ok(AddOutcome {
                        installed: store.installed(c)?,
                        added: false,
                        updated: false,
                        download: None,
                    });
                }
                let same_path = matches!((&fetch, &record),
                    (Fetch::Local(_), Some(r)) if r.source == source_text);
                if !same_path {
                    return Err(BoxError::AlreadyExists {
                        name: name.to_owned(),
                        version: version.to_owned(),
                        architecture: arch.to_owned(),
                    });
                }
                if let Fetch::Local(path) = &fetch {
                    reporter.step(
                        None,
                        format!(
                            "box {} changed since it was added: using the new content",
                            shown(path)
                        ),
                    );
                }
                replace = true;
                updated = true;
            }
            let vagrant = present.iter().find(|c| c.origin == Origin::Vagrant);
            if let Some(c) = vagrant.filter(|_| !updated) {
                reporter.step(
                    None,
                    format!("{label}: using Vagrant's copy in {}", c.dir.display()),
                );
                return Ok(AddOutcome {
                    installed: store.installed(c)?,
                    added: false,
                    updated: false,
                    download: None,
                });
            }
        }

        // Fetch.
        let mut download_stats = None;
        let mut part_file: Option<PathBuf> = None;
        let mut local_source: Option<PathBuf> = None;
        let (archive_path, digests): (PathBuf, Digests) = match fetch {
            Fetch::Local(path) => {
                local_source = Some(path.to_owned());
                reporter.step(None, format!("{label}: reading {}", path.display()));
                let digests = match local_digests {
                    Some(d) if d.requested.is_some() || checksum.is_none() => d,
                    _ => checksum::hash_file(path, checksum.map(|c| c.kind))
                        .map_err(io_err(format!("cannot read {}", path.display())))?,
                };
                (path.to_owned(), digests)
            }
            Fetch::Remote { url, opened, auth } => {
                reporter.step(None, format!("{label}: downloading {url}"));
                let part = store
                    .tmp_dir()
                    .join("downloads")
                    .join(format!("{}.part", partial_key(name, &url)));
                let mut progress = DownloadProgress::new(reporter, label.clone());
                let fetcher = self.fetcher()?;
                let done = fetcher.download(
                    &url,
                    opened,
                    &part,
                    checksum.map(|c| c.kind),
                    auth.as_ref(),
                    &mut progress,
                )?;
                drop(progress);
                reporter.step(
                    None,
                    format!(
                        "{label}: downloaded {} in {:.2}s ({}/s)",
                        human_bytes(done.digests.bytes),
                        done.seconds,
                        human_bytes((done.transferred as f64 / done.seconds.max(1e-6)) as u64)
                    ),
                );
                download_stats = Some(DownloadStats {
                    url: url.to_string(),
                    bytes: done.digests.bytes,
                    transferred: done.transferred,
                    seconds: done.seconds,
                });
                part_file = Some(part.clone());
                (part, done.digests)
            }
        };
        // Everything below deletes a downloaded file when it fails.
        let result = (|| {
            if let Err(actual) = digests.verify(checksum) {
                let c = checksum.expect("verify fails only with a checksum");
                return Err(BoxError::ChecksumMismatch {
                    what: source_text.clone(),
                    kind: c.kind.to_string(),
                    expected: c.hex.clone(),
                    actual,
                });
            }
            reporter.step(None, format!("{label}: unpacking"));
            let staging = store.staging_dir()?;
            let bad = |message: String| BoxError::BadArchive {
                path: PathBuf::from(&source_text),
                message,
            };
            archive::unpack(&archive_path, staging.path()).map_err(bad)?;
            let meta = BoxMetadata::read(staging.path()).map_err(bad)?;
            let mut first_size = None;
            for disk in &meta.disks {
                let size = check_image(name, &staging.path().join(&disk.path))?;
                first_size.get_or_insert(size);
            }
            let record = SourceRecord {
                source: source_text.clone(),
                sha256: digests.sha256.clone(),
                size: digests.bytes,
                virtual_size: first_size.unwrap_or(0),
                catalog: catalog_url.map(|u| u.to_string()),
                source_mtime_ns: local_source
                    .as_deref()
                    .and_then(|p| fs::metadata(p).ok())
                    .and_then(|m| SourceRecord::mtime_ns(&m)),
                added: SourceRecord::now(),
            };
            let record_path = staging.path().join(RECORD_FILE);
            let mut text = serde_json::to_vec_pretty(&record).expect("serializable");
            text.push(b'\n');
            fs::write(&record_path, text)
                .map_err(io_err(format!("cannot write {}", record_path.display())))?;
            let dest = store.install(staging.path(), name, version, arch, replace)?;
            staging.keep();
            if let Some(url) = catalog_url {
                store.write_metadata_url(name, url.as_str())?;
            }
            Ok(dest)
        })();
        if let Some(part) = &part_file {
            // Downloaded archives are not kept: unpacked or refused, they are done.
            let _ = fs::remove_file(part);
            let _ = fs::remove_file(fetch::state_path(part));
        }
        let dest = result?;
        let cached = store
            .versions_of(name)
            .into_iter()
            .find(|c| c.origin == Origin::Kvmdrive && c.dir == dest)
            .ok_or_else(|| BoxError::BadBox {
                name: name.to_owned(),
                message: format!("{} vanished after it was added", dest.display()),
            })?;
        let installed = store.installed(&cached)?;
        reporter.step(None, format!("{label}: added"));
        drop(lock);
        Ok(AddOutcome {
            installed,
            added: true,
            updated,
            download: download_stats,
        })
    }
}

/// Whether `path` is the file the record describes: same size and SHA-256.
/// The digest is kept in `digests` for the add that may follow.
fn same_local_file(
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
fn refresh_mtime(dir: &Path, mut record: SourceRecord, path: &Path) {
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
fn shown(path: &Path) -> String {
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
fn is_catalog_file(path: &Path) -> Result<bool, BoxError> {
    use std::io::Read;
    let mut head = [0u8; 64];
    let mut f = fs::File::open(path).map_err(io_err(format!("cannot open {}", path.display())))?;
    let n = f
        .read(&mut head)
        .map_err(io_err(format!("cannot read {}", path.display())))?;
    Ok(head[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Name of the partial download of `url` for box `name`.
fn partial_key(name: &str, url: &Url) -> String {
    let digest = sha2::Sha256::digest(format!("{name}\n{url}").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn partial_keys_differ_per_box_and_url() {
        let u = Url::parse("http://127.0.0.1/a.box").unwrap();
        let v = Url::parse("http://127.0.0.1/b.box").unwrap();
        assert_ne!(partial_key("a", &u), partial_key("b", &u));
        assert_ne!(partial_key("a", &u), partial_key("a", &v));
        assert_eq!(partial_key("a", &u).len(), 24);
    }
}
