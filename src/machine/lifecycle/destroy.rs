//! `destroy`: machines removed (domain, overlay and extra disks, NVRAM,
//! DHCP reservation, console log, forwarded ports, state), also those since
//! removed from the config; with the last one the project's networks and
//! `.kvmdrive/`. Nothing to remove is not an error.

use super::{collect, parallel, remaining_domains, select, Env, Failure, LifecycleError};
use crate::machine::{netplan, plan};
use crate::project::config::Config;
use crate::virt::storage::POOL_NAME;

/// Removes machines (domain, disk, reservation, console log, state); with
/// the last one also the network and `.kvmdrive/`. Nothing to remove is fine.
pub fn destroy(env: &Env, config: &Config, names: &[String]) -> Result<(), LifecycleError> {
    if !names.is_empty() {
        select(config, names)?;
    }
    if !config.hosts.is_empty() {
        return super::hosts::destroy(env, config, names);
    }
    let _lock = env.project.lock()?;
    let targets: Vec<String> = config.machines().into_iter().map(|m| m.name.0).collect();
    if destroy_on_host(env, targets, names)? {
        env.project.remove_state()?;
    }
    Ok(())
}

/// Removes `targets` (restricted to `names` unless empty) and any of the
/// project's domains the host of `env` still has (e.g. machines since
/// removed from kvmdrive.yml), with the project lock held; with the last
/// one the host's project networks. True when the host has none of the
/// project's domains left.
pub(super) fn destroy_on_host(
    env: &Env,
    mut targets: Vec<String>,
    names: &[String],
) -> Result<bool, LifecycleError> {
    let remaining = remaining_domains(env)?;
    for d in &remaining {
        if !targets.contains(&d.machine) {
            targets.push(d.machine.clone());
        }
    }
    targets.retain(|t| names.is_empty() || names.contains(t));
    let network = plan::network_name(env.project);
    // When every machine goes, so does the network, and its reservations
    // with it: removing each first would cost a dnsmasq restart apiece
    // (0.4 s). A machine that fails to go keeps the network, and its
    // reservation stays for its next `up` (same MAC, same address).
    let network_goes = remaining.iter().all(|d| targets.contains(&d.machine));
    let reservations_of = (!network_goes).then_some(network.as_str());
    let results = parallel(&targets, |t| {
        (t.clone(), destroy_one(env, t, reservations_of))
    });
    collect(env.out, results)?;
    for n in crate::machine::net_apply::remove_unused(env, &targets)? {
        env.out.step(None, format!("removed network {n}"));
    }
    if !remaining_domains(env)?.is_empty() {
        return Ok(false);
    }
    if env.hv.network_exists(&network)? {
        env.hv.remove_network(&network)?;
        env.out.step(None, format!("removed network {network}"));
    }
    crate::fault::point("destroy.network");
    crate::machine::base_import::remove_stale(&env.pool_dir);
    Ok(true)
}

/// Removes one machine; its DHCP reservation too when `reservations_of`
/// names the network (None: the network goes with the last machine).
fn destroy_one(env: &Env, machine: &str, reservations_of: Option<&str>) -> Result<(), Failure> {
    let domain = plan::domain_name(env.project, machine);
    let existed = env.hv.domain_state(&domain)?.is_some();
    if let (false, Ok(Some(r))) = (env.hv.is_test_driver(), env.project.record(machine)) {
        // Else `kvmdrive ssh`'s shared connection outlives the guest.
        crate::machine::ssh::end_mux(&r);
    }
    env.hv.remove_domain(&domain)?;
    crate::fault::point("destroy.domain");
    env.hv
        .delete_volume(POOL_NAME, &plan::overlay_name(&domain))?;
    crate::fault::point("destroy.overlay");
    crate::machine::disks::remove(env.hv, &domain)?;
    crate::fault::point("destroy.disks");
    crate::machine::disks::remove_nvram(&domain);
    crate::fault::point("destroy.nvram");
    let mac = plan::mac_address(env.project, machine);
    if let Some(network) = reservations_of {
        if let Some(xml) = env.hv.network_xml(network)? {
            for h in netplan::read_network(&xml)
                .hosts
                .iter()
                .filter(|h| h.mac == mac)
            {
                env.hv.remove_dhcp_host(network, &h.to_xml())?;
            }
        }
    }
    crate::fault::point("destroy.reservation");
    if !crate::remote::is_remote(env.hv.uri()) {
        let _ = std::fs::remove_file(plan::console_log(&domain));
    }
    crate::machine::forward::stop(&env.project.machine_dir(machine));
    env.project.forget(machine)?;
    crate::fault::point("destroy.machine-state");
    env.out.step(
        Some(machine),
        if existed { "destroyed" } else { "not created" },
    );
    Ok(())
}
