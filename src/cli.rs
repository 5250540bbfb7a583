//! Command-line definitions (clap derive) and nothing else: parsing only,
//! no side effects. Both binaries parse the same [`Cli`]: the front
//! (`src/main.rs`, [`crate::front`]) and the engine
//! (`src/bin/kvmdrive-engine.rs`) turn it into work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Vagrant-compatible libvirt/KVM machines for CI and Ansible role testing.
#[derive(Debug, Parser)]
#[command(name = "kvmdrive", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Print machine-readable JSON on stdout instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,

    /// libvirt connection URI.
    #[arg(
        long = "connect",
        short = 'c',
        global = true,
        env = "LIBVIRT_DEFAULT_URI",
        default_value = "qemu:///system"
    )]
    pub connect: String,

    /// Project directory (where kvmdrive.yml lives). Defaults to the current directory.
    #[arg(long, short = 'C', global = true, value_name = "DIR")]
    pub project_dir: Option<PathBuf>,

    /// Say more about what is happening (repeat for more).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Keep state in DIR instead of PROJECT/.kvmdrive (kvmdrive's own
    /// directory: it is removed with the last machine).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Take the machines from a Molecule platforms list (JSON or YAML: a list,
    /// or a document with `platforms:` such as molecule.yml; `-` for stdin)
    /// instead of kvmdrive.yml.
    #[arg(long, global = true, value_name = "FILE")]
    pub platforms: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented kvmdrive.yml that uses the bundled Debian 12 box.
    Init(InitArgs),
    /// Create and start machines (all of them when no name is given). Idempotent.
    Up(UpArgs),
    /// Run the machines' provisioners again, in order, from the first.
    Provision(ProvisionArgs),
    /// Copy the rsync synced folders into the machines again.
    Rsync(MachineSelection),
    /// Copy the rsync synced folders, then again on every change, until Ctrl-C.
    RsyncAuto(MachineSelection),
    /// Halt, then up: addresses and keys stay; provisioners only with --provision.
    Reload(UpArgs),
    /// Show the state, address and SSH details of the project's machines.
    Status,
    /// Open an SSH session to a machine, or run a command in it.
    Ssh(SshArgs),
    /// Print an OpenSSH client config for the machines, like `vagrant ssh-config`.
    SshConfig(SshConfigArgs),
    /// Shut machines down (gracefully, then forcibly after a timeout).
    Halt(HaltArgs),
    /// Remove machines, their disks, and the project's network once unused.
    Destroy(DestroyArgs),
    /// Save, restore, list and delete snapshots of the machines (memory and disks).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Save running machines' memory to disk and stop them; `resume` or `up` continues them.
    Suspend(MachineSelection),
    /// Continue suspended machines from their saved memory (no reboot).
    Resume(MachineSelection),
    /// Manage the box cache: add, list, remove, prune, outdated, index.
    #[command(subcommand)]
    Box(crate::boxes::cli::BoxCommand),
    /// Check and prepare this machine: /dev/kvm, daemons without systemd, iptables.
    #[command(subcommand)]
    Host(crate::host::cli::HostCommand),

    // ---- Ansible role testing: the Molecule-like lifecycle ----
    /// Create and start every machine; prints one record per instance (with --json: instance, address, user, port, identity_file, python).
    Create(CreateArgs),
    /// Create the machines if needed, then run a playbook against them (default converge.yml).
    Converge(PlaybookArgs),
    /// Run the converge playbook again; fail when any task changed something.
    Idempotence(PlaybookArgs),
    /// Run the verify playbook (default verify.yml; skipped when there is none).
    Verify(PlaybookArgs),
    /// destroy, create, prepare, converge, idempotence, verify, destroy (always destroys at the end unless --destroy never).
    Test(TestArgs),
    /// Print an Ansible YAML inventory of the machines that are up.
    Inventory(InventoryArgs),
    /// Remove parked machines (kept by `--reuse`); without options, list them.
    Gc(GcArgs),

    // ---- for packagers ----
    /// Print a shell completion script (e.g. `kvmdrive completions bash > /etc/bash_completion.d/kvmdrive`).
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `kvmdrive man > /usr/local/share/man/man1/kvmdrive.1`.
    Man,
}

/// `kvmdrive snapshot ...`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take snapshot NAME of the machines (memory too when they run).
    Save(SnapshotSaveArgs),
    /// Return the machines to snapshot NAME (running, SSH answering, when it was taken running).
    Restore(SnapshotArgs),
    /// List the machines' snapshots (`--json` for programs).
    List,
    /// Delete snapshot NAME of the machines.
    Delete(SnapshotArgs),
    /// Take a snapshot named after the time, to `pop` later (as `vagrant snapshot push`).
    Push(MachineSelection),
    /// Restore each machine's latest pushed snapshot, then delete it (as `vagrant snapshot pop`).
    Pop(SnapshotPopArgs),
}

#[derive(Debug, Args)]
pub struct SnapshotSaveArgs {
    #[command(flatten)]
    pub snapshot: SnapshotArgs,

    /// Replace a snapshot of that name (Vagrant's `--force`).
    #[arg(long, short)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotPopArgs {
    /// Keep the snapshot after restoring it.
    #[arg(long)]
    pub no_delete: bool,

    #[command(flatten)]
    pub selection: MachineSelection,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Snapshot name.
    #[arg(value_name = "NAME")]
    pub name: String,

    #[command(flatten)]
    pub selection: MachineSelection,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// A playbook to run instead of the step's default one.
#[derive(Debug, Args)]
pub struct PlaybookArgs {
    /// Playbook (default: the step's playbook in the project directory).
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: Option<PathBuf>,

    /// Extra arguments for ansible-playbook.
    #[arg(last = true, value_name = "ANSIBLE_ARGS")]
    pub ansible_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Destroy the machines at the start and the end (`always`) or keep them (`never`).
    #[arg(long, value_enum, default_value = "always")]
    pub destroy: DestroyPolicy,

    /// Reuse machines between runs: create reverts parked machines to their
    /// pristine snapshot, destroy parks them (also the driver's `reuse: true`).
    #[arg(long)]
    pub reuse: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Revert parked machines to their pristine snapshot instead of booting;
    /// give fresh machines one (also the driver's `reuse: true`).
    #[arg(long)]
    pub reuse: bool,

    /// Also write the records to FILE as Molecule's instance_config.yml
    /// (mode 0600, replaced whole), as the Molecule driver's create does.
    #[arg(long, value_name = "FILE")]
    pub instance_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Remove machines parked longer than this (`90m`, `12h`, `7d`).
    #[arg(long, value_name = "DURATION", conflicts_with = "all")]
    pub older_than: Option<String>,

    /// Remove every parked machine.
    #[arg(long)]
    pub all: bool,
}

/// As Molecule's `molecule test --destroy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DestroyPolicy {
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Write the inventory to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing kvmdrive.yml.
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// `up` and `reload`: machines, and whether provisioners run.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Run the provisioners even when they already ran.
    #[arg(long, conflicts_with = "no_provision")]
    pub provision: bool,

    /// Do not run provisioners, not even at a machine's first up.
    #[arg(long)]
    pub no_provision: bool,

    /// Run only these provisioners, by name or kind, even when they already ran (Vagrant's `--provision-with`).
    #[arg(
        long,
        value_name = "P,...",
        value_delimiter = ',',
        conflicts_with = "no_provision"
    )]
    pub provision_with: Vec<String>,

    /// Print the plan (machines, MACs, addresses, volumes, networks, domain
    /// XML with --json) and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Accepted for Vagrant scripts (`vagrant up --provider=libvirt`): libvirt is the only provider.
    #[arg(long, value_name = "NAME", value_parser = ["libvirt"])]
    pub provider: Option<String>,

    /// Accepted for Vagrant scripts: machines always come up in parallel
    /// (kvmdrive's parallel `up` takes its locks itself).
    #[arg(long, hide = true)]
    pub parallel: bool,
    #[arg(long, hide = true)]
    pub no_parallel: bool,

    /// Accepted for Vagrant scripts: a machine that fails is always removed again.
    #[arg(long, hide = true)]
    pub destroy_on_error: bool,

    #[command(flatten)]
    pub selection: MachineSelection,
}

/// Machines to act on; empty means every machine of the project.
#[derive(Debug, Args)]
pub struct MachineSelection {
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// Machine to connect to (may be omitted when the project has one machine).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    /// Command to run instead of an interactive shell.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// Only this machine (default: all running machines).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Only these provisioners, by name or kind (shell, file, ansible), comma-separated (Vagrant's `--provision-with`).
    #[arg(long, value_name = "P,...", value_delimiter = ',')]
    pub provision_with: Vec<String>,

    #[command(flatten)]
    pub selection: MachineSelection,
}

#[derive(Debug, Args)]
pub struct HaltArgs {
    /// Power off at once, without asking the guest (Vagrant's `halt -f`).
    #[arg(long, short = 'f')]
    pub force: bool,

    #[command(flatten)]
    pub selection: MachineSelection,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Do not ask for confirmation (kvmdrive never asks; accepted for Vagrant compatibility).
    #[arg(long, short = 'f')]
    pub force: bool,

    /// Park machines that have a pristine snapshot instead of removing them
    /// (also the driver's `reuse: true`).
    #[arg(long, conflicts_with = "purge")]
    pub reuse: bool,

    /// Remove the machines for good, parked ones included, even with `reuse: true`.
    #[arg(long)]
    pub purge: bool,

    /// Afterwards write an empty Molecule instance_config.yml (`[]`) to FILE.
    #[arg(long, value_name = "FILE")]
    pub instance_config: Option<PathBuf>,

    #[command(flatten)]
    pub selection: MachineSelection,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn up_and_reload_take_provision_flags() {
        let cli = Cli::try_parse_from(["kvmdrive", "up", "--provision", "web"]).unwrap();
        match cli.command {
            Command::Up(a) => {
                assert!(a.provision && !a.no_provision);
                assert_eq!(a.selection.names, vec!["web"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["kvmdrive", "up", "--provision", "--no-provision"]).is_err());
        let cli = Cli::try_parse_from(["kvmdrive", "reload", "--no-provision"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Reload(UpArgs {
                no_provision: true,
                ..
            })
        ));
        let cli = Cli::try_parse_from(["kvmdrive", "provision", "a", "b"]).unwrap();
        assert!(
            matches!(cli.command, Command::Provision(p) if p.selection.names.len() == 2 && p.provision_with.is_empty())
        );
        let cli = Cli::try_parse_from([
            "kvmdrive",
            "provision",
            "--provision-with",
            "setup,file",
            "a",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Provision(p) if p.provision_with == ["setup", "file"] && p.selection.names == ["a"])
        );
    }

    #[test]
    fn vagrant_script_flags_are_taken() {
        let cli = Cli::try_parse_from([
            "kvmdrive",
            "up",
            "--provider=libvirt",
            "--no-parallel",
            "--destroy-on-error",
            "web",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Up(a) if a.provider.as_deref() == Some("libvirt") && a.selection.names == ["web"])
        );
        assert!(Cli::try_parse_from(["kvmdrive", "up", "--provider", "virtualbox"]).is_err());
        let cli = Cli::try_parse_from(["kvmdrive", "up", "--provision-with", "a,b"]).unwrap();
        assert!(matches!(cli.command, Command::Up(a) if a.provision_with == ["a", "b"]));
        assert!(Cli::try_parse_from([
            "kvmdrive",
            "reload",
            "--provision-with",
            "a",
            "--no-provision"
        ])
        .is_err());
        let cli = Cli::try_parse_from(["kvmdrive", "halt", "-f", "web"]).unwrap();
        assert!(matches!(cli.command, Command::Halt(a) if a.force && a.selection.names == ["web"]));
        let cli = Cli::try_parse_from(["kvmdrive", "destroy", "-f"]).unwrap();
        assert!(matches!(cli.command, Command::Destroy(a) if a.force));
    }

    #[test]
    fn snapshot_commands_take_a_name_then_machines() {
        let cli = Cli::try_parse_from(["kvmdrive", "snapshot", "save", "s1", "a", "b"]).unwrap();
        match cli.command {
            Command::Snapshot(SnapshotCommand::Save(a)) => {
                assert_eq!(a.snapshot.name, "s1");
                assert_eq!(a.snapshot.selection.names, vec!["a", "b"]);
                assert!(!a.force);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["kvmdrive", "snapshot", "list", "--json"]).unwrap();
        assert!(cli.global.json);
        assert!(Cli::try_parse_from(["kvmdrive", "snapshot", "restore"]).is_err());
        let cli = Cli::try_parse_from(["kvmdrive", "snapshot", "save", "--force", "s1"]).unwrap();
        assert!(matches!(cli.command, Command::Snapshot(SnapshotCommand::Save(a)) if a.force));
        let cli = Cli::try_parse_from(["kvmdrive", "snapshot", "pop", "--no-delete", "a"]).unwrap();
        assert!(
            matches!(cli.command, Command::Snapshot(SnapshotCommand::Pop(p)) if p.no_delete && p.selection.names == ["a"])
        );
        let cli = Cli::try_parse_from(["kvmdrive", "snapshot", "push"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Snapshot(SnapshotCommand::Push(_))
        ));
    }

    #[test]
    fn ssh_takes_a_command_after_double_dash() {
        let cli = Cli::try_parse_from(["kvmdrive", "ssh", "web", "--", "uname", "-a"]).unwrap();
        match cli.command {
            Command::Ssh(a) => {
                assert_eq!(a.name.as_deref(), Some("web"));
                assert_eq!(a.command, vec!["uname", "-a"]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn role_testing_commands_take_the_machine_interface_options() {
        let cli = Cli::try_parse_from([
            "kvmdrive",
            "--json",
            "--state-dir",
            "/eph/kvmdrive",
            "--platforms",
            "-",
            "create",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Create(CreateArgs {
                reuse: false,
                instance_config: None
            })
        ));
        assert_eq!(
            cli.global.platforms.as_deref(),
            Some(std::path::Path::new("-"))
        );
        let cli =
            Cli::try_parse_from(["kvmdrive", "converge", "site.yml", "--", "-e", "x=1"]).unwrap();
        match cli.command {
            Command::Converge(a) => {
                assert_eq!(
                    a.playbook.as_deref(),
                    Some(std::path::Path::new("site.yml"))
                );
                assert_eq!(a.ansible_args, vec!["-e", "x=1"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["kvmdrive", "test", "--destroy", "never"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Test(TestArgs {
                destroy: DestroyPolicy::Never,
                reuse: false
            })
        ));
    }
}
