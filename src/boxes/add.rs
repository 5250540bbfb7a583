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
//!
//! Split by step: [`source`] classifies what was asked for, [`resolve`]
//! turns it into one box to fetch, [`install`] fetches, checks and installs
//! it, [`local`] holds the local-file helpers.

mod install;
mod local;
mod resolve;
mod source;

use std::path::Path;

use reqwest::Url;
use serde::Serialize;

use super::catalog::ArchRequest;
use super::checksum::Checksum;
use super::fetch::{Auth, Fetcher, Opened};
use super::store::BoxStore;
use super::version::Constraint;
use super::{BoxError, BoxSpec, InstalledBox};
use crate::output::Reporter;
use local::absolute;
use source::{is_direct_reference, is_shorthand, name_from_reference};

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

impl AddRequest {
    /// What a machine's box asks of the cache, as a `box add` request.
    fn for_spec(spec: &BoxSpec) -> AddRequest {
        AddRequest {
            source: spec.name.clone(),
            name: None,
            version: spec.version.clone(),
            architecture: spec.architecture.clone(),
            checksum: spec.checksum.clone(),
            checksum_type: spec.checksum_type.clone(),
            force: false,
        }
    }
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
    let req = AddRequest::for_spec(spec);
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
    let req = AddRequest::for_spec(spec);
    let wanted = Wanted::from_request(&req)?;
    let constraint = wanted.constraint.clone().unwrap_or_else(Constraint::any);
    if let Some(found) = store.find_matching(&name, &constraint, &wanted.arch)? {
        return Ok(Ok(found));
    }
    let url = spec.url.as_deref().map(str::trim).filter(|u| !u.is_empty());
    Ok(Err(url.unwrap_or(&spec.name).to_owned()))
}
