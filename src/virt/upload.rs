//! Box images into a storage pool through libvirt itself
//! (`virStorageVolUpload` over a stream), so the pool may be on another
//! machine: nothing here touches a path of the hypervisor host. The qcow2
//! header (the first block) is sent last, so a volume whose upload was cut
//! short reads as raw, not qcow2, and the next run replaces it instead of
//! backing machines with half an image.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::error::VirtError;
use super::hypervisor::{call, Hypervisor};

/// Bytes of the image sent last (covers the qcow2 header).
const HEAD: u64 = 64 * 1024;
/// One `virStreamSend`.
const CHUNK: usize = 1024 * 1024;

#[derive(serde::Deserialize)]
struct VolDoc {
    target: VolTarget,
}

#[derive(serde::Deserialize)]
struct VolTarget {
    format: Option<VolFormat>,
}

#[derive(serde::Deserialize)]
struct VolFormat {
    #[serde(rename = "@type")]
    kind: String,
}

/// The volume format libvirt reports in a volume's XML (`qcow2`, `raw`, ...).
pub fn volume_format(xml: &str) -> Option<String> {
    quick_xml::de::from_str::<VolDoc>(xml)
        .ok()?
        .target
        .format
        .map(|f| f.kind)
}

/// The XML of a raw volume of exactly `len` bytes (to be filled by upload).
pub fn upload_target_xml(name: &str, len: u64) -> String {
    format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{len}</capacity>\n  \
         <allocation unit='bytes'>0</allocation>\n  <target>\n    <format type='raw'/>\n  \
         </target>\n</volume>\n",
        quick_xml::escape::escape(name)
    )
}

impl Hypervisor {
    /// The XML of volume `name` in `pool`, if it exists.
    pub fn volume_xml(&self, pool: &str, name: &str) -> Result<Option<String>, VirtError> {
        match self.volume(pool, name)? {
            Some(v) => v
                .xml_desc(0)
                .map(Some)
                .map_err(call(format!("read volume {name}"))),
            None => Ok(None),
        }
    }

    /// libvirt's capabilities XML of the host.
    pub fn capabilities(&self) -> Result<String, VirtError> {
        self.connection()
            .capabilities()
            .map_err(call("read the host's capabilities"))
    }

    /// Returns the path (on the hypervisor host) of volume `name` in `pool`
    /// holding a copy of the qcow2 `image`, uploading it when the pool has
    /// no complete copy yet. `cancelled` is asked between chunks; on
    /// cancellation or error the partial volume is removed.
    pub fn upload_qcow2_volume(
        &self,
        pool: &str,
        name: &str,
        image: &Path,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<PathBuf, VirtError> {
        if let Some(vol) = self.volume(pool, name)? {
            let xml = vol
                .xml_desc(0)
                .map_err(call(format!("read volume {name}")))?;
            if volume_format(&xml).as_deref() == Some("qcow2") {
                return Ok(PathBuf::from(
                    vol.path()
                        .map_err(call(format!("read the path of {name}")))?,
                ));
            }
            // Left by an interrupted upload (its header never came).
            vol.delete(0)
                .map_err(call(format!("delete the partial volume {name}")))?;
        }
        let io = |e: std::io::Error| {
            VirtError::other(format!("read {}", image.display()), e.to_string())
        };
        let mut file = File::open(image).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let p = self.pool(pool)?;
        let vol = StorageVol::create_xml(&p, &upload_target_xml(name, len), 0)
            .map_err(call(format!("create volume {name}")))?;
        let head = HEAD.min(len);
        let sent = self
            .send_range(&vol, &mut file, head, len - head, cancelled)
            .and_then(|()| self.send_range(&vol, &mut file, 0, head, cancelled));
        if let Err(e) = sent {
            let _ = vol.delete(0);
            return Err(e);
        }
        // libvirt learns the format (qcow2) from the header on refresh.
        p.refresh(0)
            .map_err(call(format!("refresh storage pool {pool}")))?;
        let path = vol
            .path()
            .map_err(call(format!("read the path of {name}")))?;
        Ok(PathBuf::from(path))
    }

    /// Uploads `len` bytes of `file` from `offset` into the same range of `vol`.
    fn send_range(
        &self,
        vol: &StorageVol,
        file: &mut File,
        offset: u64,
        len: u64,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), VirtError> {
        if len == 0 {
            return Ok(());
        }
        let what = || format!("upload bytes {offset}..{} of the box image", offset + len);
        let stream = Stream::new(&self.connection(), 0).map_err(call(what()))?;
        vol.upload(&stream, offset, len, 0).map_err(call(what()))?;
        std::io::Seek::seek(file, std::io::SeekFrom::Start(offset))
            .map_err(|e| VirtError::other(what(), e.to_string()))?;
        let mut buf = vec![0u8; CHUNK];
        let mut left = len;
        while left > 0 {
            if cancelled() {
                let _ = stream.abort();
                return Err(VirtError::other(what(), "interrupted"));
            }
            let want = CHUNK.min(left as usize);
            if let Err(e) = file.read_exact(&mut buf[..want]) {
                let _ = stream.abort();
                return Err(VirtError::other(what(), e.to_string()));
            }
            let mut done = 0;
            while done < want {
                match stream.send(&buf[done..want]) {
                    Ok(n) if n > 0 => done += n as usize,
                    Ok(_) => {
                        let _ = stream.abort();
                        return Err(VirtError::other(what(), "the stream accepted no data"));
                    }
                    Err(e) => {
                        let _ = stream.abort();
                        return Err(call(what())(e));
                    }
                }
            }
            left -= want as u64;
        }
        stream.finish().map_err(call(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_read_from_volume_xml() {
        let xml = "<volume type='file'><name>b</name><target><path>/p/b</path>\
                   <format type='qcow2'/></target></volume>";
        assert_eq!(volume_format(xml).as_deref(), Some("qcow2"));
        assert_eq!(volume_format("<volume><target/></volume>"), None);
    }

    #[test]
    fn upload_target_is_raw_of_the_exact_size() {
        let xml = upload_target_xml("base<1>.img", 1234);
        assert!(xml.contains("<name>base&lt;1&gt;.img</name>"), "{xml}");
        assert!(xml.contains("<capacity unit='bytes'>1234</capacity>"));
        assert_eq!(volume_format(&xml).as_deref(), Some("raw"));
    }

    /// The test driver has streams too: a real upload, then a cut one.
    #[test]
    fn uploads_through_the_test_driver() {
        let hv = Hypervisor::connect("test:///default").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        std::fs::write(&image, vec![7u8; 200_000]).unwrap();
        let r = hv.upload_qcow2_volume("default-pool", "up.img", &image, &|| false);
        // The test driver may not implement uploads; then it must say so
        // as an error, not panic, and leave no volume behind.
        match r {
            Ok(_) => {}
            Err(e) => {
                assert!(!e.to_string().is_empty());
                assert!(hv.volume_path("default-pool", "up.img").unwrap().is_none());
            }
        }
        let cut = hv.upload_qcow2_volume("default-pool", "cut.img", &image, &|| true);
        assert!(cut.is_err());
        assert!(hv.volume_path("default-pool", "cut.img").unwrap().is_none());
    }
}
