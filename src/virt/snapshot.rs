//! libvirt domain snapshots and managed save: the `<domainsnapshot>` XML
//! kvmdrive writes and reads (typed quick-xml structs, pure and unit-tested),
//! the check that a domain can take an internal snapshot (every disk qcow2,
//! no raw UEFI NVRAM), whether its guest agent is connected, and the
//! [`Hypervisor`] calls that create, list,
//! revert and delete snapshots, save and restore a domain's memory
//! (managed save), pause, resume and set a guest's clock.

use serde::{Deserialize, Serialize};
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::error::ErrorNumber;
use virt::sys;

use super::error::VirtError;
use super::hypervisor::{call, Hypervisor};

/// What `create_snapshot` asks libvirt for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSpec {
    pub name: String,
    pub description: String,
    /// Include the memory state (the domain is running): `restore` then
    /// returns a running machine. Without it, disks only.
    pub memory: bool,
}

#[derive(Serialize)]
#[serde(rename = "domainsnapshot")]
struct SnapshotDoc<'a> {
    name: &'a str,
    description: &'a str,
    memory: MemoryDoc,
}

#[derive(Serialize)]
struct MemoryDoc {
    #[serde(rename = "@snapshot")]
    snapshot: &'static str,
}

impl SnapshotSpec {
    pub fn to_xml(&self) -> String {
        super::to_xml(&SnapshotDoc {
            name: &self.name,
            description: &self.description,
            memory: MemoryDoc {
                snapshot: if self.memory { "internal" } else { "no" },
            },
        })
    }
}

/// A snapshot as libvirt describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The domain's state when it was taken (`running`, `shutoff`, ...).
    #[serde(default)]
    pub state: String,
    /// Seconds since the epoch.
    #[serde(rename(deserialize = "creationTime"), default)]
    pub creation_time: u64,
}

impl SnapshotInfo {
    /// Parses libvirt's `<domainsnapshot>` document (ignoring the rest).
    pub fn from_xml(xml: &str) -> Result<SnapshotInfo, quick_xml::DeError> {
        quick_xml::de::from_str(xml)
    }

    /// Taken with the memory state (restores to a running domain).
    pub fn has_memory(&self) -> bool {
        self.state == "running" || self.state == "paused"
    }
}

// ---- what keeps a domain from taking an internal snapshot ----------------

#[derive(Deserialize)]
struct DomainView {
    #[serde(default)]
    os: OsView,
    #[serde(default)]
    devices: DevicesView,
}

#[derive(Deserialize, Default)]
struct OsView {
    nvram: Option<NvramView>,
}

#[derive(Deserialize)]
struct NvramView {
    #[serde(rename = "$text", default)]
    path: String,
}

#[derive(Deserialize, Default)]
struct DevicesView {
    #[serde(rename = "$value", default)]
    items: Vec<Device>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Device {
    Disk(DiskView),
    Channel(ChannelView),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ChannelView {
    target: Option<ChannelTargetView>,
}

#[derive(Deserialize)]
struct ChannelTargetView {
    #[serde(rename = "@name")]
    name: Option<String>,
    #[serde(rename = "@state")]
    state: Option<String>,
}

#[derive(Deserialize)]
struct DiskView {
    #[serde(rename = "@device", default)]
    device: String,
    driver: Option<DriverView>,
    target: Option<TargetView>,
    source: Option<SourceView>,
}

#[derive(Deserialize)]
struct DriverView {
    #[serde(rename = "@type", default)]
    kind: String,
}

#[derive(Deserialize)]
struct TargetView {
    #[serde(rename = "@dev", default)]
    dev: String,
}

#[derive(Deserialize)]
struct SourceView {
    #[serde(rename = "@file")]
    file: Option<String>,
}

/// Why a domain (by its XML) cannot take an internal snapshot: qemu keeps
/// internal snapshots inside qcow2 images, so a raw disk or a raw UEFI
/// NVRAM (pflash) file rules them out. Empty when it can.
pub fn internal_snapshot_blockers(domain_xml: &str) -> Result<Vec<String>, quick_xml::DeError> {
    let dom: DomainView = quick_xml::de::from_str(domain_xml)?;
    let mut out = Vec::new();
    if let Some(nvram) = dom.os.nvram {
        out.push(format!(
            "UEFI firmware: its NVRAM {} is a raw pflash file",
            nvram.path.trim()
        ));
    }
    for item in dom.devices.items {
        let Device::Disk(d) = item else { continue };
        if d.device != "disk" && !d.device.is_empty() {
            continue; // a cdrom (seed ISO) holds no state of the guest
        }
        let kind = d.driver.map(|x| x.kind).unwrap_or_default();
        if kind != "qcow2" {
            let dev = d.target.map(|t| t.dev).unwrap_or_default();
            let file = d.source.and_then(|s| s.file).unwrap_or_default();
            out.push(format!(
                "disk {dev} ({file}) is {}",
                if kind.is_empty() { "raw" } else { &kind }
            ));
        }
    }
    Ok(out)
}

/// Whether a running domain's guest agent is connected, by its live XML:
/// libvirt gives the agent's channel `state='connected'`. False when the
/// XML does not say so (or does not parse).
pub fn guest_agent_connected(domain_xml: &str) -> bool {
    quick_xml::de::from_str::<DomainView>(domain_xml).is_ok_and(|dom| {
        dom.devices.items.iter().any(|item| {
            let Device::Channel(ChannelView { target: Some(t) }) = item else {
                return false;
            };
            t.name.as_deref() == Some(super::hardware::GUEST_AGENT_CHANNEL)
                && t.state.as_deref() == Some("connected")
        })
    })
}

// ---- libvirt calls --------------------------------------------------------

fn is_missing_snapshot(e: &virt::error::Error) -> bool {
    matches!(e.code().into(), Ok(ErrorNumber::NoDomainSnapshot))
}

impl Hypervisor {
    fn snapshot(&self, domain: &str, name: &str) -> Result<Option<DomainSnapshot>, VirtError> {
        let dom = self.require_domain(domain)?;
        match Domain::lookup_snapshot_by_name(&dom, name, 0) {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_missing_snapshot(&e) => Ok(None),
            Err(e) => Err(call(format!("look up snapshot {name} of {domain}"))(e)),
        }
    }

    /// Takes a snapshot of a domain (internal: kept inside its qcow2 disks).
    pub fn create_snapshot(&self, domain: &str, spec: &SnapshotSpec) -> Result<(), VirtError> {
        let dom = self.require_domain(domain)?;
        dom.create_snapshot_xml(&spec.to_xml(), 0)
            .map(drop)
            .map_err(call(format!("save snapshot {} of {domain}", spec.name)))
    }

    /// The domain's snapshots, oldest first. A missing domain has none.
    pub fn snapshots(&self, domain: &str) -> Result<Vec<SnapshotInfo>, VirtError> {
        let Some(dom) = self.domain(domain)? else {
            return Ok(Vec::new());
        };
        let all = dom
            .list_all_snapshots(0)
            .map_err(call(format!("list the snapshots of {domain}")))?;
        let mut out = Vec::new();
        for s in all {
            let xml = s
                .xml_desc(0)
                .map_err(call(format!("read a snapshot of {domain}")))?;
            out.push(SnapshotInfo::from_xml(&xml).map_err(|e| {
                VirtError::other(format!("read a snapshot of {domain}"), e.to_string())
            })?);
        }
        out.sort_by(|a, b| (a.creation_time, &a.name).cmp(&(b.creation_time, &b.name)));
        Ok(out)
    }

    /// The snapshot `name` of a domain, if it has one.
    pub fn snapshot_info(
        &self,
        domain: &str,
        name: &str,
    ) -> Result<Option<SnapshotInfo>, VirtError> {
        if self.domain(domain)?.is_none() {
            return Ok(None);
        }
        match self.snapshot(domain, name)? {
            Some(s) => {
                let xml = s
                    .xml_desc(0)
                    .map_err(call(format!("read snapshot {name} of {domain}")))?;
                SnapshotInfo::from_xml(&xml).map(Some).map_err(|e| {
                    VirtError::other(format!("read snapshot {name} of {domain}"), e.to_string())
                })
            }
            None => Ok(None),
        }
    }

    /// Reverts a domain to a snapshot: running when it was taken running,
    /// paused when paused. `None` when the domain has no such snapshot.
    ///
    /// A domain that runs (or is paused) going back to a snapshot with
    /// memory is reverted in place: QEMU's `loadvm` on the running process
    /// (libvirt's monitor passthrough), which loads the disks' and the
    /// memory's state in about a third of the time of libvirt's revert.
    /// libvirt's own revert stops the QEMU process and starts a new one
    /// (measured under TCG: 1.2 s against 0.4 s), and the new process also
    /// gives the guest agent's channel and the NIC's tap device to the guest
    /// anew. Where that does not work (another hypervisor driver, a snapshot
    /// QEMU cannot load into this process) libvirt's revert does it, and
    /// the answer says why. `snap` is the snapshot as the caller read it
    /// ([`Self::snapshot_info`]).
    pub fn revert_snapshot(
        &self,
        domain: &str,
        snap: &SnapshotInfo,
    ) -> Result<Option<Reverted>, VirtError> {
        let name = snap.name.as_str();
        let Some(s) = self.snapshot(domain, name)? else {
            return Ok(None);
        };
        let dom = self.require_domain(domain)?;
        let in_place = if self.is_test_driver() {
            Err("the test driver has no QEMU".to_owned())
        } else if !dom.is_active().unwrap_or(false) {
            Err("the domain is not running".to_owned())
        } else if !snap.has_memory() {
            Err("the snapshot has no memory state".to_owned())
        } else {
            load_in_place(&dom, name, &snap.state)
        };
        let why = match in_place {
            Ok(()) => return Ok(Some(Reverted::InPlace)),
            Err(why) => why,
        };
        // A managed-save image would be restored on the next start instead.
        if dom.has_managed_save(0).unwrap_or(false) {
            dom.managed_save_remove(0)
                .map_err(call(format!("discard the saved state of {domain}")))?;
        }
        s.revert(0)
            .map_err(call(format!("restore snapshot {name} of {domain}")))?;
        Ok(Some(Reverted::ByLibvirt(why)))
    }

    /// Deletes a snapshot. Returns false when there was none.
    pub fn delete_snapshot(&self, domain: &str, name: &str) -> Result<bool, VirtError> {
        match self.snapshot(domain, name)? {
            Some(s) => s
                .delete(0)
                .map(|()| true)
                .map_err(call(format!("delete snapshot {name} of {domain}"))),
            None => Ok(false),
        }
    }

    /// Saves a running domain's memory to disk and stops it; the next start
    /// restores it (`virDomainManagedSave`).
    pub fn managed_save(&self, domain: &str) -> Result<(), VirtError> {
        self.require_domain(domain)?
            .managed_save(0)
            .map_err(call(format!("save the state of {domain}")))
    }

    /// True when the domain is stopped with a managed-save image.
    pub fn has_managed_save(&self, domain: &str) -> Result<bool, VirtError> {
        match self.domain(domain)? {
            Some(d) => d
                .has_managed_save(0)
                .map_err(call(format!("query the saved state of {domain}"))),
            None => Ok(false),
        }
    }

    /// Pauses a running domain (its qemu process stays, the CPUs stop).
    pub fn pause_domain(&self, domain: &str) -> Result<(), VirtError> {
        self.require_domain(domain)?
            .suspend()
            .map_err(call(format!("pause {domain}")))
    }

    pub fn resume_domain(&self, domain: &str) -> Result<(), VirtError> {
        self.require_domain(domain)?
            .resume()
            .map_err(call(format!("resume {domain}")))
    }

    /// Whether the domain's guest agent is connected now (see
    /// [`guest_agent_connected`]); false when that cannot be read.
    pub fn guest_agent_is_connected(&self, domain: &str) -> bool {
        self.domain_xml(domain)
            .ok()
            .flatten()
            .is_some_and(|xml| guest_agent_connected(&xml))
    }

    /// Sets the guest's clock through the guest agent.
    pub fn set_guest_time(
        &self,
        domain: &str,
        epoch: std::time::Duration,
    ) -> Result<(), VirtError> {
        let secs = i64::try_from(epoch.as_secs()).unwrap_or(i64::MAX);
        self.require_domain(domain)?
            .set_time(secs, epoch.subsec_nanos() as i32, 0)
            .map_err(call(format!("set the clock of {domain} (guest agent)")))
    }
}

/// How [`Hypervisor::revert_snapshot`] reverted a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reverted {
    /// `loadvm` in the running QEMU process.
    InPlace,
    /// libvirt's revert (a new QEMU process for a running domain); why not
    /// in place.
    ByLibvirt(String),
}

/// QEMU's `loadvm NAME` (HMP, through libvirt) on a running or paused
/// domain, then the run state the snapshot was taken in. Err with QEMU's
/// answer when it did not load. (`loadvm` keeps the run state the domain
/// had; a failed load leaves it paused, and libvirt's revert then starts a
/// new process.)
fn load_in_place(dom: &Domain, name: &str, state: &str) -> Result<(), String> {
    let answer = dom
        .qemu_monitor_command(
            &format!("loadvm {name}"),
            sys::VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP,
        )
        .map_err(|e| e.to_string())?;
    if !answer.trim().is_empty() {
        return Err(format!("QEMU: {}", answer.trim()));
    }
    let (now, _) = dom.state().map_err(|e| e.to_string())?;
    let paused = now.to_raw() == sys::VIR_DOMAIN_PAUSED;
    match state {
        "running" if paused => dom.resume().map_err(|e| e.to_string()),
        "paused" if !paused => dom.suspend().map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

/// libvirt's flag that also removes snapshot metadata when undefining.
pub(crate) const UNDEFINE_SNAPSHOTS: u32 =
    sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_xml_names_memory_state() {
        let running = SnapshotSpec {
            name: "s1".into(),
            description: "fp <&>".into(),
            memory: true,
        };
        assert_eq!(
            running.to_xml(),
            "<domainsnapshot>\n  <name>s1</name>\n  <description>fp &lt;&amp;&gt;</description>\n  <memory snapshot=\"internal\"/>\n</domainsnapshot>\n"
        );
        let halted = SnapshotSpec {
            memory: false,
            ..running
        };
        assert!(halted.to_xml().contains("<memory snapshot=\"no\"/>"));
    }

    #[test]
    fn libvirt_snapshot_documents_parse() {
        let xml = r#"<domainsnapshot>
  <name>before-upgrade</name>
  <description>kvmdrive</description>
  <state>running</state>
  <creationTime>1764560000</creationTime>
  <memory snapshot='internal'/>
  <disks>
    <disk name='vda' snapshot='internal'/>
  </disks>
  <domain type='qemu'><name>x</name><devices><disk type='file' device='disk'/></devices></domain>
</domainsnapshot>"#;
        let s = SnapshotInfo::from_xml(xml).unwrap();
        assert_eq!(s.name, "before-upgrade");
        assert_eq!(s.description, "kvmdrive");
        assert_eq!(s.creation_time, 1_764_560_000);
        assert!(s.has_memory());
        let bare = SnapshotInfo::from_xml(
            "<domainsnapshot><name>n</name><state>shutoff</state></domainsnapshot>",
        )
        .unwrap();
        assert!(!bare.has_memory());
        assert_eq!(bare.description, "");
    }

    #[test]
    fn the_agent_counts_as_connected_only_with_its_channel_connected() {
        let dom = |state: &str| {
            format!(
                "<domain type='qemu'><name>d</name><devices>\
                 <channel type='pty'><target type='virtio' name='org.qemu.other'/></channel>\
                 <channel type='unix'><source mode='bind'/>\
                 <target type='virtio' name='org.qemu.guest_agent.0'{state}/>\
                 <address type='virtio-serial' controller='0' bus='0' port='1'/></channel>\
                 </devices></domain>"
            )
        };
        assert!(guest_agent_connected(&dom(" state='connected'")));
        assert!(!guest_agent_connected(&dom(" state='disconnected'")));
        assert!(!guest_agent_connected(&dom("")));
        assert!(!guest_agent_connected("<domain><devices/></domain>"));
        assert!(!guest_agent_connected("not xml"));
    }

    #[test]
    fn raw_disks_and_nvram_block_internal_snapshots() {
        let ok = r#"<domain type='qemu'><name>a</name><os><type>hvm</type></os><devices>
  <emulator>/usr/bin/qemu-system-x86_64</emulator>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/p/a.qcow2'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/p/seed.iso'/><target dev='sda' bus='sata'/></disk>
  <interface type='network'><source network='n'/></interface>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/p/b.qcow2'/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>"#;
        assert!(internal_snapshot_blockers(ok).unwrap().is_empty());
        let bad = r#"<domain type='qemu'><name>a</name><os><type>hvm</type>
  <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
  <nvram>/var/lib/libvirt/qemu/nvram/a_VARS.fd</nvram></os><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/p/a.qcow2'/><target dev='vda'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/p/data.img'/><target dev='vdb'/></disk>
</devices></domain>"#;
        let why = internal_snapshot_blockers(bad).unwrap();
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("a_VARS.fd"), "{why:?}");
        assert!(why[1].contains("vdb") && why[1].contains("raw"), "{why:?}");
    }
}
