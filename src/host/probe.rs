//! The probe guest: does KVM run an ordinary guest here, and with which CPU
//! modes? Creating a VM is not enough (kvm_pvm creates VMs that cannot run
//! real-mode code), so this boots a 512-byte boot sector that does a
//! real-mode `iret` (what SYSLINUX died on) and then writes to QEMU's
//! isa-debug-exit port. Under a working accelerator that takes well under a
//! second; under kvm_pvm SeaBIOS never gets there. Each CPU mode is one
//! qemu process, all run in parallel, each killed after a timeout.
//!
//! The result is cached (keyed by kernel, qemu binary, CPU flags and KVM
//! modules), so a plain `host check` can report it without booting anything.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The boot sector: cli; ss:sp = 0:7c00; pushf; push cs; push 7c0e; iret;
/// then `out 0xf4, 0x2a` (QEMU exits with status 0x2a*2+1 = 85); hlt.
const BOOT_CODE: [u8; 23] = [
    0xFA, 0x31, 0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x7C, 0x9C, 0x0E, 0x68, 0x0E, 0x7C, 0xCF, 0xBA, 0xF4,
    0x00, 0xB0, 0x2A, 0xEE, 0xF4, 0xEB, 0xFD,
];
const EXIT_OK: i32 = 0x2a * 2 + 1;

fn boot_sector() -> [u8; 512] {
    let mut img = [0u8; 512];
    img[..BOOT_CODE.len()].copy_from_slice(&BOOT_CODE);
    img[510] = 0x55;
    img[511] = 0xAA;
    img
}

/// One accelerator + CPU mode to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    pub accel: &'static str,
    pub cpu: &'static str,
}

/// What libvirt's CPU modes map to: host-passthrough = `host`,
/// maximum = `max`, a named model = `qemu64`.
pub const KVM_TRIALS: [Trial; 3] = [
    Trial {
        accel: "kvm",
        cpu: "host",
    },
    Trial {
        accel: "kvm",
        cpu: "max",
    },
    Trial {
        accel: "kvm",
        cpu: "qemu64",
    },
];
pub const TCG_TRIAL: Trial = Trial {
    accel: "tcg",
    cpu: "qemu64",
};

/// How one trial ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// The guest ran to the end.
    Ran,
    /// KVM stopped the guest ("KVM internal error ...").
    KvmError(String),
    /// qemu refused to start the guest (e.g. "failed to set MSR 0x10a").
    Aborted(String),
    /// No progress before the timeout (kvm_pvm: SeaBIOS hangs).
    Hung,
}

impl Outcome {
    pub fn ran(&self) -> bool {
        matches!(self, Outcome::Ran)
    }

    pub fn describe(&self) -> String {
        match self {
            Outcome::Ran => "runs".into(),
            Outcome::KvmError(m) => format!("KVM error: {m}"),
            Outcome::Aborted(m) => format!("qemu aborts: {m}"),
            Outcome::Hung => "hangs (the guest makes no progress)".into(),
        }
    }
}

/// Pure: a trial's outcome from qemu's exit status and stderr.
pub fn interpret(exit: Option<i32>, stderr: &str, timed_out: bool) -> Outcome {
    let first_error = || {
        stderr
            .lines()
            .find(|l| !l.contains("warning:"))
            .or_else(|| stderr.lines().next())
            .unwrap_or("no message")
            .trim()
            .trim_start_matches("qemu-system-x86_64: ")
            .to_owned()
    };
    if let Some(line) = stderr.lines().find(|l| l.contains("KVM internal error")) {
        return Outcome::KvmError(line.trim().to_owned());
    }
    if exit == Some(EXIT_OK) {
        return Outcome::Ran;
    }
    if timed_out {
        return Outcome::Hung;
    }
    Outcome::Aborted(first_error())
}

/// Runs one trial with `qemu` (the qemu-system-x86_64 binary).
pub fn run_trial(qemu: &Path, image: &Path, trial: Trial, timeout: Duration) -> Outcome {
    let mut child = match Command::new(qemu)
        .args(["-machine", &format!("pc,accel={}", trial.accel)])
        .args([
            "-cpu",
            trial.cpu,
            "-m",
            "16",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-monitor", "none", "-serial", "none", "-net", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=ide,snapshot=on",
            image.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Aborted(format!("cannot run {}: {e}", qemu.display())),
    };
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let (exit, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(st)) => break (st.code(), false),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
        }
    };
    let err = reader.join().unwrap_or_default();
    interpret(exit, &err, timed_out)
}

/// All trials and their outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Identifies the host state the probe ran under.
    pub key: String,
    pub results: Vec<(String, Outcome)>,
    pub seconds: f32,
}

impl ProbeReport {
    fn outcome(&self, accel: &str, cpu: &str) -> Option<&Outcome> {
        let label = format!("{accel}/{cpu}");
        self.results
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, o)| o)
    }

    /// KVM runs an ordinary guest with at least one CPU mode.
    pub fn kvm_runs(&self) -> bool {
        self.results
            .iter()
            .any(|(l, o)| l.starts_with("kvm/") && o.ran())
    }

    pub fn tcg_runs(&self) -> bool {
        self.outcome("tcg", "qemu64").is_some_and(Outcome::ran)
    }

    /// KVM CPU modes that ran (`host`, `max`, `qemu64`).
    pub fn kvm_cpu_modes(&self) -> Vec<&str> {
        self.results
            .iter()
            .filter(|(l, o)| l.starts_with("kvm/") && o.ran())
            .map(|(l, _)| &l[4..])
            .collect()
    }
}

/// Runs the probe: the KVM trials when /dev/kvm exists, and TCG.
pub fn run(qemu: &Path, with_kvm: bool, timeout: Duration) -> anyhow::Result<ProbeReport> {
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("probe.img");
    std::fs::write(&image, boot_sector())?;
    let start = Instant::now();
    let mut trials = vec![TCG_TRIAL];
    if with_kvm {
        trials.extend(KVM_TRIALS);
    }
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = trials
            .iter()
            .map(|&t| {
                let image = &image;
                s.spawn(move || {
                    (
                        format!("{}/{}", t.accel, t.cpu),
                        run_trial(qemu, image, t, timeout),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    Ok(ProbeReport {
        key: cache_key(qemu),
        results,
        seconds: start.elapsed().as_secs_f32(),
    })
}

/// What the probe's answer depends on.
pub fn cache_key(qemu: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    h.update(read("/proc/sys/kernel/osrelease"));
    let cpuinfo = read("/proc/cpuinfo");
    if let Some(flags) = cpuinfo.lines().find(|l| l.starts_with("flags")) {
        h.update(flags);
    }
    for m in ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm"] {
        h.update([Path::new("/sys/module").join(m).exists() as u8]);
    }
    if let Ok(md) = std::fs::metadata(qemu) {
        h.update(md.size().to_le_bytes());
        h.update(md.mtime().to_le_bytes());
    }
    h.update([Path::new("/dev/kvm").exists() as u8]);
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Cache file (`KVMDRIVE_CACHE_DIR` overrides the directory).
pub fn cache_path() -> PathBuf {
    std::env::var_os("KVMDRIVE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kvmdrive"))
        .join("kvm-probe.json")
}

/// The cached report, if it was made under the same host state.
pub fn cached(qemu: &Path) -> Option<ProbeReport> {
    let report: ProbeReport = serde_json::from_slice(&std::fs::read(cache_path()).ok()?).ok()?;
    (report.key == cache_key(qemu)).then_some(report)
}

pub fn store(report: &ProbeReport) -> anyhow::Result<()> {
    let path = cache_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(report)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sector_is_bootable() {
        let b = boot_sector();
        assert_eq!(&b[510..], &[0x55, 0xAA]);
        // `push word 0x7c0e` targets the instruction right after `iret`.
        assert_eq!(b[13], 0xCF);
        assert_eq!(u16::from_le_bytes([b[11], b[12]]), 0x7c00 + 14);
    }

    #[test]
    fn outcomes() {
        assert_eq!(interpret(Some(85), "", false), Outcome::Ran);
        assert_eq!(interpret(None, "", true), Outcome::Hung);
        assert_eq!(
            interpret(Some(1), "qemu-system-x86_64: warning: host doesn't support pni\nqemu-system-x86_64: error: failed to set MSR 0x10a to 0x0\n", false),
            Outcome::Aborted("error: failed to set MSR 0x10a to 0x0".into())
        );
        assert!(matches!(
            interpret(
                None,
                "KVM internal error. Suberror: 1\nemulation failure\n",
                true
            ),
            Outcome::KvmError(_)
        ));
    }

    #[test]
    fn report_summaries() {
        let r = ProbeReport {
            key: String::new(),
            results: vec![
                ("tcg/qemu64".into(), Outcome::Ran),
                (
                    "kvm/host".into(),
                    Outcome::Aborted("failed to set MSR 0x10a".into()),
                ),
                ("kvm/qemu64".into(), Outcome::Ran),
            ],
            seconds: 0.5,
        };
        assert!(r.kvm_runs());
        assert!(r.tcg_runs());
        assert_eq!(r.kvm_cpu_modes(), vec!["qemu64"]);
    }
}
