//! The `kvmdrive` binary, the front: parse the command line, run what needs
//! no libvirt here ([`kvmdrive::front::run`]) and hand everything else to
//! `kvmdrive-engine` installed beside it, which links libvirt. So `--version`,
//! `--help`, `status` of a project with no machines, `box`, `ssh-config` and
//! the like do not pay the ~10 ms of CPU that loading libvirt's library chain
//! costs at every exec. Errors end the process through
//! [`kvmdrive::front::finish`] (exit codes from `Error::exit_code`; 2 for
//! usage errors comes from clap).

use std::process::ExitCode;

use clap::Parser;

use kvmdrive::cli::Cli;
use kvmdrive::output::Reporter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Reporter::new(cli.global.json, cli.global.verbose);
    let result = kvmdrive::front::run(cli, &out);
    kvmdrive::front::finish(&out, result)
}
