//! Thin wrapper over the `virt` crate: the libvirt calls kvmdrive makes, with
//! "not found" turned into `None` and errors that say what was being done.

use std::path::PathBuf;
use std::sync::Arc;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::network::Network;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;

use super::domain::METADATA_NS;
use super::error::{VirtError, VirtErrorKind};
use super::link::{Link, Recovery};
use super::storage::PoolSpec;

pub(crate) fn call(action: impl Into<String>) -> impl FnOnce(virt::error::Error) -> VirtError {
    let action = action.into();
    move |e| VirtError::call(action, &e)
}

/// libvirt says the domain (or its metadata), network, pool or volume does not exist.
fn is_missing(e: &virt::error::Error) -> bool {
    matches!(
        VirtErrorKind::of(e),
        VirtErrorKind::NoDomain
            | VirtErrorKind::NoNetwork
            | VirtErrorKind::NoStoragePool
            | VirtErrorKind::NoStorageVol
    )
}

/// `Ok(None)` when libvirt says the object does not exist.
fn optional<T>(r: Result<T, virt::error::Error>, action: &str) -> Result<Option<T>, VirtError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(call(action)(e)),
    }
}

/// A domain's run state, as far as kvmdrive cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    Running,
    Paused,
    Shutoff,
    /// Stopped with its memory saved (`suspend`): the next start resumes it.
    Saved,
    Crashed,
    Other,
}

impl DomainState {
    fn from_raw(raw: sys::virDomainState) -> Self {
        match raw {
            sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED => DomainState::Running,
            sys::VIR_DOMAIN_PAUSED | sys::VIR_DOMAIN_PMSUSPENDED => DomainState::Paused,
            sys::VIR_DOMAIN_SHUTOFF => DomainState::Shutoff,
            sys::VIR_DOMAIN_CRASHED => DomainState::Crashed,
            _ => DomainState::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::Shutoff => "shutoff",
            DomainState::Saved => "saved",
            DomainState::Crashed => "crashed",
            DomainState::Other => "unknown",
        }
    }
}

/// A kvmdrive domain found by its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedDomain {
    pub domain: String,
    pub project: String,
    pub machine: String,
}

#[derive(serde::Deserialize)]
struct MachineMeta {
    #[serde(rename = "@project")]
    project: String,
    #[serde(rename = "@name")]
    name: String,
}

/// One libvirt connection. Cheap to clone; safe to share between threads.
/// Clones share the connection and its recovery: after a libvirtd restart
/// the idempotent calls below (lookups, state, `ensure_*`, removals)
/// reconnect and retry once; the others fail naming the lost connection.
#[derive(Clone)]
pub struct Hypervisor {
    link: Arc<Link>,
    uri: String,
}

impl Hypervisor {
    pub fn connect(uri: &str) -> Result<Hypervisor, VirtError> {
        // libvirt prints every error to stderr by default; we report them ourselves.
        virt::error::clear_error_callback();
        let link = Link::open(uri).map_err(|e| VirtError::Connect {
            uri: uri.to_owned(),
            message: e.message().to_owned(),
        })?;
        Ok(Hypervisor {
            link: Arc::new(link),
            uri: uri.to_owned(),
        })
    }

    /// Runs `call`; when it fails because libvirtd went away (restarted),
    /// reconnects and, if `retry`, runs it once more on the new connection.
    /// A failure on a lost connection says so (kind `ConnectionLost`).
    fn guarded<T>(
        &self,
        retry: bool,
        call: impl Fn() -> Result<T, VirtError>,
    ) -> Result<T, VirtError> {
        let used = self.link.generation();
        match call() {
            Err(e) if !e.is_no_such_object() => match self.link.recover(used) {
                Recovery::Healthy => Err(e),
                Recovery::Reconnected if retry => call().map_err(|e| self.lost_if_dead(e)),
                Recovery::Reconnected | Recovery::Gone => Err(e.connection_lost()),
            },
            r => r,
        }
    }

    /// `e` as a lost-connection failure when the connection is dead now.
    fn lost_if_dead(&self, e: VirtError) -> VirtError {
        if e.is_no_such_object() {
            return e;
        }
        match self.link.recover(self.link.generation()) {
            Recovery::Healthy => e,
            Recovery::Reconnected | Recovery::Gone => e.connection_lost(),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The current connection, for sibling modules (storage streams).
    pub(super) fn connection(&self) -> Connect {
        self.link.conn()
    }

    /// True for libvirt's `test://` driver (no daemon, nothing really runs).
    pub fn is_test_driver(&self) -> bool {
        self.uri.starts_with("test:")
    }

    pub fn lib_version(&self) -> Result<u32, VirtError> {
        self.guarded(true, || {
            self.connection()
                .lib_version()
                .map_err(call("query libvirt's version"))
        })
    }

    // ---- domains -------------------------------------------------------

    pub(crate) fn domain(&self, name: &str) -> Result<Option<Domain>, VirtError> {
        optional(
            self.connection().lookup_domain_by_name(name),
            &format!("look up domain {name}"),
        )
    }

    pub fn domain_state(&self, name: &str) -> Result<Option<DomainState>, VirtError> {
        self.guarded(true, || {
            let Some(dom) = self.domain(name)? else {
                return Ok(None);
            };
            let (state, _) = dom
                .state()
                .map_err(call(format!("read the state of domain {name}")))?;
            let state = DomainState::from_raw(state.to_raw());
            if state == DomainState::Shutoff && dom.has_managed_save(0).unwrap_or(false) {
                return Ok(Some(DomainState::Saved));
            }
            Ok(Some(state))
        })
    }

    pub fn define_domain(&self, xml: &str) -> Result<(), VirtError> {
        self.guarded(true, || {
            self.connection()
                .define_domain_xml(xml)
                .map(drop)
                .map_err(call("define the domain"))
        })
    }

    pub fn domain_xml(&self, name: &str) -> Result<Option<String>, VirtError> {
        self.guarded(true, || match self.domain(name)? {
            Some(d) => d
                .xml_desc(0)
                .map(Some)
                .map_err(call(format!("read the XML of domain {name}"))),
            None => Ok(None),
        })
    }

    pub fn start_domain(&self, name: &str) -> Result<(), VirtError> {
        self.guarded(false, || {
            let dom = self.require_domain(name)?;
            dom.create().map_err(call(format!("start domain {name}")))
        })
    }

    /// Asks the guest to shut down (ACPI power button).
    pub fn shutdown_domain(&self, name: &str) -> Result<(), VirtError> {
        self.guarded(false, || {
            let dom = self.require_domain(name)?;
            dom.shutdown()
                .map_err(call(format!("shut down domain {name}")))
        })
    }

    /// Pulls the plug. A domain that is not running is fine.
    pub fn destroy_domain(&self, name: &str) -> Result<(), VirtError> {
        self.guarded(true, || {
            let Some(dom) = self.domain(name)? else {
                return Ok(());
            };
            match dom.destroy() {
                Ok(()) => Ok(()),
                Err(e) if VirtErrorKind::of(&e) == VirtErrorKind::OperationInvalid => Ok(()),
                Err(e) => Err(call(format!("stop domain {name}"))(e)),
            }
        })
    }

    /// Removes a domain's definition (stopping it first). Missing is fine.
    pub fn remove_domain(&self, name: &str) -> Result<(), VirtError> {
        self.guarded(true, || {
            self.destroy_domain(name)?;
            let Some(dom) = self.domain(name)? else {
                return Ok(());
            };
            // A UEFI domain's NVRAM file goes with it (libvirt refuses otherwise).
            let has_nvram = dom.xml_desc(0).is_ok_and(|xml| xml.contains("<nvram"));
            // Snapshot metadata and a managed-save image go too (internal
            // snapshots live in the overlay, which destroy deletes).
            let flags = super::snapshot::UNDEFINE_SNAPSHOTS
                | if has_nvram {
                    sys::VIR_DOMAIN_UNDEFINE_NVRAM
                } else {
                    0
                };
            let undefined = dom.undefine_flags(flags);
            match undefined {
                Ok(()) => Ok(()),
                Err(e) if is_missing(&e) => Ok(()),
                Err(e) => Err(call(format!("undefine domain {name}"))(e)),
            }
        })
    }

    pub(crate) fn require_domain(&self, name: &str) -> Result<Domain, VirtError> {
        self.domain(name)?.ok_or_else(|| VirtError::Call {
            action: format!("find domain {name}"),
            message: "no such domain".into(),
            kind: VirtErrorKind::NoDomain,
        })
    }

    /// Every domain carrying kvmdrive's metadata.
    pub fn owned_domains(&self) -> Result<Vec<OwnedDomain>, VirtError> {
        self.guarded(true, || {
            let all = self
                .connection()
                .list_all_domains(0)
                .map_err(call("list domains"))?;
            let mut out = Vec::new();
            for dom in all {
                let meta = match dom.metadata(
                    sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                    Some(METADATA_NS),
                    0,
                ) {
                    Ok(m) => m,
                    Err(e) if is_missing(&e) => continue,
                    Err(e) => return Err(call("read domain metadata")(e)),
                };
                let Ok(m) = quick_xml::de::from_str::<MachineMeta>(&meta) else {
                    continue;
                };
                out.push(OwnedDomain {
                    domain: dom.name().map_err(call("read a domain's name"))?,
                    project: m.project,
                    machine: m.name,
                });
            }
            Ok(out)
        })
    }

    // ---- networks ------------------------------------------------------

    fn network(&self, name: &str) -> Result<Option<Network>, VirtError> {
        optional(
            self.connection().lookup_network_by_name(name),
            &format!("look up network {name}"),
        )
    }

    pub fn network_exists(&self, name: &str) -> Result<bool, VirtError> {
        self.guarded(true, || Ok(self.network(name)?.is_some()))
    }

    pub fn network_xml(&self, name: &str) -> Result<Option<String>, VirtError> {
        self.guarded(true, || match self.network(name)? {
            Some(n) => n
                .xml_desc(0)
                .map(Some)
                .map_err(call(format!("read network {name}"))),
            None => Ok(None),
        })
    }

    /// XML of every network libvirt knows (to avoid subnet collisions).
    pub fn all_network_xml(&self) -> Result<Vec<String>, VirtError> {
        self.guarded(true, || {
            let nets = self
                .connection()
                .list_all_networks(0)
                .map_err(call("list networks"))?;
            nets.iter()
                .map(|n| n.xml_desc(0).map_err(call("read a network")))
                .collect()
        })
    }

    /// Defines the network when missing and starts it when inactive; true
    /// when it was defined now (from `xml`).
    pub fn ensure_network(&self, name: &str, xml: &str) -> Result<bool, VirtError> {
        self.guarded(true, || {
            let (net, defined) = match self.network(name)? {
                Some(n) => (n, false),
                None => (
                    self.connection()
                        .define_network_xml(xml)
                        .map_err(call(format!("define network {name}")))?,
                    true,
                ),
            };
            crate::fault::point("up.network-defined");
            if !net
                .is_active()
                .map_err(call(format!("query network {name}")))?
            {
                net.create()
                    .map_err(call(format!("start network {name}")))?;
            }
            Ok(defined)
        })
    }

    /// Adds a DHCP host reservation to a running network and its definition.
    pub fn add_dhcp_host(&self, name: &str, host_xml: &str) -> Result<(), VirtError> {
        self.update_dhcp_host(name, host_xml, sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST)
    }

    pub fn remove_dhcp_host(&self, name: &str, host_xml: &str) -> Result<(), VirtError> {
        self.update_dhcp_host(name, host_xml, sys::VIR_NETWORK_UPDATE_COMMAND_DELETE)
    }

    fn update_dhcp_host(
        &self,
        name: &str,
        host_xml: &str,
        command: sys::virNetworkUpdateCommand,
    ) -> Result<(), VirtError> {
        self.guarded(false, || {
            let Some(net) = self.network(name)? else {
                return Ok(());
            };
            let mut flags = sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG;
            if net.is_active().unwrap_or(false) {
                flags |= sys::VIR_NETWORK_UPDATE_AFFECT_LIVE;
            }
            net.update(
                command,
                sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
                -1,
                host_xml,
                flags,
            )
            .map_err(call(format!("update the DHCP hosts of network {name}")))
        })
    }

    /// Stops and undefines a network. Missing is fine.
    pub fn remove_network(&self, name: &str) -> Result<(), VirtError> {
        self.guarded(true, || {
            let Some(net) = self.network(name)? else {
                return Ok(());
            };
            if net.is_active().unwrap_or(false) {
                net.destroy()
                    .map_err(call(format!("stop network {name}")))?;
            }
            match net.undefine() {
                Ok(()) => Ok(()),
                Err(e) if is_missing(&e) => Ok(()),
                Err(e) => Err(call(format!("undefine network {name}"))(e)),
            }
        })
    }

    // ---- storage -------------------------------------------------------

    /// Defines, builds and starts the pool when needed; returns its directory.
    pub fn ensure_pool(&self, spec: &PoolSpec) -> Result<PathBuf, VirtError> {
        self.guarded(true, || {
            let pool = match optional(
                self.connection().lookup_storage_pool_by_name(&spec.name),
                "look up the storage pool",
            )? {
                Some(p) => p,
                None => {
                    let p = self
                        .connection()
                        .define_storage_pool_xml(&spec.to_xml(), 0)
                        .map_err(call(format!("define storage pool {}", spec.name)))?;
                    p.set_autostart(true).ok();
                    p
                }
            };
            if !pool.is_active().map_err(call("query the storage pool"))? {
                // For a directory pool, building means creating the directory.
                pool.build(0)
                    .map_err(call(format!("build storage pool {}", spec.name)))?;
                pool.create(0)
                    .map_err(call(format!("start storage pool {}", spec.name)))?;
            }
            pool_target(&pool)
        })
    }

    /// The directory of an existing storage pool (`None`: not defined).
    pub fn pool_path(&self, name: &str) -> Result<Option<PathBuf>, VirtError> {
        self.guarded(true, || {
            match optional(
                self.connection().lookup_storage_pool_by_name(name),
                "look up the storage pool",
            )? {
                Some(p) => pool_target(&p).map(Some),
                None => Ok(None),
            }
        })
    }

    pub(super) fn pool(&self, pool: &str) -> Result<StoragePool, VirtError> {
        self.connection()
            .lookup_storage_pool_by_name(pool)
            .map_err(call(format!("look up storage pool {pool}")))
    }

    pub(super) fn volume(&self, pool: &str, name: &str) -> Result<Option<StorageVol>, VirtError> {
        let Some(p) = optional(
            self.connection().lookup_storage_pool_by_name(pool),
            "look up the storage pool",
        )?
        else {
            return Ok(None);
        };
        if !p.is_active().unwrap_or(false) {
            return Ok(None);
        }
        optional(
            p.lookup_storage_vol_by_name(name),
            &format!("look up volume {name}"),
        )
    }

    /// Path of a volume, if it exists.
    pub fn volume_path(&self, pool: &str, name: &str) -> Result<Option<PathBuf>, VirtError> {
        self.guarded(true, || match self.volume(pool, name)? {
            Some(v) => Ok(Some(PathBuf::from(
                v.path()
                    .map_err(call(format!("read the path of volume {name}")))?,
            ))),
            None => Ok(None),
        })
    }

    pub fn create_volume(&self, pool: &str, xml: &str) -> Result<PathBuf, VirtError> {
        self.guarded(false, || {
            let p = self.pool(pool)?;
            let vol = StorageVol::create_xml(&p, xml, 0).map_err(call("create a volume"))?;
            Ok(PathBuf::from(
                vol.path().map_err(call("read a new volume's path"))?,
            ))
        })
    }

    /// Deletes a volume. Missing is fine.
    pub fn delete_volume(&self, pool: &str, name: &str) -> Result<(), VirtError> {
        self.guarded(true, || match self.volume(pool, name)? {
            Some(v) => v.delete(0).map_err(call(format!("delete volume {name}"))),
            None => Ok(()),
        })
    }

    /// Makes libvirt notice files placed in the pool directory by hand.
    pub fn refresh_pool(&self, pool: &str) -> Result<(), VirtError> {
        self.guarded(true, || {
            self.pool(pool)?
                .refresh(0)
                .map_err(call(format!("refresh storage pool {pool}")))
        })
    }

    pub fn volume_names(&self, pool: &str) -> Result<Vec<String>, VirtError> {
        self.guarded(true, || {
            match optional(
                self.connection().lookup_storage_pool_by_name(pool),
                "look up the storage pool",
            )? {
                Some(p) => p.list_volumes().map_err(call("list volumes")),
                None => Ok(Vec::new()),
            }
        })
    }
}

/// A storage pool's target directory, from its XML.
fn pool_target(pool: &StoragePool) -> Result<PathBuf, VirtError> {
    let xml = pool.xml_desc(0).map_err(call("read the storage pool"))?;
    #[derive(serde::Deserialize)]
    struct PoolDoc {
        target: PoolTarget,
    }
    #[derive(serde::Deserialize)]
    struct PoolTarget {
        path: PathBuf,
    }
    let doc: PoolDoc = quick_xml::de::from_str(&xml)
        .map_err(|e| VirtError::other("read the storage pool's path", e.to_string()))?;
    Ok(doc.target.path)
}
