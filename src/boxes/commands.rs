//! `kvmdrive box ...`: turns a parsed [`BoxCommand`] into work on the cache
//! and reports the result through the [`Reporter`], for people (text) or
//! programs (`--json` on stdout). Errors are [`BoxError`]s, each with a hint.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Serialize;
use serde_json::json;

use super::add::{self, AddRequest};
use super::catalog::ArchRequest;
use super::cli::{AddArgs, BoxCommand, IndexArgs, ListArgs, OutdatedArgs, PruneArgs, RemoveArgs};
use super::fetch::Fetcher;
use super::in_use::boxes_in_use;
use super::index::{self, IndexOptions};
use super::progress::human_bytes;
use super::store::{BoxStore, CachedBox, Origin};
use super::version::{Constraint, Version};
use super::BoxError;
use crate::output::Reporter;

/// Runs a `kvmdrive box` command for the project in the current directory;
/// returns the exit code.
pub fn run(cmd: BoxCommand, reporter: &Reporter) -> Result<i32, BoxError> {
    run_in(cmd, reporter, None)
}

/// Like [`run`], for the project in `project_dir` (default: the current
/// directory): `prune` and `remove` keep boxes that project uses.
pub fn run_in(
    cmd: BoxCommand,
    reporter: &Reporter,
    project_dir: Option<&Path>,
) -> Result<i32, BoxError> {
    let json = reporter.json();
    let store = BoxStore::from_env();
    let project_dir = match project_dir {
        Some(p) => p.to_owned(),
        None => {
            std::env::current_dir().map_err(super::error::io_err("read the current directory"))?
        }
    };
    match cmd {
        BoxCommand::Add(a) => cmd_add(&store, a, reporter, json),
        BoxCommand::List(a) => cmd_list(&store, a, reporter, json),
        BoxCommand::Remove(a) => cmd_remove(&store, a, reporter, json, &project_dir),
        BoxCommand::Prune(a) => cmd_prune(&store, a, reporter, json, &project_dir),
        BoxCommand::Outdated(a) => cmd_outdated(&store, a, reporter, json),
        BoxCommand::Index(a) => cmd_index(a, reporter, json),
    }
}

fn cmd_add(store: &BoxStore, a: AddArgs, reporter: &Reporter, json: bool) -> Result<i32, BoxError> {
    let req = AddRequest {
        source: a.source,
        name: a.name,
        version: a.box_version,
        architecture: a.architecture,
        checksum: a.checksum,
        checksum_type: a.checksum_type,
        force: a.force,
    };
    let outcome = add::add(store, &req, reporter)?;
    let b = &outcome.installed;
    if json {
        reporter.json_doc(&json!({
            "name": b.name,
            "version": b.version,
            "architecture": b.architecture,
            "provider": "libvirt",
            "dir": b.dir,
            "image": b.image,
            "virtual_size": b.virtual_size,
            "added": outcome.added,
            "updated": outcome.updated,
            "download": outcome.download,
        }));
    } else if outcome.added {
        reporter.line(format!(
            "box {} {} ({}) {}: {}",
            b.name,
            b.version,
            b.architecture,
            if outcome.updated { "updated" } else { "added" },
            b.dir.display()
        ));
    } else {
        reporter.line(format!(
            "box {} {} ({}) is already cached: {}",
            b.name,
            b.version,
            b.architecture,
            b.dir.display()
        ));
    }
    Ok(0)
}

#[derive(Serialize)]
struct ListEntry {
    name: String,
    version: String,
    architecture: String,
    provider: &'static str,
    origin: Origin,
    dir: PathBuf,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog: Option<String>,
}

fn sorted(mut boxes: Vec<CachedBox>) -> Vec<CachedBox> {
    boxes.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| a.version.cmp(&b.version))
            .then_with(|| a.architecture.cmp(&b.architecture))
    });
    boxes
}

fn cmd_list(
    store: &BoxStore,
    a: ListArgs,
    reporter: &Reporter,
    json: bool,
) -> Result<i32, BoxError> {
    let boxes = sorted(match &a.name {
        Some(n) => store.versions_of(n),
        None => store.list(),
    });
    let entries: Vec<ListEntry> = boxes
        .iter()
        .map(|c| {
            let record = c.record();
            ListEntry {
                name: c.name.clone(),
                version: c.version.to_string(),
                architecture: c.arch_or_host(),
                provider: "libvirt",
                origin: c.origin,
                dir: c.dir.clone(),
                size: c.size(),
                source: record.as_ref().map(|r| r.source.clone()),
                catalog: record
                    .and_then(|r| r.catalog)
                    .or_else(|| store.metadata_url(&c.name, c.origin)),
            }
        })
        .collect();
    if json {
        reporter.json_doc(&entries);
    } else if entries.is_empty() {
        reporter.line("There are no cached boxes. Add one with `kvmdrive box add`.");
    } else {
        let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for e in &entries {
            let marker = if e.origin == Origin::Vagrant {
                "  [vagrant]"
            } else {
                ""
            };
            reporter.line(format!(
                "{:width$} (libvirt, {}, ({})) {}{marker}",
                e.name,
                e.version,
                e.architecture,
                human_bytes(e.size)
            ));
        }
    }
    Ok(0)
}

fn cmd_remove(
    store: &BoxStore,
    a: RemoveArgs,
    reporter: &Reporter,
    json: bool,
    project_dir: &Path,
) -> Result<i32, BoxError> {
    let all = store.versions_of(&a.name);
    let arch = a
        .architecture
        .as_deref()
        .map(|x| ArchRequest::from_option(Some(x)));
    let wanted_version = match &a.box_version {
        Some(v) => Some(
            Version::parse(v).map_err(|message| BoxError::BadConstraint {
                constraint: v.clone(),
                message,
            })?,
        ),
        None => None,
    };
    let matching: Vec<CachedBox> = sorted(
        all.iter()
            .filter(|c| wanted_version.as_ref().is_none_or(|v| c.version == *v))
            .filter(|c| arch.as_ref().is_none_or(|x| c.matches_arch(x)))
            .cloned()
            .collect(),
    );
    let ours: Vec<&CachedBox> = matching
        .iter()
        .filter(|c| c.origin == Origin::Kvmdrive)
        .collect();
    if ours.is_empty() {
        let mut searched = store.boxes_dir().display().to_string();
        if matching.iter().any(|c| c.origin == Origin::Vagrant) {
            searched.push_str("; Vagrant's cache has it: remove it with `vagrant box remove`");
        }
        return Err(BoxError::NotFound {
            name: a.name.clone(),
            searched,
        });
    }
    if ours.len() > 1 && !a.all && wanted_version.is_none() {
        let versions: Vec<String> = ours
            .iter()
            .map(|c| format!("{} ({})", c.version, c.arch_or_host()))
            .collect();
        return Err(BoxError::AmbiguousVersion {
            name: a.name.clone(),
            versions: versions.join(", "),
        });
    }
    let used = if a.force {
        BTreeMap::new()
    } else {
        boxes_in_use(store, project_dir)?
    };
    for c in &ours {
        if let Some(users) = used.get(&c.dir) {
            return Err(BoxError::InUse {
                name: c.name.clone(),
                version: c.version.to_string(),
                users: users.join(", "),
            });
        }
    }
    let _lock = store.lock(&a.name)?;
    let mut removed = Vec::new();
    for c in ours {
        store.remove(c)?;
        reporter.step(
            None,
            format!(
                "box {} {} ({}): removed",
                c.name,
                c.version,
                c.arch_or_host()
            ),
        );
        removed.push(json!({"name": c.name, "version": c.version.to_string(), "architecture": c.arch_or_host()}));
    }
    if json {
        reporter.json_doc(&json!({ "removed": removed }));
    } else {
        for r in &removed {
            reporter.line(format!(
                "removed box {} {} ({})",
                r["name"].as_str().unwrap_or(""),
                r["version"].as_str().unwrap_or(""),
                r["architecture"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(0)
}

/// What [`prune`] decided.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub removed: Vec<String>,
    /// Older versions kept because a machine uses them.
    pub kept_in_use: Vec<String>,
}

/// Removes every version of each box (per architecture) but the newest,
/// except those whose directory is in `in_use`. Only kvmdrive's cache is touched.
pub fn prune(
    store: &BoxStore,
    only: Option<&str>,
    in_use: &BTreeMap<PathBuf, Vec<String>>,
    dry_run: bool,
) -> Result<PruneReport, BoxError> {
    let mut groups: BTreeMap<(String, String), Vec<CachedBox>> = BTreeMap::new();
    let boxes = match only {
        Some(n) => store.versions_of(n),
        None => store.list(),
    };
    for c in boxes.into_iter().filter(|c| c.origin == Origin::Kvmdrive) {
        groups
            .entry((c.name.clone(), c.arch_or_host()))
            .or_default()
            .push(c);
    }
    let mut report = PruneReport::default();
    for ((name, arch), mut versions) in groups {
        versions.sort_by(|a, b| b.version.cmp(&a.version));
        let _lock = if dry_run {
            None
        } else {
            Some(store.lock(&name)?)
        };
        for c in versions.iter().skip(1) {
            let label = format!("{name} {} ({arch})", c.version);
            if let Some(users) = in_use.get(&c.dir) {
                report
                    .kept_in_use
                    .push(format!("{label}: used by {}", users.join(", ")));
                continue;
            }
            if !dry_run {
                store.remove(c)?;
            }
            report.removed.push(label);
        }
    }
    if !dry_run {
        store.clean_tmp(std::time::Duration::from_secs(24 * 3600));
    }
    Ok(report)
}

fn cmd_prune(
    store: &BoxStore,
    a: PruneArgs,
    reporter: &Reporter,
    json: bool,
    project_dir: &Path,
) -> Result<i32, BoxError> {
    let used = boxes_in_use(store, project_dir)?;
    let report = prune(store, a.name.as_deref(), &used, a.dry_run)?;
    if json {
        reporter.json_doc(
            &json!({"dry_run": a.dry_run, "removed": report.removed, "kept_in_use": report.kept_in_use}),
        );
    } else {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        for r in &report.removed {
            reporter.line(format!("{verb} box {r}"));
        }
        for k in &report.kept_in_use {
            reporter.line(format!("kept box {k}"));
        }
        if report.removed.is_empty() {
            reporter.step(None, "nothing to prune");
        }
    }
    Ok(0)
}

#[derive(Serialize)]
struct OutdatedEntry {
    name: String,
    architecture: String,
    current: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest: Option<String>,
    outdated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn cmd_outdated(
    store: &BoxStore,
    a: OutdatedArgs,
    reporter: &Reporter,
    json: bool,
) -> Result<i32, BoxError> {
    let boxes = match &a.name {
        Some(n) => store.versions_of(n),
        None => store.list(),
    };
    // newest cached version per (name, arch)
    let mut newest: BTreeMap<(String, String), CachedBox> = BTreeMap::new();
    for c in boxes {
        let key = (c.name.clone(), c.arch_or_host());
        match newest.get(&key) {
            Some(have) if have.version >= c.version => {}
            _ => {
                newest.insert(key, c);
            }
        }
    }
    if newest.is_empty() {
        if let Some(n) = &a.name {
            return Err(store.not_found(n, &Constraint::any()));
        }
    }
    let mut fetcher: Option<Fetcher> = None;
    let mut entries = Vec::new();
    let mut failed = false;
    for ((name, arch), c) in newest {
        let catalog = c
            .record()
            .and_then(|r| r.catalog)
            .or_else(|| store.metadata_url(&name, c.origin))
            .or_else(|| store.metadata_url(&name, Origin::Kvmdrive));
        let mut entry = OutdatedEntry {
            name: name.clone(),
            architecture: arch.clone(),
            current: c.version.to_string(),
            latest: None,
            outdated: false,
            catalog: catalog.clone(),
            error: None,
        };
        match catalog {
            None => {
                entry.error = Some("added from a file or URL: no catalog to compare with".into())
            }
            Some(url_text) => {
                let result = (|| -> Result<Version, BoxError> {
                    let url = Url::parse(&url_text).map_err(|e| BoxError::BadCatalog {
                        url: url_text.clone(),
                        message: e.to_string(),
                    })?;
                    let cat = if url.scheme() == "file" {
                        let path = url.to_file_path().unwrap_or_default();
                        let bytes = fs::read(&path)
                            .map_err(super::io_err(format!("cannot read {}", path.display())))?;
                        super::catalog::Catalog::parse(&bytes).map_err(|message| {
                            BoxError::BadCatalog {
                                url: url_text.clone(),
                                message,
                            }
                        })?
                    } else {
                        if fetcher.is_none() {
                            fetcher = Some(Fetcher::new(&store.net)?);
                        }
                        let auth = store.net.auth_for_catalog(&url);
                        fetcher
                            .as_ref()
                            .expect("set")
                            .catalog(&url, auth.as_ref())?
                            .0
                    };
                    let resolved = cat
                        .resolve(&Constraint::any(), &ArchRequest::Explicit(arch.clone()))
                        .map_err(|e| BoxError::BadCatalog {
                            url: url_text.clone(),
                            message: format!("no libvirt version for {arch}: {e:?}"),
                        })?;
                    Ok(resolved.version)
                })();
                match result {
                    Ok(latest) => {
                        entry.outdated = latest > c.version;
                        entry.latest = Some(latest.to_string());
                    }
                    Err(e) => {
                        failed = true;
                        entry.error = Some(e.to_string());
                    }
                }
            }
        }
        entries.push(entry);
    }
    if json {
        reporter.json_doc(&entries);
    } else {
        for e in &entries {
            match (&e.latest, &e.error) {
                (Some(latest), _) if e.outdated => reporter.line(format!(
                    "* '{}' for 'libvirt' ({}) is outdated! Current: {}. Latest: {}",
                    e.name, e.architecture, e.current, latest
                )),
                (Some(_), _) => reporter.line(format!(
                    "* '{}' for 'libvirt' ({}) (v{}) is up to date",
                    e.name, e.architecture, e.current
                )),
                (None, Some(err)) => reporter.line(format!(
                    "* '{}' ({}) v{}: {err}",
                    e.name, e.architecture, e.current
                )),
                (None, None) => {}
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn cmd_index(a: IndexArgs, reporter: &Reporter, json: bool) -> Result<i32, BoxError> {
    let report = index::index(&IndexOptions {
        dir: a.dir,
        base_url: a.base_url,
        name: a.name,
        architecture: a.architecture,
    })?;
    if json {
        let catalogs: Vec<_> = report
            .catalogs
            .iter()
            .map(|w| {
                json!({
                    "name": w.catalog.name,
                    "versions": w.catalog.versions.iter().map(|v| v.version.clone()).collect::<Vec<_>>(),
                    "files": w.files,
                    "urls": w.urls,
                })
            })
            .collect();
        let skipped: Vec<_> = report
            .skipped
            .iter()
            .map(|(p, why)| json!({"file": p, "reason": why}))
            .collect();
        reporter.json_doc(&json!({"catalogs": catalogs, "skipped": skipped}));
    } else {
        for w in &report.catalogs {
            let versions: BTreeSet<String> = w
                .catalog
                .versions
                .iter()
                .map(|v| v.version.clone())
                .collect();
            reporter.line(format!(
                "{}: {} version(s) ({})",
                w.catalog.name.as_deref().unwrap_or("?"),
                versions.len(),
                w.catalog
                    .versions
                    .iter()
                    .map(|v| v.version.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for (f, u) in w.files.iter().zip(&w.urls) {
                reporter.line(format!("  wrote {} (served at {u})", f.display()));
            }
        }
        for (p, why) in &report.skipped {
            reporter.step(None, format!("skipped {}: {why}", p.display()));
        }
    }
    Ok(0)
}
