//! Every libvirt document kvmdrive generates, over a matrix of options, is
//! valid against libvirt's own RNG schemas (`virt-xml-validate`).

use std::process::Command;

use kvmdrive::project::config::Subnet;
use kvmdrive::project::net_config::{DirectMode, Forward, NicModel};
use kvmdrive::virt::data_volume::DataVolumeSpec;
use kvmdrive::virt::domain::{Accel, CpuSpec, DomainSpec};
use kvmdrive::virt::filesystem::{FilesystemSpec, FsDriver, VIRTIOFSD};
use kvmdrive::virt::hardware::{self as hw, Bus, DiskSpec, HardwareSpec, UefiSpec};
use kvmdrive::virt::interface::{InterfaceSource, InterfaceSpec};
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

/// A 9p share and a virtiofs share (with characters XML must escape).
fn shared_folders() -> Vec<FilesystemSpec> {
    vec![
        FilesystemSpec {
            driver: FsDriver::NineP,
            source: "/home/me/role & co".into(),
            tag: "kvmdrive-aaaaaa".into(),
        },
        FilesystemSpec {
            driver: FsDriver::Virtiofs {
                binary: VIRTIOFSD.into(),
            },
            source: "/srv/data".into(),
            tag: "kvmdrive-bbbbbb".into(),
        },
    ]
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
            // Shared folders: none, 9p only, 9p and virtiofs (shared memory).
            for (memory_mib, vcpus, shares) in [(256, 1, 0), (1024, 2, 1), (4096, 4, 2)] {
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
                    nic_model: NicModel::Virtio,
                    interfaces: Vec::new(),
                    console_log: "/var/log/libvirt/qemu/p-abc123-web-console.log".into(),
                    filesystems: shared_folders()[..shares].to_vec(),
                    hardware: HardwareSpec::default(),
                    // The host name as an SMBIOS credential (with a `.`, `-`).
                    credentials: (shares > 0)
                        .then(|| ("kvmdrive.hostname".into(), "web-1.example.com".into()))
                        .into_iter()
                        .collect(),
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
            forward: Forward::Nat,
            dhcp_range: true,
        };
        validate(&spec.to_xml(), "network");
    }
}

#[test]
fn private_networks_validate_isolated_or_nat_with_or_without_dhcp() {
    let subnet = Subnet::parse("192.168.56.0/24").unwrap();
    for forward in [Forward::None, Forward::Nat] {
        for (dhcp_range, hosts) in [(false, 0), (true, 0), (true, 2), (false, 1)] {
            let spec = NetworkSpec {
                name: "kvmdrive-abc123-backend".into(),
                bridge: "kvn-0123456789".into(),
                subnet,
                hosts: (0..hosts)
                    .map(|i| DhcpHost {
                        mac: format!("52:54:00:00:01:{i:02x}"),
                        name: format!("m{i}"),
                        ip: subnet.host(10 + i),
                    })
                    .collect(),
                forward,
                dhcp_range,
            };
            validate(&spec.to_xml(), "network");
        }
    }
}

#[test]
fn domains_validate_with_every_interface_kind_and_model() {
    let models = [
        NicModel::Virtio,
        NicModel::E1000,
        NicModel::E1000e,
        NicModel::Rtl8139,
    ];
    let modes = [
        DirectMode::Bridge,
        DirectMode::Vepa,
        DirectMode::Private,
        DirectMode::Passthrough,
    ];
    for (model, mode) in models.into_iter().zip(modes) {
        let nic = |n: u8, source: InterfaceSource| InterfaceSpec {
            mac: format!("52:54:00:ab:cd:{n:02x}"),
            model,
            source,
        };
        let spec = DomainSpec {
            name: "p-abc123-web".into(),
            project: "abc123".into(),
            machine: "web".into(),
            accel: Accel::Tcg,
            cpu: CpuSpec::Model("qemu64".into()),
            memory_mib: 512,
            vcpus: 1,
            disk: "/var/lib/libvirt/images/kvmdrive/p.qcow2".into(),
            mac: "52:54:00:ab:cd:ef".into(),
            network: "kvmdrive-abc123".into(),
            nic_model: model,
            interfaces: vec![
                nic(
                    1,
                    InterfaceSource::Network("kvmdrive-abc123-backend".into()),
                ),
                nic(
                    2,
                    InterfaceSource::Direct {
                        dev: "dummy0".into(),
                        mode,
                    },
                ),
                nic(3, InterfaceSource::Bridge("br0".into())),
            ],
            console_log: "/var/log/libvirt/qemu/p-abc123-web-console.log".into(),
            filesystems: Vec::new(),
            hardware: HardwareSpec::default(),
            credentials: Vec::new(),
        };
        validate(&spec.to_xml(), "domain");
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

/// Machine hardware: each option alone and all at once, on both chipsets.
#[test]
fn hardware_options_validate() {
    let disk = |bus, dev: &str, format| DiskSpec {
        path: format!("/var/lib/libvirt/images/kvmdrive/p-abc123-web.disk-{dev}.{format}").into(),
        format,
        bus,
        dev: dev.into(),
    };
    let uefi = |secure_boot| UefiSpec {
        code: if secure_boot {
            hw::OVMF_CODE_SECURE
        } else {
            hw::OVMF_CODE
        }
        .into(),
        vars_template: if secure_boot {
            hw::OVMF_VARS_SECURE
        } else {
            hw::OVMF_VARS
        }
        .into(),
        nvram: "/var/lib/libvirt/qemu/nvram/p-abc123-web_VARS.fd".into(),
        secure_boot,
    };
    let all = HardwareSpec {
        machine_type: Some("q35"),
        uefi: Some(uefi(true)),
        disks: vec![
            disk(Bus::Virtio, "vdb", "qcow2"),
            disk(Bus::Scsi, "sda", "raw"),
            disk(Bus::Sata, "sdb", "qcow2"),
        ],
        cpu_features: vec![("vmx".into(), "require"), ("avx2".into(), "disable")],
        tpm: true,
        guest_agent: true,
        vnc: true,
    };
    let variants = [
        HardwareSpec {
            machine_type: Some("q35"),
            ..Default::default()
        },
        HardwareSpec {
            uefi: Some(uefi(false)),
            ..Default::default()
        },
        HardwareSpec {
            disks: vec![disk(Bus::Virtio, "vdb", "raw")],
            ..Default::default()
        },
        HardwareSpec {
            disks: vec![disk(Bus::Sata, "sda", "qcow2")],
            ..Default::default()
        },
        HardwareSpec {
            tpm: true,
            ..Default::default()
        },
        HardwareSpec {
            guest_agent: true,
            vnc: true,
            ..Default::default()
        },
        HardwareSpec {
            cpu_features: vec![("svm".into(), "optional")],
            ..Default::default()
        },
        all,
    ];
    for (cpu, hardware) in [CpuSpec::HostPassthrough, CpuSpec::Model("qemu64".into())]
        .iter()
        .flat_map(|c| variants.iter().map(move |h| (c.clone(), h.clone())))
    {
        let spec = DomainSpec {
            name: "p-abc123-web".into(),
            project: "abc123".into(),
            machine: "web".into(),
            accel: Accel::Kvm,
            cpu,
            memory_mib: 512,
            vcpus: 1,
            disk: "/var/lib/libvirt/images/kvmdrive/p-abc123-web.qcow2".into(),
            mac: "52:54:00:ab:cd:ef".into(),
            network: "kvmdrive-abc123".into(),
            nic_model: NicModel::Virtio,
            interfaces: Vec::new(),
            console_log: "/var/log/libvirt/qemu/p-abc123-web-console.log".into(),
            filesystems: Vec::new(),
            hardware,
            // Next to firmware and NVRAM in <os>.
            credentials: vec![("kvmdrive.hostname".into(), "web".into())],
        };
        validate(&spec.to_xml(), "domain");
    }
}

#[test]
fn data_volumes_validate() {
    for format in ["qcow2", "raw"] {
        let vol = DataVolumeSpec {
            name: format!("p-abc123-web.disk-data.{format}"),
            capacity_bytes: 10 << 30,
            format,
        };
        validate(&vol.to_xml(), "storagevol");
    }
}
