//! The only place that talks to libvirt. XML documents are built from typed
//! specs by pure functions (unit-testable, validated against libvirt's RNG
//! schemas in tests); [`hypervisor`] wraps the libvirt calls.

pub mod data_volume;
pub mod domain;
pub mod error;
pub mod filesystem;
pub mod guest_address;
pub mod hardware;
pub mod hypervisor;
pub mod interface;
mod link;
pub mod network;
pub mod node;
pub mod qemu_log;
pub mod snapshot;
pub mod storage;
pub mod upload;

pub use error::{VirtError, VirtErrorKind};
pub use hypervisor::Hypervisor;

/// Serialises a document struct with two-space indentation.
pub(crate) fn to_xml<T: serde::Serialize>(doc: &T) -> String {
    let mut out = String::new();
    let mut ser = quick_xml::se::Serializer::new(&mut out);
    ser.indent(' ', 2);
    doc.serialize(ser)
        .expect("libvirt documents are plain structs of strings and numbers");
    out.push('\n');
    out
}

/// `<tag/>` with no attributes or content.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Empty {}
