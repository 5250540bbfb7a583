//! Which cached boxes are in use, and by whom: what `box prune` keeps and
//! `box remove` refuses to remove. Users are the machines of the project
//! `box` runs in (its kvmdrive.yml, as the cache resolves it now) and the
//! machine records of every project in the registry ([`super::projects`]):
//! each record names the box directory its machine was made from.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::catalog::ArchRequest;
use super::error::BoxError;
use super::store::{BoxStore, CachedBox, Origin};
use super::version::Constraint;
use crate::project::config::{Config, ConfigError};

/// Cached boxes in use, with who uses them: the version each machine of
/// `project_dir`'s kvmdrive.yml picks from the cache now, the box each
/// machine record of a registered project names, and any box whose
/// directory appears in a file under the project's `.kvmdrive/` (older
/// records named their box only that way).
pub fn boxes_in_use(
    store: &BoxStore,
    project_dir: &Path,
) -> Result<BTreeMap<PathBuf, Vec<String>>, BoxError> {
    let mut used: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    match Config::load(project_dir) {
        Ok(config) => {
            for m in config.machines() {
                let name = if m.box_name.contains("://") || m.box_name.ends_with(".box") {
                    let last = m
                        .box_name
                        .trim_end_matches('/')
                        .rsplit('/')
                        .next()
                        .unwrap_or(&m.box_name);
                    last.trim_end_matches(".box").to_owned()
                } else {
                    m.box_name.clone()
                };
                let constraint = m.box_version.clone().unwrap_or_else(Constraint::any);
                let arch = ArchRequest::from_option(m.box_architecture.as_deref());
                let mut candidates: Vec<CachedBox> = store
                    .versions_of(&name)
                    .into_iter()
                    .filter(|c| c.matches_arch(&arch) && constraint.is_satisfied_by(&c.version))
                    .collect();
                candidates.sort_by(|a, b| b.version.cmp(&a.version));
                if let Some(c) = candidates.first() {
                    used.entry(c.dir.clone()).or_default().push(format!(
                        "machine `{}` of {}",
                        m.name,
                        project_dir.display()
                    ));
                }
            }
        }
        Err(ConfigError::Missing { .. }) => {}
        Err(e) => {
            return Err(BoxError::ProjectUnreadable {
                source: Box::new(e),
            })
        }
    }
    let state = project_dir.join(crate::machine::project::STATE_DIR);
    search_state_files(store, &state, &mut used);
    for dir in super::projects::list(&store.home) {
        if dir != state {
            records_in(store, &dir, &mut used);
        }
    }
    for users in used.values_mut() {
        users.sort();
        users.dedup();
    }
    Ok(used)
}

/// The boxes the machine records of one state directory name. A record
/// written before records named their box (no `box_dir`) cannot say which
/// box it was made from: for compatibility, the state directory's files are
/// then searched for a box directory's path, as kvmdrive did before.
fn records_in(store: &BoxStore, state_dir: &Path, used: &mut BTreeMap<PathBuf, Vec<String>>) {
    #[derive(serde::Deserialize)]
    struct RecordBox {
        name: String,
        #[serde(default)]
        box_dir: Option<PathBuf>,
    }
    let Ok(entries) = fs::read_dir(state_dir.join("machines")) else {
        return;
    };
    let mut old_records = false;
    for e in entries.filter_map(|e| e.ok()) {
        let Ok(text) = fs::read_to_string(e.path().join("machine.json")) else {
            continue;
        };
        match serde_json::from_str::<RecordBox>(&text) {
            Ok(RecordBox {
                name,
                box_dir: Some(dir),
            }) => used
                .entry(dir)
                .or_default()
                .push(format!("machine `{name}` of {}", state_dir.display())),
            _ => old_records = true,
        }
    }
    if old_records {
        search_state_files(store, state_dir, used);
    }
}

/// Boxes whose directory appears in a file under `state`.
fn search_state_files(store: &BoxStore, state: &Path, used: &mut BTreeMap<PathBuf, Vec<String>>) {
    let mut texts: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    collect_small_files(state, &mut texts, 0);
    if !texts.is_empty() {
        for c in store
            .list()
            .into_iter()
            .filter(|c| c.origin == Origin::Kvmdrive)
        {
            let needle = c.dir.as_os_str().as_encoded_bytes();
            for (path, bytes) in &texts {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    used.entry(c.dir.clone())
                        .or_default()
                        .push(format!("state file {}", path.display()));
                }
            }
        }
    }
}

fn collect_small_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>, depth: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() && depth < 4 {
            collect_small_files(&e.path(), out, depth + 1);
        } else if meta.is_file() && meta.len() <= 4 << 20 {
            if let Ok(bytes) = fs::read(e.path()) {
                out.push((e.path(), bytes));
            }
        }
    }
}
