//! The machine keys `kvmdrive.yml` and Molecule platforms share, declared
//! once. [`machine_keys_struct!`] puts them, typed and documented, into a
//! struct beside that struct's own keys: [`crate::project::config::MachineSettings`]
//! (kvmdrive.yml, with machine names, networks, folders, provisioners) and
//! [`crate::project::molecule::platform::Platform`] (molecule-vagrant's keys
//! around the same fields). Every value is parsed by its type while the file
//! is read (sizes, version constraints, checksum types, URLs), so a bad
//! value fails at load naming the key, before anything is created; the
//! Molecule plugin's JSON schema is generated from the same fields
//! ([`crate::project::schema`]). [`copy_machine_keys!`] moves the shared
//! fields from a platform into machine settings.

/// Declares a struct holding the shared machine keys followed by `$extra`
/// fields. The shared fields are all `Option`s, so `defaults` and a machine
/// merge field by field.
macro_rules! machine_keys_struct {
    ($(#[$attr:meta])* pub struct $name:ident { $($extra:tt)* }) => {
        $(#[$attr])*
        pub struct $name {
            $($extra)*
            /// A box name in the cache (`owner/name`), a path to a `.box` file, or a URL.
            #[serde(rename = "box")]
            pub box_name: Option<String>,
            /// Version constraint, RubyGems style (`>= 1.0, < 2`; `~> 1.2`; a bare `12.1` pins it).
            pub box_version: Option<crate::boxes::version::Constraint>,
            /// URL of the box or of its catalog (http, https or file), or a path, when `box` is only a name.
            pub box_url: Option<crate::project::config::BoxUrl>,
            /// Guest architecture of the box (default: the host's).
            pub box_architecture: Option<String>,
            /// Expected checksum of the downloaded box (hex; the type follows from the length unless `box_download_checksum_type` says it).
            pub box_download_checksum: Option<String>,
            /// md5, sha1, sha256, sha384 or sha512.
            pub box_download_checksum_type: Option<crate::boxes::checksum::ChecksumTypeSetting>,
            /// Memory in MiB.
            pub memory: Option<crate::project::config::Positive>,
            /// Virtual CPUs.
            pub cpus: Option<crate::project::config::Positive>,
            /// Size of the machine's disk (at least the box's own size): `20G`, `512M` or GiB as a number.
            pub disk_size: Option<crate::project::config::Size>,
            /// Guest host name (a DNS name, may be an FQDN), or `false` to keep the box's.
            pub hostname: Option<crate::project::hardware::HostnameSetting>,
            /// Extra disks, attached after the box's: `[{size: 10G, bus: virtio|scsi|sata, format: qcow2|raw, name: data}]`.
            pub disks: Option<crate::project::hardware::Disks>,
            /// `bios` (default) or `efi` (OVMF with a per-machine NVRAM file).
            pub firmware: Option<crate::project::hardware::Firmware>,
            /// UEFI secure boot (implies `firmware: efi` and `machine_type: q35`).
            pub secure_boot: Option<bool>,
            /// `pc` (default) or `q35` (also `pc-i440fx-*`, `pc-q35-*`).
            pub machine_type: Option<crate::project::hardware::MachineType>,
            /// An emulated TPM 2.0 (swtpm).
            pub tpm: Option<bool>,
            /// The qemu guest agent's virtio channel.
            pub guest_agent: Option<bool>,
            /// Nested virtualisation: the CPU feature vmx (Intel) or svm (AMD) required.
            pub nested: Option<bool>,
            /// CPU features: names (required) or `{name, policy}`.
            pub cpu_features: Option<Vec<crate::project::hardware::CpuFeature>>,
            /// `vnc` (on 127.0.0.1) or `none` (default).
            pub graphics: Option<crate::project::hardware::Graphics>,
            /// `auto`, `host-passthrough`, `host-model` or `custom`.
            pub cpu_mode: Option<crate::project::config::CpuMode>,
            /// CPU model for `cpu_mode: custom` (default `qemu64`).
            pub cpu_model: Option<String>,
            /// `auto` (KVM when it can run guests, else TCG), `kvm` or `tcg`.
            pub accel: Option<crate::project::config::Accel>,
            /// Seconds to wait for SSH after starting the machine (default 300).
            pub boot_timeout: Option<crate::project::config::Positive>,
            /// Pins the machine to one of the project's `hosts:` (a libvirt URI); without it kvmdrive places the machine by free memory.
            pub host: Option<crate::project::hosts::HostUri>,
        }
    };
}

/// Copies every shared machine key that `$from` sets into `$to`.
macro_rules! copy_machine_keys {
    ($from:expr, $to:expr) => {{
        let (from, to) = ($from, $to);
        copy_machine_keys!(@ from, to; box_name box_version box_url box_architecture
            box_download_checksum box_download_checksum_type memory cpus disk_size hostname
            disks firmware secure_boot machine_type tpm guest_agent nested cpu_features
            graphics cpu_mode cpu_model accel boot_timeout host);
    }};
    (@ $from:ident, $to:ident; $($field:ident)*) => {
        $(if $from.$field.is_some() { $to.$field = $from.$field.clone(); })*
    };
}

pub(crate) use copy_machine_keys;
pub(crate) use machine_keys_struct;
