//! Installing one resolved box under its lock: the same-source and
//! changed-file checks against the cache, reading or downloading the
//! archive, verifying its checksum, unpacking and checking it in `tmp/`,
//! writing its source record and renaming it into `boxes/`.

use std::fs;
use std::path::PathBuf;

use reqwest::Url;

use super::local::{partial_key, refresh_mtime, same_local_file, shown};
use super::{AddOutcome, DownloadStats, Fetch, Session};
use crate::boxes::archive::{self, BoxMetadata};
use crate::boxes::checksum::{self, Checksum, Digests};
use crate::boxes::fetch;
use crate::boxes::progress::{human_bytes, DownloadProgress};
use crate::boxes::store::{check_image, Origin, SourceRecord, RECORD_FILE};
use crate::boxes::version::Version;
use crate::boxes::{io_err, BoxError};

impl Session<'_> {
    /// Under the box's lock: no-op if already there from the same source,
    /// otherwise fetch, verify, unpack, check and rename into place.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn install(
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
        crate::boxes::store::check_name(name).map_err(invalid)?;
        crate::boxes::store::check_component("version", version).map_err(invalid)?;
        crate::boxes::store::check_component("architecture", arch).map_err(invalid)?;
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
