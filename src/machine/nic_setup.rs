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

/// How long `up` waits for the extra NICs' addresses before it applies the
/// configuration of the NICs still without one again. A DHCP client whose
/// first exchanges went unanswered (a host slowed to a crawl under TCG)
/// waits 4, 8, 16, 32, then 64 s between tries: restarting it asks at once.
/// The wait costs nothing once every address is there.
const ADDRESS_WAIT_SECS: u32 = 40;

/// How long `up` waits again after that second apply.
const ADDRESS_RETRY_SECS: u32 = 60;

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
        // The static and reserved addresses the configured NICs must get,
        // with the NIC (index in `guest_nics`) each belongs to.
        let mut expected = Vec::new();
        for (n, addr) in plan.nics.iter().zip(&record.networks) {
            if !n.auto_config {
                continue;
            }
            let mac = n.interface.mac.to_ascii_lowercase();
            let Some((_, ifname)) = probe.interfaces.iter().find(|(m, _)| *m == mac) else {
                return Err(missing_nic(env, plan, n, mac));
            };
            if let Some(ip) = addr.ip {
                expected.push((ip, guest_nics.len()));
            }
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
        if !expected.is_empty() {
            let ips: Vec<_> = expected.iter().map(|(ip, _)| *ip).collect();
            let mut missing = wait_for(machine, &target, &ips, ADDRESS_WAIT_SECS)?;
            if !missing.is_empty() {
                let again: Vec<guest_net::GuestNic> = expected
                    .iter()
                    .filter(|(ip, _)| missing.contains(ip))
                    .map(|(_, i)| guest_nics[*i].clone())
                    .collect();
                env.out.step(
                    name,
                    format!(
                        "extra NICs: no {} after {ADDRESS_WAIT_SECS} s: applying {} again",
                        list(&missing),
                        again
                            .iter()
                            .map(|n| n.ifname.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                let apply = guest_net::apply(system, &again);
                run(
                    machine,
                    &target,
                    "applying the configuration again",
                    &format!("sudo -n sh -c {}", shell_quote(&apply)),
                )?;
                missing = wait_for(machine, &target, &missing, ADDRESS_RETRY_SECS)?;
            }
            if !missing.is_empty() {
                env.out.warn(
                    name,
                    format!(
                        "extra NICs: {} did not come up in {} s (the guest's DHCP client \
                         got no lease; `kvmdrive ssh {machine} -- networkctl status` shows why)",
                        list(&missing),
                        ADDRESS_WAIT_SECS + ADDRESS_RETRY_SECS
                    ),
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

/// Waits up to `seconds` for `ips` in the guest; the ones still missing.
fn wait_for(
    machine: &str,
    target: &SshTarget,
    ips: &[std::net::Ipv4Addr],
    seconds: u32,
) -> Result<Vec<std::net::Ipv4Addr>, NetApplyError> {
    let out = run(
        machine,
        target,
        "waiting for the addresses",
        &guest_net::wait_script(ips, seconds),
    )?;
    Ok(guest_net::parse_missing(&out))
}

fn list(ips: &[std::net::Ipv4Addr]) -> String {
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
