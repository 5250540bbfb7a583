//! libvirt's `qemu.conf`: read the settings that decide which user qemu runs
//! as (`user`, `group`, `dynamic_ownership`, `security_driver`), and set a
//! string setting in place, keeping every other line as it was.
//!
//! The format is libvirt's virConf: `name = value` where a value is a quoted
//! string, an integer or a `[ ... ]` list (which may span lines), and `#`
//! starts a comment. Parsing and editing are pure functions on the text;
//! [`QemuConf::read`] is the only I/O.

use std::path::{Path, PathBuf};

/// Where Debian (and upstream) keep it.
pub const DEFAULT_PATH: &str = "/etc/libvirt/qemu.conf";

/// A setting's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    List(Vec<String>),
}

/// The parsed file: settings in file order, plus the build's defaults as the
/// file documents them (`#user = "libvirt-qemu"`: upstream's qemu.conf.in
/// carries `#user = "@QEMU_USER@"`, filled in at build time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuConf {
    pub path: PathBuf,
    pub settings: Vec<(String, Value)>,
    /// `user`/`group` from the commented-out default lines, if present.
    pub documented_user: Option<String>,
    pub documented_group: Option<String>,
}

impl QemuConf {
    /// Reads and parses `path`; a missing file is an empty config.
    pub fn read(path: &Path) -> std::io::Result<QemuConf> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut conf = parse(&text);
        conf.path = path.to_owned();
        Ok(conf)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        // virConf keeps the last assignment.
        self.settings
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn get_int(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// The user qemu runs as: the setting, else the build default the file
    /// documents, else `fallback` (what the caller knows of the distro).
    pub fn effective_user<'a>(&'a self, fallback: &'a str) -> &'a str {
        self.get_str("user")
            .or(self.documented_user.as_deref())
            .unwrap_or(fallback)
    }

    pub fn effective_group<'a>(&'a self, fallback: &'a str) -> &'a str {
        self.get_str("group")
            .or(self.documented_group.as_deref())
            .unwrap_or(fallback)
    }

    /// `dynamic_ownership` (default on): libvirt chowns disk images to the
    /// qemu user before start. It never touches /dev/kvm.
    pub fn dynamic_ownership(&self) -> bool {
        self.get_int("dynamic_ownership").is_none_or(|v| v != 0)
    }
}

/// Parses qemu.conf text. Lines it cannot read are skipped, as a
/// best-effort reader should; libvirtd itself is the validator.
pub fn parse(text: &str) -> QemuConf {
    let mut conf = QemuConf::default();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(commented) = trimmed.strip_prefix('#') {
            // Only `#key = "value"` with no space after '#': the documented
            // default, not the indented examples around it.
            if !commented.starts_with(char::is_whitespace) {
                if let Some((key, Value::Str(v))) =
                    parse_assignment(commented, &mut std::iter::empty())
                {
                    match key.as_str() {
                        "user" => conf.documented_user = Some(v),
                        "group" => conf.documented_group = Some(v),
                        _ => {}
                    }
                }
            }
            continue;
        }
        if let Some(kv) = parse_assignment(trimmed, &mut lines) {
            conf.settings.push(kv);
        }
    }
    conf
}

/// `key = value`, pulling more lines from `rest` for a multi-line list.
fn parse_assignment(line: &str, rest: &mut dyn Iterator<Item = &str>) -> Option<(String, Value)> {
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return None;
    }
    let value = value.trim_start();
    let value = if value.starts_with('[') {
        let mut buf = value.to_owned();
        while !strip_comment(&buf).contains(']') {
            match rest.next() {
                Some(more) => {
                    buf.push('\n');
                    buf.push_str(more);
                }
                None => break,
            }
        }
        Value::List(parse_list(&buf))
    } else if let Some((s, _)) = parse_string(value) {
        Value::Str(s)
    } else {
        let num = strip_comment(value).trim();
        Value::Int(num.parse().ok()?)
    };
    Some((key.to_owned(), value))
}

/// A quoted string at the start of `s` and what follows it.
fn parse_string(s: &str) -> Option<(String, &str)> {
    let quote = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &s[1..];
    let end = body.find(quote)?;
    Some((body[..end].to_owned(), &body[end + 1..]))
}

fn parse_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start().strip_prefix('[').unwrap_or(s);
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.starts_with('#') {
            rest = rest.split_once('\n').map_or("", |(_, r)| r);
            continue;
        }
        match parse_string(rest) {
            Some((item, after)) => {
                out.push(item);
                rest = after;
            }
            None => break,
        }
    }
    out
}

/// `s` up to a `#` that is not inside quotes.
fn strip_comment(s: &str) -> &str {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return &s[..i],
            _ => {}
        }
    }
    s
}

/// `text` with `key = "value"` set: an existing uncommented single-line
/// assignment is replaced; otherwise the line goes right after the
/// commented-out default (`#key = ...`), or at the end. Returns `None` when
/// the file already says exactly that (nothing to change).
pub fn set_string(text: &str, key: &str, value: &str) -> Option<String> {
    let conf = parse(text);
    if conf.get_str(key) == Some(value) {
        return None;
    }
    let new_line = format!("{key} = \"{value}\"");
    let is_assignment = |line: &str, commented: bool| {
        let l = line.trim_start();
        let l = if commented {
            match l.strip_prefix('#') {
                Some(r) if !r.starts_with(char::is_whitespace) => r,
                _ => return false,
            }
        } else {
            l
        };
        l.split_once('=').is_some_and(|(k, _)| k.trim() == key)
    };
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let existing: Vec<usize> = (0..lines.len())
        .filter(|&i| is_assignment(&lines[i], false))
        .collect();
    if let Some(&last) = existing.last() {
        lines[last] = new_line;
    } else if let Some(i) = (0..lines.len())
        .rev()
        .find(|&i| is_assignment(&lines[i], true))
    {
        lines.insert(i + 1, new_line);
    } else {
        lines.push(new_line);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = r#"
# Some examples of valid values are:
#
#       user = "qemu"   # A user named "qemu"
#       user = "+0"     # Super user (uid=0)
#
#user = "libvirt-qemu"

# The group for QEMU processes run by the system instance.
#group = "libvirt-qemu"

#dynamic_ownership = 1
#security_driver = "selinux"
cgroup_device_acl = [
    "/dev/null", "/dev/full", "/dev/zero",
    "/dev/random", "/dev/urandom", # comment
    "/dev/ptmx", "/dev/kvm"
]
"#;

    #[test]
    fn debian_defaults_come_from_the_documented_lines() {
        let c = parse(DEBIAN);
        assert_eq!(c.get_str("user"), None);
        assert_eq!(c.documented_user.as_deref(), Some("libvirt-qemu"));
        assert_eq!(c.documented_group.as_deref(), Some("libvirt-qemu"));
        assert_eq!(c.effective_user("qemu"), "libvirt-qemu");
        assert!(c.dynamic_ownership());
        assert_eq!(
            c.get("cgroup_device_acl"),
            Some(&Value::List(
                [
                    "/dev/null",
                    "/dev/full",
                    "/dev/zero",
                    "/dev/random",
                    "/dev/urandom",
                    "/dev/ptmx",
                    "/dev/kvm"
                ]
                .map(String::from)
                .to_vec()
            ))
        );
    }

    #[test]
    fn settings_strings_ints_and_comments() {
        let c = parse("user = \"root\"  # run as root\ngroup='kvm'\ndynamic_ownership = 0\n  remember_owner=1 # x\n");
        assert_eq!(c.get_str("user"), Some("root"));
        assert_eq!(c.get_str("group"), Some("kvm"));
        assert!(!c.dynamic_ownership());
        assert_eq!(c.get_int("remember_owner"), Some(1));
        assert_eq!(c.effective_user("libvirt-qemu"), "root");
    }

    #[test]
    fn last_assignment_wins() {
        let c = parse("user = \"a\"\nuser = \"b\"\n");
        assert_eq!(c.get_str("user"), Some("b"));
    }

    #[test]
    fn fallback_when_nothing_is_documented() {
        let c = parse("");
        assert_eq!(c.effective_user("qemu"), "qemu");
        assert!(c.dynamic_ownership());
    }

    #[test]
    fn set_string_goes_after_the_documented_default() {
        let out = set_string(DEBIAN, "user", "root").unwrap();
        assert!(
            out.contains("#user = \"libvirt-qemu\"\nuser = \"root\"\n"),
            "{out}"
        );
        assert_eq!(parse(&out).get_str("user"), Some("root"));
        // Everything else is kept.
        assert_eq!(out.lines().count(), DEBIAN.lines().count() + 1);
    }

    #[test]
    fn set_string_replaces_an_existing_setting_and_is_idempotent() {
        let text = "user = \"libvirt-qemu\"\ngroup = \"kvm\"\n";
        let out = set_string(text, "user", "root").unwrap();
        assert_eq!(out, "user = \"root\"\ngroup = \"kvm\"\n");
        assert_eq!(set_string(&out, "user", "root"), None);
    }

    #[test]
    fn set_string_appends_when_the_key_is_unknown() {
        let out = set_string("# empty\n", "group", "root").unwrap();
        assert_eq!(out, "# empty\ngroup = \"root\"\n");
    }
}
