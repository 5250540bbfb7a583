//! Molecule platforms -> machine hardware: the vagrant-libvirt
//! `provider_options` that mean what kvmdrive's hardware keys (`disks`,
//! `firmware`, `tpm`, ..., typed by serde as in kvmdrive.yml) mean (`machine_type`, `loader`, `tpm_model`, `nested`,
//! `cpu_feature`, `qemu_use_agent`, `graphics_type`, ...), and the
//! `storage :file, size: '10G'` lines people put in `provider_raw_config_args`.
//! Used by [`crate::project::molecule::platforms`]; the values land in the same typed settings
//! `kvmdrive.yml` gives.

use serde_json::Value;

use crate::project::config::{MachineSettings, Size};
use crate::project::hardware::{
    CpuFeature, DiskBus, DiskFormat, DiskSettings, Disks, Firmware, Graphics, MachineType,
};

/// vagrant-libvirt provider options this module maps onto hardware settings.
pub const PROVIDER_OPTIONS: &[&str] = &[
    "machine_type",
    "loader",
    "nvram",
    "firmware",
    "tpm_model",
    "tpm_type",
    "tpm_version",
    "nested",
    "cpu_feature",
    "cpu_features",
    "qemu_use_agent",
    "graphics_type",
];

fn machine_type(v: &Value) -> Result<MachineType, String> {
    let t = v.as_str().ok_or("expected pc or q35")?;
    MachineType::parse(t)
        .ok_or_else(|| format!("kvmdrive emulates the `pc` (i440FX) or `q35` chipset, not `{t}`"))
}

fn flag(v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| "expected true or false".into())
}

/// One vagrant-libvirt provider option from [`PROVIDER_OPTIONS`]; `Ok(Some)`
/// is a warning for the user.
pub fn provider_option(
    s: &mut MachineSettings,
    key: &str,
    v: &Value,
) -> Result<Option<String>, String> {
    match key {
        "machine_type" => s.machine_type = Some(machine_type(v)?),
        "firmware" => {
            s.firmware = Some(
                serde_json::from_value(v.clone()).map_err(|_| "expected bios or efi".to_owned())?,
            )
        }
        "loader" => {
            let path = v.as_str().ok_or("expected the path of an OVMF image")?;
            s.firmware = Some(Firmware::Efi);
            if path.contains(".ms.") || path.contains("secboot") {
                s.secure_boot = Some(true);
            }
            return Ok(Some(format!(
                "UEFI: kvmdrive uses Debian's OVMF ({}) instead of `{path}`",
                if s.secure_boot == Some(true) {
                    "OVMF_CODE_4M.ms.fd"
                } else {
                    "OVMF_CODE_4M.fd"
                }
            )));
        }
        "nvram" => {
            v.as_str().ok_or("expected a path")?;
            s.firmware = Some(Firmware::Efi);
            return Ok(Some(
                "UEFI: kvmdrive gives each machine its own NVRAM copy; the path is ignored".into(),
            ));
        }
        "tpm_model" => match v.as_str() {
            Some("tpm-crb") => s.tpm = Some(true),
            Some("tpm-tis") => {
                s.tpm = Some(true);
                return Ok(Some("kvmdrive's TPM is tpm-crb (TPM 2.0)".into()));
            }
            _ => return Err("expected tpm-crb or tpm-tis".into()),
        },
        "tpm_type" => match v.as_str() {
            Some("emulator") => s.tpm = Some(true),
            _ => return Err("kvmdrive's TPM is the emulator (swtpm), not a host TPM".into()),
        },
        "tpm_version" => match v
            .as_str()
            .map(str::to_owned)
            .or_else(|| v.as_f64().map(|f| format!("{f:.1}")))
        {
            Some(ver) if ver == "2.0" => s.tpm = Some(true),
            _ => return Err("kvmdrive emulates TPM 2.0 only".into()),
        },
        "nested" => s.nested = Some(flag(v)?),
        "qemu_use_agent" => s.guest_agent = Some(flag(v)?),
        "cpu_feature" | "cpu_features" => {
            let list = match v {
                Value::Array(items) => items.iter().map(cpu_feature).collect(),
                one => cpu_feature(one).map(|f| vec![f]),
            }?;
            s.cpu_features.get_or_insert_with(Vec::new).extend(list);
        }
        "graphics_type" => match v.as_str() {
            Some("vnc") => s.graphics = Some(Graphics::Vnc),
            Some("none") => s.graphics = Some(Graphics::None),
            Some(other) => {
                return Ok(Some(format!(
                    "kvmdrive offers VNC (on 127.0.0.1) or none, not `{other}`: ignored"
                )))
            }
            None => return Err("expected vnc or none".into()),
        },
        other => return Err(format!("not a hardware option: {other}")),
    }
    Ok(None)
}

/// `vmx`, `{name: vmx, policy: require}` (vagrant-libvirt's `cpu_feature`).
fn cpu_feature(v: &Value) -> Result<CpuFeature, String> {
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

/// A `provider_raw_config_args` line: `storage :file, size: '10G', type: 'raw'`
/// (or `:size => '10G'`) is an extra disk; `None` for any other line.
pub fn storage_line(line: &str) -> Option<Result<DiskSettings, String>> {
    let rest = line.trim().strip_prefix("storage")?.trim_start();
    let rest = rest.strip_prefix(":file")?.trim_start();
    let rest = rest.strip_prefix(',').unwrap_or(rest);
    Some(storage_options(rest))
}

fn storage_options(text: &str) -> Result<DiskSettings, String> {
    let mut size = None;
    let mut bus = DiskBus::Virtio;
    let mut format = DiskFormat::Qcow2;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once("=>")
            .map(|(k, v)| (k.trim().trim_start_matches(':'), v))
            .or_else(|| part.split_once(':').map(|(k, v)| (k.trim(), v)))
            .ok_or_else(|| format!("cannot read `{part}` (write key: 'value')"))?;
        let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
        let value = value.strip_prefix(':').unwrap_or(value);
        match key {
            "size" => {
                // vagrant-libvirt reads a bare number as GiB, as Size does.
                size = Some(Size::parse(value)?);
            }
            "type" => {
                format = DiskFormat::parse(value)
                    .ok_or_else(|| format!("disk type `{value}`: kvmdrive makes qcow2 or raw"))?
            }
            "bus" => {
                bus = DiskBus::parse(value)
                    .ok_or_else(|| format!("disk bus `{value}`: use virtio, scsi or sata"))?
            }
            "device" if value == "cdrom" => {
                return Err("kvmdrive attaches no CD-ROMs".into());
            }
            // Target and file names follow kvmdrive's order and naming.
            "device" | "path" | "name" | "pool" | "cache" | "allow_existing" | "discard"
            | "detect_zeroes" | "serial" | "shareable" => {}
            other => return Err(format!("storage option `{other}` is not supported")),
        }
    }
    Ok(DiskSettings {
        size: size.ok_or("a storage line needs `size`")?,
        bus,
        format,
        name: None,
    })
}

/// Appends `extra` disks to a machine's list (default names by position).
pub fn add_disks(s: &mut MachineSettings, extra: Vec<DiskSettings>) -> Result<(), String> {
    let mut list = s.disks.take().map(|d| d.0).unwrap_or_default();
    list.extend(extra);
    s.disks = Some(Disks::new(list)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::hardware::FeaturePolicy;

    #[test]
    fn storage_lines_in_both_ruby_spellings() {
        let d = storage_line("storage :file, :type => 'raw', :device => 'vdb', :size => '1G'")
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.size, d.format, d.bus),
            (Size(1 << 30), DiskFormat::Raw, DiskBus::Virtio)
        );
        let d = storage_line("storage :file, size: '20G', bus: 'scsi'")
            .unwrap()
            .unwrap();
        assert_eq!((d.size, d.bus), (Size(20 << 30), DiskBus::Scsi));
        let d = storage_line("storage :file, size: 64").unwrap().unwrap();
        assert_eq!(d.size, Size(64 << 30));
        assert!(storage_line("cpuset = '1-4'").is_none());
        let e = storage_line("storage :file, device: :cdrom, path: 'x.iso'")
            .unwrap()
            .unwrap_err();
        assert!(e.contains("CD-ROM"), "{e}");
        assert!(storage_line("storage :file, type: 'qcow2'")
            .unwrap()
            .is_err());
    }

    #[test]
    fn provider_options_map_onto_hardware() {
        let mut s = MachineSettings::default();
        let set = |s: &mut MachineSettings, k: &str, v: Value| provider_option(s, k, &v);
        set(&mut s, "machine_type", "pc-q35-7.2".into()).unwrap();
        set(&mut s, "tpm_model", "tpm-crb".into()).unwrap();
        set(&mut s, "tpm_version", "2.0".into()).unwrap();
        set(&mut s, "qemu_use_agent", true.into()).unwrap();
        set(&mut s, "graphics_type", "vnc".into()).unwrap();
        let w = set(&mut s, "loader", "/usr/share/OVMF/OVMF_CODE.ms.fd".into()).unwrap();
        assert!(w.unwrap().contains("OVMF_CODE_4M.ms.fd"));
        set(
            &mut s,
            "cpu_feature",
            serde_json::json!({"name": "vmx", "policy": "optional"}),
        )
        .unwrap();
        assert_eq!(s.machine_type, Some(MachineType::Q35));
        assert_eq!((s.tpm, s.guest_agent), (Some(true), Some(true)));
        assert_eq!(s.graphics, Some(Graphics::Vnc));
        assert_eq!(
            (s.firmware, s.secure_boot),
            (Some(Firmware::Efi), Some(true))
        );
        assert_eq!(
            s.cpu_features.as_ref().unwrap()[0].policy,
            FeaturePolicy::Optional
        );
        assert!(set(&mut s, "tpm_version", "1.2".into()).is_err());
        assert!(set(&mut s, "machine_type", "virt".into()).is_err());
        assert!(set(&mut s, "tpm_type", "passthrough".into()).is_err());
    }
}
