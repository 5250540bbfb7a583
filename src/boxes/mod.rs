//! The box cache and everything that fills it. The rest of kvmdrive only asks
//! [`ensure`] for an installed box and gets back where its image lives;
//! `kvmdrive box ...` ([`cli`], [`commands`]) manages the cache by hand.
//!
//! Map: [`version`] (RubyGems constraints) and [`catalog`] (Vagrant catalog
//! JSON, version/provider/architecture choice) decide *what*; [`fetch`]
//! (HTTP, resume, retries) and [`checksum`] get the bytes; [`archive`]
//! (tar/gzip/zstd, path safety, metadata.json) and [`image`] (qemu-img
//! checks) vet them; [`store`] (Vagrant's cache layout, locks, atomic
//! renames) keeps them; [`add`] ties these together the way `vagrant box add`
//! does; [`index`] writes catalogs for self-hosting.

pub mod add;
pub mod archive;
pub mod catalog;
pub mod checksum;
pub mod cli;
pub mod commands;
mod error;
pub mod fetch;
pub mod image;
pub mod in_use;
pub mod index;
pub mod progress;
pub mod projects;
pub mod staging;
pub mod store;
pub mod version;

pub use add::{add, ensure, find_cached, AddOutcome, AddRequest};
pub(crate) use error::io_err;
pub use error::BoxError;
pub use store::{BoxStore, InstalledBox};

/// What a machine asks for (kvmdrive.yml's `box`, `box_version`, `box_url`,
/// `box_architecture`, `box_download_checksum(_type)`): `name` is a box
/// name (`owner/name` resolves at `$VAGRANT_SERVER_URL` when not cached), a
/// path to a `.box` file or a URL; `version` is a constraint like
/// `>= 1.2, < 2`; `url` is a box or catalog URL used when the cache has no
/// satisfying version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BoxSpec {
    pub name: String,
    pub version: Option<String>,
    pub url: Option<String>,
    pub architecture: Option<String>,
    pub checksum: Option<String>,
    pub checksum_type: Option<String>,
}
