//! Checks a box's disk image with `qemu-img info --output=json` before the
//! box is accepted or used: it must be qcow2, have a virtual size, and be
//! self-contained: no backing file and no external data file, since either
//! would let a box make a machine read files of the host.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

/// What kvmdrive needs to know about a box image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub virtual_size: u64,
}

#[derive(Deserialize)]
struct QemuImgInfo {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "backing-filename")]
    backing_filename: Option<String>,
    #[serde(rename = "full-backing-filename")]
    full_backing_filename: Option<String>,
    #[serde(rename = "format-specific")]
    format_specific: Option<FormatSpecific>,
}

#[derive(Deserialize)]
struct FormatSpecific {
    data: Option<FormatData>,
}

#[derive(Deserialize)]
struct FormatData {
    #[serde(rename = "data-file")]
    data_file: Option<String>,
}

/// Why an image is refused, or why it could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// qemu-img could not be run.
    Tool(String),
    Refused(String),
}

/// Runs `qemu-img info` on `path` (which must be a regular file) and checks it.
pub fn check(path: &Path) -> Result<ImageInfo, ImageError> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| ImageError::Refused(format!("{}: {e}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(ImageError::Refused(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let out = Command::new("qemu-img")
        .args([
            "info",
            "--force-share",
            "--output=json",
            "-f",
            "qcow2",
            "--",
        ])
        .arg(path)
        .output()
        .map_err(|e| ImageError::Tool(format!("cannot run qemu-img: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(ImageError::Refused(format!(
            "{} is not a usable qcow2 image: {}",
            path.display(),
            stderr.trim().trim_start_matches("qemu-img: ")
        )));
    }
    parse(&out.stdout).map_err(|m| ImageError::Refused(format!("{}: {m}", path.display())))
}

fn parse(json: &[u8]) -> Result<ImageInfo, String> {
    let info: QemuImgInfo =
        serde_json::from_slice(json).map_err(|e| format!("unexpected qemu-img output: {e}"))?;
    if info.format != "qcow2" {
        return Err(format!("image format is {}, not qcow2", info.format));
    }
    if let Some(b) = info.backing_filename.or(info.full_backing_filename) {
        return Err(format!(
            "the image has a backing file of its own (`{b}`); a box image must be self-contained"
        ));
    }
    if let Some(d) = info
        .format_specific
        .and_then(|f| f.data)
        .and_then(|d| d.data_file)
    {
        return Err(format!(
            "the image keeps its data in an external file (`{d}`); a box image must be self-contained"
        ));
    }
    if info.virtual_size == 0 {
        return Err("the image has a virtual size of 0".into());
    }
    Ok(ImageInfo {
        virtual_size: info.virtual_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_qcow2_passes() {
        let json = br#"{"virtual-size": 10737418240, "filename": "box.img", "cluster-size": 65536,
            "format": "qcow2", "actual-size": 366743552, "format-specific": {"type": "qcow2",
            "data": {"compat": "1.1", "compression-type": "zlib", "lazy-refcounts": false,
            "refcount-bits": 16, "corrupt": false, "extended-l2": false}}, "dirty-flag": false}"#;
        assert_eq!(
            parse(json),
            Ok(ImageInfo {
                virtual_size: 10 << 30
            })
        );
    }

    #[test]
    fn backing_files_and_data_files_are_refused() {
        let backing =
            br#"{"virtual-size": 1048576, "format": "qcow2", "backing-filename": "/etc/shadow",
            "backing-filename-format": "raw"}"#;
        assert!(parse(backing).unwrap_err().contains("backing file"));
        let data =
            br#"{"virtual-size": 1048576, "format": "qcow2", "format-specific": {"type": "qcow2",
            "data": {"compat": "1.1", "data-file": "/dev/sda", "data-file-raw": true}}}"#;
        assert!(parse(data).unwrap_err().contains("external file"));
        let raw = br#"{"virtual-size": 1048576, "format": "raw"}"#;
        assert!(parse(raw).unwrap_err().contains("not qcow2"));
    }

    fn qemu_img_available() -> bool {
        Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn real_images() {
        if !qemu_img_available() {
            eprintln!("qemu-img not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.img");
        let run = |args: &[&str]| {
            let st = Command::new("qemu-img").args(args).output().unwrap();
            assert!(
                st.status.success(),
                "{}",
                String::from_utf8_lossy(&st.stderr)
            );
        };
        run(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
        assert_eq!(
            check(&base),
            Ok(ImageInfo {
                virtual_size: 64 << 20
            })
        );

        let overlay = dir.path().join("overlay.img");
        run(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            overlay.to_str().unwrap(),
        ]);
        assert!(
            matches!(check(&overlay), Err(ImageError::Refused(m)) if m.contains("backing file"))
        );

        let raw = dir.path().join("raw.img");
        run(&["create", "-q", "-f", "raw", raw.to_str().unwrap(), "1M"]);
        assert!(matches!(check(&raw), Err(ImageError::Refused(_))));

        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&base, &link).unwrap();
        assert!(matches!(check(&link), Err(ImageError::Refused(m)) if m.contains("regular file")));
    }
}
