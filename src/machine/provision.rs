//! Provisioners at work, and what `up` does once a machine answers on SSH:
//! mount its shared folders, rsync its copied ones, then run its
//! provisioners in order (at the first `up`, with `up --provision`, or with
//! `kvmdrive provision`). Which provisioners ran is recorded per machine in
//! `.kvmdrive/machines/NAME/provisioned.json` (Vagrant's action_provision),
//! so a second `up` does not repeat them. Output is streamed line by line
//! with the machine's name in front.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::lifecycle::{self, Env, IfDown, LifecycleError, Run};
use super::project::{MachineRecord, Project};
use super::ssh::{shell_quote, SshTarget};
use super::sync::{self, SyncError};
use crate::output::Reporter;
use crate::project::config::{Config, Machine};
use crate::project::provisioner::{Ansible, FileCopy, Provisioner, Script, Shell};
use crate::virt::hypervisor::DomainState;

/// File in the machine's state directory recording provisioner runs.
pub const STATE_FILE: &str = "provisioned.json";

/// When `up` runs provisioners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProvisionPolicy {
    /// Unless every provisioner already ran to the end (first `up`).
    #[default]
    Auto,
    /// `up --provision`, `reload --provision`.
    Always,
    /// `up --no-provision`.
    Never,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("provisioner {index} ({label}) failed in {machine} with exit status {code}")]
    Failed {
        machine: String,
        index: usize,
        label: String,
        code: i32,
    },
    #[error("provisioner {index} ({label}) in {machine}: {message}")]
    Setup {
        machine: String,
        index: usize,
        label: String,
        message: String,
    },
    #[error("cannot record provisioner runs in {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ProvisionError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ProvisionError::Sync(e) => e.hint(),
            ProvisionError::Failed { machine, .. } | ProvisionError::Setup { machine, .. } => {
                Some(format!(
                    "the machine stays up: fix it, then `kvmdrive provision {machine}` runs the provisioners again from the first"
                ))
            }
            ProvisionError::State { .. } => None,
        }
    }
}

/// One provisioner run: what `provision --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionRun {
    pub machine: String,
    /// 1-based position in the machine's list.
    pub index: usize,
    pub provisioner: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub exit_status: i32,
}

/// What `provisioned.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProvisionState {
    /// Every provisioner ran and succeeded.
    pub complete: bool,
    pub runs: Vec<ProvisionRun>,
}

/// The recorded runs of a machine (None: never provisioned).
pub fn read_state(project: &Project, machine: &str) -> Option<ProvisionState> {
    let text = std::fs::read_to_string(project.machine_dir(machine).join(STATE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_state(
    project: &Project,
    machine: &str,
    st: &ProvisionState,
) -> Result<(), ProvisionError> {
    let dir = project.machine_dir(machine);
    let path = dir.join(STATE_FILE);
    let err = |source| ProvisionError::State {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(err)?;
    tmp.write_all(
        serde_json::to_string_pretty(st)
            .expect("plain data serialises")
            .as_bytes(),
    )
    .map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Whether `up` runs the machine's provisioners under `policy`.
pub fn due(policy: ProvisionPolicy, project: &Project, m: &Machine) -> bool {
    if m.provisioners.is_empty() {
        return false;
    }
    match policy {
        ProvisionPolicy::Never => false,
        ProvisionPolicy::Always => true,
        ProvisionPolicy::Auto => !read_state(project, &m.name.0).is_some_and(|s| s.complete),
    }
}

/// What `up` does once a machine answers: mount shared folders, rsync the
/// copied ones, and provision when `policy` says so. Nothing under libvirt's
/// test driver (there is no guest).
pub fn finish_up(
    env: &Env,
    m: &Machine,
    record: &MachineRecord,
    policy: ProvisionPolicy,
) -> Result<(), ProvisionError> {
    if env.hv.is_test_driver() {
        return Ok(());
    }
    let name = Some(m.name.0.as_str());
    sync::mount_all(&SshTarget::from_record(record), &m.synced_folders)?;
    let shared = m.synced_folders.len();
    let copied = sync::rsync_all(record, &m.synced_folders, &env.project.dir)?;
    if shared > 0 {
        env.out.step(
            name,
            format!(
                "synced folders: {} mounted, {copied} copied by rsync",
                shared - copied
            ),
        );
    }
    if due(policy, env.project, m) {
        run_all(env.out, env.project, m, record)?;
    } else if !m.provisioners.is_empty() && policy == ProvisionPolicy::Auto {
        env.out.step(
            name,
            "already provisioned (`kvmdrive provision` or `up --provision` runs them again)",
        );
    }
    Ok(())
}

/// Runs every provisioner of a machine in order, recording each run; stops
/// at the first failure (the next run starts again from the first).
pub fn run_all(
    out: &Reporter,
    project: &Project,
    m: &Machine,
    record: &MachineRecord,
) -> Result<Vec<ProvisionRun>, ProvisionError> {
    let name = m.name.0.as_str();
    let mut st = ProvisionState::default();
    write_state(project, name, &st)?;
    let total = m.provisioners.len();
    for (i, p) in m.provisioners.iter().enumerate() {
        let index = i + 1;
        out.step(
            Some(name),
            format!("provisioner {index}/{total}: {}", p.label()),
        );
        let setup = |message: String| ProvisionError::Setup {
            machine: name.to_owned(),
            index,
            label: p.label(),
            message,
        };
        let code = match p {
            Provisioner::Shell(s) => shell(out, record, s, index, &project.dir),
            Provisioner::File(f) => file(record, f, &project.dir),
            Provisioner::Ansible(a) => ansible(out, project, record, a),
        }
        .map_err(setup)?;
        st.runs.push(ProvisionRun {
            machine: name.to_owned(),
            index,
            provisioner: p.label(),
            kind: p.kind().to_owned(),
            exit_status: code,
        });
        write_state(project, name, &st)?;
        if code != 0 {
            return Err(ProvisionError::Failed {
                machine: name.to_owned(),
                index,
                label: p.label(),
                code,
            });
        }
    }
    st.complete = true;
    write_state(project, name, &st)?;
    Ok(st.runs)
}

/// `kvmdrive provision [NAME...]`: runs every selected machine's
/// provisioners from the first, machines (and hosts) in parallel. Returns
/// each machine's recorded runs (also when one failed) and the outcome;
/// machines on a host that does not answer are not run, and named.
/// (`--provision-with`: a config from [`with_only`].)
pub fn provision_machines(
    env: &Env,
    config: &Config,
    names: &[String],
) -> Result<(Vec<ProvisionRun>, Result<(), LifecycleError>), LifecycleError> {
    let machines = lifecycle::select(config, names)?;
    let _lock = env.project.lock()?;
    // The machines whose host answered: the others' old runs are not news.
    let reached = std::sync::Mutex::new(Vec::new());
    let (_, outcome) = lifecycle::for_each_host(
        env,
        config,
        &machines,
        IfDown::Skip,
        Run::Parallel,
        |env, ms| {
            let mut r = reached.lock().unwrap_or_else(|e| e.into_inner());
            r.extend(ms.iter().map(|m| m.name.0.clone()));
            drop(r);
            provision_on_host(env, ms)
        },
    );
    let reached = reached.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut runs = Vec::new();
    for m in machines.iter().filter(|m| reached.contains(&m.name.0)) {
        if let Some(st) = read_state(env.project, &m.name.0) {
            runs.extend(st.runs);
        }
    }
    Ok((runs, outcome))
}

/// Refuses a `--provision-with` name that no provisioner of `machines` has.
fn check_only(machines: &[Machine], only: &[String]) -> Result<(), LifecycleError> {
    match only.iter().find(|w| {
        !machines.iter().any(|m| {
            m.provisioners
                .iter()
                .any(|p| p.is_one_of(std::slice::from_ref(w)))
        })
    }) {
        Some(unknown) => Err(LifecycleError::UnknownProvisioner {
            name: unknown.clone(),
        }),
        None => Ok(()),
    }
}

/// `--provision-with` of `provision`, `up` and `reload`: `config` with only
/// the provisioners `only` names (by name or kind), checked against the
/// machines `names` selects.
pub fn with_only(
    config: &Config,
    names: &[String],
    only: &[String],
) -> Result<Config, LifecycleError> {
    check_only(&lifecycle::select(config, names)?, only)?;
    let mut c = config.clone();
    let keep = |list: &mut Option<Vec<crate::project::provisioner::Provisioner>>| {
        if let Some(l) = list {
            l.retain(|p| p.is_one_of(only));
        }
    };
    keep(&mut c.defaults.provision);
    c.machines.0.iter_mut().for_each(|m| keep(&mut m.provision));
    Ok(c)
}

/// `provision` of `machines` on the host of `env` (the project lock is held).
fn provision_on_host(env: &Env, machines: &[Machine]) -> Result<(), LifecycleError> {
    let results: Vec<(String, Result<(), String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = machines
            .iter()
            .map(|m| {
                s.spawn(move || {
                    let r = running_record(env, m).and_then(|rec| {
                        if m.provisioners.is_empty() {
                            env.out.step(Some(&m.name.0), "no provisioners");
                            return Ok(());
                        }
                        run_all(env.out, env.project, m, &rec)
                            .map(drop)
                            .map_err(|e| with_hint(e.to_string(), e.hint()))
                    });
                    (m.name.0.clone(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("machine threads do not panic"))
            .collect()
    });
    outcome(env.out, results)
}

/// The record of a machine that is running, or why it cannot be reached.
pub(crate) fn running_record(env: &Env, m: &Machine) -> Result<MachineRecord, String> {
    let name = &m.name.0;
    let record = env
        .project
        .record(name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("not up (run `kvmdrive up {name}`)"))?;
    match env.hv.domain_state(&record.domain) {
        Ok(Some(DomainState::Running)) => Ok(record),
        Ok(_) => Err(format!("not running (run `kvmdrive up {name}`)")),
        Err(e) => Err(e.to_string()),
    }
}

fn with_hint(message: String, hint: Option<String>) -> String {
    match hint {
        Some(h) => format!("{message}\nhint: {h}"),
        None => message,
    }
}

/// Reports per-machine errors; one error naming the machines that failed.
pub(crate) fn outcome(
    out: &Reporter,
    results: Vec<(String, Result<(), String>)>,
) -> Result<(), LifecycleError> {
    let total = results.len();
    let mut failed = Vec::new();
    for (name, r) in results {
        if let Err(e) = r {
            for line in e.lines() {
                if line.starts_with("hint: ") {
                    out.step(Some(&name), line);
                } else {
                    out.step(Some(&name), format!("error: {line}"));
                }
            }
            failed.push(name);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(LifecycleError::MachinesFailed {
            failed: failed.len(),
            total,
            names: failed.join(", "),
        })
    }
}

/// A host path relative to the project directory.
fn host_path(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// Runs `cmd`, printing each line of its stdout and stderr as `NAME: line`;
/// returns its exit status (1 when killed by a signal).
fn stream(out: &Reporter, machine: &str, mut cmd: Command) -> std::io::Result<i32> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    std::thread::scope(|s| {
        if let Some(o) = stdout {
            s.spawn(|| pass_lines(out, machine, o));
        }
        if let Some(e) = stderr {
            pass_lines(out, machine, e);
        }
    });
    Ok(child.wait()?.code().unwrap_or(1))
}

fn pass_lines(out: &Reporter, machine: &str, pipe: impl Read) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        out.step(Some(machine), line);
    }
}

/// Writes `bytes` to `remote_path` in the guest (as the SSH user).
fn upload(target: &SshTarget, bytes: &[u8], remote_cmd: &str) -> Result<(), String> {
    let mut child = target
        .command()
        .args(["-o", "BatchMode=yes", "--", remote_cmd])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(bytes)
            .map_err(|e| format!("upload failed: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "upload failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The guest command that runs an uploaded shell provisioner script.
pub fn shell_command(s: &Shell, remote: &str, shebang: bool) -> String {
    let mut cmd = String::new();
    if s.privileged {
        cmd.push_str("sudo -n ");
    }
    if !s.env.is_empty() {
        cmd.push_str("env ");
        for (k, v) in &s.env {
            cmd.push_str(&format!("{k}={} ", shell_quote(v)));
        }
    }
    if !shebang {
        cmd.push_str("\"$(command -v bash || echo sh)\" ");
    }
    cmd.push_str(&shell_quote(remote));
    for a in &s.args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(a));
    }
    if let Some(line) = &s.args_line {
        cmd.push(' ');
        cmd.push_str(line);
    }
    cmd
}

fn shell(
    out: &Reporter,
    r: &MachineRecord,
    s: &Shell,
    index: usize,
    base: &Path,
) -> Result<i32, String> {
    let body = match &s.script {
        Script::Inline(text) => text.clone().into_bytes(),
        Script::Path(p) => {
            let p = host_path(base, p);
            std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
        }
    };
    let remote = format!("/tmp/kvmdrive-shell-{index}");
    let target = SshTarget::from_record(r);
    upload(
        &target,
        &body,
        &format!("cat > {remote} && chmod 0755 {remote}"),
    )?;
    let mut cmd = target.command();
    cmd.args(["-o", "BatchMode=yes", "--"])
        .arg(shell_command(s, &remote, body.starts_with(b"#!")))
        .stdin(Stdio::null());
    stream(out, &r.name, cmd).map_err(|e| format!("cannot run ssh: {e}"))
}

/// A guest path for a shell: `~/x` stays in the user's home.
fn guest_path(p: &str) -> String {
    match p.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", shell_quote(rest)),
        None if p == "~" => "\"$HOME\"".into(),
        None => shell_quote(p),
    }
}

fn file(r: &MachineRecord, f: &FileCopy, base: &Path) -> Result<i32, String> {
    let src = host_path(base, &f.source);
    let target = SshTarget::from_record(r);
    let dest = guest_path(&f.destination);
    if src.is_dir() {
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&src)
            .args(["-cf", "-", "."])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run tar: {e}"))?;
        if !tar.status.success() {
            return Err(format!("tar of {} failed", src.display()));
        }
        upload(
            &target,
            &tar.stdout,
            &format!("mkdir -p {dest} && tar -C {dest} -xf -"),
        )?;
    } else {
        let bytes =
            std::fs::read(&src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        upload(
            &target,
            &bytes,
            &format!("mkdir -p \"$(dirname {dest})\" && cat > {dest}"),
        )?;
    }
    Ok(0)
}

fn ansible(
    out: &Reporter,
    project: &Project,
    r: &MachineRecord,
    a: &Ansible,
) -> Result<i32, String> {
    let playbook = host_path(&project.dir, &a.playbook);
    if !playbook.is_file() {
        return Err(format!("playbook {} does not exist", playbook.display()));
    }
    let inventory = project.machine_dir(&r.name).join("provision-inventory.yml");
    let host = crate::roletest::ansible::InventoryHost {
        name: r.name.clone(),
        record: r.clone(),
        groups: Vec::new(),
        children: Vec::new(),
    };
    std::fs::write(
        &inventory,
        crate::roletest::ansible::inventory_yaml(&[host]),
    )
    .map_err(|e| format!("cannot write {}: {e}", inventory.display()))?;
    let program = std::env::var_os("KVMDRIVE_ANSIBLE_PLAYBOOK")
        .unwrap_or_else(|| OsString::from("ansible-playbook"));
    let mut cmd = Command::new(&program);
    cmd.arg("-i")
        .arg(&inventory)
        .arg("--limit")
        .arg(a.limit.as_deref().unwrap_or(&r.name));
    if !a.extra_vars.is_empty() {
        let vars: BTreeMap<_, _> = a.extra_vars.iter().collect();
        cmd.arg("--extra-vars")
            .arg(serde_json::to_string(&vars).expect("plain data serialises"));
    }
    cmd.arg(&playbook)
        .current_dir(&project.dir)
        .stdin(Stdio::null());
    for (k, v) in [
        ("ANSIBLE_HOST_KEY_CHECKING", "False"),
        ("ANSIBLE_RETRY_FILES_ENABLED", "False"),
        ("ANSIBLE_NOCOWS", "1"),
        ("ANSIBLE_PYTHON_INTERPRETER", "auto_silent"),
    ] {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    stream(out, &r.name, cmd).map_err(|e| {
        format!(
            "cannot run {}: {e} (install ansible-core and put ansible-playbook on PATH)",
            program.to_string_lossy()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell_of(yaml: &str) -> Shell {
        let p: Vec<Provisioner> = serde_norway::from_str(yaml).unwrap();
        match p.into_iter().next() {
            Some(Provisioner::Shell(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shell_commands_follow_privileged_env_and_args() {
        let s = shell_of("- {type: shell, inline: x, args: [a, b c], env: {K: \"v'1\"}}\n");
        assert_eq!(
            shell_command(&s, "/tmp/kvmdrive-shell-1", false),
            r#"sudo -n env K='v'\''1' "$(command -v bash || echo sh)" '/tmp/kvmdrive-shell-1' 'a' 'b c'"#
        );
        let s = shell_of("- {type: shell, path: s.sh, args: '--x \"$HOME\"', privileged: false}\n");
        assert_eq!(shell_command(&s, "/tmp/k", true), r#"'/tmp/k' --x "$HOME""#);
    }

    #[test]
    fn guest_paths_keep_home_relative_paths() {
        assert_eq!(guest_path("~/.bashrc"), r#""$HOME"/'.bashrc'"#);
        assert_eq!(guest_path("/etc/x y"), "'/etc/x y'");
    }

    #[test]
    fn due_follows_the_policy_and_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Project::new(tmp.path(), None).unwrap();
        let yaml = "machines:\n  - name: a\n    provision:\n      - {type: shell, inline: 'true'}\n  - name: b\n";
        let ms = crate::project::config::Config::parse(yaml, Path::new("k.yml"))
            .unwrap()
            .machines();
        let (a, b) = (&ms[0], &ms[1]);
        assert!(due(ProvisionPolicy::Auto, &p, a), "never provisioned");
        assert!(!due(ProvisionPolicy::Never, &p, a));
        assert!(!due(ProvisionPolicy::Always, &p, b), "nothing to run");
        let mut st = ProvisionState::default();
        write_state(&p, "a", &st).unwrap();
        assert!(
            due(ProvisionPolicy::Auto, &p, a),
            "an unfinished run counts as not provisioned"
        );
        st.complete = true;
        write_state(&p, "a", &st).unwrap();
        assert!(!due(ProvisionPolicy::Auto, &p, a));
        assert!(due(ProvisionPolicy::Always, &p, a));
        assert!(read_state(&p, "a").unwrap().complete);
    }

    #[test]
    fn provision_with_keeps_the_named_provisioners_of_defaults_and_machines() {
        let yaml = "defaults:\n  provision:\n    - {type: shell, inline: 'true', name: base}\n\
                    machines:\n  - name: a\n    provision:\n      - {type: file, source: f, destination: /tmp/f}\n      - {type: shell, inline: 'true', name: app}\n  - name: b\n";
        let c = crate::project::config::Config::parse(yaml, Path::new("k.yml")).unwrap();
        let labels = |c: &Config| -> Vec<Vec<String>> {
            c.machines()
                .iter()
                .map(|m| m.provisioners.iter().map(|p| p.label()).collect())
                .collect()
        };
        let only = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            labels(&with_only(&c, &[], &only(&["app", "file"])).unwrap()),
            [vec!["file", "shell (app)"], vec![]]
        );
        assert_eq!(
            labels(&with_only(&c, &[], &only(&["base"])).unwrap()),
            [vec!["shell (base)"], vec!["shell (base)"]]
        );
        // Only the selected machines count: `b` has no `app`.
        let e = with_only(&c, &["b".into()], &only(&["app"])).unwrap_err();
        assert!(
            matches!(e, LifecycleError::UnknownProvisioner { ref name } if name == "app"),
            "{e:?}"
        );
    }
}
