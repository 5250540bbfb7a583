//! `kvmdrive box ...` command-line definitions (clap derive), parsing only.
//! [`super::commands::run`] does the work. `--json` is kvmdrive's global flag.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum BoxCommand {
    /// Add a box from a .box file, a URL, a catalog, or an `owner/name` at $VAGRANT_SERVER_URL.
    Add(AddArgs),
    /// List cached boxes (kvmdrive's and Vagrant's).
    List(ListArgs),
    /// Remove a box from kvmdrive's cache.
    Remove(RemoveArgs),
    /// Remove all but the newest version of each box, keeping those this project's machines use.
    Prune(PruneArgs),
    /// Compare cached boxes with their catalogs.
    Outdated(OutdatedArgs),
    /// Write catalog JSON for a directory of .box files, to serve from any static web server.
    Index(IndexArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A .box file, an http(s):// or file:// URL of a box or of a catalog, a catalog .json, or `owner/name`.
    #[arg(value_name = "SOURCE")]
    pub source: String,

    /// Name of the box in the cache (needed for a .box file or URL).
    #[arg(long)]
    pub name: Option<String>,

    /// Version constraint for a catalog (`>= 1.2, < 2`, `~> 1.2`); for a .box file, an exact version to record.
    #[arg(long = "box-version", value_name = "CONSTRAINT")]
    pub box_version: Option<String>,

    /// Architecture of the box (default: the host's, e.g. amd64).
    #[arg(long, value_name = "ARCH")]
    pub architecture: Option<String>,

    /// Expected checksum of the .box file (hex).
    #[arg(long)]
    pub checksum: Option<String>,

    /// Type of --checksum: md5, sha1, sha256, sha384 or sha512 (default: from its length).
    #[arg(long = "checksum-type", value_name = "TYPE", requires = "checksum")]
    pub checksum_type: Option<String>,

    /// Replace a box of the same name, version and architecture that came from elsewhere.
    #[arg(long, short = 'f')]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only boxes with this name.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The version to remove (needed when several are cached, unless --all).
    #[arg(long = "box-version", value_name = "VERSION")]
    pub box_version: Option<String>,

    /// Remove every version.
    #[arg(long, conflicts_with = "box_version")]
    pub all: bool,

    /// Only the box for this architecture.
    #[arg(long, value_name = "ARCH")]
    pub architecture: Option<String>,

    /// Remove it even if a machine of this project uses it.
    #[arg(long, short = 'f')]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only say what would be removed.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Only prune this box.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct OutdatedArgs {
    /// Only this box (default: every cached box that came from a catalog).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Directory holding the .box files, named NAME-VERSION[-ARCH].box.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// URL the directory is served at; box URLs in the catalog start with it.
    #[arg(long = "base-url", value_name = "URL")]
    pub base_url: String,

    /// Box name for every file (e.g. acme/debian-12); default: NAME from the file names.
    #[arg(long)]
    pub name: Option<String>,

    /// Architecture of boxes whose file name and metadata do not say (default: the host's).
    #[arg(long, value_name = "ARCH")]
    pub architecture: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Top {
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: BoxCommand,
    }

    #[test]
    fn definitions_are_consistent() {
        use clap::CommandFactory;
        Top::command().debug_assert();
    }

    #[test]
    fn add_parses_vagrant_style_options() {
        let t = Top::try_parse_from([
            "box",
            "add",
            "acme/web",
            "--box-version",
            "~> 1.2",
            "--architecture",
            "arm64",
            "--checksum",
            "ab",
            "--checksum-type",
            "md5",
            "--force",
            "--json",
        ])
        .unwrap();
        assert!(t.json);
        match t.cmd {
            BoxCommand::Add(a) => {
                assert_eq!(a.source, "acme/web");
                assert_eq!(a.box_version.as_deref(), Some("~> 1.2"));
                assert_eq!(a.architecture.as_deref(), Some("arm64"));
                assert_eq!(a.checksum_type.as_deref(), Some("md5"));
                assert!(a.force);
            }
            other => panic!("{other:?}"),
        }
        assert!(Top::try_parse_from(["box", "add", "x", "--checksum-type", "md5"]).is_err());
        assert!(
            Top::try_parse_from(["box", "remove", "x", "--all", "--box-version", "1"]).is_err()
        );
    }
}
