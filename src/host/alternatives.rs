//! Debian's alternatives system (`update-alternatives`), as far as the
//! iptables fix needs it: which binary a name points at, which ones it could
//! point at, and switching it. Parsing `--query` output is pure; running
//! the tool is at the bottom.

use super::error::HostError;
use std::path::PathBuf;
use std::process::Command;

/// `update-alternatives --query NAME`, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alternative {
    pub name: String,
    /// `auto` or `manual`.
    pub status: String,
    /// What the link points at now (`None` when the group is broken).
    pub value: Option<PathBuf>,
    /// Every registered choice, in the order listed.
    pub choices: Vec<PathBuf>,
}

impl Alternative {
    pub fn has_choice(&self, path: &str) -> bool {
        self.choices.iter().any(|c| c.as_os_str() == path)
    }
}

/// Parses the RFC822-like output of `update-alternatives --query`.
pub fn parse_query(text: &str) -> Option<Alternative> {
    let mut alt = Alternative::default();
    for line in text.lines() {
        // Slave lines are indented; only top-level fields matter here.
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match field {
            "Name" => alt.name = value.to_owned(),
            "Status" => alt.status = value.to_owned(),
            "Value" if value != "none" => alt.value = Some(value.into()),
            "Alternative" => alt.choices.push(value.into()),
            _ => {}
        }
    }
    (!alt.name.is_empty()).then_some(alt)
}

/// Queries `name`; `None` when the tool or the group does not exist.
pub fn query(name: &str) -> Option<Alternative> {
    let out = Command::new("update-alternatives")
        .args(["--query", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_query(&String::from_utf8_lossy(&out.stdout))
}

/// `update-alternatives --set NAME PATH`.
pub fn set(name: &str, path: &str) -> Result<(), HostError> {
    let out = Command::new("update-alternatives")
        .args(["--set", name, path])
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => HostError::NotInstalled {
                program: "update-alternatives",
                package: "dpkg",
            },
            _ => HostError::io("run update-alternatives")(e),
        })?;
    if !out.status.success() {
        return Err(HostError::CommandFailed {
            command: format!("update-alternatives --set {name} {path}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPTABLES: &str = "Name: iptables
Link: /usr/sbin/iptables
Slaves:
 iptables-restore /usr/sbin/iptables-restore
 iptables-save /usr/sbin/iptables-save
Status: auto
Best: /usr/sbin/iptables-nft
Value: /usr/sbin/iptables-nft

Alternative: /usr/sbin/iptables-legacy
Priority: 10
Slaves:
 iptables-restore /usr/sbin/iptables-legacy-restore
 iptables-save /usr/sbin/iptables-legacy-save

Alternative: /usr/sbin/iptables-nft
Priority: 20
Slaves:
 iptables-restore /usr/sbin/iptables-nft-restore
 iptables-save /usr/sbin/iptables-nft-save
";

    #[test]
    fn parses_debian_iptables_query() {
        let a = parse_query(IPTABLES).unwrap();
        assert_eq!(a.name, "iptables");
        assert_eq!(a.status, "auto");
        assert_eq!(
            a.value.as_deref(),
            Some(std::path::Path::new("/usr/sbin/iptables-nft"))
        );
        assert_eq!(a.choices.len(), 2);
        assert!(a.has_choice("/usr/sbin/iptables-legacy"));
    }

    #[test]
    fn manual_and_broken_groups() {
        let a = parse_query("Name: iptables\nLink: /usr/sbin/iptables\nStatus: manual\nBest: /usr/sbin/iptables-nft\nValue: none\n").unwrap();
        assert_eq!(a.status, "manual");
        assert_eq!(a.value, None);
        assert!(parse_query("").is_none());
    }
}
