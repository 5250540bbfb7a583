//! Fault points: a test hook that kills kvmdrive with SIGKILL at a named
//! place, so tests can check what a cancelled CI job (or an OOM kill, or a
//! power cut of the runner) leaves behind. Lifecycle and box code call
//! [`point`] at the moments worth killing at; when the environment variable
//! `KVMDRIVE_FAULT_KILL_AT` names that point (`NAME`, or `NAME@N` for its
//! N-th hit in this process), the process raises SIGKILL on itself. Otherwise
//! a point costs one lookup of a value read once per process. Always
//! compiled in (a cargo feature would make CI build and test a second
//! binary); see docs/reliability.md for the list and what each kill leaves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms a point.
pub const ENV: &str = "KVMDRIVE_FAULT_KILL_AT";

/// Every fault point, in the order a command reaches them.
pub const POINTS: &[&str] = &[
    "up.pool-ready",
    "up.base-import",
    "up.network-defined",
    "up.network-started",
    "up.dhcp-reserved",
    "up.domain-defined",
    "up.domain-started",
    "up.ssh-wait",
    "up.key-replaced",
    "up.state-write",
    "destroy.domain",
    "destroy.overlay",
    "destroy.disks",
    "destroy.nvram",
    "destroy.reservation",
    "destroy.machine-state",
    "destroy.network",
    "box.download",
    "box.unpack",
    "box.rename",
];

/// The armed point and the hit that kills.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    name: String,
    nth: u64,
}

static TARGET: OnceLock<Option<Target>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// `NAME` or `NAME@N` (N >= 1); anything else arms nothing.
fn parse(spec: &str) -> Option<Target> {
    let spec = spec.trim();
    let (name, nth) = match spec.split_once('@') {
        Some((n, k)) => (n, k.parse::<u64>().ok().filter(|k| *k >= 1)?),
        None => (spec, 1),
    };
    (!name.is_empty()).then(|| Target {
        name: name.to_owned(),
        nth,
    })
}

/// Kills the process with SIGKILL when `name` is the armed point (at its
/// N-th hit); does nothing otherwise.
pub fn point(name: &str) {
    let target = TARGET.get_or_init(|| std::env::var(ENV).ok().as_deref().and_then(parse));
    let Some(t) = target else { return };
    if t.name != name {
        return;
    }
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 == t.nth {
        kill();
    }
}

fn kill() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; should raise fail, abort is the nearest thing.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_point_and_optionally_a_hit() {
        assert_eq!(
            parse("up.ssh-wait"),
            Some(Target {
                name: "up.ssh-wait".into(),
                nth: 1
            })
        );
        assert_eq!(
            parse("box.unpack@3"),
            Some(Target {
                name: "box.unpack".into(),
                nth: 3
            })
        );
        assert_eq!(parse("box.unpack@0"), None);
        assert_eq!(parse("box.unpack@x"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("@2"), None);
    }

    #[test]
    fn an_unarmed_point_returns() {
        // The test process has no KVMDRIVE_FAULT_KILL_AT naming this point.
        point("no.such-point");
    }

    #[test]
    fn every_point_is_documented_and_exercised() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let docs = std::fs::read_to_string(root.join("docs/reliability.md")).unwrap();
        let harness = std::fs::read_to_string(root.join("tests/faults/run")).unwrap();
        let mut src = String::new();
        let mut dirs = vec![root.join("src")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") && !path.ends_with("fault.rs")
                {
                    src.push_str(&std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        for p in POINTS {
            assert!(
                src.contains(&format!("fault::point(\"{p}\")")),
                "{p} is never called"
            );
            assert!(docs.contains(&format!("`{p}`")), "{p} not in docs");
            assert!(harness.contains(p), "{p} not in tests/faults/run");
        }
    }
}
