//! Ansible role testing without Molecule and behind the Molecule driver:
//! the create / converge / idempotence / verify / destroy steps (`steps`)
//! and how kvmdrive runs ansible-playbook against its machines (`ansible`:
//! inventory, connection settings, the playbook run; `mitogen`: the
//! driver's `mitogen: true`).

pub mod ansible;
pub mod mitogen;
pub mod steps;
