//! A domain's network interfaces as typed `<interface>` elements: on a
//! libvirt network (the management NAT network, private networks), macvtap on
//! a host device (`type='direct'`, public networks), or an existing host
//! bridge. [`super::domain`] puts them in `<devices>`, management NIC first.

use serde::Serialize;

use crate::project::net_config::{DirectMode, NicModel};

/// Where an interface is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSource {
    /// A libvirt network by name.
    Network(String),
    /// macvtap on a host device.
    Direct { dev: String, mode: DirectMode },
    /// An existing host bridge.
    Bridge(String),
}

/// One NIC of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    pub mac: String,
    pub model: NicModel,
    pub source: InterfaceSource,
}

#[derive(Serialize)]
#[serde(rename = "interface")]
pub(crate) struct InterfaceXml<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    mac: Mac<'a>,
    source: Source<'a>,
    model: Model,
}

#[derive(Serialize)]
struct Mac<'a> {
    #[serde(rename = "@address")]
    address: &'a str,
}

#[derive(Serialize)]
struct Source<'a> {
    #[serde(rename = "@network", skip_serializing_if = "Option::is_none")]
    network: Option<&'a str>,
    #[serde(rename = "@bridge", skip_serializing_if = "Option::is_none")]
    bridge: Option<&'a str>,
    #[serde(rename = "@dev", skip_serializing_if = "Option::is_none")]
    dev: Option<&'a str>,
    #[serde(rename = "@mode", skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
}

#[derive(Serialize)]
struct Model {
    #[serde(rename = "@type")]
    kind: &'static str,
}

impl InterfaceSpec {
    pub(crate) fn as_xml(&self) -> InterfaceXml<'_> {
        let none = Source {
            network: None,
            bridge: None,
            dev: None,
            mode: None,
        };
        let (kind, source) = match &self.source {
            InterfaceSource::Network(n) => (
                "network",
                Source {
                    network: Some(n),
                    ..none
                },
            ),
            InterfaceSource::Direct { dev, mode } => (
                "direct",
                Source {
                    dev: Some(dev),
                    mode: Some(mode.as_str()),
                    ..none
                },
            ),
            InterfaceSource::Bridge(b) => (
                "bridge",
                Source {
                    bridge: Some(b),
                    ..none
                },
            ),
        };
        InterfaceXml {
            kind,
            mac: Mac { address: &self.mac },
            source,
            model: Model {
                kind: self.model.as_str(),
            },
        }
    }

    /// The `<interface>` element alone.
    pub fn to_xml(&self) -> String {
        super::to_xml(&self.as_xml()).trim_end().to_owned()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One NIC of each kind (private network with e1000, macvtap, bridge).
    pub fn extra_nics() -> Vec<InterfaceSpec> {
        vec![
            InterfaceSpec {
                mac: "52:54:00:12:34:57".into(),
                model: NicModel::E1000,
                source: InterfaceSource::Network("kvmdrive-1a2b3c-backend".into()),
            },
            InterfaceSpec {
                mac: "52:54:00:12:34:58".into(),
                model: NicModel::Virtio,
                source: InterfaceSource::Direct {
                    dev: "eth0".into(),
                    mode: DirectMode::Bridge,
                },
            },
            InterfaceSpec {
                mac: "52:54:00:12:34:59".into(),
                model: NicModel::Rtl8139,
                source: InterfaceSource::Bridge("br0".into()),
            },
        ]
    }

    #[test]
    fn each_kind_has_its_type_and_source() {
        let x: Vec<String> = extra_nics().iter().map(InterfaceSpec::to_xml).collect();
        assert!(
            x[0].contains(r#"type="network""#)
                && x[0].contains(r#"<source network="kvmdrive-1a2b3c-backend"/>"#),
            "{}",
            x[0]
        );
        assert!(x[0].contains(r#"<model type="e1000"/>"#), "{}", x[0]);
        assert!(
            x[1].contains(r#"type="direct""#)
                && x[1].contains(r#"<source dev="eth0" mode="bridge"/>"#),
            "{}",
            x[1]
        );
        assert!(
            x[2].contains(r#"type="bridge""#) && x[2].contains(r#"<source bridge="br0"/>"#),
            "{}",
            x[2]
        );
    }
}
