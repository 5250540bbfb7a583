//! Every libvirt document kvmdrive generates, over a matrix of options, is
//! valid against libvirt's own RNG schemas (`virt-xml-validate`).

use std::process::Command;

use kvmdrive::config::Subnet;
use kvmdrive::virt::domain::{Accel, CpuSpec, DomainSpec};
use kvmdrive::virt::network::{DhcpHost, NetworkSpec};
use kvmdrive::virt::storage::{PoolSpec, VolumeSpec};

fn validate(xml: &str, schema: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{schema}.xml"));
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&file)
        .arg(schema)
        .output()
        .expect("virt-xml-validate (libvirt-clients) is installed");
    assert!(
        out.status.success(),
        "{schema} document is invalid:\n{}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn domains_validate_across_accelerators_cpus_and_sizes() {
    let cpus = [
        CpuSpec::HostPassthrough,
        CpuSpec::HostModel,
        CpuSpec::Model("qemu64".into()),
        CpuSpec::Model("Haswell-noTSX".into()),
    ];
    for accel in [Accel::Kvm, Accel::Tcg] {
        for cpu in &cpus {
            for (memory_mib, vcpus) in [(256, 1), (4096, 4)] {
                let spec = DomainSpec {
                    name: "p-abc123-web".into(),
                    project: "abc123".into(),
                    machine: "web".into(),
                    accel,
                    cpu: cpu.clone(),
                    memory_mib,
                    vcpus,
                    disk: "/var/lib/libvirt/images/kvmdrive/p web & co.qcow2".into(),
                    mac: "52:54:00:ab:cd:ef".into(),
                    network: "kvmdrive-abc123".into(),
                    console_log: "/var/log/libvirt/qemu/p-abc123-web-console.log".into(),
                };
                validate(&spec.to_xml(), "domain");
            }
        }
    }
}

#[test]
fn networks_validate_with_any_number_of_reservations() {
    for (subnet, n) in [
        ("192.168.121.0/24", 0),
        ("172.16.5.0/24", 1),
        ("10.20.0.0/16", 5),
    ] {
        let subnet = Subnet::parse(subnet).unwrap();
        let spec = NetworkSpec {
            name: "kvmdrive-abc123".into(),
            bridge: "kvd-abc123".into(),
            subnet,
            hosts: (0..n)
                .map(|i| DhcpHost {
                    mac: format!("52:54:00:00:00:{i:02x}"),
                    name: format!("m{i}"),
                    ip: subnet.host(10 + i),
                })
                .collect(),
        };
        validate(&spec.to_xml(), "network");
    }
}

#[test]
fn pools_and_volumes_validate() {
    let pool = PoolSpec {
        name: "kvmdrive".into(),
        path: "/var/lib/libvirt/images/kvmdrive".into(),
    };
    validate(&pool.to_xml(), "storagepool");
    for backing in [
        None,
        Some("/var/lib/libvirt/images/kvmdrive/box-x-0-abc.qcow2".into()),
    ] {
        let vol = VolumeSpec {
            name: "p-abc123-web.qcow2".into(),
            capacity_bytes: 20 << 30,
            backing,
        };
        validate(&vol.to_xml(), "storagevol");
    }
}
