//! `provision:` in kvmdrive.yml (and what `vm.provision` lines become): the
//! steps run in a machine, in order, at its first `up`, again with
//! `kvmdrive provision` or `up --provision`. Three kinds, as in Vagrant:
//! `shell` (inline or a script copied in), `file` (a copy into the guest) and
//! `ansible` (a playbook run from the host). Typed and checked at load;
//! `machine::provision` runs them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// One provisioner as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Provisioner {
    Shell(Shell),
    File(FileCopy),
    Ansible(Ansible),
}

impl Provisioner {
    /// `shell`, `file` or `ansible`.
    pub fn kind(&self) -> &'static str {
        match self {
            Provisioner::Shell(_) => "shell",
            Provisioner::File(_) => "file",
            Provisioner::Ansible(_) => "ansible",
        }
    }

    /// Its `name`, if it has one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Provisioner::Shell(s) => s.name.as_deref(),
            Provisioner::File(f) => f.name.as_deref(),
            Provisioner::Ansible(a) => a.name.as_deref(),
        }
    }

    /// Vagrant's `--provision-with`: named by its `name` or its kind.
    pub fn is_one_of(&self, names_or_kinds: &[String]) -> bool {
        names_or_kinds
            .iter()
            .any(|w| Some(w.as_str()) == self.name() || w == self.kind())
    }

    /// What output and messages call it: its `name`, else its kind.
    pub fn label(&self) -> String {
        match self.name() {
            Some(n) => format!("{} ({n})", self.kind()),
            None => self.kind().to_owned(),
        }
    }
}

/// A shell script run in the guest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawShell")]
pub struct Shell {
    pub name: Option<String>,
    pub script: Script,
    pub args: Vec<String>,
    /// Arguments as one line, passed to the shell as written (Vagrant's string `args`).
    pub args_line: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Run with sudo (default true, as in Vagrant).
    pub privileged: bool,
}

/// Where a shell provisioner's script comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Script {
    Inline(String),
    /// A host file (relative to the project directory), copied into the guest.
    Path(PathBuf),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShell {
    name: Option<String>,
    inline: Option<String>,
    path: Option<PathBuf>,
    args: Option<Args>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default = "yes")]
    privileged: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Args {
    Line(String),
    List(Vec<String>),
}

fn yes() -> bool {
    true
}

impl TryFrom<RawShell> for Shell {
    type Error = String;
    fn try_from(r: RawShell) -> Result<Shell, String> {
        let script = match (r.inline, r.path) {
            (Some(i), None) => Script::Inline(i),
            (None, Some(p)) => Script::Path(p),
            _ => return Err("a shell provisioner needs exactly one of `inline` and `path`".into()),
        };
        for k in r.env.keys() {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(format!("env: `{k}` is not a variable name"));
            }
        }
        let (args, args_line) = match r.args {
            None => (Vec::new(), None),
            Some(Args::List(l)) => (l, None),
            Some(Args::Line(s)) => (Vec::new(), Some(s)),
        };
        Ok(Shell {
            name: r.name,
            script,
            args,
            args_line,
            env: r.env,
            privileged: r.privileged,
        })
    }
}

/// A host file or directory copied into the guest (as the SSH user).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCopy {
    pub name: Option<String>,
    /// Host path, relative to the project directory.
    pub source: PathBuf,
    /// Guest path (relative paths are in the SSH user's home, as with scp).
    pub destination: String,
}

/// A playbook run from the host against this machine.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ansible {
    pub name: Option<String>,
    /// Relative to the project directory.
    pub playbook: PathBuf,
    /// Passed as `--extra-vars` JSON.
    #[serde(default)]
    pub extra_vars: BTreeMap<String, serde_json::Value>,
    /// `--limit` (default: this machine).
    pub limit: Option<String>,
}

/// The provisioners a machine runs: `defaults`' first, then its own (as
/// Vagrant runs outer-scope provisioners before a machine's).
pub fn merge(defaults: &[Provisioner], machine: &[Provisioner]) -> Vec<Provisioner> {
    defaults.iter().chain(machine).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<Vec<Provisioner>, String> {
        serde_norway::from_str(y).map_err(|e| e.to_string())
    }

    #[test]
    fn the_three_kinds_parse() {
        let p = parse(
            "- {type: shell, inline: echo hi, args: [a, b c], env: {X: '1'}, privileged: false, name: greet}\n\
             - {type: shell, path: s.sh, args: '--x 1'}\n\
             - {type: file, source: f, destination: /tmp/f}\n\
             - {type: ansible, playbook: p.yml, extra_vars: {a: 1}, limit: all}\n",
        )
        .unwrap();
        let Provisioner::Shell(s) = &p[0] else {
            panic!("{p:?}")
        };
        assert_eq!(s.script, Script::Inline("echo hi".into()));
        assert_eq!(s.args, vec!["a", "b c"]);
        assert!(!s.privileged);
        assert_eq!(p[0].label(), "shell (greet)");
        // --provision-with names a provisioner by its name or its kind.
        let with = |w: &[&str]| -> Vec<bool> {
            let w: Vec<String> = w.iter().map(|s| s.to_string()).collect();
            p.iter().map(|x| x.is_one_of(&w)).collect()
        };
        assert_eq!(with(&["greet"]), [true, false, false, false]);
        assert_eq!(with(&["shell"]), [true, true, false, false]);
        assert_eq!(with(&["greet", "ansible"]), [true, false, false, true]);
        assert_eq!(with(&["nope"]), [false; 4]);
        let Provisioner::Shell(s) = &p[1] else {
            panic!()
        };
        assert_eq!(s.script, Script::Path("s.sh".into()));
        assert_eq!(s.args_line.as_deref(), Some("--x 1"));
        assert!(s.privileged, "privileged defaults to true");
        assert_eq!(p[2].kind(), "file");
        let Provisioner::Ansible(a) = &p[3] else {
            panic!()
        };
        assert_eq!(a.extra_vars["a"], serde_json::json!(1));
    }

    #[test]
    fn bad_provisioners_are_refused() {
        assert!(parse("- {type: shell}\n")
            .unwrap_err()
            .contains("exactly one"));
        assert!(parse("- {type: shell, inline: a, path: b}\n")
            .unwrap_err()
            .contains("exactly one"));
        assert!(parse("- {type: shell, inline: a, env: {1X: y}}\n")
            .unwrap_err()
            .contains("1X"));
        assert!(parse("- {type: puppet}\n").unwrap_err().contains("puppet"));
        assert!(parse("- {type: file, source: a}\n")
            .unwrap_err()
            .contains("destination"));
        assert!(
            parse("- {type: file, source: a, destination: b, mode: 1}\n")
                .unwrap_err()
                .contains("mode")
        );
        assert!(parse("- {type: shell, inline: a, sudo: true}\n")
            .unwrap_err()
            .contains("sudo"));
    }
}
