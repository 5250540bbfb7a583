//! The `kvmdrive` binary: parse the command line, run the command, and turn
//! errors into a message, a hint and an exit code (1 for errors, 130 when
//! interrupted, 2 for usage errors from clap).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use kvmdrive::boxes::BoxStore;
use kvmdrive::config::{self, Config, ConfigError};
use kvmdrive::machine::lifecycle::{self, Env, LifecycleError};
use kvmdrive::machine::project::{Project, ProjectError};
use kvmdrive::machine::{cancel, ssh};
use kvmdrive::output::Reporter;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(h) = e.hint {
                eprintln!("hint: {h}");
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
            let project = Project::new(&dir, None)?;
            let config = Config::load(&dir)?;
            let hv = if project.has_state() {
                Some(Hypervisor::connect(&g.connect)?)
            } else {
                None
            };
            let list = lifecycle::status(hv.as_ref(), &project, &config)?;
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
        Command::Up(sel) => with_env(g, &dir, &out, |env, config| {
            cancel::install_handler();
            let records = lifecycle::up(env, config, &sel.names)?;
            if g.json {
                print_json(&records);
            }
            Ok(())
        }),
        Command::Halt(sel) => with_env(g, &dir, &out, |env, config| {
            cancel::install_handler();
            Ok(lifecycle::halt(env, config, &sel.names)?)
        }),
        Command::Destroy(a) => {
            let config = match Config::load(&dir) {
                Err(ConfigError::Missing { .. }) => Config::default(),
                other => other?,
            };
            let project = Project::new(&dir, None)?;
            let hv = Hypervisor::connect(&g.connect)?;
            let store = BoxStore::from_env();
            let env = Env {
                hv: &hv,
                project: &project,
                out: &out,
                store: &store,
                pool_dir: lifecycle::default_pool_dir(),
            };
            Ok(lifecycle::destroy(&env, &config, &a.selection.names)?)
        }
        Command::Ssh(a) => {
            let project = Project::new(&dir, None)?;
            let config = Config::load(&dir)?;
            let record = running_record(&project, &config, a.name.as_deref())?;
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
            let project = Project::new(&dir, None)?;
            let config = Config::load(&dir)?;
            let names: Vec<String> = match a.name {
                Some(n) => vec![n],
                None => config.machines().into_iter().map(|m| m.name.0).collect(),
            };
            let mut text = String::new();
            for n in &names {
                lifecycle::select(&config, std::slice::from_ref(n))?;
                if let Some(r) = project.record(n)? {
                    text.push_str(&ssh::ssh_config_entry(&r));
                    text.push('\n');
                } else if a_single(&names) {
                    return Err(not_up(n));
                }
            }
            print!("{text}");
            Ok(())
        }
    }
}

fn a_single(names: &[String]) -> bool {
    names.len() == 1
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
    f: impl FnOnce(&Env, &Config) -> Result<(), UserError>,
) -> Result<(), UserError> {
    let config = Config::load(dir)?;
    let project = Project::new(dir, None)?;
    let hv = Hypervisor::connect(&g.connect)?;
    let store = BoxStore::from_env();
    let env = Env {
        hv: &hv,
        project: &project,
        out,
        store: &store,
        pool_dir: lifecycle::default_pool_dir(),
    };
    f(&env, &config)
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

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("plain data serialises")
    );
}
