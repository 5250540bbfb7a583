//! Where a project's machines come from, as typed data: `kvmdrive.yml`
//! (`config`) or a Molecule scenario's platforms (`molecule`), both loaded
//! into the same machine fields (`net_config`, `hardware`, `synced_folder`,
//! `provisioner`); `${VAR}` interpolation; and `scenario`, which decides for
//! every command which of the two a directory holds and where its state
//! lives. Nothing here talks to libvirt: the output is input for
//! `machine::plan`.

pub mod config;
pub mod hardware;
pub mod hosts;
pub mod interpolate;
pub mod machine_keys;
pub mod molecule;
pub mod net_config;
pub mod provisioner;
pub mod scenario;
pub mod schema;
pub mod synced_folder;
