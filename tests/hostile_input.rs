//! Hostile input: property tests for every parser that reads what a user or
//! a server hands kvmdrive — kvmdrive.yml, Molecule platforms, version
//! constraints, catalog JSON and box metadata. None may panic, and every
//! error of the two project parsers names the file it came from.
//!
//! Inputs are random text, and random documents built from the real key
//! names with values of every YAML type, so the generators reach the
//! checks behind the syntax.

use std::path::Path;

use proptest::prelude::*;

use kvmdrive::boxes::archive::BoxMetadata;
use kvmdrive::boxes::catalog::Catalog;
use kvmdrive::boxes::version::{Constraint, Version};
use kvmdrive::project::config::Config;
use kvmdrive::project::molecule::platforms;

/// Keys of a machine in kvmdrive.yml and of a Molecule platform (both
/// spellings), so that random documents get past "unknown key".
const KEYS: &[&str] = &[
    "name",
    "box",
    "box_url",
    "box_version",
    "box_checksum",
    "box_checksum_type",
    "box_download_checksum",
    "box_download_checksum_type",
    "memory",
    "cpus",
    "accel",
    "cpu_mode",
    "hostname",
    "interfaces",
    "networks",
    "forwarded_ports",
    "disks",
    "firmware",
    "machine_type",
    "nic_model_type",
    "tpm",
    "guest_agent",
    "synced_folders",
    "provision",
    "provisioners",
    "groups",
    "children",
    "config_options",
    "provider_options",
    "provider_raw_config_args",
    "instance_raw_config_args",
    "boot_timeout",
];

/// A YAML scalar or small collection, in flow style.
fn yaml_value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        Just("~".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| format!("{n}G")),
        "[a-z0-9 ._:/=<>~^!*-]{0,24}".prop_map(|s| format!("'{s}'")),
        Just("'>= 1.0, < 2'".to_string()),
        Just("'10.0.0.300'".to_string()),
        Just("'192.168.50.10/24'".to_string()),
        Just("'node1.example.com'".to_string()),
    ];
    scalar.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..4).prop_map(|kv| {
                let items: Vec<String> = kv.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", items.join(", "))
            }),
        ]
    })
}

/// One machine / platform mapping in flow style.
fn machine() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(KEYS), yaml_value()), 0..6).prop_map(|kv| {
        let items: Vec<String> = kv.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{{{}}}", items.join(", "))
    })
}

fn kvmdrive_yml() -> impl Strategy<Value = String> {
    (machine(), prop::collection::vec(machine(), 0..3)).prop_map(|(defaults, machines)| {
        let mut s = format!("defaults: {defaults}\nmachines:\n");
        for m in machines {
            s.push_str(&format!("  - {m}\n"));
        }
        s
    })
}

fn molecule_yml() -> impl Strategy<Value = String> {
    prop::collection::vec(machine(), 0..3).prop_map(|platforms| {
        let mut s = String::from("driver:\n  name: kvmdrive\nplatforms:\n");
        for p in platforms {
            s.push_str(&format!("  - {p}\n"));
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn kvmdrive_yml_errors_name_the_file(text in kvmdrive_yml()) {
        let path = Path::new("/projects/kvmdrive.yml");
        match Config::parse(&text, path) {
            Ok(config) => drop(config.machines()),
            Err(e) => prop_assert!(e.to_string().contains("kvmdrive.yml"), "{e}\n---\n{text}"),
        }
    }

    #[test]
    fn kvmdrive_yml_random_text_never_panics(text in "\\PC{0,200}") {
        let _ = Config::parse(&text, Path::new("kvmdrive.yml"));
    }

    #[test]
    fn molecule_platform_errors_name_the_file(text in molecule_yml()) {
        match platforms::parse(&text, "molecule/default/molecule.yml") {
            Ok(p) => drop(p.config.machines()),
            Err(e) => prop_assert!(e.to_string().contains("molecule.yml"), "{e}\n---\n{text}"),
        }
    }

    #[test]
    fn molecule_random_text_never_panics(text in "\\PC{0,200}") {
        let _ = platforms::parse(&text, "molecule.yml");
    }

    #[test]
    fn versions_and_constraints_never_panic(text in "[0-9a-z .,<>=~!^*+-]{0,30}") {
        if let Ok(v) = Version::parse(&text) {
            // A parsed version satisfies the constraint naming it exactly.
            let c = Constraint::parse(&format!("= {}", v.as_str())).unwrap();
            prop_assert!(c.is_satisfied_by(&v));
        }
        if let Ok(c) = Constraint::parse(&text) {
            let _ = c.is_satisfied_by(&Version::parse("1.2.3").unwrap());
        }
    }

    #[test]
    fn catalog_json_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Catalog::parse(&bytes);
    }

    #[test]
    fn catalog_shaped_json_never_panics(
        versions in prop::collection::vec(("[0-9a-z.]{0,8}", "[a-z_]{0,10}", "[a-z0-9/:.]{0,20}"), 0..4)
    ) {
        let list: Vec<serde_json::Value> = versions
            .iter()
            .map(|(v, p, u)| serde_json::json!({"version": v, "providers": [{"name": p, "url": u}]}))
            .collect();
        let doc = serde_json::json!({"name": "acme/box", "versions": list});
        if let Ok(c) = Catalog::parse(doc.to_string().as_bytes()) {
            let _ = c.resolve(&Constraint::any(), &kvmdrive::boxes::catalog::ArchRequest::from_option(None));
        }
    }

    #[test]
    fn box_metadata_never_panics(text in "\\PC{0,120}", provider in "[a-z]{0,8}", size in any::<i64>()) {
        let _ = BoxMetadata::parse(&text);
        let doc = serde_json::json!({"provider": provider, "format": "qcow2", "virtual_size": size});
        let _ = BoxMetadata::parse(&doc.to_string());
    }
}
