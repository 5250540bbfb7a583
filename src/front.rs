//! The `kvmdrive` front binary's commands: the ones that need no libvirt
//! (`--version`, `--help`, `init`, `box`, `status` of a project with no state,
//! `ssh`, `ssh-config`, `inventory`, listing parked machines, completions, the
//! man page) run here; every other command goes to the engine
//! ([`crate::engine::exec`]). Nothing reachable from [`run`] may call into
//! libvirt: the front then links without libvirt (`--as-needed` drops it) and
//! starts in about a millisecond. `tests/front_binary.rs` checks the binary's
//! `NEEDED` entries.
//!
//! The engine (`src/bin/kvmdrive-engine.rs`) runs the same commands through
//! the same functions here, so both binaries answer alike; it also prints its
//! errors through [`finish`].

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::boxes::BoxStore;
use crate::cli::{Cli, Command, GcArgs, InventoryArgs, SshArgs, SshConfigArgs};
use crate::error::{self, Error};
use crate::machine::lifecycle::{self, MachineStatus};
use crate::machine::project::{MachineRecord, Project};
use crate::machine::{reuse, ssh};
use crate::output::Reporter;
use crate::project::config::{self, Config};
use crate::project::scenario::Scenario;

/// Runs `cli` here when it needs no libvirt, else hands it to the engine.
pub fn run(cli: Cli, out: &Reporter) -> Result<(), Error> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init(&project_dir(g)?, a.force, out),
        Command::Box(cmd) => box_command(cmd, &project_dir(g)?, out),
        // Platforms from stdin: opening the project here would consume what
        // the engine must read when there is state.
        Command::Status if g.platforms.as_deref() == Some(Path::new("-")) => {
            Err(crate::engine::exec())
        }
        Command::Status => {
            let sc = open(g, &project_dir(g)?)?;
            if sc.project.has_state() {
                // Machines may exist: only libvirt knows their state.
                return Err(crate::engine::exec());
            }
            print_status(
                out,
                &sc.project,
                lifecycle::not_created(&sc.config),
                !sc.config.hosts.is_empty(),
            );
            Ok(())
        }
        Command::Ssh(a) => ssh(&open(g, &project_dir(g)?)?, a),
        Command::SshConfig(a) => ssh_config(&open(g, &project_dir(g)?)?, a, out),
        Command::Inventory(a) => inventory(&open(g, &project_dir(g)?)?, a, out),
        Command::Gc(GcArgs {
            older_than: None,
            all: false,
        }) => {
            gc_list(out);
            Ok(())
        }
        Command::Completions(a) => {
            completions(a.shell);
            Ok(())
        }
        Command::Man => man(),
        Command::Up(_)
        | Command::Provision(_)
        | Command::Rsync(_)
        | Command::RsyncAuto(_)
        | Command::Reload(_)
        | Command::Halt(_)
        | Command::Destroy(_)
        | Command::Snapshot(_)
        | Command::Suspend(_)
        | Command::Resume(_)
        | Command::Host(_)
        | Command::Create(_)
        | Command::Converge(_)
        | Command::Idempotence(_)
        | Command::Verify(_)
        | Command::Test(_)
        | Command::Gc(_) => Err(crate::engine::exec()),
    }
}

/// Ends the process with `result`: an error is printed once, as text on
/// stderr and with `--json` also as one object on stdout.
pub fn finish(out: &Reporter, result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_reported() {
                eprintln!("error: {e}");
                if let Some(h) = e.hint() {
                    eprintln!("hint: {h}");
                }
                if out.json() {
                    // Programs reading stdout get the error as one JSON object.
                    out.json_doc(&e.to_json());
                }
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

/// `--project-dir`, else the current directory.
pub fn project_dir(g: &crate::cli::GlobalArgs) -> Result<PathBuf, Error> {
    match &g.project_dir {
        Some(d) => Ok(d.clone()),
        None => std::env::current_dir().map_err(Error::CurrentDir),
    }
}

/// The project's machines, from --platforms, the state dir, kvmdrive.yml or molecule.yml.
pub fn open(g: &crate::cli::GlobalArgs, dir: &Path) -> Result<Scenario, Error> {
    Ok(Scenario::open(
        dir,
        g.state_dir.as_deref(),
        g.platforms.as_deref(),
    )?)
}

/// `kvmdrive init`: the example kvmdrive.yml.
pub fn init(dir: &Path, force: bool, out: &Reporter) -> Result<(), Error> {
    let path: PathBuf = dir.join(config::CONFIG_FILE);
    if path.exists() && !force {
        return Err(Error::ConfigExists { path });
    }
    if let Err(source) = std::fs::write(&path, config::EXAMPLE) {
        return Err(Error::Write { path, source });
    }
    out.step(None, format!("wrote {}", path.display()));
    Ok(())
}

/// `kvmdrive box ...`: the box cache needs no libvirt.
pub fn box_command(
    cmd: crate::boxes::cli::BoxCommand,
    dir: &Path,
    out: &Reporter,
) -> Result<(), Error> {
    let code = crate::boxes::commands::run_in(cmd, out, Some(dir))?;
    error::verdict("box", code)
}

/// `kvmdrive status`: `list` with machines parked by `--reuse` shown as
/// `parked`, as lines or one JSON document; `show_hosts` (the project has
/// `hosts:`) adds each machine's host to the lines.
pub fn print_status(
    out: &Reporter,
    project: &Project,
    mut list: Vec<MachineStatus>,
    show_hosts: bool,
) {
    let store = BoxStore::from_env();
    for m in list
        .iter_mut()
        .filter(|m| m.state == "not_created" || m.state == "shutoff")
    {
        let domain = crate::machine::plan::domain_name(project, &m.name);
        if reuse::parked(&store, &domain).is_some() {
            m.state = "parked".into();
        }
    }
    if out.json() {
        out.json_doc(&list);
    } else {
        let spans = lifecycle::spans_hosts(&list);
        for m in list {
            let addr = m
                .address
                .map(|a| format!("  {}@{a}", m.user.unwrap_or_default()))
                .unwrap_or_default();
            let host = match (&m.host, show_hosts) {
                (Some(h), true) => format!("  on {h}"),
                _ => String::new(),
            };
            out.line(format!("{:<20} {:<12}{addr}{host}", m.name, m.state));
        }
        if spans {
            out.line(format!("note: {}", lifecycle::ROUTING_NOTE));
        }
    }
}

/// `kvmdrive gc` without options: the parked machines, oldest first.
pub fn gc_list(out: &Reporter) {
    for p in reuse::all_parked(&BoxStore::from_env()) {
        let age = p.age().as_secs();
        out.line(format!(
            "{:<40} parked {}h{:02}m ago  {}",
            p.domain,
            age / 3600,
            age / 60 % 60,
            p.project_dir.display()
        ));
    }
}

/// `kvmdrive ssh`: becomes the ssh client (returns only when that failed).
pub fn ssh(sc: &Scenario, a: SshArgs) -> Result<(), Error> {
    let record = running_record(&sc.project, &sc.config, a.name.as_deref())?;
    let mut cmd = ssh::SshTarget::from_record(&record)
        .shared(&record.domain)
        .command();
    if a.command.is_empty() {
        cmd.arg("-t");
    } else {
        cmd.arg("--").args(&a.command);
    }
    Err(Error::Ssh(cmd.exec()))
}

/// `kvmdrive ssh-config`: what `vagrant ssh-config` prints, or JSON.
pub fn ssh_config(sc: &Scenario, a: SshConfigArgs, out: &Reporter) -> Result<(), Error> {
    let (project, config) = (&sc.project, &sc.config);
    let names: Vec<String> = match a.name {
        Some(n) => vec![n],
        None => config.machines().into_iter().map(|m| m.name.0).collect(),
    };
    let mut text = String::new();
    let mut entries = Vec::new();
    for n in &names {
        lifecycle::select(config, std::slice::from_ref(n))?;
        if let Some(r) = project.record(n)? {
            text.push_str(&ssh::ssh_config_entry(&r));
            text.push('\n');
            entries.push(serde_json::json!({
                "machine": r.name,
                "host": r.address,
                "port": r.port,
                "user": r.user,
                "identity_file": r.identity_file,
            }));
        } else if names.len() == 1 {
            return Err(not_up(n));
        }
    }
    if out.json() {
        out.json_doc(&entries);
    } else {
        out.text(&text);
    }
    Ok(())
}

/// `kvmdrive inventory`: an Ansible inventory of the machines that are up.
pub fn inventory(sc: &Scenario, a: InventoryArgs, out: &Reporter) -> Result<(), Error> {
    let (hosts, down) = sc.inventory_hosts()?;
    if hosts.is_empty() {
        return Err(Error::NothingUp);
    }
    for name in down {
        out.warn(Some(&name), "not up: left out of the inventory");
    }
    let text = crate::roletest::ansible::inventory_yaml(&hosts);
    match a.output {
        Some(path) => std::fs::write(&path, text).map_err(|source| Error::Write { path, source }),
        None if out.json() => {
            out.json_doc(&crate::roletest::ansible::inventory(&hosts));
            Ok(())
        }
        None => {
            out.text(&text);
            Ok(())
        }
    }
}

/// `kvmdrive completions SHELL`.
pub fn completions(shell: clap_complete::Shell) {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "kvmdrive", &mut std::io::stdout());
}

/// `kvmdrive man`: the man page (roff).
pub fn man() -> Result<(), Error> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Man(e)),
        _ => Ok(()),
    }
}

/// The error for a machine that has no record of being up.
pub fn not_up(name: &str) -> Error {
    Error::NotUp {
        name: name.to_owned(),
    }
}

/// The record of the machine `name` (or of the only machine).
fn running_record(
    project: &Project,
    config: &Config,
    name: Option<&str>,
) -> Result<MachineRecord, Error> {
    let machines = config.machines();
    let name = match name {
        Some(n) => n.to_owned(),
        None if machines.len() == 1 => machines[0].name.0.clone(),
        None => {
            return Err(Error::NameOne {
                machines: machines.iter().map(|m| m.name.0.clone()).collect(),
            })
        }
    };
    lifecycle::select(config, std::slice::from_ref(&name))?;
    project.record(&name)?.ok_or_else(|| not_up(&name))
}
