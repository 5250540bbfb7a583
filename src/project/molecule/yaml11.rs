//! YAML 1.1 booleans where molecule-vagrant users write them. Molecule reads
//! molecule.yml with PyYAML (YAML 1.1: `yes`, `no`, `on`, `off` are
//! booleans); kvmdrive's YAML parser follows YAML 1.2, where they are
//! strings. When kvmdrive reads a scenario itself (`kvmdrive test`,
//! `--platforms molecule.yml`), the keys that take a boolean get one back,
//! so `provision: no` means what it meant to Molecule. Only these keys: a
//! `name: "on"` elsewhere stays a string.

use serde_json::Value;

/// Keys of the driver section, platforms, `config_options`, `interfaces`
/// and `provider_options` whose values are booleans.
const BOOLEAN_KEYS: &[&str] = &[
    // driver
    "provision",
    "parallel",
    "reuse",
    "mitogen",
    // platforms and config_options
    "hostname",
    "synced_folder",
    "insert_key",
    "ssh_insert_key",
    "guest_agent",
    "tpm",
    "secure_boot",
    "nested",
    // interfaces
    "auto_config",
    "libvirt__dhcp_enabled",
    // provider_options
    "mgmt_attach",
    "qemu_use_session",
    "qemu_use_agent",
    "kvm_hidden",
    "graphics_autoport",
];

/// PyYAML's spelling of a boolean, if `text` is one that YAML 1.2 reads as a string.
fn yaml11_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// Turns the YAML 1.1 boolean words at [`BOOLEAN_KEYS`] into booleans, anywhere in `doc`.
pub fn booleans_as_molecule_reads_them(doc: &mut Value) {
    match doc {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if let Value::String(s) = v {
                    if let Some(b) = yaml11_bool(s).filter(|_| BOOLEAN_KEYS.contains(&k.as_str())) {
                        *v = Value::Bool(b);
                    }
                } else {
                    booleans_as_molecule_reads_them(v);
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(booleans_as_molecule_reads_them),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn boolean_keys_get_booleans_and_other_strings_stay() {
        let mut doc = json!({
            "driver": {"name": "vagrant", "provision": "no", "parallel": "Yes"},
            "platforms": [{
                "name": "on",
                "groups": ["yes"],
                "config_options": {"synced_folder": "ON"},
                "interfaces": [{"network_name": "private_network", "auto_config": "off", "ip": "no"}],
                "hostname": "no",
                "provision": "no",
                "provider_options": {"mgmt_attach": "yes"},
            }],
        });
        booleans_as_molecule_reads_them(&mut doc);
        assert_eq!(
            doc,
            json!({
                "driver": {"name": "vagrant", "provision": false, "parallel": true},
                "platforms": [{
                    "name": "on",
                    "groups": ["yes"],
                    "config_options": {"synced_folder": true},
                    "interfaces": [{"network_name": "private_network", "auto_config": false, "ip": "no"}],
                    "hostname": false,
                    "provision": false,
                    "provider_options": {"mgmt_attach": true},
                }],
            })
        );
    }
}
