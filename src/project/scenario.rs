//! Where a project's machines and playbooks come from: an explicit platforms
//! list (`--platforms`, what the Molecule plugin passes), the list saved in
//! the state directory when the machines were created, `kvmdrive.yml`, or a
//! Molecule scenario's `molecule.yml` (so `kvmdrive test` runs a Molecule
//! scenario without Molecule). Also the instances' records as Molecule and
//! Ansible want them.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::machine::project::{MachineRecord, Project, ProjectError};
use crate::project::config::{self, Config, ConfigError};
use crate::project::interpolate::interpolate;
use crate::project::molecule::platforms::{self, Instance, PlatformError};
use crate::roletest::ansible::InventoryHost;

/// The platforms document saved in the state directory at create time.
pub const SAVED_FILE: &str = "scenario.json";
/// Molecule's scenario file.
pub const MOLECULE_FILE: &str = "molecule.yml";

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Platforms(#[from] PlatformError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no {} or {MOLECULE_FILE} in {dir}", config::CONFIG_FILE)]
    Missing { dir: PathBuf },
    #[error("{path}: {message}")]
    Interpolation { path: PathBuf, message: String },
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("state directory {dir} holds files that are not kvmdrive's")]
    ForeignStateDir { dir: PathBuf },
}

impl ScenarioError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ScenarioError::Config(e) => e.hint(),
            ScenarioError::Platforms(e) => e.hint(),
            ScenarioError::Project(e) => e.hint(),
            ScenarioError::Missing { .. } => Some(
                "run `kvmdrive init`, or give the machines with `--platforms FILE` (`-` for stdin)"
                    .into(),
            ),
            ScenarioError::ForeignStateDir { dir } => Some(format!(
                "kvmdrive removes its state directory with the last machine: give it one of its own, e.g. {}",
                dir.join("kvmdrive").display()
            )),
            _ => None,
        }
    }
}

/// Where the machines were declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--platforms FILE` (or stdin).
    Platforms,
    /// The list saved in the state directory by `create`.
    Saved,
    /// `kvmdrive.yml`.
    KvmdriveYml,
    /// A Molecule scenario's `molecule.yml`.
    MoleculeYml,
    /// Nothing declared: one machine called `default` (for `destroy`).
    Default,
}

/// What `scenario.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    /// The project directory of the `create` (it names the libvirt objects).
    project_dir: PathBuf,
    /// The platforms document as given.
    document: Value,
}

/// A project with its machines, ready for the lifecycle.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub project: Project,
    pub config: Config,
    pub instances: Vec<Instance>,
    /// Platform keys accepted but not honoured.
    pub warnings: Vec<String>,
    pub source: Source,
    /// The platforms document, when the machines came from one.
    document: Option<Value>,
}

/// One instance as Molecule's `instance_config.yml` holds it (and what
/// `kvmdrive create --json` prints).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceRecord {
    pub instance: String,
    pub address: String,
    pub user: String,
    pub port: u16,
    pub identity_file: PathBuf,
    /// Extra NICs (name, mac, ip, prefix): host var `kvmdrive_networks`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<crate::machine::nics::NicAddress>,
    /// Extra `ssh` options that reach the instance through its hypervisor
    /// host (remote libvirt, `hosts:`): the plugin adds them to
    /// `ansible_ssh_common_args`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_args: Option<String>,
    /// The libvirt URI of the instance's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The guest's Python (see `MachineRecord::python`): the plugin sets
    /// `ansible_python_interpreter` to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

impl Scenario {
    /// Finds the machines of the project at `dir` (see the module docs for
    /// the order). `state_dir` defaults to `dir/.kvmdrive`.
    pub fn open(
        dir: &Path,
        state_dir: Option<&Path>,
        platforms_file: Option<&Path>,
    ) -> Result<Scenario, ScenarioError> {
        let default_state = dir.join(crate::machine::project::STATE_DIR);
        let state = state_dir.unwrap_or(&default_state);
        if state_dir.is_some() {
            check_state_dir(state)?;
        }
        if let Some(file) = platforms_file {
            // A molecule.yml as Molecule reads it (stdin comes expanded).
            let (doc, name) = if is_molecule_file(file) {
                (read_molecule_file(file)?, file.display().to_string())
            } else {
                let (text, name) = read_source(file)?;
                (platforms::read_document(&text, &name)?, name)
            };
            return Scenario::from_document(dir, state_dir, doc, &name, Source::Platforms);
        }
        let saved_path = state.join(SAVED_FILE);
        match fs::read_to_string(&saved_path) {
            Ok(text) => {
                let mut saved: Saved =
                    serde_json::from_str(&text).map_err(|e| ScenarioError::Corrupt {
                        path: saved_path.clone(),
                        message: e.to_string(),
                    })?;
                take_run_options(&mut saved.document, &dir.join(MOLECULE_FILE));
                let name = saved_path.display().to_string();
                return Scenario::from_document(
                    &saved.project_dir,
                    Some(state),
                    saved.document,
                    &name,
                    Source::Saved,
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ScenarioError::Read {
                    path: saved_path,
                    source,
                })
            }
        }
        match Config::load(dir) {
            Ok(config) => Scenario::from_config(dir, state_dir, config, Source::KvmdriveYml),
            Err(ConfigError::Missing { .. }) => {
                let path = dir.join(MOLECULE_FILE);
                if !path.is_file() {
                    return Err(ScenarioError::Missing {
                        dir: dir.to_owned(),
                    });
                }
                let doc = read_molecule_file(&path)?;
                let name = path.display().to_string();
                Scenario::from_document(dir, state_dir, doc, &name, Source::MoleculeYml)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A scenario whose instances are exactly the config's machines.
    fn from_config(
        dir: &Path,
        state_dir: Option<&Path>,
        config: Config,
        source: Source,
    ) -> Result<Scenario, ScenarioError> {
        let instances = config
            .machines()
            .into_iter()
            .map(|m| Instance {
                name: m.name.0.clone(),
                machine: m.name.0,
                groups: Vec::new(),
                children: Vec::new(),
            })
            .collect();
        Ok(Scenario {
            project: Project::new(dir, state_dir)?,
            config,
            instances,
            warnings: Vec::new(),
            source,
            document: None,
        })
    }

    /// Like [`Scenario::open`], but a project that declares nothing has one
    /// machine called `default` (what `destroy` needs to clean up anyway).
    pub fn open_or_default(
        dir: &Path,
        state_dir: Option<&Path>,
        platforms_file: Option<&Path>,
    ) -> Result<Scenario, ScenarioError> {
        match Scenario::open(dir, state_dir, platforms_file) {
            Err(ScenarioError::Missing { .. }) => {
                Scenario::from_config(dir, state_dir, Config::default(), Source::Default)
            }
            other => other,
        }
    }

    /// For `destroy` when the declared machines no longer load (a key kvmdrive
    /// now refuses, a broken file): the machines recorded in the state
    /// directory, so `destroy` removes what earlier runs made whatever the
    /// declaration says now; libvirt's metadata finds the rest.
    pub fn recorded(dir: &Path, state_dir: Option<&Path>) -> Result<Scenario, ScenarioError> {
        let default_state = dir.join(crate::machine::project::STATE_DIR);
        let state = state_dir.unwrap_or(&default_state);
        // The saved scenario names the directory the machines were made from
        // (it is part of their libvirt names), even if its document is stale.
        let saved_dir = fs::read_to_string(state.join(SAVED_FILE))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("project_dir")?.as_str().map(PathBuf::from));
        let dir = saved_dir.as_deref().unwrap_or(dir);
        let mut names: Vec<String> = fs::read_dir(state.join("machines"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let machines = names
            .iter()
            .filter_map(|n| config::MachineName::parse(n).ok())
            .map(|name| config::MachineSettings {
                name: Some(name),
                ..Default::default()
            })
            .collect();
        let config = Config {
            machines: config::Machines(machines),
            ..Config::default()
        };
        Scenario::from_config(dir, state_dir, config, Source::Default)
    }

    /// True when this error is about what the project declares (a bad key
    /// or value), not about a missing or unreadable project.
    pub fn is_bad_declaration(e: &ScenarioError) -> bool {
        matches!(
            e,
            ScenarioError::Config(ConfigError::Invalid { .. })
                | ScenarioError::Config(ConfigError::InvalidNoLocation { .. })
                | ScenarioError::Platforms(_)
                | ScenarioError::Interpolation { .. }
                | ScenarioError::Corrupt { .. }
        )
    }

    fn from_document(
        dir: &Path,
        state_dir: Option<&Path>,
        doc: Value,
        name: &str,
        source: Source,
    ) -> Result<Scenario, ScenarioError> {
        let p = platforms::from_document(&doc, name)?;
        let mut config = p.config;
        let project = Project::new(dir, state_dir)?;
        resolve_host_paths(&mut config, &molecule_project_dir(&project.dir));
        Ok(Scenario {
            project,
            config,
            instances: p.instances,
            warnings: p.warnings,
            source,
            document: Some(doc),
        })
    }

    /// The project directory (where playbooks are looked for).
    pub fn dir(&self) -> &Path {
        &self.project.dir
    }

    /// Saves the platforms document in the state directory, so that later
    /// commands given only `--state-dir` find the machines.
    pub fn save(&self) -> Result<(), ScenarioError> {
        let Some(document) = &self.document else {
            return Ok(());
        };
        let dir = &self.project.state_dir;
        let write = |source| ScenarioError::Write {
            path: dir.join(SAVED_FILE),
            source,
        };
        fs::create_dir_all(dir).map_err(write)?;
        let saved = Saved {
            project_dir: self.project.dir.clone(),
            document: document.clone(),
        };
        let json = serde_json::to_string_pretty(&saved).expect("plain data serialises");
        fs::write(dir.join(SAVED_FILE), json).map_err(write)
    }

    /// The driver's `reuse: true` (Molecule's `driver:` section): machines
    /// are kept between runs (see `machine::reuse`).
    pub fn driver_reuse(&self) -> bool {
        self.driver_flag("reuse")
    }

    /// The driver's `mitogen: true`: playbooks run with Mitogen for Ansible
    /// (see `roletest::mitogen`).
    pub fn driver_mitogen(&self) -> bool {
        self.driver_flag("mitogen")
    }

    /// A boolean of the `driver:` section; false when absent.
    fn driver_flag(&self, key: &str) -> bool {
        self.document
            .as_ref()
            .and_then(|d| d.get("driver")?.get(key)?.as_bool())
            .unwrap_or(false)
    }

    /// The molecule.yml document, when the machines came from one.
    pub fn molecule_document(&self) -> Option<&Value> {
        (self.source == Source::MoleculeYml)
            .then_some(self.document.as_ref())
            .flatten()
    }

    /// Each instance with its record (None when it is not up).
    pub fn records(&self) -> Result<Vec<(&Instance, Option<MachineRecord>)>, ScenarioError> {
        self.instances
            .iter()
            .map(|i| Ok((i, self.project.record(&i.machine)?)))
            .collect()
    }

    /// The Molecule view of a machine record.
    pub fn instance_record(&self, r: &MachineRecord) -> InstanceRecord {
        let instance = self
            .instances
            .iter()
            .find(|i| i.machine == r.name)
            .map_or_else(|| r.name.clone(), |i| i.name.clone());
        InstanceRecord {
            instance,
            address: r.address.clone(),
            user: r.user.clone(),
            port: r.port,
            identity_file: r.identity_file.clone(),
            networks: r.networks.clone(),
            ssh_args: crate::roletest::ansible::jump_args(r),
            host: r.host.clone(),
            python: r.python.clone(),
        }
    }

    /// Inventory hosts for the instances that are up, and the names of those
    /// that are not.
    pub fn inventory_hosts(&self) -> Result<(Vec<InventoryHost>, Vec<String>), ScenarioError> {
        let mut up = Vec::new();
        let mut down = Vec::new();
        for (i, r) in self.records()? {
            match r {
                Some(record) => up.push(InventoryHost {
                    name: i.name.clone(),
                    record,
                    groups: i.groups.clone(),
                    children: i.children.clone(),
                }),
                None => down.push(i.name.clone()),
            }
        }
        Ok((up, down))
    }
}

/// Molecule's project directory (where `molecule` runs: the role) for a
/// scenario directory ROLE/molecule/NAME; otherwise `dir` itself. Relative
/// host paths of synced folders and provisioners start there, as users of
/// `synced_folder: true` expect their role at /vagrant (molecule-vagrant
/// syncs its ephemeral directory, which holds only its Vagrantfile).
pub fn molecule_project_dir(dir: &Path) -> PathBuf {
    let parent = dir.parent();
    match parent.and_then(|p| Some((p.file_name()?, p.parent()?))) {
        Some((name, root)) if name == "molecule" && dir.join(MOLECULE_FILE).is_file() => {
            root.to_owned()
        }
        _ => dir.to_owned(),
    }
}

/// Makes relative synced folder sources and provisioner files absolute
/// (from `base`), so later steps need not know where they came from.
fn resolve_host_paths(config: &mut Config, base: &Path) {
    use crate::project::provisioner::{Provisioner, Script};
    let abs = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    for m in std::iter::once(&mut config.defaults).chain(config.machines.0.iter_mut()) {
        for f in m.synced_folders.iter_mut().flatten() {
            abs(&mut f.src);
        }
        for p in m.provision.iter_mut().flatten() {
            match p {
                Provisioner::Shell(s) => {
                    if let Script::Path(path) = &mut s.script {
                        abs(path)
                    }
                }
                Provisioner::File(f) => abs(&mut f.source),
                Provisioner::Ansible(a) => abs(&mut a.playbook),
            }
        }
    }
}

/// Refuses an explicit state directory that already holds someone else's
/// files: kvmdrive removes its state directory with the last machine.
fn check_state_dir(dir: &Path) -> Result<(), ScenarioError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let ours = ["lock", "machines", SAVED_FILE];
    if names.is_empty() || names.iter().any(|n| ours.contains(&n.as_str())) {
        Ok(())
    } else {
        Err(ScenarioError::ForeignStateDir {
            dir: dir.to_owned(),
        })
    }
}

/// molecule.yml as Molecule reads it: `${VAR}` expanded, then parsed.
fn read_molecule_file(path: &Path) -> Result<Value, ScenarioError> {
    let text = interpolate(&read(path)?, |v| std::env::var(v).ok()).map_err(|message| {
        ScenarioError::Interpolation {
            path: path.to_owned(),
            message,
        }
    })?;
    Ok(platforms::read_document(
        &text,
        &path.display().to_string(),
    )?)
}

/// The driver's run options (`reuse`, `mitogen`: how the steps run, not
/// what the machines are) from the scenario's molecule.yml as it is now,
/// over those saved at create: editing them takes effect on the machines
/// already made. A missing or unreadable file changes nothing.
fn take_run_options(saved: &mut Value, molecule_file: &Path) {
    let Ok(now) = read_molecule_file(molecule_file) else {
        return;
    };
    let Value::Object(doc) = saved else {
        return;
    };
    let Value::Object(driver) = doc
        .entry("driver")
        .or_insert_with(|| Value::Object(Default::default()))
    else {
        return;
    };
    for key in ["reuse", "mitogen"] {
        match now.pointer(&format!("/driver/{key}")) {
            Some(v) => driver.insert(key.to_owned(), v.clone()),
            None => driver.remove(key),
        };
    }
}

/// A Molecule scenario file (`molecule.yml`, `molecule.yaml`), named as such.
fn is_molecule_file(file: &Path) -> bool {
    file.file_stem().is_some_and(|s| s == "molecule")
        && file.extension().is_some_and(|e| e == "yml" || e == "yaml")
}

/// Reads a file, or stdin for `-`; returns the text and a name for messages.
fn read_source(file: &Path) -> Result<(String, String), ScenarioError> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| ScenarioError::Read {
                path: "<stdin>".into(),
                source,
            })?;
        Ok((text, "<stdin>".into()))
    } else {
        Ok((read(file)?, file.display().to_string()))
    }
}

fn read(path: &Path) -> Result<String, ScenarioError> {
    fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_declaration_still_yields_the_recorded_machines() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        fs::create_dir_all(state.join("machines/web")).unwrap();
        fs::create_dir_all(state.join("machines/db")).unwrap();
        fs::write(
            state.join(SAVED_FILE),
            format!(
                r#"{{"project_dir": "{}", "document": {{"platforms": [{{"name": "x", "frobnicate": 1}}]}}}}"#,
                tmp.path().join("made-here").display()
            ),
        )
        .unwrap();
        let e = Scenario::open(tmp.path(), Some(&state), None).unwrap_err();
        assert!(Scenario::is_bad_declaration(&e), "{e}");
        let s = Scenario::recorded(tmp.path(), Some(&state)).unwrap();
        let names: Vec<_> = s.config.machines().into_iter().map(|m| m.name.0).collect();
        assert_eq!(names, ["db", "web"]);
        assert!(s.project.dir.ends_with("made-here"), "{:?}", s.project.dir);
        let missing = Scenario::open(&tmp.path().join("nothing"), None, None).unwrap_err();
        assert!(!Scenario::is_bad_declaration(&missing));
    }

    #[test]
    fn kvmdrive_yml_comes_before_molecule_yml() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("molecule.yml"), "platforms:\n  - name: m\n").unwrap();
        let s = Scenario::open(tmp.path(), None, None).unwrap();
        assert_eq!(s.source, Source::MoleculeYml);
        assert_eq!(s.instances[0].name, "m");
        fs::write(tmp.path().join("kvmdrive.yml"), "machines:\n  - name: k\n").unwrap();
        let s = Scenario::open(tmp.path(), None, None).unwrap();
        assert_eq!(s.source, Source::KvmdriveYml);
        assert_eq!(s.instances[0].machine, "k");
    }

    #[test]
    fn molecule_yml_is_interpolated() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("molecule.yml"),
            "platforms:\n  - name: m\n    box: ${KVMDRIVE_TEST_SURELY_UNSET:-some/box}\n",
        )
        .unwrap();
        let s = Scenario::open(tmp.path(), None, None).unwrap();
        assert_eq!(s.config.machines()[0].box_name, "some/box");
    }

    #[test]
    fn a_molecule_yml_given_with_platforms_is_interpolated_too() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("molecule.yml");
        let text = "platforms:\n  - name: m\n    box: ${KVMDRIVE_TEST_SURELY_UNSET:-some/box}\n";
        fs::write(&file, text).unwrap();
        let s = Scenario::open(tmp.path(), None, Some(&file)).unwrap();
        assert_eq!(s.config.machines()[0].box_name, "some/box");
        // Other files are taken as they are (a JSON list made by a script).
        let other = tmp.path().join("list.yml");
        fs::write(
            &other,
            text.replace("platforms:\n", "")
                .replace("  - ", "- ")
                .replace("    ", "  "),
        )
        .unwrap();
        let s = Scenario::open(tmp.path(), None, Some(&other)).unwrap();
        assert_eq!(
            s.config.machines()[0].box_name,
            "${KVMDRIVE_TEST_SURELY_UNSET:-some/box}"
        );
    }

    #[test]
    fn run_options_come_from_the_molecule_yml_as_it_is_now() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("molecule.yml");
        fs::write(
            &file,
            "driver:\n  name: molecule-kvmdrive\nplatforms:\n  - name: m\n",
        )
        .unwrap();
        let s = Scenario::open(tmp.path(), None, None).unwrap();
        s.save().unwrap();
        assert!(!s.driver_mitogen() && !s.driver_reuse());
        fs::write(
            &file,
            "driver:\n  name: molecule-kvmdrive\n  mitogen: true\n  reuse: yes\n  default_box: other\nplatforms:\n  - name: m\n    memory: 2048\n",
        )
        .unwrap();
        let s = Scenario::open(tmp.path(), None, None).unwrap();
        assert_eq!(s.source, Source::Saved);
        assert!(s.driver_mitogen() && s.driver_reuse());
        // What the machines are stays as saved at create.
        assert_eq!(s.config.machines()[0].memory_mib, 512);
    }

    #[test]
    fn saved_platforms_are_found_through_the_state_dir_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let proj = tmp.path().join("role");
        let state = tmp.path().join("eph/kvmdrive");
        fs::create_dir_all(&proj).unwrap();
        let list = tmp.path().join("platforms.json");
        fs::write(&list, r#"[{"name": "Web_1", "groups": ["g"]}]"#).unwrap();
        let s = Scenario::open(&proj, Some(&state), Some(&list)).unwrap();
        assert_eq!(s.source, Source::Platforms);
        s.save().unwrap();
        // Another directory, same state dir: same project (same libvirt names).
        let t = Scenario::open(tmp.path(), Some(&state), None).unwrap();
        assert_eq!(t.source, Source::Saved);
        assert_eq!(t.project.dir, s.project.dir);
        assert_eq!(t.project.id, s.project.id);
        assert_eq!(t.instances, s.instances);
    }

    #[test]
    fn molecule_paths_start_at_the_role() {
        let tmp = tempfile::tempdir().unwrap();
        let sc_dir = tmp.path().join("role/molecule/default");
        fs::create_dir_all(&sc_dir).unwrap();
        fs::write(
            sc_dir.join("molecule.yml"),
            "platforms:\n  - name: m\n    config_options:\n      synced_folder: true\n",
        )
        .unwrap();
        let role = tmp.path().join("role");
        assert_eq!(molecule_project_dir(&sc_dir), role);
        assert_eq!(molecule_project_dir(&role), role);
        let s = Scenario::open(&sc_dir, None, None).unwrap();
        let f = &s.config.machines()[0].synced_folders[0];
        assert_eq!(f.src, role.join("."));
        assert_eq!(f.dest.0, "/vagrant");
    }

    #[test]
    fn a_foreign_state_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("state.yml"), "x").unwrap();
        fs::write(tmp.path().join("kvmdrive.yml"), "").unwrap();
        let e = Scenario::open(tmp.path(), Some(tmp.path()), None).unwrap_err();
        assert!(matches!(e, ScenarioError::ForeignStateDir { .. }), "{e}");
        assert!(Scenario::open(tmp.path(), Some(&tmp.path().join("kvmdrive")), None).is_ok());
    }

    #[test]
    fn nothing_declared_is_missing_or_default() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            Scenario::open(tmp.path(), None, None),
            Err(ScenarioError::Missing { .. })
        ));
        let s = Scenario::open_or_default(tmp.path(), None, None).unwrap();
        assert_eq!(s.source, Source::Default);
        assert_eq!(s.instances[0].machine, "default");
    }
}
