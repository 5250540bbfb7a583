//! The `kvmdrive` binary: parse the command line, run the command, and print
//! its one [`Error`] (if any) in one place: text on stderr, and with `--json`
//! also one `{"error", "hint", "exit_code"}` object on stdout. Exit codes come
//! from [`Error::exit_code`] (2 for usage errors comes from clap).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use kvmdrive::boxes::BoxStore;
use kvmdrive::error::{self, Error};
use kvmdrive::machine::lifecycle::{self, Env};
use kvmdrive::machine::project::Project;
use kvmdrive::machine::{cancel, provision, reuse, snapshot, ssh, suspend, sync};
use kvmdrive::output::Reporter;
use kvmdrive::project::config::{self, Config};
use kvmdrive::project::scenario::Scenario;
use kvmdrive::roletest::steps::{self, PlaybookStep, StepOutcome};
use kvmdrive::virt::Hypervisor;

mod cli;
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Reporter::new(cli.global.json, cli.global.verbose);
    match run(cli, &out) {
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

fn run(cli: Cli, out: &Reporter) -> Result<(), Error> {
    let g = &cli.global;
    let dir = match &g.project_dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().map_err(Error::CurrentDir)?,
    };
    match cli.command {
        Command::Init(a) => init(&dir, a.force, out),
        Command::Box(cmd) => {
            let code = kvmdrive::boxes::commands::run_in(cmd, out, Some(&dir))?;
            error::verdict("box", code)
        }
        Command::Host(cmd) => {
            let code = kvmdrive::host::cli::run(cmd, out)?;
            error::verdict("host", code)
        }
        Command::Status => {
            let sc = open(g, &dir)?;
            let (project, config) = (&sc.project, &sc.config);
            let hv = if project.has_state() {
                Some(connect(g, config)?)
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
                out.json_doc(&list);
            } else {
                let spans = lifecycle::spans_hosts(&list);
                let show_hosts = !config.hosts.is_empty();
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
            Ok(())
        }
        Command::Up(a) if a.dry_run => with_env(g, &dir, out, |env, sc| {
            let plan = lifecycle::plan_up(env, &sc.config, &a.selection.names)?;
            if g.json {
                out.json_doc(&plan);
            } else {
                plan.summary().iter().for_each(|l| out.line(l));
            }
            Ok(())
        }),
        Command::Up(a) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            sc.save()?;
            let records = lifecycle::up_with(env, &sc.config, &a.selection.names, up_options(&a))?;
            if g.json {
                out.json_doc(&records);
            }
            Ok(())
        }),
        Command::Reload(a) if a.dry_run => Err(Error::NoDryRun { command: "reload" }),
        Command::Reload(a) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            lifecycle::halt(env, &sc.config, &a.selection.names)?;
            // As `vagrant reload`: provisioners that ran stay done unless --provision.
            let records = lifecycle::up_with(env, &sc.config, &a.selection.names, up_options(&a))?;
            if g.json {
                out.json_doc(&records);
            }
            Ok(())
        }),
        Command::Provision(sel) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            let (runs, outcome) = provision::provision_machines(env, &sc.config, &sel.names)?;
            if g.json {
                // One JSON line per provisioner run, also when one failed.
                for r in &runs {
                    out.json_line(r);
                }
            }
            Ok(outcome?)
        }),
        Command::Rsync(sel) => with_env(g, &dir, out, |env, sc| {
            Ok(sync::rsync_machines(env, &sc.config, &sel.names)?)
        }),
        Command::RsyncAuto(sel) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            Ok(sync::rsync_auto(env, &sc.config, &sel.names)?)
        }),
        Command::Halt(sel) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            lifecycle::halt(env, &sc.config, &sel.names)?;
            if g.json {
                // The halted machines and the state libvirt now reports.
                let list: Vec<_> = lifecycle::status(Some(env.hv), env.project, &sc.config)?
                    .into_iter()
                    .filter(|m| sel.names.is_empty() || sel.names.contains(&m.name))
                    .collect();
                out.json_doc(&list);
            }
            Ok(())
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
            let hv = connect(g, &sc.config)?;
            let store = BoxStore::from_env();
            let env = Env {
                hv: &hv,
                project: &sc.project,
                out,
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
                out.json_doc(&gone);
            }
            Ok(())
        }
        Command::Snapshot(cmd) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            use cli::SnapshotCommand as S;
            match cmd {
                S::Save(a) => snapshot::save(env, &sc.config, &a.name, &a.selection.names)?,
                S::Restore(a) => snapshot::restore(env, &sc.config, &a.name, &a.selection.names)?,
                S::Delete(a) => snapshot::delete(env, &sc.config, &a.name, &a.selection.names)?,
                S::List => print_snapshots(out, &snapshot::list(env, &sc.config)?),
            }
            Ok(())
        }),
        Command::Suspend(sel) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            Ok(suspend::suspend(env, &sc.config, &sel.names)?)
        }),
        Command::Resume(sel) => with_env(g, &dir, out, |env, sc| {
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
            Err(Error::Ssh(cmd.exec()))
        }
        Command::SshConfig(a) => {
            let sc = open(g, &dir)?;
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
            if g.json {
                out.json_doc(&entries);
            } else {
                out.text(&text);
            }
            Ok(())
        }

        // ---- Ansible role testing: the Molecule-like lifecycle ----
        Command::Create(a) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            let records = steps::create_with(env, sc, a.reuse || sc.driver_reuse())?;
            if g.json {
                out.json_doc(&records);
            }
            Ok(())
        }),
        Command::Converge(a) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            let done = steps::converge(env, sc, a.playbook.as_deref(), &a.ansible_args)?;
            report_steps(out, &done);
            Ok(())
        }),
        Command::Idempotence(a) => {
            let sc = open(g, &dir)?;
            steps::run_step(
                out,
                &sc,
                PlaybookStep::Idempotence,
                a.playbook.as_deref(),
                &a.ansible_args,
            )?;
            Ok(())
        }
        Command::Verify(a) => {
            let sc = open(g, &dir)?;
            let ran = steps::run_step(
                out,
                &sc,
                PlaybookStep::Verify,
                a.playbook.as_deref(),
                &a.ansible_args,
            )?;
            report_steps(out, &[StepOutcome::of(PlaybookStep::Verify, ran)]);
            Ok(())
        }
        Command::Test(a) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            let done = steps::test(env, sc, a.destroy == cli::DestroyPolicy::Always, a.reuse)?;
            report_steps(out, &done);
            Ok(())
        }),
        Command::Gc(a) => {
            let store = BoxStore::from_env();
            let older = match (&a.older_than, a.all) {
                (Some(d), _) => Some(
                    reuse::parse_duration(d).map_err(|message| Error::BadDuration { message })?,
                ),
                (None, true) => None,
                (None, false) => {
                    for p in reuse::all_parked(&store) {
                        let age = p.age().as_secs();
                        out.line(format!(
                            "{:<40} parked {}h{:02}m ago  {}",
                            p.domain,
                            age / 3600,
                            age / 60 % 60,
                            p.project_dir.display()
                        ));
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
            Ok(reuse::gc(&hv, &store, out, &parked)?)
        }
        Command::Completions(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(a.shell, &mut cmd, "kvmdrive", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Man(e)),
                _ => Ok(()),
            }
        }
        Command::Inventory(a) => {
            let sc = open(g, &dir)?;
            let (hosts, down) = sc.inventory_hosts()?;
            if hosts.is_empty() {
                return Err(Error::NothingUp);
            }
            for name in down {
                out.warn(Some(&name), "not up: left out of the inventory");
            }
            let text = kvmdrive::roletest::ansible::inventory_yaml(&hosts);
            match a.output {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|source| Error::Write { path, source })
                }
                None if g.json => {
                    out.json_doc(&kvmdrive::roletest::ansible::inventory(&hosts));
                    Ok(())
                }
                None => {
                    out.text(&text);
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
fn open(g: &cli::GlobalArgs, dir: &std::path::Path) -> Result<Scenario, Error> {
    Ok(Scenario::open(
        dir,
        g.state_dir.as_deref(),
        g.platforms.as_deref(),
    )?)
}

fn not_up(name: &str) -> Error {
    Error::NotUp {
        name: name.to_owned(),
    }
}

/// `converge`, `verify` and `test` with `--json`: the steps and how each went.
fn report_steps(out: &Reporter, done: &[StepOutcome]) {
    if out.json() {
        out.json_doc(&serde_json::json!({ "steps": done }));
    }
}

/// The record of the machine `name` (or of the only machine).
fn running_record(
    project: &Project,
    config: &Config,
    name: Option<&str>,
) -> Result<kvmdrive::machine::project::MachineRecord, Error> {
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

fn with_env(
    g: &cli::GlobalArgs,
    dir: &std::path::Path,
    out: &Reporter,
    f: impl FnOnce(&Env, &Scenario) -> Result<(), Error>,
) -> Result<(), Error> {
    let sc = open(g, dir)?;
    let hv = connect(g, &sc.config)?;
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

/// The libvirt connection commands start from: `--connect`, or with
/// `hosts:` the first of them that answers (the lifecycle commands connect
/// to the others themselves; one that does not answer fails `up`).
fn connect(g: &cli::GlobalArgs, config: &Config) -> Result<Hypervisor, Error> {
    let mut first_error = None;
    for h in &config.hosts.0 {
        match Hypervisor::connect(h.as_str()) {
            Ok(hv) => return Ok(hv),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(Hypervisor::connect(&g.connect)?),
    }
}

fn init(dir: &std::path::Path, force: bool, out: &Reporter) -> Result<(), Error> {
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

fn print_snapshots(out: &Reporter, rows: &[snapshot::SnapshotRow]) {
    if out.json() {
        return out.json_doc(&rows);
    }
    for r in rows {
        let s = &r.snapshot;
        out.line(format!(
            "{:<20} {:<24} {:<8} {}",
            r.machine, s.name, s.state, s.creation_time
        ));
    }
}
