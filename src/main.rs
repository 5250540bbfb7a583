//! TEMPORARY wiring of `kvmdrive box ...` on the `boxes` branch, so the box
//! commands run end to end; main's real CLI replaces this at merge.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kvmdrive::boxes::{cli::BoxCommand, commands, BoxError};
use kvmdrive::output::Reporter;

#[derive(Parser)]
#[command(name = "kvmdrive")]
struct Cli {
    #[arg(long, global = true)]
    json: bool,
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[arg(long, short = 'C', global = true, value_name = "DIR")]
    project_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the box cache.
    #[command(subcommand)]
    Box(BoxCommand),
}

fn main() {
    let cli = Cli::parse();
    let reporter = Reporter::new(cli.json, cli.verbose);
    let Command::Box(cmd) = cli.command;
    match commands::run_in(cmd, &reporter, cli.json, cli.project_dir.as_deref()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = e.downcast_ref::<BoxError>().and_then(BoxError::hint) {
                eprintln!("hint: {hint}");
            }
            std::process::exit(1);
        }
    }
}
