//! Which host each machine runs on when a project has several `hosts:`;
//! pure (capacities in, a host per machine out), so every rule is
//! unit-tested without libvirt.
//!
//! The rule: a machine that already exists stays on the host that has it;
//! a machine pinned with `host:` goes there; every other machine, in
//! config order, goes to the host with the most free memory left after what
//! this plan already placed on it (in 256 MiB steps, so that readings a few
//! pages apart count as equal), then the most CPUs per vCPU already placed,
//! then the host listed first. No host is given more memory than it has
//! free: a machine that fits nowhere fails the plan, naming each host's free
//! memory, before anything is created.

use std::fmt::Write as _;

/// Free memory is compared in steps of this size (MiB).
const MEMORY_STEP_MIB: u64 = 256;

/// One host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoom {
    pub uri: String,
    pub free_memory_mib: u64,
    pub cpus: u32,
}

/// One machine to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// `host:` from the config.
    pub pinned: Option<String>,
    /// The host that already has the machine's domain.
    pub existing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("machine `{machine}` ({memory_mib} MiB) fits on no host without over-committing its memory (free after this plan: {free})")]
    NoRoom {
        machine: String,
        memory_mib: u32,
        free: String,
    },
    #[error("machine `{machine}` is pinned to {host}, which has {free_mib} MiB free after this plan (it needs {memory_mib} MiB)")]
    PinnedNoRoom {
        machine: String,
        host: String,
        memory_mib: u32,
        free_mib: u64,
    },
    #[error("machine `{machine}` is pinned to {host}, which is not one of the project's hosts")]
    UnknownHost { machine: String, host: String },
}

impl PlacementError {
    pub fn hint(&self) -> String {
        match self {
            PlacementError::UnknownHost { .. } => "add the host to `hosts:`".into(),
            _ => "lower `memory`, add a host to `hosts:`, or free memory on the hosts".into(),
        }
    }
}

/// The host (index into `hosts`) of every machine, in the order of `machines`.
pub fn place(hosts: &[HostRoom], machines: &[Request]) -> Result<Vec<usize>, PlacementError> {
    let mut free: Vec<u64> = hosts.iter().map(|h| h.free_memory_mib).collect();
    let mut vcpus: Vec<u64> = vec![0; hosts.len()];
    let mut out: Vec<Option<usize>> = vec![None; machines.len()];
    let index = |m: &Request, uri: &str| {
        hosts
            .iter()
            .position(|h| h.uri == uri)
            .ok_or_else(|| PlacementError::UnknownHost {
                machine: m.name.clone(),
                host: uri.to_owned(),
            })
    };
    // Existing machines already use their host's memory: they only stay.
    for (i, m) in machines.iter().enumerate() {
        if let Some(uri) = &m.existing {
            let h = index(m, uri)?;
            vcpus[h] += u64::from(m.cpus);
            out[i] = Some(h);
        }
    }
    for (i, m) in machines.iter().enumerate() {
        let (None, Some(uri)) = (&m.existing, &m.pinned) else {
            continue;
        };
        let h = index(m, uri)?;
        let need = u64::from(m.memory_mib);
        if free[h] < need {
            return Err(PlacementError::PinnedNoRoom {
                machine: m.name.clone(),
                host: uri.clone(),
                memory_mib: m.memory_mib,
                free_mib: free[h],
            });
        }
        free[h] -= need;
        vcpus[h] += u64::from(m.cpus);
        out[i] = Some(h);
    }
    for (i, m) in machines.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let need = u64::from(m.memory_mib);
        let best = (0..hosts.len())
            .filter(|&h| free[h] >= need)
            .max_by(|&a, &b| {
                (free[a] / MEMORY_STEP_MIB)
                    .cmp(&(free[b] / MEMORY_STEP_MIB))
                    // CPUs per vCPU placed (counting this one), compared
                    // without division: cpus_a / n_a vs cpus_b / n_b.
                    .then_with(|| {
                        let ca = u64::from(hosts[a].cpus) * (vcpus[b] + 1);
                        let cb = u64::from(hosts[b].cpus) * (vcpus[a] + 1);
                        ca.cmp(&cb)
                    })
                    // The host listed first wins the remaining ties.
                    .then_with(|| b.cmp(&a))
            });
        let Some(h) = best else {
            let mut text = String::new();
            for (k, host) in hosts.iter().enumerate() {
                let _ = write!(
                    text,
                    "{}{}: {} MiB",
                    if k == 0 { "" } else { ", " },
                    host.uri,
                    free[k]
                );
            }
            return Err(PlacementError::NoRoom {
                machine: m.name.clone(),
                memory_mib: m.memory_mib,
                free: text,
            });
        };
        free[h] -= need;
        vcpus[h] += u64::from(m.cpus);
        out[i] = Some(h);
    }
    Ok(out
        .into_iter()
        .map(|h| h.expect("every machine was placed above"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(uri: &str, free_memory_mib: u64, cpus: u32) -> HostRoom {
        HostRoom {
            uri: uri.into(),
            free_memory_mib,
            cpus,
        }
    }

    fn req(name: &str, memory_mib: u32) -> Request {
        Request {
            name: name.into(),
            memory_mib,
            cpus: 1,
            pinned: None,
            existing: None,
        }
    }

    #[test]
    fn equal_hosts_get_two_and_two_in_a_fixed_order() {
        let hosts = [host("a", 8192, 2), host("b", 8192, 2)];
        let ms: Vec<_> = ["m1", "m2", "m3", "m4"]
            .iter()
            .map(|n| req(n, 512))
            .collect();
        assert_eq!(place(&hosts, &ms).unwrap(), vec![0, 1, 0, 1]);
    }

    #[test]
    fn readings_a_few_pages_apart_count_as_equal() {
        // b reads 3 MiB more (memory moved between the two calls): the
        // first machine still goes to the host listed first.
        let hosts = [host("a", 8000, 2), host("b", 8003, 2)];
        assert_eq!(place(&hosts, &[req("m1", 512)]).unwrap(), vec![0]);
    }

    #[test]
    fn the_host_with_more_free_memory_takes_machines_until_it_has_less() {
        let hosts = [host("a", 2048, 2), host("b", 4096, 2)];
        let ms: Vec<_> = ["m1", "m2", "m3", "m4", "m5"]
            .iter()
            .map(|n| req(n, 512))
            .collect();
        // b: 4096 -> 3584 -> 3072 -> 2560 -> 2048 (= a) -> then a first.
        assert_eq!(place(&hosts, &ms).unwrap(), vec![1, 1, 1, 1, 0]);
    }

    #[test]
    fn equal_memory_prefers_the_host_with_more_cpus_per_placed_vcpu() {
        let hosts = [host("a", 8192, 1), host("b", 8192, 8)];
        assert_eq!(place(&hosts, &[req("m1", 256)]).unwrap(), vec![1]);
    }

    #[test]
    fn pinned_and_existing_machines_stay_and_count() {
        let hosts = [host("a", 4096, 2), host("b", 4096, 2)];
        let mut pinned = req("p", 1024);
        pinned.pinned = Some("a".into());
        let mut existing = req("e", 4096);
        existing.existing = Some("b".into());
        existing.pinned = Some("a".into()); // a pin changed later does not move it
        let ms = [pinned, existing, req("n", 512)];
        // a: 4096 - 1024 = 3072 left; b: 4096 (the existing machine's memory
        // is already out of libvirt's free memory): n goes to b.
        assert_eq!(place(&hosts, &ms).unwrap(), vec![0, 1, 1]);
    }

    #[test]
    fn never_over_commits_and_names_the_machine_and_free_memory() {
        let hosts = [
            host("qemu+ssh://a/system", 1000, 2),
            host("qemu+ssh://b/system", 700, 2),
        ];
        let e = place(&hosts, &[req("m1", 512), req("m2", 512), req("big", 600)]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("machine `big` (600 MiB)"), "{text}");
        assert!(text.contains("qemu+ssh://a/system: 488 MiB"), "{text}");
        assert!(text.contains("qemu+ssh://b/system: 188 MiB"), "{text}");
    }

    #[test]
    fn a_pin_to_a_full_host_fails() {
        let hosts = [host("a", 256, 2), host("b", 8192, 2)];
        let mut m = req("db", 512);
        m.pinned = Some("a".into());
        assert!(matches!(
            place(&hosts, &[m]),
            Err(PlacementError::PinnedNoRoom { free_mib: 256, .. })
        ));
    }

    #[test]
    fn a_pin_to_an_unlisted_host_fails() {
        let mut m = req("db", 512);
        m.pinned = Some("zz".into());
        assert!(matches!(
            place(&[host("a", 8192, 2)], &[m]),
            Err(PlacementError::UnknownHost { .. })
        ));
    }
}
