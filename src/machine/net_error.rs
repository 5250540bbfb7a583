//! Why configuring a machine's extra NICs or starting its forwarded ports
//! failed after its first login ([`super::net_apply::after_ready`]): each
//! variant names the machine and the program, interface or file involved,
//! and [`NetApplyError::hint`] says what to do next.

use super::forward::ForwardError;

#[derive(Debug, thiserror::Error)]
pub enum NetApplyError {
    #[error("cannot run `ssh` to configure the extra NICs of `{machine}`: {source}")]
    Ssh {
        machine: String,
        source: std::io::Error,
    },
    #[error("configuring the extra NICs of `{machine}` failed ({step}): {stderr}")]
    Script {
        machine: String,
        step: &'static str,
        stderr: String,
    },
    #[error(
        "cannot configure the extra NICs of `{machine}`: the guest runs none of netplan, \
         NetworkManager, systemd-networkd or ifupdown"
    )]
    NoSystem { machine: String },
    #[error(
        "`{machine}` has no NIC {mac} for network `{network}`: the machine was made before \
         that network was declared (`up` does not change the NICs of an existing machine)"
    )]
    NicNotInDomain {
        machine: String,
        mac: String,
        network: String,
    },
    #[error(
        "the guest of `{machine}` shows no interface for its {model} NIC {mac} (network \
         `{network}`): its kernel has no driver for that model"
    )]
    NoGuestInterface {
        machine: String,
        mac: String,
        model: &'static str,
        network: String,
    },
    #[error("forwarded ports of `{machine}`: {source}")]
    Forward {
        machine: String,
        source: ForwardError,
    },
}

impl NetApplyError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            NetApplyError::Ssh { .. } => {
                "install the OpenSSH client (apt-get install openssh-client)".into()
            }
            NetApplyError::Script { machine, .. } => format!(
                "see the guest's network log: kvmdrive ssh {machine} -- sudo journalctl -b -u systemd-networkd -u NetworkManager -u networking"
            ),
            NetApplyError::NoSystem { .. } => {
                "set `auto_config: false` on those networks and configure them yourself".into()
            }
            NetApplyError::NicNotInDomain { machine, .. } => format!(
                "make the machine again with every declared network: kvmdrive destroy {machine} && kvmdrive up {machine}"
            ),
            NetApplyError::NoGuestInterface { .. } => {
                "use `nic_model: virtio` for that network, or `auto_config: false` to leave it alone"
                    .into()
            }
            NetApplyError::Forward { source, .. } => return source.hint(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_names_the_machine_and_what_failed() {
        let e = NetApplyError::Ssh {
            machine: "a".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(e.to_string().contains("cannot run `ssh`"), "{e}");
        assert!(e.hint().unwrap().contains("openssh-client"));
        let e = NetApplyError::NicNotInDomain {
            machine: "a".into(),
            mac: "52:54:00:00:00:01".into(),
            network: "backend".into(),
        };
        assert!(e.to_string().contains("made before"), "{e}");
        assert!(e
            .hint()
            .unwrap()
            .contains("kvmdrive destroy a && kvmdrive up a"));
    }
}
