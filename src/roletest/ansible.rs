//! Ansible: the YAML inventory of a project's machines (what `kvmdrive
//! inventory` prints and converge/verify use), running `ansible-playbook`
//! with its output passed through, and reading that output the way Molecule
//! does for the idempotence check.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

use crate::machine::project::MachineRecord;
use crate::machine::ssh::CLIENT_OPTIONS;

/// Extra `ssh` options for Ansible: kvmdrive's client options (fresh guests
/// have new host keys) plus connection sharing, as Molecule sets them.
pub fn ssh_common_args() -> String {
    let mut args: Vec<String> = CLIENT_OPTIONS
        .iter()
        .filter(|(k, _)| *k != "LogLevel")
        .map(|(k, v)| format!("-o {k}={v}"))
        .collect();
    args.extend(
        ["ControlMaster=auto", "ControlPersist=60s", "LogLevel=ERROR"]
            .iter()
            .map(|o| format!("-o {o}")),
    );
    args.join(" ")
}

/// One host of the inventory.
#[derive(Debug, Clone)]
pub struct InventoryHost {
    /// Ansible host name (the Molecule instance name).
    pub name: String,
    pub record: MachineRecord,
    /// Groups the host is in (none: only `all`) and child groups of those.
    pub groups: Vec<String>,
    pub children: Vec<String>,
}

/// The `ssh` options that reach a machine through its hypervisor host
/// (None for a local one): the `ProxyCommand`, and a `ControlPath` of its
/// own, since machines behind different hosts may share an address (each
/// host has its own NAT network) and Ansible keys its shared connections
/// by user, address and port only.
pub fn jump_args(r: &MachineRecord) -> Option<String> {
    r.jump.as_ref().map(|j| {
        format!(
            "{} -o ControlPath=/tmp/kvmdrive-ssh-{}-%C",
            j.ssh_args_line(),
            crate::machine::project::short_hash(r.domain.as_bytes())
        )
    })
}

/// Connection variables of a host, as Ansible names them.
pub fn host_vars(r: &MachineRecord) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("ansible_host".into(), json!(r.address));
    m.insert("ansible_port".into(), json!(r.port));
    m.insert("ansible_user".into(), json!(r.user));
    m.insert(
        "ansible_ssh_private_key_file".into(),
        json!(r.identity_file.to_string_lossy()),
    );
    m.insert("ansible_connection".into(), json!("ssh"));
    let jump = jump_args(r).map(|a| format!(" {a}"));
    let common = ssh_common_args() + jump.as_deref().unwrap_or("");
    m.insert("ansible_ssh_common_args".into(), json!(common));
    // One SSH round trip per task (no temp file put/chmod/rm), also for
    // users who run ansible-playbook with `kvmdrive inventory` themselves.
    m.insert("ansible_pipelining".into(), json!(true));
    if let Some(python) = &r.python {
        // No interpreter discovery (two SSH commands per host and run).
        m.insert("ansible_python_interpreter".into(), json!(python));
    }
    if !r.networks.is_empty() {
        // Extra NICs: [{name, mac, ip, prefix}]; ansible_host stays the management address.
        m.insert("kvmdrive_networks".into(), json!(r.networks));
    }
    m
}

/// A group's hosts and, per child group, that child's hosts.
type GroupMembers = (Map<String, Value>, BTreeMap<String, Map<String, Value>>);

/// An Ansible YAML inventory: every host with its connection variables under
/// `all`, and groups (with Molecule's `children` semantics) below it.
pub fn inventory_yaml(hosts: &[InventoryHost]) -> String {
    serde_norway::to_string(&inventory(hosts)).expect("plain data serialises")
}

/// The inventory as a document (`inventory --json` prints it as JSON).
pub fn inventory(hosts: &[InventoryHost]) -> Value {
    let mut all_hosts = Map::new();
    let mut groups: BTreeMap<String, GroupMembers> = BTreeMap::new();
    for h in hosts {
        all_hosts.insert(h.name.clone(), Value::Object(host_vars(&h.record)));
        for g in &h.groups {
            let (members, children) = groups.entry(g.clone()).or_default();
            members.insert(h.name.clone(), Value::Null);
            for c in &h.children {
                children
                    .entry(c.clone())
                    .or_default()
                    .insert(h.name.clone(), Value::Null);
            }
        }
    }
    let mut all = Map::new();
    all.insert("hosts".into(), Value::Object(all_hosts));
    if !groups.is_empty() {
        let children: Map<String, Value> = groups
            .into_iter()
            .map(|(g, (members, kids))| {
                let mut group = Map::new();
                group.insert("hosts".into(), Value::Object(members));
                if !kids.is_empty() {
                    let kids: Map<String, Value> = kids
                        .into_iter()
                        .map(|(k, m)| (k, json!({ "hosts": m })))
                        .collect();
                    group.insert("children".into(), Value::Object(kids));
                }
                (g, Value::Object(group))
            })
            .collect();
        all.insert("children".into(), Value::Object(children));
    }
    json!({ "all": all })
}

#[derive(Debug, thiserror::Error)]
pub enum AnsibleError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("playbook {0} does not exist")]
    NoPlaybook(PathBuf),
    #[error("`mitogen: true`, but {python} (the Python of ansible-playbook) cannot import Mitogen for Ansible: {detail}")]
    MitogenMissing { python: String, detail: String },
}

impl AnsibleError {
    pub fn hint(&self) -> Option<String> {
        match self {
            AnsibleError::Spawn { .. } => Some(
                "install Ansible (`pip install ansible-core`) and put ansible-playbook on PATH"
                    .into(),
            ),
            AnsibleError::NoPlaybook(_) => {
                Some("name a playbook, or write one in the project directory".into())
            }
            AnsibleError::MitogenMissing { python, .. } => Some(format!(
                "install it there (`{python} -m pip install mitogen`, or `pip install \
                 molecule-kvmdrive[mitogen]`), or drop `mitogen: true` from the driver section"
            )),
        }
    }
}

/// An `ansible-playbook` run to make.
#[derive(Debug, Clone)]
pub struct PlaybookRun<'a> {
    pub playbook: &'a Path,
    pub inventory: &'a Path,
    /// Environment added to ours.
    pub env: &'a [(String, OsString)],
    pub extra_args: &'a [String],
    /// Working directory (the project directory).
    pub cwd: &'a Path,
}

/// What a run printed and how it ended.
#[derive(Debug, Clone)]
pub struct PlaybookOutcome {
    /// ansible-playbook's exit status (or 1 when killed by a signal).
    pub code: i32,
    pub output: String,
}

/// The ansible-playbook to run: `$KVMDRIVE_ANSIBLE_PLAYBOOK`, else PATH's.
pub fn playbook_program() -> OsString {
    std::env::var_os("KVMDRIVE_ANSIBLE_PLAYBOOK")
        .unwrap_or_else(|| OsString::from("ansible-playbook"))
}

/// Runs ansible-playbook; its output goes to our stdout as it comes and is
/// also kept for the caller.
pub fn run_playbook(run: &PlaybookRun) -> Result<PlaybookOutcome, AnsibleError> {
    if !run.playbook.is_file() {
        return Err(AnsibleError::NoPlaybook(run.playbook.to_owned()));
    }
    let program = playbook_program();
    let mut cmd = Command::new(&program);
    cmd.arg("-i")
        .arg(run.inventory)
        .args(run.extra_args)
        .arg(run.playbook)
        .current_dir(run.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    for (k, v) in run.env {
        cmd.env(k, v);
    }
    let spawn = |source| AnsibleError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn)?;
    let mut output = String::new();
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(stdout, "{line}");
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = child.wait().map_err(spawn)?;
    Ok(PlaybookOutcome {
        code: status.code().unwrap_or(1),
        output,
    })
}

/// Tasks that reported a change, as `[host] => task`, read from
/// ansible-playbook's default output (Molecule's idempotence rule: any
/// `changed=N` with N > 0 in the recap fails).
pub fn changed_tasks(output: &str) -> Vec<String> {
    let text = strip_ansi(output);
    let mut task = String::new();
    let mut found = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("TASK [") {
            task = rest.split(']').next().unwrap_or(rest).to_owned();
        } else if let Some(rest) = line.strip_prefix("changed: [") {
            let host = rest.split(']').next().unwrap_or(rest);
            found.push(format!("[{host}] => {task}"));
        }
    }
    if found.is_empty() && recap_changed(&text) > 0 {
        found.push("(a task changed something; see the recap above)".into());
    }
    found
}

/// Sum of `changed=N` over the PLAY RECAP lines.
pub fn recap_changed(output: &str) -> u64 {
    output
        .lines()
        .filter(|l| l.contains(" ok=") && l.contains(" changed="))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("changed="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_behind_hosts_get_their_own_shared_connection() {
        let mut a = record("a", "192.168.121.10");
        let mut b = record("b", "192.168.121.10");
        a.jump = crate::remote::Jump::from_uri("qemu+ssh://root@10.250.1.2/system");
        b.jump = crate::remote::Jump::from_uri("qemu+ssh://root@10.250.2.2/system");
        a.domain = "kvmdrive-p-1-a".into();
        b.domain = "kvmdrive-p-1-b".into();
        let path = |r: &MachineRecord| {
            let args = host_vars(r)["ansible_ssh_common_args"]
                .as_str()
                .unwrap()
                .to_owned();
            let i = args.find("ControlPath=").expect("a ControlPath");
            args[i..].split(' ').next().unwrap().to_owned()
        };
        assert_ne!(path(&a), path(&b));
        assert!(
            !host_vars(&record("c", "192.168.121.11"))["ansible_ssh_common_args"]
                .as_str()
                .unwrap()
                .contains("ControlPath")
        );
    }

    fn record(name: &str, ip: &str) -> MachineRecord {
        MachineRecord {
            name: name.into(),
            domain: format!("p-abc-{name}"),
            address: ip.into(),
            identity_file: format!("/s/machines/{name}/id_ed25519").into(),
            ..crate::testutil::machine_record()
        }
    }

    #[test]
    fn inventory_has_connection_vars_groups_and_children() {
        let hosts = vec![
            InventoryHost {
                name: "web".into(),
                record: MachineRecord {
                    python: Some("/usr/bin/python3".into()),
                    ..record("web", "192.168.121.10")
                },
                groups: vec!["app".into()],
                children: vec!["frontend".into()],
            },
            InventoryHost {
                name: "db".into(),
                record: record("db", "192.168.121.11"),
                groups: vec![],
                children: vec![],
            },
        ];
        let y = inventory_yaml(&hosts);
        let v: serde_norway::Value = serde_norway::from_str(&y).unwrap();
        let web = &v["all"]["hosts"]["web"];
        assert_eq!(web["ansible_host"].as_str(), Some("192.168.121.10"));
        assert_eq!(web["ansible_port"].as_u64(), Some(22));
        assert_eq!(web["ansible_user"].as_str(), Some("vagrant"));
        assert_eq!(
            web["ansible_ssh_private_key_file"].as_str(),
            Some("/s/machines/web/id_ed25519")
        );
        assert!(web["ansible_ssh_common_args"]
            .as_str()
            .unwrap()
            .contains("StrictHostKeyChecking=no"));
        assert_eq!(web["ansible_pipelining"].as_bool(), Some(true));
        assert_eq!(
            web["ansible_python_interpreter"].as_str(),
            Some("/usr/bin/python3")
        );
        assert!(v["all"]["hosts"]["db"].is_mapping());
        // A record without a known Python leaves it to Ansible's discovery.
        assert!(v["all"]["hosts"]["db"]["ansible_python_interpreter"].is_null());
        let app = &v["all"]["children"]["app"];
        assert!(app["hosts"].as_mapping().unwrap().contains_key("web"));
        assert!(app["children"]["frontend"]["hosts"]
            .as_mapping()
            .unwrap()
            .contains_key("web"));
    }

    #[test]
    fn extra_networks_are_host_vars() {
        let mut r = record("a", "192.168.121.10");
        assert!(!host_vars(&r).contains_key("kvmdrive_networks"));
        r.networks.push(crate::machine::nics::NicAddress {
            name: "backend".into(),
            mac: "52:54:00:00:00:02".into(),
            ip: Some("192.168.56.11".parse().unwrap()),
            prefix: Some(24),
        });
        let v = host_vars(&r);
        assert_eq!(v["ansible_host"], json!("192.168.121.10"));
        assert_eq!(v["kvmdrive_networks"][0]["ip"], json!("192.168.56.11"));
        assert_eq!(v["kvmdrive_networks"][0]["name"], json!("backend"));
    }

    #[test]
    fn inventory_without_groups_has_only_all() {
        let y = inventory_yaml(&[InventoryHost {
            name: "a".into(),
            record: record("a", "10.0.0.2"),
            groups: vec![],
            children: vec![],
        }]);
        assert!(!y.contains("children"), "{y}");
    }

    const OUTPUT: &str = "\
PLAY [Converge] ****

TASK [Gathering Facts] ****
ok: [web]

TASK [sample : Write motd] ****
\u{1b}[0;33mchanged: [web]\u{1b}[0m
ok: [db]

TASK [sample : Loop] ****
changed: [db] => (item=a)

PLAY RECAP ****
db                         : ok=3    changed=1    unreachable=0    failed=0    skipped=0
web                        : ok=3    changed=1    unreachable=0    failed=0    skipped=0
";

    #[test]
    fn changed_tasks_are_read_like_molecule() {
        assert_eq!(recap_changed(OUTPUT), 2);
        assert_eq!(
            changed_tasks(OUTPUT),
            vec!["[web] => sample : Write motd", "[db] => sample : Loop"]
        );
        let quiet = "PLAY RECAP ****\nweb : ok=3    changed=0    unreachable=0    failed=0\n";
        assert!(changed_tasks(quiet).is_empty());
    }
}
