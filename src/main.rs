//! The `kvmdrive` binary: parse the command line, run the command, and turn
//! errors into a message, a hint and an exit code (1 for errors, 130 when
//! interrupted, 2 for usage errors from clap).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use kvmdrive::boxes::BoxStore;
use kvmdrive::machine::lifecycle::{self, Env, LifecycleError};
use kvmdrive::machine::project::{Project, ProjectError};
use kvmdrive::machine::{cancel, provision, reuse, snapshot, ssh, suspend, sync};
use kvmdrive::output::Reporter;
use kvmdrive::project::config::{self, Config, ConfigError};
use kvmdrive::project::scenario::{Scenario, ScenarioError};
use kvmdrive::roletest::steps::{self, PlaybookStep, StepError};
use kvmdrive::virt::Hypervisor;

mod cli;
use cli::{Cli, Command};

/// An error for the user: what went wrong and what to do about it.
struct UserError {
    message: String,
    hint: Option<String>,
    code: u8,
}

impl UserError {
    fn new(message: impl Into<String>, hint: Option<String>) -> UserError {
        UserError {
            message: message.into(),
            hint,
            code: 1,
        }
    }
}

impl From<LifecycleError> for UserError {
    fn from(e: LifecycleError) -> Self {
        let code = if matches!(e, LifecycleError::Cancelled) {
            130
        } else {
            1
        };
        UserError {
            hint: e.hint(),
            message: e.to_string(),
            code,
        }
    }
}

impl From<snapshot::SnapshotError> for UserError {
    fn from(e: snapshot::SnapshotError) -> Self {
        let code = match &e {
            snapshot::SnapshotError::Lifecycle(LifecycleError::Cancelled) => 130,
            _ => 1,
        };
        UserError {
            hint: e.hint(),
            message: e.to_string(),
            code,
        }
    }
}

impl From<ConfigError> for UserError {
    fn from(e: ConfigError) -> Self {
        UserError::new(e.to_string(), e.hint())
    }
}

impl From<ProjectError> for UserError {
    fn from(e: ProjectError) -> Self {
        UserError::new(e.to_string(), e.hint())
    }
}

impl From<kvmdrive::virt::VirtError> for UserError {
    fn from(e: kvmdrive::virt::VirtError) -> Self {
        UserError::new(e.to_string(), e.hint())
    }
}

impl From<ScenarioError> for UserError {
    fn from(e: ScenarioError) -> Self {
        UserError::new(e.to_string(), e.hint())
    }
}

impl From<StepError> for UserError {
    fn from(e: StepError) -> Self {
        UserError {
            code: e.exit_code(),
            hint: e.hint(),
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.global.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(h) = &e.hint {
                eprintln!("hint: {h}");
            }
            if json {
                // Programs reading stdout get the error as one JSON object.
                print_json(&serde_json::json!({
                    "error": e.message,
                    "hint": e.hint,
                    "exit_code": e.code,
                }));
            }
            ExitCode::from(e.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), UserError> {
    let g = &cli.global;
    let dir = match &g.project_dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()
            .map_err(|e| UserError::new(format!("cannot read the current directory: {e}"), None))?,
    };
    let out = Reporter::new(g.json, g.verbose);
    match cli.command {
        Command::Init(a) => init(&dir, a.force, &out),
        Command::Box(cmd) => {
            match kvmdrive::boxes::commands::run_in(cmd, &out, g.json, Some(&dir)) {
                Ok(0) => Ok(()),
                Ok(code) => std::process::exit(code),
                Err(e) => {
                    let hint = e
                        .downcast_ref::<kvmdrive::boxes::BoxError>()
                        .and_then(|b| b.hint());
                    Err(UserError::new(format!("{e:#}"), hint))
                }
            }
        }
        Command::Host(cmd) => match kvmdrive::host::cli::run(cmd, &out, g.json) {
            Ok(0) => Ok(()),
            Ok(code) => std::process::exit(code),
            Err(e) => Err(UserError::new(format!("{e:#}"), None)),
        },
        Command::Status => {
            let sc = open(g, &dir)?;
            let (project, config) = (&sc.project, &sc.config);
            let hv = if project.has_state() {
                Some(Hypervisor::connect(&g.connect)?)
            } else {
                None
            };
            let mut list = lifecycle::status(hv.as_ref(), project, config)?;
            let store = BoxStore::from_env();
            for m in list
                .iter_mut()
                .filter(|m| m.state == "not_created" || m.state == "shutoff")
            {
                let domain = kvmdrive::machine::plan::domain_name(project, &m.name);
                if reuse::parked(&store, &domain).is_some() {
                    m.state = "parked".into();
                }
            }
            if g.json {
                print_json(&list);
            } else {
                let mut o = std::io::stdout().lock();
                for m in list {
                    let addr = m
                        .address
                        .map(|a| format!("  {}@{a}", m.user.unwrap_or_default()))
                        .unwrap_or_default();
                    let _ = writeln!(o, "{:<20} {:<12}{addr}", m.name, m.state);
                }
            }
            Ok(())
        }
        Command::Up(a) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            sc.save()?;
            let records = lifecycle::up_with(env, &sc.config, &a.selection.names, up_options(&a))?;
            if g.json {
                print_json(&records);
            }
            Ok(())
        }),
        Command::Reload(a) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            lifecycle::halt(env, &sc.config, &a.selection.names)?;
            // As `vagrant reload`: provisioners that ran stay done unless --provision.
            let records = lifecycle::up_with(env, &sc.config, &a.selection.names, up_options(&a))?;
            if g.json {
                print_json(&records);
            }
            Ok(())
        }),
        Command::Provision(sel) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            let (runs, outcome) = provision::provision_machines(env, &sc.config, &sel.names)?;
            if g.json {
                // One JSON line per provisioner run, also when one failed.
                for r in &runs {
                    println!(
                        "{}",
                        serde_json::to_string(r).expect("plain data serialises")
                    );
                }
            }
            Ok(outcome?)
        }),
        Command::Rsync(sel) => with_env(g, &dir, &out, |env, sc| {
            Ok(sync::rsync_machines(env, &sc.config, &sel.names)?)
        }),
        Command::RsyncAuto(sel) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            Ok(sync::rsync_auto(env, &sc.config, &sel.names)?)
        }),
        Command::Halt(sel) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            Ok(lifecycle::halt(env, &sc.config, &sel.names)?)
        }),
        Command::Destroy(a) => {
            let sc = match Scenario::open_or_default(
                &dir,
                g.state_dir.as_deref(),
                g.platforms.as_deref(),
            ) {
                Ok(sc) => sc,
                // What exists must stay removable whatever the declaration says now.
                Err(e) if Scenario::is_bad_declaration(&e) => {
                    out.warn(
                        None,
                        format!("{e}: destroying the machines this project recorded instead"),
                    );
                    Scenario::recorded(&dir, g.state_dir.as_deref())?
                }
                Err(e) => return Err(e.into()),
            };
            let hv = Hypervisor::connect(&g.connect)?;
            let store = BoxStore::from_env();
            let env = Env {
                hv: &hv,
                project: &sc.project,
                out: &out,
                store: &store,
                pool_dir: lifecycle::default_pool_dir(),
            };
            let names = &a.selection.names;
            if !a.purge && (a.reuse || sc.driver_reuse()) {
                reuse::park(&env, &sc.config, names)?;
            } else {
                reuse::purge(&env, &sc.config, names)?;
            }
            if g.json {
                let gone: Vec<serde_json::Value> = sc
                    .instances
                    .iter()
                    .filter(|i| {
                        a.selection.names.is_empty() || a.selection.names.contains(&i.machine)
                    })
                    .map(|i| serde_json::json!({"instance": i.name, "state": "not_created"}))
                    .collect();
                print_json(&gone);
            }
            Ok(())
        }
        Command::Snapshot(cmd) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            use cli::SnapshotCommand as S;
            match cmd {
                S::Save(a) => snapshot::save(env, &sc.config, &a.name, &a.selection.names)?,
                S::Restore(a) => snapshot::restore(env, &sc.config, &a.name, &a.selection.names)?,
                S::Delete(a) => snapshot::delete(env, &sc.config, &a.name, &a.selection.names)?,
                S::List => print_snapshots(&snapshot::list(env, &sc.config)?, g.json),
            }
            Ok(())
        }),
        Command::Suspend(sel) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            Ok(suspend::suspend(env, &sc.config, &sel.names)?)
        }),
        Command::Resume(sel) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            Ok(suspend::resume(env, &sc.config, &sel.names)?)
        }),
        Command::Ssh(a) => {
            let sc = open(g, &dir)?;
            let record = running_record(&sc.project, &sc.config, a.name.as_deref())?;
            let mut cmd = ssh::SshTarget::from_record(&record).command();
            if a.command.is_empty() {
                cmd.arg("-t");
            } else {
                cmd.arg("--").args(&a.command);
            }
            let err = cmd.exec();
            Err(UserError::new(
                format!("cannot run ssh: {err}"),
                Some("install the OpenSSH client".into()),
            ))
        }
        Command::SshConfig(a) => {
            let sc = open(g, &dir)?;
            let (project, config) = (&sc.project, &sc.config);
            let names: Vec<String> = match a.name {
                Some(n) => vec![n],
                None => config.machines().into_iter().map(|m| m.name.0).collect(),
            };
            let mut text = String::new();
            for n in &names {
                lifecycle::select(config, std::slice::from_ref(n))?;
                if let Some(r) = project.record(n)? {
                    text.push_str(&ssh::ssh_config_entry(&r));
                    text.push('\n');
                } else if names.len() == 1 {
                    return Err(not_up(n));
                }
            }
            print!("{text}");
            Ok(())
        }

        // ---- Ansible role testing: the Molecule-like lifecycle ----
        Command::Create(a) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            let records = steps::create_with(env, sc, a.reuse || sc.driver_reuse())?;
            if g.json {
                print_json(&records);
            }
            Ok(())
        }),
        Command::Converge(a) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            Ok(steps::converge(
                env,
                sc,
                a.playbook.as_deref(),
                &a.ansible_args,
            )?)
        }),
        Command::Idempotence(a) => {
            let sc = open(g, &dir)?;
            steps::run_step(
                &out,
                &sc,
                PlaybookStep::Idempotence,
                a.playbook.as_deref(),
                &a.ansible_args,
            )?;
            Ok(())
        }
        Command::Verify(a) => {
            let sc = open(g, &dir)?;
            steps::run_step(
                &out,
                &sc,
                PlaybookStep::Verify,
                a.playbook.as_deref(),
                &a.ansible_args,
            )?;
            Ok(())
        }
        Command::Test(a) => with_env(g, &dir, &out, |env, sc| {
            cancel::install_handler();
            Ok(steps::test(
                env,
                sc,
                a.destroy == cli::DestroyPolicy::Always,
                a.reuse,
            )?)
        }),
        Command::Gc(a) => {
            let store = BoxStore::from_env();
            let older = match (&a.older_than, a.all) {
                (Some(d), _) => Some(
                    reuse::parse_duration(d)
                        .map_err(|e| UserError::new(e, Some("e.g. `--older-than 7d`".into())))?,
                ),
                (None, true) => None,
                (None, false) => {
                    for p in reuse::all_parked(&store) {
                        let age = p.age().as_secs();
                        println!(
                            "{:<40} parked {}h{:02}m ago  {}",
                            p.domain,
                            age / 3600,
                            age / 60 % 60,
                            p.project_dir.display()
                        );
                    }
                    return Ok(());
                }
            };
            let parked = reuse::gc_candidates(&store, older);
            if parked.is_empty() {
                out.step(None, "no parked machine to remove");
                return Ok(());
            }
            let hv = Hypervisor::connect(&g.connect)?;
            Ok(reuse::gc(&hv, &store, &out, &parked)?)
        }
        Command::Completions(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "kvmdrive", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(UserError::new(
                    format!("cannot write the man page: {e}"),
                    None,
                )),
                _ => Ok(()),
            }
        }
        Command::Inventory(a) => {
            let sc = open(g, &dir)?;
            let (hosts, down) = sc.inventory_hosts()?;
            if hosts.is_empty() {
                return Err(UserError::new(
                    "no machine is up",
                    Some("run `kvmdrive create` first".into()),
                ));
            }
            for name in down {
                out.warn(Some(&name), "not up: left out of the inventory");
            }
            let text = kvmdrive::roletest::ansible::inventory_yaml(&hosts);
            match a.output {
                Some(path) => std::fs::write(&path, text).map_err(|e| {
                    UserError::new(format!("cannot write {}: {e}", path.display()), None)
                }),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
    }
}

/// `up --provision` / `--no-provision` as a policy.
fn up_options(a: &cli::UpArgs) -> lifecycle::UpOptions {
    lifecycle::UpOptions {
        provision: if a.provision {
            provision::ProvisionPolicy::Always
        } else if a.no_provision {
            provision::ProvisionPolicy::Never
        } else {
            provision::ProvisionPolicy::Auto
        },
    }
}

/// The project's machines, from --platforms, the state dir, kvmdrive.yml or molecule.yml.
fn open(g: &cli::GlobalArgs, dir: &std::path::Path) -> Result<Scenario, UserError> {
    Ok(Scenario::open(
        dir,
        g.state_dir.as_deref(),
        g.platforms.as_deref(),
    )?)
}

fn not_up(name: &str) -> UserError {
    UserError::new(
        format!("machine `{name}` is not up"),
        Some(format!("run `kvmdrive up {name}`")),
    )
}

/// The record of the machine `name` (or of the only machine).
fn running_record(
    project: &Project,
    config: &Config,
    name: Option<&str>,
) -> Result<kvmdrive::machine::project::MachineRecord, UserError> {
    let machines = config.machines();
    let name = match name {
        Some(n) => n.to_owned(),
        None if machines.len() == 1 => machines[0].name.0.clone(),
        None => {
            return Err(UserError::new(
                "this project has several machines: name one",
                Some(format!(
                    "machines: {}",
                    machines
                        .iter()
                        .map(|m| m.name.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            ))
        }
    };
    lifecycle::select(config, std::slice::from_ref(&name))?;
    project.record(&name)?.ok_or_else(|| not_up(&name))
}

fn with_env(
    g: &cli::GlobalArgs,
    dir: &std::path::Path,
    out: &Reporter,
    f: impl FnOnce(&Env, &Scenario) -> Result<(), UserError>,
) -> Result<(), UserError> {
    let sc = open(g, dir)?;
    let hv = Hypervisor::connect(&g.connect)?;
    let store = BoxStore::from_env();
    let env = Env {
        hv: &hv,
        project: &sc.project,
        out,
        store: &store,
        pool_dir: lifecycle::default_pool_dir(),
    };
    f(&env, &sc)
}

fn init(dir: &std::path::Path, force: bool, out: &Reporter) -> Result<(), UserError> {
    let path: PathBuf = dir.join(config::CONFIG_FILE);
    if path.exists() && !force {
        return Err(UserError::new(
            format!("{} already exists", path.display()),
            Some("use `kvmdrive init --force` to overwrite it".into()),
        ));
    }
    std::fs::write(&path, config::EXAMPLE)
        .map_err(|e| UserError::new(format!("cannot write {}: {e}", path.display()), None))?;
    out.step(None, format!("wrote {}", path.display()));
    Ok(())
}

fn print_snapshots(rows: &[snapshot::SnapshotRow], json: bool) {
    if json {
        return print_json(&rows);
    }
    let mut o = std::io::stdout().lock();
    for r in rows {
        let s = &r.snapshot;
        let _ = writeln!(
            o,
            "{:<20} {:<24} {:<8} {}",
            r.machine, s.name, s.state, s.creation_time
        );
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("plain data serialises")
    );
}
