//! Everything that can go wrong while finding, fetching or installing a box,
//! each with a message that names the box, file or URL and, where there is
//! one, a hint that says what to do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("box `{name}` is not in the cache ({searched})")]
    NotFound { name: String, searched: String },
    #[error("box `{name}`: no cached version satisfies `{constraint}` (cached: {cached})")]
    NoCachedVersion {
        name: String,
        constraint: String,
        cached: String,
    },
    #[error(
        "`{source_text}` is neither a file, an http(s):// or file:// URL, nor an `owner/name` box"
    )]
    UnknownSource { source_text: String },
    #[error("box file {path}: {message}")]
    BadArchive { path: PathBuf, message: String },
    #[error("box `{name}`: {message}")]
    BadBox { name: String, message: String },
    #[error("box `{name}` version {version} ({architecture}) is already in the cache, from another source")]
    AlreadyExists {
        name: String,
        version: String,
        architecture: String,
    },
    #[error("{reason}")]
    InvalidName { name: String, reason: String },
    #[error("{what} needs a box name")]
    NeedName { what: String },
    #[error("the catalog names its box `{catalog}`, not `{requested}`")]
    NameMismatch { requested: String, catalog: String },
    #[error("`{constraint}` is not a version constraint: {message}")]
    BadConstraint { constraint: String, message: String },
    #[error("a box file or URL has no versions to choose from, so `{constraint}` cannot apply to {source_text}")]
    DirectVersion {
        source_text: String,
        constraint: String,
    },
    #[error("invalid checksum: {message}")]
    BadChecksum { message: String },
    #[error("{what}: {kind} checksum mismatch (expected {expected}, got {actual}); the download was deleted")]
    ChecksumMismatch {
        what: String,
        kind: String,
        expected: String,
        actual: String,
    },
    #[error("catalog {url}: {message}")]
    BadCatalog { url: String, message: String },
    #[error("{url} answered with an HTML page, not a box catalog")]
    HtmlCatalog { url: String },
    #[error("box `{name}`: no version satisfies `{constraint}` (the catalog has: {available})")]
    NoMatchingVersion {
        name: String,
        constraint: String,
        available: String,
    },
    #[error(
        "box `{name}` {version} has no libvirt provider for {architecture} (it has: {offered})"
    )]
    NoProvider {
        name: String,
        version: String,
        architecture: String,
        offered: String,
    },
    #[error("{url}: HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    #[error("qemu-img is needed to check box images: {message}")]
    QemuImg { message: String },
    #[error("box `{name}` {version} is used by {users}")]
    InUse {
        name: String,
        version: String,
        users: String,
    },
    #[error("box `{name}` has several versions ({versions}); say which")]
    AmbiguousVersion { name: String, versions: String },
    #[error("cannot tell which boxes the project uses: {source}")]
    ProjectUnreadable {
        source: Box<crate::project::config::ConfigError>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl BoxError {
    pub fn hint(&self) -> Option<String> {
        let s = |t: &str| Some(t.to_owned());
        match self {
            BoxError::NotFound { name, .. } if name == crate::project::config::BUNDLED_BOX => s(
                "build the bundled box and add it: `kvmdrive box add --name kvmdrive/debian-12 \"$(boxes/debian-12/build)\"`",
            ),
            BoxError::NotFound { .. } => s(
                "add it with `kvmdrive box add SOURCE --name NAME`, set `box_url` to its URL or catalog, or name it `owner/name` to resolve it at $VAGRANT_SERVER_URL",
            ),
            BoxError::NoCachedVersion { .. } => s("add a matching version with `kvmdrive box add`, or set `box_url` so it can be fetched"),
            BoxError::UnknownSource { .. } => s("give a path to a .box file, a catalog .json, a URL, or `owner/name`"),
            BoxError::AlreadyExists { .. } => s("use --force to replace it"),
            BoxError::NeedName { .. } => s("give it one with --name NAME"),
            BoxError::InvalidName { .. } => s("box names look like `owner/name` or `name`"),
            BoxError::NameMismatch { catalog, .. } => Some(format!("leave out --name, or use --name {catalog}")),
            BoxError::BadConstraint { .. } => s("write constraints like `>= 1.2, < 2` or `~> 1.2` (comma-separated)"),
            BoxError::DirectVersion { .. } => s(
                "leave out the version constraint, give an exact version (`1.2.3`) to record, or serve the box through a catalog (`kvmdrive box index`)",
            ),
            BoxError::BadChecksum { .. } => s("give the hex digest with --checksum and its type with --checksum-type (md5, sha1, sha256, sha384, sha512)"),
            BoxError::ChecksumMismatch { .. } => s("the file was damaged or replaced; check the checksum's source, then add the box again"),
            BoxError::HtmlCatalog { .. } => s(
                "Vagrant Cloud no longer serves catalogs at that address: set VAGRANT_SERVER_URL to a server with catalogs (`kvmdrive box index` writes them), or give the .box URL or catalog URL directly",
            ),
            BoxError::BadCatalog { .. } => s("a catalog is JSON like {\"name\": ..., \"versions\": [{\"version\": ..., \"providers\": [...]}]}"),
            BoxError::NoMatchingVersion { .. } => s("relax the version constraint (`--box-version` / `box_version`)"),
            BoxError::NoProvider { .. } => s("choose another version, or pass --architecture for the architecture the box offers"),
            BoxError::Http { status: 401 | 403, .. } => s("set VAGRANT_CLOUD_TOKEN or KVMDRIVE_CATALOG_TOKEN if the box is private"),
            BoxError::Http { status: 404 | 410, .. } => s("check the box name or URL"),
            BoxError::Network { .. } => s("check the URL and the network or proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY); run again to resume the download"),
            BoxError::QemuImg { .. } => s("install qemu-utils"),
            BoxError::InUse { .. } => s("destroy the machines first, or pass --force"),
            BoxError::AmbiguousVersion { .. } => s("pass --box-version VERSION, or --all"),
            BoxError::BadArchive { .. } | BoxError::BadBox { .. } => s("use a libvirt box: a tar(.gz/.zst) with metadata.json (provider libvirt) and a self-contained qcow2 box.img"),
            BoxError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => s(
                "check the path in `box:` (relative to the project directory), or give a box name in the cache, a URL or `owner/name`",
            ),
            BoxError::ProjectUnreadable { source } => source.hint().or_else(|| {
                s("fix kvmdrive.yml, or pass --force to skip the in-use check")
            }),
            _ => None,
        }
    }
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BoxError {
    let context = context.into();
    move |source| BoxError::Io { context, source }
}
