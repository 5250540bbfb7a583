//! `.box` files: a tar archive, plain or compressed with gzip or zstd (told
//! apart by their magic bytes, never by the file name), holding
//! `metadata.json` and the disk images.
//!
//! Unpacking refuses anything that could reach outside the target directory
//! or the host: absolute paths, `..`, symbolic links pointing outside, hard
//! links to outside names, device files and FIFOs. [`BoxMetadata`] reads
//! libvirt box metadata v1 (`box.img`, `format`, `virtual_size`) and v2
//! (`disks: [{path, name}]`) and refuses metadata for other providers.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::catalog::PROVIDER;

/// How the tar stream inside a `.box` is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Bytes to look at to recognise a box (a tar header is 512 bytes; its
/// magic sits at offset 257).
pub const SNIFF_LEN: usize = 512;

/// Recognises a box from its first bytes.
pub fn sniff(head: &[u8]) -> Result<Compression, String> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Ok(Compression::None)
    } else if head.starts_with(b"BZh") {
        Err("is compressed with bzip2; kvmdrive reads tar, tar.gz and tar.zst boxes".into())
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err("is compressed with xz; kvmdrive reads tar, tar.gz and tar.zst boxes".into())
    } else if head.starts_with(b"PK\x03\x04") {
        Err("is a zip file; libvirt boxes are tar, tar.gz or tar.zst".into())
    } else if head.starts_with(b"QFI\xfb") {
        Err(
            "is a bare qcow2 image, not a box (a box is a tar with metadata.json and box.img)"
                .into(),
        )
    } else {
        Err("is not a box: neither tar, gzip nor zstd".into())
    }
}

/// Whether the first bytes look like a box archive at all.
pub fn looks_like_box(head: &[u8]) -> bool {
    sniff(head).is_ok()
}

/// Opens `path` as a decompressed tar stream.
pub fn open(path: &Path) -> Result<Box<dyn Read>, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let head = reader.fill_buf().map_err(|e| format!("cannot read: {e}"))?;
    Ok(match sniff(head)? {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(ZstdFrames::new(reader)),
    })
}

/// Decodes every zstd frame of a stream one after another (parallel
/// compressors write several).
struct ZstdFrames<R: BufRead> {
    source: Option<R>,
    decoder: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> ZstdFrames<R> {
        ZstdFrames {
            source: Some(source),
            decoder: None,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(d) = &mut self.decoder {
                let n = d.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                let d = self.decoder.take().expect("present");
                self.source = Some(d.into_inner());
            }
            let mut source = self.source.take().expect("source or decoder");
            if source.fill_buf()?.is_empty() {
                self.source = Some(source);
                return Ok(0);
            }
            let decoder = ruzstd::decoding::StreamingDecoder::new(source)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
            self.decoder = Some(decoder);
        }
    }
}

/// Why an entry path is refused, if it is.
fn check_entry_path(path: &Path) -> Result<(), String> {
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("entry `{}` contains `..`", path.display()))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("entry `{}` has an absolute path", path.display()))
            }
        }
    }
    Ok(())
}

/// A symbolic link at `entry` pointing at `target` must stay inside the
/// box directory, judged lexically from the link's own directory.
fn check_symlink(entry: &Path, target: &Path) -> Result<(), String> {
    let outside = || {
        format!(
            "symbolic link `{}` points outside the box (to `{}`)",
            entry.display(),
            target.display()
        )
    };
    let mut depth: i64 = entry
        .parent()
        .map(|p| {
            p.components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count() as i64
        })
        .unwrap_or(0);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(outside());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(outside()),
        }
    }
    Ok(())
}

/// Unpacks the box at `path` into `dest` (an empty directory), refusing
/// unsafe entries. Permissions beyond rwx and ownership are not restored.
pub fn unpack(path: &Path, dest: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(open(path)?);
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    let mut count = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("damaged archive: {}", error_chain(&e)))?;
        let entry_path = entry
            .path()
            .map_err(|e| format!("entry with an unreadable name: {e}"))?
            .into_owned();
        check_entry_path(&entry_path)?;
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Continuous | T::GNUSparse | T::Directory => {}
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("symbolic link `{}`: {e}", entry_path.display()))?
                    .ok_or_else(|| {
                        format!("symbolic link `{}` has no target", entry_path.display())
                    })?;
                check_symlink(&entry_path, &target)?;
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("hard link `{}`: {e}", entry_path.display()))?
                    .ok_or_else(|| format!("hard link `{}` has no target", entry_path.display()))?;
                check_entry_path(&target)
                    .map_err(|e| format!("hard link `{}`: {e}", entry_path.display()))?;
            }
            T::Char | T::Block => {
                return Err(format!("entry `{}` is a device file", entry_path.display()));
            }
            T::Fifo => return Err(format!("entry `{}` is a FIFO", entry_path.display())),
            other => {
                return Err(format!(
                    "entry `{}` has an unsupported type ({other:?})",
                    entry_path.display()
                ))
            }
        }
        let unpacked = entry.unpack_in(dest).map_err(|e| {
            format!(
                "cannot unpack `{}`: {} (is the archive truncated or damaged?)",
                entry_path.display(),
                error_chain(&e)
            )
        })?;
        if !unpacked {
            return Err(format!(
                "entry `{}` escapes the box directory",
                entry_path.display()
            ));
        }
        crate::fault::point("box.unpack");
        count += 1;
    }
    if count == 0 {
        return Err("the archive is empty".into());
    }
    Ok(())
}

/// An error with its causes (tar's own messages hide the interesting part).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Reads `metadata.json` straight out of a box archive (for indexing),
/// stopping at that entry.
pub fn metadata_from_archive(path: &Path) -> Result<BoxMetadata, String> {
    let mut archive = tar::Archive::new(open(path)?);
    for entry in archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("damaged archive: {e}"))?;
        let p = entry.path().map_err(|e| e.to_string())?.into_owned();
        let normalized: PathBuf = p
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        if normalized == Path::new("metadata.json") && entry.header().entry_type().is_file() {
            let mut text = String::new();
            entry
                .by_ref()
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(|e| format!("metadata.json: {e}"))?;
            return BoxMetadata::parse(&text);
        }
    }
    Err("no metadata.json in the box".into())
}

/// A disk of a box, relative to its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxDisk {
    pub path: PathBuf,
    /// v2 metadata may name disks (`vda`, ...).
    pub name: Option<String>,
}

/// The parts of a libvirt box's `metadata.json` kvmdrive uses.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxMetadata {
    /// 1 or 2.
    pub format_version: u8,
    /// Declared size of the first disk in GiB (v1 only; qemu-img has the last word).
    pub virtual_size_gib: Option<u64>,
    pub architecture: Option<String>,
    pub disks: Vec<BoxDisk>,
}

#[derive(Deserialize)]
struct RawMetadata {
    provider: Option<String>,
    format: Option<String>,
    virtual_size: Option<serde_json::Value>,
    architecture: Option<String>,
    disks: Option<Vec<RawDisk>>,
}

#[derive(Deserialize)]
struct RawDisk {
    path: Option<String>,
    name: Option<String>,
    format: Option<String>,
}

impl BoxMetadata {
    /// Parses and validates `metadata.json` text.
    pub fn parse(text: &str) -> Result<BoxMetadata, String> {
        let raw: RawMetadata =
            serde_json::from_str(text).map_err(|e| format!("metadata.json is not valid: {e}"))?;
        match raw.provider.as_deref() {
            Some(PROVIDER) => {}
            Some(other) => {
                return Err(format!(
                    "the box is for the `{other}` provider, not `{PROVIDER}`"
                ))
            }
            None => return Err("metadata.json names no provider".into()),
        }
        let check_format = |f: Option<&str>, what: &str| match f {
            None | Some("qcow2") => Ok(()),
            Some(other) => Err(format!("{what} has format `{other}`; kvmdrive needs qcow2")),
        };
        let virtual_size_gib = match &raw.virtual_size {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().or_else(|| n.as_f64().map(|f| f.ceil() as u64))
            }
            Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        if let Some(disks) = raw.disks {
            check_format(raw.format.as_deref(), "the box")?;
            if disks.is_empty() {
                return Err("metadata.json lists no disks".into());
            }
            let mut out: Vec<BoxDisk> = Vec::new();
            for (i, d) in disks.into_iter().enumerate() {
                let path = d.path.unwrap_or_else(|| {
                    if i == 0 {
                        "box.img".into()
                    } else {
                        format!("box_{}.img", i + 1)
                    }
                });
                let path = PathBuf::from(path);
                check_disk_path(&path)?;
                check_format(d.format.as_deref(), &format!("disk `{}`", path.display()))?;
                if out.iter().any(|o| o.path == path) {
                    return Err(format!("disk `{}` is listed twice", path.display()));
                }
                out.push(BoxDisk { path, name: d.name });
            }
            Ok(BoxMetadata {
                format_version: 2,
                virtual_size_gib,
                architecture: raw.architecture,
                disks: out,
            })
        } else {
            match raw.format.as_deref() {
                Some("qcow2") => {}
                Some(other) => {
                    return Err(format!(
                        "box.img has format `{other}`; kvmdrive needs qcow2"
                    ))
                }
                None => {
                    return Err(
                        "metadata.json gives no image format (v1 needs \"format\": \"qcow2\")"
                            .into(),
                    )
                }
            }
            Ok(BoxMetadata {
                format_version: 1,
                virtual_size_gib,
                architecture: raw.architecture,
                disks: vec![BoxDisk {
                    path: "box.img".into(),
                    name: None,
                }],
            })
        }
    }

    /// Reads `metadata.json` from an unpacked box directory (which must be a
    /// regular file, not a link).
    pub fn read(dir: &Path) -> Result<BoxMetadata, String> {
        let path = dir.join("metadata.json");
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => return Err("metadata.json is not a regular file".into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err("no metadata.json: not a Vagrant box".into())
            }
            Err(e) => return Err(format!("metadata.json: {e}")),
        }
        let text = fs::read_to_string(&path).map_err(|e| format!("metadata.json: {e}"))?;
        BoxMetadata::parse(&text)
    }
}

fn check_disk_path(path: &Path) -> Result<(), String> {
    let ok = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "disk path `{}` must be a plain relative path inside the box",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_uses_magic_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Ok(Compression::Gzip));
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Ok(Compression::Zstd));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), Ok(Compression::None));
        assert!(sniff(b"BZh91AY").unwrap_err().contains("bzip2"));
        assert!(sniff(b"PK\x03\x04rest").unwrap_err().contains("zip"));
        assert!(sniff(b"QFI\xfb\0\0\0\x03").unwrap_err().contains("qcow2"));
        assert!(sniff(b"{\"name\":1}").is_err());
        assert!(sniff(b"").is_err());
    }

    #[test]
    fn entry_paths() {
        assert!(check_entry_path(Path::new("box.img")).is_ok());
        assert!(check_entry_path(Path::new("./sub/box.img")).is_ok());
        assert!(check_entry_path(Path::new("/etc/passwd")).is_err());
        assert!(check_entry_path(Path::new("a/../../x")).is_err());
        assert!(check_entry_path(Path::new("..")).is_err());
    }

    #[test]
    fn symlink_targets() {
        assert!(check_symlink(Path::new("link"), Path::new("box.img")).is_ok());
        assert!(check_symlink(Path::new("sub/link"), Path::new("../box.img")).is_ok());
        assert!(check_symlink(Path::new("link"), Path::new("../x")).is_err());
        assert!(check_symlink(Path::new("sub/link"), Path::new("../../x")).is_err());
        assert!(check_symlink(Path::new("link"), Path::new("/etc/shadow")).is_err());
        assert!(check_symlink(Path::new("link"), Path::new("a/../../x")).is_err());
    }

    #[test]
    fn metadata_v1() {
        let m = BoxMetadata::parse(r#"{"provider":"libvirt","format":"qcow2","virtual_size":10}"#)
            .unwrap();
        assert_eq!(m.format_version, 1);
        assert_eq!(m.virtual_size_gib, Some(10));
        assert_eq!(
            m.disks,
            vec![BoxDisk {
                path: "box.img".into(),
                name: None
            }]
        );
        let m = BoxMetadata::parse(
            r#"{"provider":"libvirt","format":"qcow2","virtual_size":"40","architecture":"amd64"}"#,
        )
        .unwrap();
        assert_eq!(m.virtual_size_gib, Some(40));
        assert_eq!(m.architecture.as_deref(), Some("amd64"));
    }

    #[test]
    fn metadata_v2() {
        let m = BoxMetadata::parse(
            r#"{"provider":"libvirt","disks":[{"path":"disk1.qcow2","name":"vda"},{"path":"data/disk2.qcow2","format":"qcow2"}]}"#,
        )
        .unwrap();
        assert_eq!(m.format_version, 2);
        assert_eq!(m.disks.len(), 2);
        assert_eq!(m.disks[0].path, PathBuf::from("disk1.qcow2"));
        assert_eq!(m.disks[0].name.as_deref(), Some("vda"));
        assert_eq!(m.disks[1].path, PathBuf::from("data/disk2.qcow2"));
        let m = BoxMetadata::parse(r#"{"provider":"libvirt","disks":[{}]}"#).unwrap();
        assert_eq!(m.disks[0].path, PathBuf::from("box.img"));
    }

    #[test]
    fn metadata_refusals() {
        let refused = [
            (r#"{"provider":"virtualbox"}"#, "virtualbox"),
            (r#"{"format":"qcow2"}"#, "no provider"),
            (
                r#"{"provider":"libvirt","format":"raw","virtual_size":1}"#,
                "raw",
            ),
            (r#"{"provider":"libvirt"}"#, "no image format"),
            (r#"{"provider":"libvirt","disks":[]}"#, "no disks"),
            (
                r#"{"provider":"libvirt","disks":[{"path":"../x.img"}]}"#,
                "plain relative",
            ),
            (
                r#"{"provider":"libvirt","disks":[{"path":"/var/lib/x.img"}]}"#,
                "plain relative",
            ),
            (
                r#"{"provider":"libvirt","disks":[{"path":"a.img","format":"vmdk"}]}"#,
                "vmdk",
            ),
            (
                r#"{"provider":"libvirt","disks":[{"path":"a.img"},{"path":"a.img"}]}"#,
                "twice",
            ),
            ("<html>", "not valid"),
        ];
        for (text, needle) in refused {
            let err = BoxMetadata::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
