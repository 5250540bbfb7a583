//! The `kvmdrive-engine` binary: every command, libvirt included. Users run
//! `kvmdrive` (the front, `src/main.rs`), which runs what needs no libvirt
//! itself and execs this binary, installed beside it, with the same argv for
//! the rest (see `kvmdrive::engine`). The commands both can run go through
//! the same functions in `kvmdrive::front`, and its one [`Error`] (if any) is
//! printed by `kvmdrive::front::finish`: text on stderr, and with `--json`
//! also one `{"error", "hint", "exit_code"}` object on stdout.

use std::process::ExitCode;

use clap::Parser;

use kvmdrive::boxes::BoxStore;
use kvmdrive::cli::{self, Cli, Command};
use kvmdrive::error::{self, Error};
use kvmdrive::front::{self, open};
use kvmdrive::machine::lifecycle::{self, Env};
use kvmdrive::machine::{cancel, provision, reuse, snapshot, suspend, sync};
use kvmdrive::output::Reporter;
use kvmdrive::project::scenario::Scenario;
use kvmdrive::roletest::steps::{self, PlaybookStep, StepOutcome};
use kvmdrive::virt::Hypervisor;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Reporter::new(cli.global.json, cli.global.verbose);
    let result = run(cli, &out);
    front::finish(&out, result)
}

fn run(cli: Cli, out: &Reporter) -> Result<(), Error> {
    let g = &cli.global;
    let dir = front::project_dir(g)?;
    match cli.command {
        Command::Init(a) => front::init(&dir, a.force, out),
        Command::Box(cmd) => front::box_command(cmd, &dir, out),
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
            let list = lifecycle::status(hv.as_ref(), project, config)?;
            front::print_status(out, project, list, !config.hosts.is_empty());
            Ok(())
        }
        Command::Up(a) if a.dry_run => with_env(g, &dir, out, |env, sc| {
            steps::show_warnings(env, sc);
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
            steps::show_warnings(env, sc);
            sc.save()?;
            let config = only_provisioners(&sc.config, &a.selection.names, &a.provision_with)?;
            let records = lifecycle::up_with(env, &config, &a.selection.names, up_options(&a))?;
            if g.json {
                out.json_doc(&records);
            }
            Ok(())
        }),
        Command::Reload(a) if a.dry_run => Err(Error::NoDryRun { command: "reload" }),
        Command::Reload(a) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            // As `vagrant reload`: provisioners that ran stay done unless --provision.
            let config = only_provisioners(&sc.config, &a.selection.names, &a.provision_with)?;
            let records = lifecycle::reload(env, &config, &a.selection.names, up_options(&a))?;
            if g.json {
                out.json_doc(&records);
            }
            Ok(())
        }),
        Command::Provision(a) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            let config = only_provisioners(&sc.config, &a.selection.names, &a.provision_with)?;
            let (runs, outcome) = provision::provision_machines(env, &config, &a.selection.names)?;
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
        Command::Halt(a) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            let sel = &a.selection;
            lifecycle::halt(env, &sc.config, &sel.names, a.force)?;
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
            in_env(g, &sc, out, |env, sc| {
                let names = &a.selection.names;
                if !a.purge && (a.reuse || sc.driver_reuse()) {
                    reuse::park(env, &sc.config, names)?;
                } else {
                    reuse::purge(env, &sc.config, names)?;
                }
                Ok(())
            })?;
            if let Some(path) = &a.instance_config {
                steps::write_instance_config(path, &[])?;
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
                S::Save(a) => snapshot::save(
                    env,
                    &sc.config,
                    &a.snapshot.name,
                    &a.snapshot.selection.names,
                    a.force,
                )?,
                S::Push(sel) => snapshot::push(env, &sc.config, &sel.names).map(drop)?,
                S::Pop(a) => snapshot::pop(env, &sc.config, &a.selection.names, !a.no_delete)?,
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
        Command::Ssh(a) => front::ssh(&open(g, &dir)?, a),
        Command::SshConfig(a) => front::ssh_config(&open(g, &dir)?, a, out),

        // ---- Ansible role testing: the Molecule-like lifecycle ----
        Command::Create(a) => with_env(g, &dir, out, |env, sc| {
            cancel::install_handler();
            let records = steps::create_with(env, sc, a.reuse || sc.driver_reuse())?;
            if let Some(path) = &a.instance_config {
                steps::write_instance_config(path, &records)?;
            }
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
                    front::gc_list(out);
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
            front::completions(a.shell);
            Ok(())
        }
        Command::Man => front::man(),
        Command::Inventory(a) => front::inventory(&open(g, &dir)?, a, out),
    }
}

/// `up --provision` / `--no-provision` as a policy (`--provision-with`
/// runs the provisioners it names even when they ran).
fn up_options(a: &cli::UpArgs) -> lifecycle::UpOptions {
    lifecycle::UpOptions {
        provision: if a.provision || !a.provision_with.is_empty() {
            provision::ProvisionPolicy::Always
        } else if a.no_provision {
            provision::ProvisionPolicy::Never
        } else {
            provision::ProvisionPolicy::Auto
        },
    }
}

/// The config `up`, `reload` and `provision` act on: with
/// `--provision-with`, only the provisioners it names.
fn only_provisioners<'c>(
    config: &'c kvmdrive::project::config::Config,
    names: &[String],
    provision_with: &[String],
) -> Result<std::borrow::Cow<'c, kvmdrive::project::config::Config>, Error> {
    Ok(if provision_with.is_empty() {
        std::borrow::Cow::Borrowed(config)
    } else {
        std::borrow::Cow::Owned(provision::with_only(config, names, provision_with)?)
    })
}

/// `converge`, `verify` and `test` with `--json`: the steps and how each went.
fn report_steps(out: &Reporter, done: &[StepOutcome]) {
    if out.json() {
        out.json_doc(&serde_json::json!({ "steps": done }));
    }
}

/// The libvirt connection commands start from: `--connect`, or with
/// `hosts:` the first of them that answers (the commands connect to the
/// others themselves, see `lifecycle::for_each_host`).
fn connect(
    g: &cli::GlobalArgs,
    config: &kvmdrive::project::config::Config,
) -> Result<Hypervisor, Error> {
    let mut errors = Vec::new();
    for h in &config.hosts.0 {
        match Hypervisor::connect(h.as_str()) {
            Ok(hv) => return Ok(hv),
            Err(e) => errors.push((h.as_str(), e)),
        }
    }
    if errors.len() > 1 {
        // None of several hosts answers: name them all.
        let hosts = errors
            .iter()
            .map(|(h, e)| format!("{h} ({e})"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(lifecycle::LifecycleError::Unreachable { hosts }.into());
    }
    match errors.pop() {
        Some((_, e)) => Err(e.into()),
        None => Ok(Hypervisor::connect(&g.connect)?),
    }
}

fn with_env(
    g: &cli::GlobalArgs,
    dir: &std::path::Path,
    out: &Reporter,
    f: impl FnOnce(&Env, &Scenario) -> Result<(), Error>,
) -> Result<(), Error> {
    in_env(g, &open(g, dir)?, out, f)
}

/// Runs `f` with the lifecycle environment of an opened scenario: its
/// libvirt connection, the box store and the pool directory.
fn in_env(
    g: &cli::GlobalArgs,
    sc: &Scenario,
    out: &Reporter,
    f: impl FnOnce(&Env, &Scenario) -> Result<(), Error>,
) -> Result<(), Error> {
    let hv = connect(g, &sc.config)?;
    let store = BoxStore::from_env();
    let env = Env {
        hv: &hv,
        project: &sc.project,
        out,
        store: &store,
        pool_dir: lifecycle::default_pool_dir(),
    };
    f(&env, sc)
}

fn print_snapshots(out: &Reporter, rows: &[snapshot::SnapshotRow]) {
    if out.json() {
        return out.json_doc(&rows);
    }
    for r in rows {
        let s = &r.snapshot;
        let line = format!(
            "{:<20} {:<24} {:<8} {}",
            r.machine, s.name, s.state, s.creation_time
        );
        match &r.host {
            // Several hosts: each machine's host at the end of its line.
            Some(h) => out.line(format!("{line} {h}")),
            None => out.line(line),
        }
    }
}
