//! After a machine's first login in an `up`: its extra NICs configured
//! inside the guest (probe, one script per network system, then a wait for
//! the static and reserved addresses) and its forwarded ports (re)started.
//! [`super::net_apply`] re-exports [`after_ready`]; failures are
//! [`NetApplyError`]s.

use super::lifecycle::Env;
use super::net_error::NetApplyError;
use super::nics;
use super::plan::MachinePlan;
use super::project::MachineRecord;
use super::ssh::{shell_quote, SshTarget};
use super::{forward, guest_net};

/// How long `up` waits for the extra NICs' addresses. A DHCP client under
/// TCG, with its retry back-off, can need tens of seconds; the wait costs
/// nothing once every address is there.
const ADDRESS_WAIT_SECS: u32 = 60;

/// After the first login: configures the extra NICs inside the guest and
/// (re)starts the forwarded ports. Nothing to do under libvirt's test driver.
pub fn after_ready(
    env: &Env,
    plan: &MachinePlan,
    record: &MachineRecord,
) -> Result<(), NetApplyError> {
    if env.hv.is_test_driver() {
        return Ok(());
    }
    let machine = plan.machine.name.0.as_str();
    let name = Some(machine);
    let wanted: Vec<&nics::NicPlan> = plan.nics.iter().filter(|n| n.auto_config).collect();
    if !wanted.is_empty() {
        let target = SshTarget::from_record(record);
        let probe = run(
            machine,
            &target,
            "probing the guest's network",
            guest_net::PROBE_SCRIPT,
        )?;
        let probe = guest_net::parse_probe(&probe);
        let system = probe.system.ok_or_else(|| NetApplyError::NoSystem {
            machine: machine.into(),
        })?;
        let mut guest_nics = Vec::new();
        for n in wanted {
            let mac = n.interface.mac.to_ascii_lowercase();
            let Some((_, ifname)) = probe.interfaces.iter().find(|(m, _)| *m == mac) else {
                return Err(missing_nic(env, plan, n, mac));
            };
            guest_nics.push(guest_net::GuestNic {
                mac,
                ifname: ifname.clone(),
                address: n.address,
            });
        }
        let script = guest_net::configure_script(system, &guest_nics);
        let out = run(
            machine,
            &target,
            "writing and applying the configuration",
            &format!("sudo -n sh -c {}", shell_quote(&script)),
        )?;
        env.out.detail(
            name,
            format!(
                "extra NICs ({}): {}",
                system.as_str(),
                out.lines().last().unwrap_or("").trim()
            ),
        );
        // Static and reserved addresses the configured NICs must get.
        let expected: Vec<std::net::Ipv4Addr> = plan
            .nics
            .iter()
            .zip(&record.networks)
            .filter(|(n, _)| n.auto_config)
            .filter_map(|(_, a)| a.ip)
            .collect();
        if !expected.is_empty() {
            let wait = guest_net::wait_script(&expected, ADDRESS_WAIT_SECS);
            if let Err(e) = run(machine, &target, "waiting for the addresses", &wait) {
                env.out.warn(
                    name,
                    format!("extra NICs: not every address came up in {ADDRESS_WAIT_SECS} s ({e})"),
                );
            }
        }
    }
    let dir = env.project.machine_dir(machine);
    let forward_err = |source| NetApplyError::Forward {
        machine: machine.into(),
        source,
    };
    if let Some(pid) =
        forward::start(&dir, record, &plan.machine.forwarded_ports).map_err(forward_err)?
    {
        env.out.step(
            name,
            format!(
                "forwarding {} (ssh pid {pid})",
                plan.machine
                    .forwarded_ports
                    .iter()
                    .map(|p| format!("{}:{} -> {}", p.host_ip, p.host, p.guest))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    Ok(())
}

/// Why the guest shows no interface for a declared NIC: the domain lacks it
/// (made before the network was declared) or the guest has no driver.
fn missing_nic(env: &Env, plan: &MachinePlan, n: &nics::NicPlan, mac: String) -> NetApplyError {
    let machine = plan.machine.name.0.clone();
    let network = n.label.clone();
    let in_domain = match env.hv.domain_xml(&plan.domain) {
        Ok(Some(xml)) => super::net_apply::domain_macs(&xml)
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&mac)),
        _ => true,
    };
    if in_domain {
        NetApplyError::NoGuestInterface {
            machine,
            mac,
            model: n.interface.model.as_str(),
            network,
        }
    } else {
        NetApplyError::NicNotInDomain {
            machine,
            mac,
            network,
        }
    }
}

/// Runs a script over SSH; its stdout, or an error naming `step`.
fn run(
    machine: &str,
    target: &SshTarget,
    step: &'static str,
    script: &str,
) -> Result<String, NetApplyError> {
    let out = target
        .run(script, 10)
        .map_err(|source| NetApplyError::Ssh {
            machine: machine.into(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetApplyError::Script {
            machine: machine.into(),
            step,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
