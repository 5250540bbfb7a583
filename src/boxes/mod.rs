//! The box cache and everything that fills it. The rest of kvmdrive only asks
//! [`ensure`] for an installed box and gets back where its image lives.

mod store;

pub use store::{BoxStore, InstalledBox};

use std::path::PathBuf;

/// What a machine asks for: `name` is a cached box name (`owner/name`), a
/// path to a `.box` file or a URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoxSpec {
    pub name: String,
    pub version: Option<String>,
    pub url: Option<String>,
    pub architecture: Option<String>,
    pub checksum: Option<String>,
    pub checksum_type: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("box `{name}` is not in the cache ({searched})")]
    NotFound { name: String, searched: String },
    #[error("box file {path}: {message}")]
    BadArchive { path: PathBuf, message: String },
    #[error("box `{name}`: {message}")]
    BadBox { name: String, message: String },
    #[error("box `{name}` version {version} is already in the cache")]
    AlreadyExists { name: String, version: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl BoxError {
    pub fn hint(&self) -> Option<String> {
        match self {
            BoxError::NotFound { name, .. } if name == crate::config::BUNDLED_BOX => Some(
                "build the bundled box and add it: `kvmdrive box add --name kvmdrive/debian-12 \"$(boxes/debian-12/build)\"`"
                    .into(),
            ),
            BoxError::NotFound { .. } => {
                Some("add it with `kvmdrive box add SOURCE --name NAME`, or set `box` to a .box path".into())
            }
            BoxError::AlreadyExists { .. } => Some("use --force to replace it".into()),
            _ => None,
        }
    }
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BoxError {
    let context = context.into();
    move |source| BoxError::Io { context, source }
}

/// Finds the box a machine needs, adding it to the cache first when `spec`
/// names a local `.box` file.
pub fn ensure(store: &BoxStore, spec: &BoxSpec) -> Result<InstalledBox, BoxError> {
    let path = std::path::Path::new(&spec.name);
    if spec.name.ends_with(".box") || path.is_file() {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.name.clone());
        return store.add_file(path, &name, "0", false);
    }
    store.find(&spec.name, spec.version.as_deref())
}
