//! Molecule's side of a project: a scenario's `platforms` (molecule-kvmdrive
//! and molecule-vagrant key names) checked and turned into kvmdrive machines,
//! with the pieces molecule-vagrant users bring along: extra networks,
//! hardware keys, and the Ruby lines of `raw_config_args` /
//! `provider_raw_config_args` (parsed by `vagrant_ruby`, never evaluated).

pub mod hardware;
pub mod networks;
pub mod platform;
pub mod platforms;
pub mod raw_config_args;
pub mod vagrant_ruby;
pub mod yaml11;
