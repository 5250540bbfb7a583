//! The role-testing lifecycle without Molecule: create, prepare, converge,
//! idempotence, verify, destroy, and `test` running them in Molecule's order
//! (destroying at the start and at the end unless told `never`). Exit codes
//! follow Molecule: a failed playbook's own status, 1 for a failed
//! idempotence check, 130 when interrupted.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::machine::lifecycle::{self, Env, LifecycleError};
use crate::machine::reuse;
use crate::project::scenario::{InstanceRecord, Scenario, ScenarioError};
use crate::roletest::ansible::{self, AnsibleError, PlaybookRun};

/// Inventory file the steps write in the state directory.
pub const INVENTORY_FILE: &str = "inventory.yml";
/// Directory of role links (the role under test by its names) in the state directory.
pub const ROLES_DIR: &str = "roles";

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Ansible(#[from] AnsibleError),
    #[error(transparent)]
    Reuse(#[from] crate::machine::snapshot::SnapshotError),
    #[error("{step}: {} exited with status {code}", playbook.display())]
    PlaybookFailed {
        step: &'static str,
        playbook: PathBuf,
        code: i32,
    },
    #[error("idempotence failed: these tasks changed something on the second run:\n{}", tasks.join("\n"))]
    NotIdempotent { tasks: Vec<String> },
    #[error("not created: {}", names.join(", "))]
    NotCreated { names: Vec<String> },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StepError {
    pub fn hint(&self) -> Option<String> {
        match self {
            StepError::Lifecycle(e) => e.hint(),
            StepError::Scenario(e) => e.hint(),
            StepError::Ansible(e) => e.hint(),
            StepError::Reuse(e) => e.hint(),
            StepError::NotCreated { .. } => Some("run `kvmdrive create` (or `converge`) first".into()),
            StepError::NotIdempotent { .. } => Some(
                "make those tasks report `changed` only when they change something (or tag them molecule-idempotence-notest)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// One step of a sequence and how it went, for `--json` (a failed step ends
/// the sequence with a [`StepError`] instead).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepOutcome {
    pub step: &'static str,
    /// `ok`, or `skipped` (an optional step without a playbook).
    pub result: &'static str,
}

impl StepOutcome {
    fn new(step: &'static str, ran: bool) -> StepOutcome {
        let result = if ran { "ok" } else { "skipped" };
        StepOutcome { step, result }
    }

    /// A playbook step that ran (`true`) or was skipped.
    pub fn of(step: PlaybookStep, ran: bool) -> StepOutcome {
        StepOutcome::new(step.name(), ran)
    }
}

/// Steps with a playbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaybookStep {
    Prepare,
    Converge,
    Idempotence,
    Verify,
}

impl PlaybookStep {
    pub fn name(self) -> &'static str {
        match self {
            PlaybookStep::Prepare => "prepare",
            PlaybookStep::Converge => "converge",
            PlaybookStep::Idempotence => "idempotence",
            PlaybookStep::Verify => "verify",
        }
    }

    /// The playbook file's step (idempotence runs converge's).
    fn file_step(self) -> &'static str {
        match self {
            PlaybookStep::Idempotence => "converge",
            s => s.name(),
        }
    }
}

/// Creates (or starts) every machine and returns the instances' records;
/// reusing parked machines when the scenario's driver says `reuse: true`.
pub fn create(env: &Env, sc: &Scenario) -> Result<Vec<InstanceRecord>, StepError> {
    create_with(env, sc, sc.driver_reuse())
}

/// Tells the user which of the scenario's keys are not honoured as written
/// (Vagrant-only keys, provisioners turned off, ...): before any machine is made.
pub fn show_warnings(env: &Env, sc: &Scenario) {
    for w in &sc.warnings {
        env.out.warn(None, w);
    }
}

/// [`create`]; with `reuse`, parked machines are reverted to their pristine
/// snapshot and fresh ones get one (`create --reuse`).
pub fn create_with(
    env: &Env,
    sc: &Scenario,
    reuse: bool,
) -> Result<Vec<InstanceRecord>, StepError> {
    show_warnings(env, sc);
    sc.save()?;
    let records = if reuse {
        reuse::create(env, &sc.config, &[])?
    } else {
        lifecycle::up(env, &sc.config, &[])?
    };
    Ok(records.iter().map(|r| sc.instance_record(r)).collect())
}

/// Writes Molecule's `instance_config.yml`: the records as a YAML list
/// (`[]` for none), replacing the file whole (a reader never sees half of
/// it), readable by its owner only (the records name the SSH key).
pub fn write_instance_config(path: &Path, records: &[InstanceRecord]) -> Result<(), StepError> {
    use std::io::Write;
    let err = |source| StepError::Write {
        path: path.to_owned(),
        source,
    };
    let yaml = if records.is_empty() {
        "[]\n".to_owned()
    } else {
        serde_norway::to_string(records).map_err(|e| err(std::io::Error::other(e)))?
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // NamedTempFile is created 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(yaml.as_bytes()).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Removes every machine of the project; with `reuse` (or the driver's
/// `reuse: true`) machines with a pristine snapshot are parked instead.
pub fn destroy(env: &Env, sc: &Scenario, reuse: bool) -> Result<(), StepError> {
    if reuse || sc.driver_reuse() {
        Ok(reuse::park(env, &sc.config, &[])?)
    } else {
        Ok(reuse::purge(env, &sc.config, &[])?)
    }
}

/// The playbook a step runs: the one given (relative to the current
/// directory), molecule.yml's `provisioner.playbooks`, or STEP.yml in the
/// project directory.
pub fn playbook_path(sc: &Scenario, step: PlaybookStep, given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    }
    let file_step = step.file_step();
    let configured = sc
        .molecule_document()
        .and_then(|d| d.pointer(&format!("/provisioner/playbooks/{file_step}")))
        .and_then(|v| v.as_str());
    match configured {
        Some(p) => sc.dir().join(p),
        None => sc.dir().join(format!("{file_step}.yml")),
    }
}

/// Runs a step's playbook against the machines that are up (all must be).
/// Returns Ok(false) when an optional step (prepare, verify) has no playbook.
pub fn run_step(
    env_out: &crate::output::Reporter,
    sc: &Scenario,
    step: PlaybookStep,
    given: Option<&Path>,
    extra_args: &[String],
) -> Result<bool, StepError> {
    let playbook = playbook_path(sc, step, given);
    let optional = matches!(step, PlaybookStep::Prepare | PlaybookStep::Verify);
    if optional && given.is_none() && !playbook.is_file() {
        env_out.step(
            None,
            format!("{}: no {}: skipped", step.name(), playbook.display()),
        );
        return Ok(false);
    }
    let (hosts, down) = sc.inventory_hosts()?;
    if !down.is_empty() {
        return Err(StepError::NotCreated { names: down });
    }
    let state = &sc.project.state_dir;
    let inventory = state.join(INVENTORY_FILE);
    write(&inventory, ansible::inventory_yaml(&hosts).as_bytes())?;
    let env = ansible_env(sc)?;
    env_out.step(None, format!("{}: {}", step.name(), playbook.display()));
    let mut args = extra_args.to_vec();
    if step == PlaybookStep::Idempotence {
        args.extend(["--skip-tags".into(), "molecule-idempotence-notest".into()]);
    }
    args.extend(["--skip-tags".into(), "molecule-notest,notest".into()]);
    let outcome = ansible::run_playbook(&PlaybookRun {
        playbook: &playbook,
        inventory: &inventory,
        env: &env,
        extra_args: &args,
        cwd: sc.dir(),
    })?;
    if outcome.code != 0 {
        return Err(StepError::PlaybookFailed {
            step: step.name(),
            playbook,
            code: outcome.code,
        });
    }
    if step == PlaybookStep::Idempotence {
        let tasks = ansible::changed_tasks(&outcome.output);
        if !tasks.is_empty() {
            return Err(StepError::NotIdempotent { tasks });
        }
        env_out.step(None, "idempotence: nothing changed");
    }
    Ok(true)
}

/// Converge: create what is missing (as Molecule's converge sequence does),
/// then run the playbook.
pub fn converge(
    env: &Env,
    sc: &Scenario,
    given: Option<&Path>,
    extra_args: &[String],
) -> Result<Vec<StepOutcome>, StepError> {
    let mut done = Vec::new();
    let (_, down) = sc.inventory_hosts()?;
    if !down.is_empty() {
        create(env, sc)?;
        done.push(StepOutcome::new("create", true));
    }
    let ran = run_step(env.out, sc, PlaybookStep::Converge, given, extra_args)?;
    done.push(StepOutcome::new(PlaybookStep::Converge.name(), ran));
    Ok(done)
}

/// The whole sequence. With `destroy` false nothing is destroyed, neither
/// before nor after (Molecule's `--destroy never`). With `reuse`, machines
/// are parked rather than destroyed and reused by the next run's create.
pub fn test(
    env: &Env,
    sc: &Scenario,
    destroy_machines: bool,
    reuse: bool,
) -> Result<Vec<StepOutcome>, StepError> {
    let reuse = reuse || sc.driver_reuse();
    let mut done = Vec::new();
    if destroy_machines {
        env.out
            .step(None, "test: destroy (leftovers of an earlier run)");
        destroy(env, sc, reuse)?;
        done.push(StepOutcome::new("destroy", true));
    }
    let result: Result<(), StepError> = (|| {
        env.out.step(None, "test: create");
        create_with(env, sc, reuse)?;
        done.push(StepOutcome::new("create", true));
        for step in [
            PlaybookStep::Prepare,
            PlaybookStep::Converge,
            PlaybookStep::Idempotence,
            PlaybookStep::Verify,
        ] {
            let ran = run_step(env.out, sc, step, None, &[])?;
            done.push(StepOutcome::new(step.name(), ran));
        }
        Ok(())
    })();
    if destroy_machines {
        env.out.step(None, "test: destroy");
        if let Err(e) = destroy(env, sc, reuse) {
            if result.is_ok() {
                return Err(e);
            }
            env.out
                .warn(None, format!("destroy after the failure: {e}"));
        }
    }
    result?;
    if destroy_machines {
        done.push(StepOutcome::new("destroy", true));
    }
    Ok(done)
}

/// Environment for ansible-playbook: Molecule's ansible.cfg defaults (only
/// where the user set nothing), the role under test on the roles path,
/// Mitogen's strategy for the driver's `mitogen: true`, and Molecule's
/// variables when the project is a Molecule scenario.
fn ansible_env(sc: &Scenario) -> Result<Vec<(String, OsString)>, StepError> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    for (k, v) in [
        ("ANSIBLE_HOST_KEY_CHECKING", "False"),
        ("ANSIBLE_RETRY_FILES_ENABLED", "False"),
        ("ANSIBLE_NOCOWS", "1"),
        ("ANSIBLE_PYTHON_INTERPRETER", "auto_silent"),
        ("ANSIBLE_PIPELINING", "True"),
    ] {
        if std::env::var_os(k).is_none() {
            env.push((k.into(), v.into()));
        }
    }
    let state = &sc.project.state_dir;
    let role = role_dir(sc.dir());
    if let Some(role) = &role {
        let links = state.join(ROLES_DIR);
        link_role(&links, role)?;
        let mut paths = vec![links];
        if let Some(old) = std::env::var_os("ANSIBLE_ROLES_PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        let joined = std::env::join_paths(paths).unwrap_or_default();
        env.push(("ANSIBLE_ROLES_PATH".into(), joined));
    }
    if sc.driver_mitogen() {
        env.extend(super::mitogen::env_for(&super::ansible::playbook_program())?);
    }
    if sc.molecule_document().is_some() {
        let name = sc
            .dir()
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        env.push(("MOLECULE_SCENARIO_NAME".into(), name));
        env.push(("MOLECULE_SCENARIO_DIRECTORY".into(), sc.dir().into()));
        env.push((
            "MOLECULE_PROJECT_DIRECTORY".into(),
            role.clone().unwrap_or_else(|| sc.dir().to_owned()).into(),
        ));
        env.push(("MOLECULE_EPHEMERAL_DIRECTORY".into(), state.into()));
        env.push((
            "MOLECULE_INVENTORY_FILE".into(),
            state.join(INVENTORY_FILE).into(),
        ));
    }
    Ok(env)
}

/// The role under test: the project directory itself when it is a role, or
/// ROLE for a Molecule scenario at ROLE/molecule/NAME.
pub fn role_dir(dir: &Path) -> Option<PathBuf> {
    let is_role = |d: &Path| d.join("tasks").is_dir() || d.join("meta/main.yml").is_file();
    if is_role(dir) {
        return Some(dir.to_owned());
    }
    let parent = dir.parent()?;
    if parent.file_name()? == "molecule" {
        let role = parent.parent()?;
        if is_role(role) {
            return Some(role.to_owned());
        }
    }
    None
}

/// The names a role is known by: its directory name (without `ansible-role-`
/// or `ansible-`), meta/main.yml's `role_name`, and `namespace.role_name` as
/// Molecule installs it.
pub fn role_names(role: &Path) -> Vec<String> {
    let dir_name = role
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short = dir_name
        .strip_prefix("ansible-role-")
        .or_else(|| dir_name.strip_prefix("ansible-"))
        .unwrap_or(&dir_name)
        .to_owned();
    let meta: Option<serde_norway::Value> = fs::read_to_string(role.join("meta/main.yml"))
        .ok()
        .and_then(|t| serde_norway::from_str(&t).ok());
    let info = meta.as_ref().and_then(|m| m.get("galaxy_info"));
    let get = |k: &str| {
        info.and_then(|i| i.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let role_name = get("role_name").unwrap_or_else(|| short.clone());
    let mut names = vec![dir_name, short, role_name.clone()];
    if let Some(ns) = get("namespace") {
        names.push(format!("{ns}.{role_name}"));
    }
    names.sort();
    names.dedup();
    names.retain(|n| !n.is_empty());
    names
}

/// Makes `links/NAME -> role` for each of the role's names.
fn link_role(links: &Path, role: &Path) -> Result<(), StepError> {
    let err = |source| StepError::Write {
        path: links.to_owned(),
        source,
    };
    fs::create_dir_all(links).map_err(err)?;
    for name in role_names(role) {
        let link = links.join(&name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(role, &link).map_err(err)?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), StepError> {
    fs::write(path, bytes).map_err(|source| StepError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_config_is_a_yaml_list_molecule_reads_and_only_its_owner_can() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("instance_config.yml");
        fs::write(&path, "stale: content that is longer than the new one\n").unwrap();
        let record = InstanceRecord {
            instance: "web.example.org".into(),
            address: "192.168.121.10".into(),
            user: "vagrant".into(),
            port: 22,
            identity_file: "/state/machines/web/id_ed25519".into(),
            networks: Vec::new(),
            ssh_args: None,
            host: None,
            python: Some("/usr/bin/python3".into()),
        };
        write_instance_config(&path, &[record]).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(
            doc,
            serde_json::json!([{
                "instance": "web.example.org", "address": "192.168.121.10",
                "user": "vagrant", "port": 22,
                "identity_file": "/state/machines/web/id_ed25519",
                "python": "/usr/bin/python3",
            }])
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_instance_config(&path, &[]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "[]\n");
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        let missing = tmp.path().join("no/such/dir/instance_config.yml");
        assert!(matches!(
            write_instance_config(&missing, &[]),
            Err(StepError::Write { .. })
        ));
    }

    #[test]
    fn a_scenario_under_a_role_finds_the_role_and_its_names() {
        let tmp = tempfile::tempdir().unwrap();
        let role = tmp.path().join("ansible-role-motd");
        let scen = role.join("molecule/default");
        fs::create_dir_all(&scen).unwrap();
        fs::create_dir_all(role.join("meta")).unwrap();
        assert_eq!(role_dir(&scen), None, "no tasks/ nor meta/main.yml yet");
        fs::create_dir_all(role.join("tasks")).unwrap();
        assert_eq!(role_dir(&scen), Some(role.clone()));
        assert_eq!(role_dir(tmp.path()), None);
        fs::write(
            role.join("meta/main.yml"),
            "galaxy_info:\n  namespace: acme\n  role_name: motd_role\n",
        )
        .unwrap();
        assert_eq!(
            role_names(&role),
            vec!["acme.motd_role", "ansible-role-motd", "motd", "motd_role"]
        );
    }

    #[test]
    fn playbooks_default_to_the_project_dir_and_molecule_yml_paths() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("molecule.yml"),
            "provisioner:\n  playbooks:\n    converge: ../shared/converge.yml\nplatforms:\n  - name: a\n",
        )
        .unwrap();
        let sc = Scenario::open(tmp.path(), None, None).unwrap();
        let dir = sc.dir().to_owned();
        assert_eq!(
            playbook_path(&sc, PlaybookStep::Idempotence, None),
            dir.join("../shared/converge.yml")
        );
        assert_eq!(
            playbook_path(&sc, PlaybookStep::Verify, None),
            dir.join("verify.yml")
        );
    }
}
