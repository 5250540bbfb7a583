//! Resolving what an add asks for: classifying the source, probing a URL
//! (catalog or box), looking `owner/name` up at `$VAGRANT_SERVER_URL`,
//! choosing the catalog's version and provider, and finding a box already
//! added from the same URL; each path ends in [`Session::install`].

use std::fs;
use std::path::PathBuf;

use reqwest::Url;

use super::local::{absolute, is_catalog_file, partial_key};
use super::source::{classify, Source};
use super::{AddOutcome, AddRequest, Fetch, Session, Wanted};
use crate::boxes::catalog::{Catalog, ResolveError};
use crate::boxes::checksum::{self, Checksum};
use crate::boxes::fetch::{self, Auth, Fetcher, Probe};
use crate::boxes::store::{CachedBox, Origin};
use crate::boxes::version::{Constraint, Version};
use crate::boxes::{io_err, BoxError};

impl Session<'_> {
    fn partial_path(&self, name: &str, url: &Url) -> PathBuf {
        self.store
            .tmp_dir()
            .join("downloads")
            .join(format!("{}.part", partial_key(name, url)))
    }

    pub(super) fn fetcher(&mut self) -> Result<&Fetcher, BoxError> {
        if self.fetcher.is_none() {
            self.fetcher = Some(Fetcher::new(&self.store.net)?);
        }
        Ok(self.fetcher.as_ref().expect("just set"))
    }

    pub(super) fn add(
        &mut self,
        req: &AddRequest,
        wanted: &Wanted,
    ) -> Result<AddOutcome, BoxError> {
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
}
