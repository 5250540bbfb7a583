//! What the Vagrantfile lines of molecule-vagrant's
//! `instance_raw_config_args` (`vm.*`) and `provider_raw_config_args`
//! (libvirt provider settings) mean to kvmdrive: each parsed
//! [`Call`](crate::project::molecule::vagrant_ruby::Call) becomes a typed setting (a synced
//! folder, a provisioner, a host name, a network, a provider option, a disk)
//! or a reason it is not applied, which the caller reports as a warning
//! naming the line. `platforms` applies the settings.

use super::hardware;
use super::platforms::{COSMETIC_PROVIDER_OPTIONS, HOST_SIDE_PROVIDER_OPTIONS};
use serde_json::{json, Map, Value as Json};

use crate::project::molecule::vagrant_ruby::{Call, Value};
use crate::project::provisioner::Provisioner;
use crate::project::synced_folder::SyncedFolder;

/// Which list a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `instance_raw_config_args`: molecule-vagrant writes `c.LINE`.
    Instance,
    /// `provider_raw_config_args`: molecule-vagrant writes `libvirt.LINE`.
    Provider,
}

/// What a line sets.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSetting {
    SyncedFolder(SyncedFolder),
    Provision(Provisioner),
    /// `vm.hostname = "..."`: a platform `hostname`.
    Hostname(String),
    /// `vm.boot_timeout = N`.
    BootTimeout(Json),
    /// `vm.network ...`: an entry of the platform's `interfaces`.
    Interface(Json),
    /// A vagrant-libvirt provider option, as under `provider_options`.
    ProviderOption(String, Json),
    /// `storage :file, ...`: an extra disk (read by the disk mapper).
    Storage,
    /// A warning naming the line: what is not applied, or applied otherwise.
    Unmapped(String),
}

/// Provider options a `libvirt.KEY = VALUE` line may set besides the
/// hardware ([`hardware::PROVIDER_OPTIONS`]) and display and naming ones
/// ([`COSMETIC_PROVIDER_OPTIONS`], [`HOST_SIDE_PROVIDER_OPTIONS`]):
/// `provider_options` reads them all.
const PROVIDER_OPTIONS: &[&str] = &[
    "memory",
    "cpus",
    "nic_model_type",
    "cpu_mode",
    "cpu_model",
    "driver",
    "machine_virtual_size",
    "disk_bus",
];

/// The `vm.box*` settings molecule-vagrant has platform keys for.
const BOX_PLATFORM_KEYS: &[&str] = &[
    "box",
    "box_version",
    "box_url",
    "box_architecture",
    "box_download_checksum",
    "box_download_checksum_type",
];

/// Synced folder options only Vagrant's other sync types or its own
/// bookkeeping use: accepted with a warning.
const FOLDER_VAGRANT_ONLY: &[&str] = &[
    "create",
    "mount_options",
    "id",
    "rsync__args",
    "rsync__auto",
    "rsync__chown",
    "rsync__verbose",
    "accessmode",
    "nfs_version",
    "nfs_udp",
];

/// The settings of one parsed line; an error for values kvmdrive refuses.
pub fn classify(call: &Call, scope: Scope) -> Result<Vec<RawSetting>, String> {
    let mut path: Vec<&str> = call.path.iter().map(String::as_str).collect();
    if scope == Scope::Provider && path.first() == Some(&"libvirt") {
        path.remove(0);
    }
    if scope == Scope::Instance && matches!(path.first(), Some(&"config") | Some(&"c")) {
        path.remove(0);
    }
    Ok(match (scope, path.as_slice(), &call.assign) {
        (Scope::Instance, ["vm", "synced_folder"], None) => synced_folder(call)?,
        (Scope::Instance, ["vm", "provision"], None) => provision(call)?,
        (Scope::Instance, ["vm", "hostname"], Some(v)) => match v.as_name() {
            Some(h) => vec![RawSetting::Hostname(h.to_owned())],
            None => return Err("vm.hostname takes a string".into()),
        },
        (Scope::Instance, ["vm", "boot_timeout"], Some(v)) => {
            vec![RawSetting::BootTimeout(v.to_json())]
        }
        (Scope::Instance, ["vm", "network"], None) => network(call)?,
        (Scope::Instance, ["vm", key], Some(_)) if BOX_PLATFORM_KEYS.contains(key) => {
            vec![RawSetting::Unmapped(format!(
                "set `{key}` as a platform key instead: not applied"
            ))]
        }
        // box_check_update (kvmdrive looks for no new box version at `up`),
        // box_download_insecure, box_download_ca_cert, ...
        (Scope::Instance, ["vm", key], Some(_)) if key.starts_with("box") => {
            vec![RawSetting::Unmapped(format!(
                "`vm.{key}` only means something to Vagrant: ignored"
            ))]
        }
        // As under `provider_options` (which warns about the display and
        // naming ones: they change nothing).
        (Scope::Provider, [key], Some(v))
            if PROVIDER_OPTIONS.contains(key)
                || hardware::PROVIDER_OPTIONS.contains(key)
                || COSMETIC_PROVIDER_OPTIONS.contains(key)
                || HOST_SIDE_PROVIDER_OPTIONS.contains(key) =>
        {
            vec![RawSetting::ProviderOption((*key).to_owned(), v.to_json())]
        }
        // Booting from the disk is what every machine does.
        (Scope::Provider, ["boot"], None)
            if call.options.is_empty()
                && matches!(call.args.as_slice(), [d] if d.as_name() == Some("hd")) =>
        {
            Vec::new()
        }
        // vagrant-libvirt's README way to give a machine the guest agent.
        (Scope::Provider, ["channel"], None)
            if call.options.iter().any(|(k, v)| {
                k == "target_name" && v.as_name() == Some("org.qemu.guest_agent.0")
            }) =>
        {
            vec![RawSetting::ProviderOption(
                "qemu_use_agent".into(),
                Json::Bool(true),
            )]
        }
        // vagrant-libvirt's virtio RNG: every kvmdrive machine has one
        // (fed from the host's /dev/urandom), so there is nothing to add.
        (Scope::Provider, ["random"], None)
            if call.args.is_empty()
                && call
                    .options
                    .iter()
                    .all(|(k, v)| k == "model" && v.as_name() == Some("random")) =>
        {
            Vec::new()
        }
        (Scope::Provider, ["storage"], None)
            if call.args.first().and_then(Value::as_name) == Some("file") =>
        {
            vec![RawSetting::Storage]
        }
        _ => vec![RawSetting::Unmapped(format!(
            "`{}` has no kvmdrive equivalent: not applied",
            call.method()
        ))],
    })
}

fn two_strings(call: &Call, what: &str) -> Result<(String, String), String> {
    match call.args.as_slice() {
        [a, b] => match (a.as_name(), b.as_name()) {
            (Some(a), Some(b)) => Ok((a.to_owned(), b.to_owned())),
            _ => Err(format!("{what} takes two strings")),
        },
        _ => Err(format!(
            "{what} takes two arguments (host path, guest path)"
        )),
    }
}

fn synced_folder(call: &Call) -> Result<Vec<RawSetting>, String> {
    let (src, dest) = two_strings(call, "vm.synced_folder")?;
    let mut f = Map::new();
    f.insert("src".into(), json!(src));
    f.insert("dest".into(), json!(dest));
    let mut out = Vec::new();
    let disabled = call.option("disabled") == Some(&Value::Bool(true));
    for (k, v) in &call.options {
        match k.as_str() {
            "type" => {
                let t = v.as_name().ok_or("type takes a string")?;
                match t {
                    "rsync" | "9p" | "virtiofs" => {
                        f.insert("type".into(), json!(t));
                    }
                    // The type of a folder that is not made does not matter.
                    _ if disabled => {}
                    // vagrant-libvirt's default is NFS, so scenarios name it.
                    "nfs" | "smb" | "virtualbox" => {
                        out.push(RawSetting::Unmapped(format!(
                            "synced folder type `{t}`: kvmdrive shares no folder over the \
                             network; it copies this one by rsync (at `up` and on `kvmdrive \
                             rsync`: a copy, not a live share; `type: '9p'` or `'virtiofs'` \
                             share it live)"
                        )));
                        f.insert("type".into(), json!("rsync"));
                    }
                    other => {
                        return Err(format!(
                            "synced folder type `{other}`: kvmdrive syncs by rsync, 9p or virtiofs"
                        ))
                    }
                }
            }
            "disabled" | "owner" | "group" => {
                f.insert(k.clone(), v.to_json());
            }
            "rsync__exclude" => {
                let list = match v {
                    Value::Array(_) => v.to_json(),
                    other => json!([other.to_json()]),
                };
                f.insert("exclude".into(), list);
            }
            k if FOLDER_VAGRANT_ONLY.contains(&k) => out.push(RawSetting::Unmapped(format!(
                "synced folder option `{k}` only means something to Vagrant: ignored"
            ))),
            k => return Err(format!("unknown synced folder option `{k}`")),
        }
    }
    let folder: SyncedFolder =
        serde_json::from_value(Json::Object(f)).map_err(|e| e.to_string())?;
    out.insert(0, RawSetting::SyncedFolder(folder));
    Ok(out)
}

/// Keys each provisioner kind takes, and those only Vagrant uses.
fn provisioner_keys(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "shell" => (
            &["inline", "path", "args", "env", "privileged", "name"],
            &[
                "run",
                "upload_path",
                "keep_color",
                "binary",
                "sensitive",
                "reboot",
                "reset",
                "powershell_args",
            ],
        ),
        "file" => (&["source", "destination", "name"], &["run"]),
        "ansible" => (
            &["playbook", "extra_vars", "limit", "name"],
            &[
                "run",
                "verbose",
                "compatibility_mode",
                "become",
                "raw_arguments",
                "galaxy_role_file",
            ],
        ),
        _ => (&[], &[]),
    }
}

fn provision(call: &Call) -> Result<Vec<RawSetting>, String> {
    // `vm.provision :shell, ...` or `vm.provision "name", type: "shell", ...`
    let first = call.args.first().and_then(Value::as_name);
    let (kind, name) = match call.option("type").and_then(Value::as_name) {
        Some(t) => (t, first),
        None => (
            first.ok_or("vm.provision takes the provisioner type first")?,
            None,
        ),
    };
    let (keys, vagrant_only) = provisioner_keys(kind);
    if keys.is_empty() {
        return Ok(vec![RawSetting::Unmapped(format!(
            "`{kind}` provisioner: kvmdrive runs shell, file and ansible provisioners: not applied"
        ))]);
    }
    let mut p = Map::new();
    p.insert("type".into(), json!(kind));
    if let Some(n) = name {
        p.insert("name".into(), json!(n));
    }
    let mut out = Vec::new();
    for (k, v) in &call.options {
        match k.as_str() {
            "type" => {}
            "run" if v.as_name() == Some("once") => {}
            "args" => {
                // Ruby lists of numbers are still words for the script.
                let words = match v {
                    Value::Array(items) => Json::Array(
                        items
                            .iter()
                            .map(|i| match i.to_json() {
                                Json::String(s) => Json::String(s),
                                other => Json::String(other.to_string()),
                            })
                            .collect(),
                    ),
                    other => other.to_json(),
                };
                p.insert("args".into(), words);
            }
            k if keys.contains(&k) => {
                p.insert(k.to_owned(), v.to_json());
            }
            k if vagrant_only.contains(&k) => out.push(RawSetting::Unmapped(format!(
                "{kind} provisioner option `{k}` is not applied"
            ))),
            k => return Err(format!("unknown {kind} provisioner option `{k}`")),
        }
    }
    let prov: Provisioner = serde_json::from_value(Json::Object(p)).map_err(|e| e.to_string())?;
    out.insert(0, RawSetting::Provision(prov));
    Ok(out)
}

fn network(call: &Call) -> Result<Vec<RawSetting>, String> {
    let kind = call
        .args
        .first()
        .and_then(Value::as_name)
        .ok_or("vm.network takes the network type first")?;
    let mut iface = Map::new();
    iface.insert("network_name".into(), json!(kind));
    for (k, v) in &call.options {
        iface.insert(k.clone(), v.to_json());
    }
    Ok(vec![RawSetting::Interface(Json::Object(iface))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::molecule::vagrant_ruby::{parse_line, ProcessEnv};
    use crate::project::provisioner::Script;
    use crate::project::synced_folder::SyncType;

    fn one(line: &str, scope: Scope) -> Vec<RawSetting> {
        classify(&parse_line(line, &ProcessEnv).unwrap(), scope).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(line: &str, scope: Scope) -> String {
        classify(&parse_line(line, &ProcessEnv).unwrap(), scope).unwrap_err()
    }

    #[test]
    fn synced_folders_map_with_their_options() {
        let s = one(
            r#"vm.synced_folder ".", "/vagrant", type: "rsync", rsync__exclude: ".git/", owner: "www-data", create: true"#,
            Scope::Instance,
        );
        let RawSetting::SyncedFolder(f) = &s[0] else {
            panic!("{s:?}")
        };
        assert_eq!((f.src.to_str(), f.dest.0.as_str()), (Some("."), "/vagrant"));
        assert_eq!(f.kind, SyncType::Rsync);
        assert_eq!(f.exclude, vec![".git/"]);
        assert_eq!(f.owner.as_deref(), Some("www-data"));
        assert!(matches!(&s[1], RawSetting::Unmapped(w) if w.contains("create")));
        let s = one(
            r#"vm.synced_folder '.', '/vagrant', disabled: true"#,
            Scope::Instance,
        );
        assert!(matches!(&s[0], RawSetting::SyncedFolder(f) if f.disabled));
        let s = one(
            r#"vm.synced_folder "data", "/srv/data", :type => :virtiofs"#,
            Scope::Instance,
        );
        assert!(matches!(&s[0], RawSetting::SyncedFolder(f) if f.kind == SyncType::Virtiofs));
        // NFS (vagrant-libvirt's default) and the like become rsync, saying so;
        // a disabled folder's type does not matter; an unknown type is refused.
        let s = one(
            r#"vm.synced_folder ".", "/vagrant", type: "nfs", nfs_version: 4"#,
            Scope::Instance,
        );
        assert!(
            matches!(&s[0], RawSetting::SyncedFolder(f) if f.kind == SyncType::Rsync && !f.disabled)
        );
        assert!(
            matches!(&s[1], RawSetting::Unmapped(w) if w.contains("type `nfs`") && w.contains("rsync")),
            "{s:?}"
        );
        let s = one(
            r#"vm.synced_folder './', '/vagrant', disabled: true, type: 'nfs'"#,
            Scope::Instance,
        );
        assert!(
            matches!(&s[..], [RawSetting::SyncedFolder(f)] if f.disabled),
            "{s:?}"
        );
        assert!(err(
            r#"vm.synced_folder ".", "/vagrant", type: "lustre""#,
            Scope::Instance
        )
        .contains("rsync, 9p or virtiofs"));
        assert!(err(r#"vm.synced_folder ".", "vagrant""#, Scope::Instance).contains("absolute"));
        assert!(err(r#"vm.synced_folder ".""#, Scope::Instance).contains("two arguments"));
    }

    #[test]
    fn provisioners_map_in_every_spelling() {
        let s = one(
            r#"vm.provision :shell, inline: "echo hi", privileged: false, args: ["a", 2]"#,
            Scope::Instance,
        );
        let RawSetting::Provision(Provisioner::Shell(sh)) = &s[0] else {
            panic!("{s:?}")
        };
        assert_eq!(sh.script, Script::Inline("echo hi".into()));
        assert!(!sh.privileged);
        assert_eq!(sh.args, vec!["a", "2"]);
        let s = one(
            r#"vm.provision "shell", path: "scripts/setup.sh", args: "--fast""#,
            Scope::Instance,
        );
        assert!(
            matches!(&s[0], RawSetting::Provision(Provisioner::Shell(sh)) if sh.args_line.as_deref() == Some("--fast"))
        );
        let s = one(
            r#"vm.provision "bootstrap", type: "shell", inline: "true", run: "always""#,
            Scope::Instance,
        );
        assert!(matches!(&s[0], RawSetting::Provision(p) if p.label() == "shell (bootstrap)"));
        assert!(matches!(&s[1], RawSetting::Unmapped(w) if w.contains("`run`")));
        let s = one(
            r#"vm.provision :file, source: "files/motd", destination: "/tmp/motd""#,
            Scope::Instance,
        );
        assert!(
            matches!(&s[0], RawSetting::Provision(Provisioner::File(f)) if f.destination == "/tmp/motd")
        );
        let s = one(r#"vm.provision :puppet"#, Scope::Instance);
        assert!(matches!(&s[0], RawSetting::Unmapped(w) if w.contains("puppet")));
        assert!(err(r#"vm.provision :shell"#, Scope::Instance).contains("exactly one"));
        assert!(err(
            r#"vm.provision :shell, inline: "x", sudo: true"#,
            Scope::Instance
        )
        .contains("sudo"));
    }

    #[test]
    fn host_names_networks_and_provider_settings() {
        assert_eq!(
            one(r#"vm.hostname = "web.example.com""#, Scope::Instance),
            vec![RawSetting::Hostname("web.example.com".into())]
        );
        assert_eq!(
            one(
                r#"vm.network :private_network, ip: "192.168.56.10""#,
                Scope::Instance
            ),
            vec![RawSetting::Interface(
                json!({"network_name": "private_network", "ip": "192.168.56.10"})
            )]
        );
        assert_eq!(
            one(
                r#"vm.network "forwarded_port", guest: 80, host: 8080"#,
                Scope::Instance
            ),
            vec![RawSetting::Interface(
                json!({"network_name": "forwarded_port", "guest": 80, "host": 8080})
            )]
        );
        assert_eq!(
            one("memory = 2048", Scope::Provider),
            vec![RawSetting::ProviderOption("memory".into(), json!(2048))]
        );
        assert_eq!(
            one("libvirt.nic_model_type = 'e1000'", Scope::Provider),
            vec![RawSetting::ProviderOption(
                "nic_model_type".into(),
                json!("e1000")
            )]
        );
        assert_eq!(
            one("storage :file, size: '10G', bus: 'scsi'", Scope::Provider),
            vec![RawSetting::Storage]
        );
        // Hardware options and the guest agent's channel.
        for (line, key, value) in [
            ("nested = true", "nested", json!(true)),
            ("libvirt.machine_type = 'q35'", "machine_type", json!("q35")),
        ] {
            assert_eq!(
                one(line, Scope::Provider),
                vec![RawSetting::ProviderOption(key.into(), value)]
            );
        }
        assert_eq!(
            one("libvirt.qemu_use_agent = true", Scope::Provider),
            vec![RawSetting::ProviderOption(
                "qemu_use_agent".into(),
                json!(true)
            )]
        );
        assert_eq!(
            one(
                "channel :type => 'unix', :target_name => 'org.qemu.guest_agent.0', :target_type => 'virtio'",
                Scope::Provider
            ),
            vec![RawSetting::ProviderOption("qemu_use_agent".into(), json!(true))]
        );
        assert!(matches!(
            &one("channel :type => 'spicevmc', :target_name => 'com.redhat.spice.0', :target_type => 'virtio'", Scope::Provider)[0],
            RawSetting::Unmapped(w) if w.contains("channel")
        ));
        // Display and naming options: to `provider_options`, which warns.
        assert_eq!(
            one("libvirt.management_network_name = 'mgmt'", Scope::Provider),
            vec![RawSetting::ProviderOption(
                "management_network_name".into(),
                json!("mgmt")
            )]
        );
        // The virtio RNG every machine has: nothing to add, nothing to warn.
        for line in [
            "random :model => 'random'",
            "libvirt.random model: 'random'",
            "random",
        ] {
            assert_eq!(one(line, Scope::Provider), vec![], "{line}");
        }
        // Another model (an RNG QEMU would take from elsewhere) is not it.
        assert!(
            matches!(&one("random :model => 'egd'", Scope::Provider)[0], RawSetting::Unmapped(w) if w.contains("random"))
        );
        assert!(
            matches!(&one("cpuset = '1-4,^3,6'", Scope::Provider)[0], RawSetting::ProviderOption(k, _) if k == "cpuset")
        );
        assert!(one("boot 'hd'", Scope::Provider).is_empty());
        assert!(matches!(
            &one("boot 'network'", Scope::Provider)[0],
            RawSetting::Unmapped(w) if w.contains("`boot`")
        ));
        assert!(matches!(
            &one("autostart = true", Scope::Provider)[0],
            RawSetting::ProviderOption(k, _) if k == "autostart"
        ));
        assert!(matches!(
            &one("vm.box_check_update = false", Scope::Instance)[0],
            RawSetting::Unmapped(w) if w.contains("only means something to Vagrant")
        ));
        assert!(matches!(
            &one("vm.box_version = '1.2'", Scope::Instance)[0],
            RawSetting::Unmapped(w) if w.contains("as a platform key")
        ));
        assert!(matches!(
            &one("memory = 1024", Scope::Instance)[0],
            RawSetting::Unmapped(_)
        ));
    }
}
