//! The probe guest: does KVM run an ordinary guest here, and with which CPU
//! modes? Creating a VM is not enough, and neither is real mode: on kvm_pvm
//! hosts with 6.18 kernels a real-mode `iret` runs while every real guest
//! dies with "KVM internal error. Suberror: 1 / emulation failure". So the
//! probe does what a kernel does early on: from the boot sector it enters
//! protected mode, turns on PAE paging with identity-mapped page tables,
//! enters long mode, loads an IDT, takes an interrupt (`int3`) whose
//! handler returns with `iretq`, and then writes to QEMU's isa-debug-exit
//! port. Under a working accelerator that takes well under a second; under
//! kvm_pvm the interrupt delivery dies with the same KVM internal error as
//! real guests (measured: real mode, protected mode, paging and long mode
//! pass; `int3` fails). Each CPU mode is one qemu process, all run in
//! parallel, each killed at its KVM error or after a timeout.
//!
//! The result is cached (keyed by [`PROBE_VERSION`], kernel, qemu binary,
//! CPU flags and KVM modules), so a plain `host check` can report it
//! without booting anything; [`cache_dir`] also holds what real guests did
//! (`super::experience`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::virt::qemu_log::is_kvm_internal_error;
use crate::wait::{wait_until, Poll};

/// Part of the cache key: a new probe guest must not reuse old verdicts
/// (the real-mode probe of version 1 said "KVM runs" on kvm_pvm hosts).
pub const PROBE_VERSION: &str = "probe-v2-long-mode-int3-iretq";

/// Where the boot sector is loaded (and so the base of every address in it).
const LOAD: u16 = 0x7c00;
/// Offsets in the sector of what the code refers to.
const HANDLER_AT: usize = 0x9b;
const GDT_AT: usize = 0xa0;
const GDTR_AT: usize = 0xc0;
const IDTR_AT: usize = 0xc6;
const IDT_AT: usize = 0xd0;
/// The vector `int3` raises; the IDT holds entries 0..=3, only 3 is set.
const VECTOR: usize = 3;

/// The code, at offset 0 (hand-assembled; byte-for-byte what GNU as makes
/// of the listing in the comments, see the tests). Page tables go to
/// 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD: one 2 MiB page at 0).
#[rustfmt::skip]
const CODE: [u8; 0x9d] = [
    // 16-bit real mode, at 0x7c00
    0xfa,                               // cli
    0x31, 0xc0,                         // xor ax, ax
    0x8e, 0xd8,                         // mov ds, ax
    0x8e, 0xc0,                         // mov es, ax
    0x8e, 0xd0,                         // mov ss, ax
    0xbc, 0x00, 0x7c,                   // mov sp, 0x7c00
    0x0f, 0x01, 0x16, 0xc0, 0x7c,       // lgdt [0x7cc0]            (GDTR_AT)
    0x0f, 0x20, 0xc0,                   // mov eax, cr0
    0x0c, 0x01,                         // or al, 1                  (PE)
    0x0f, 0x22, 0xc0,                   // mov cr0, eax
    0xea, 0x1e, 0x7c, 0x08, 0x00,       // jmp 0x08:0x7c1e           (PM32_AT, 32-bit code)
    // 32-bit protected mode, at 0x7c1e
    0x66, 0xb8, 0x10, 0x00,             // mov ax, 0x10              (flat data)
    0x8e, 0xd8,                         // mov ds, ax
    0x8e, 0xc0,                         // mov es, ax
    0x8e, 0xd0,                         // mov ss, ax
    0xbf, 0x00, 0x10, 0x00, 0x00,       // mov edi, 0x1000
    0x31, 0xc0,                         // xor eax, eax
    0xb9, 0x00, 0x0c, 0x00, 0x00,       // mov ecx, 0xc00
    0xf3, 0xab,                         // rep stosd                 (zero 0x1000..0x4000)
    0xc7, 0x05, 0x00, 0x10, 0x00, 0x00,
    0x03, 0x20, 0x00, 0x00,             // mov dword [0x1000], 0x2003 (PML4[0] -> PDPT, P|W)
    0xc7, 0x05, 0x00, 0x20, 0x00, 0x00,
    0x03, 0x30, 0x00, 0x00,             // mov dword [0x2000], 0x3003 (PDPT[0] -> PD, P|W)
    0xc7, 0x05, 0x00, 0x30, 0x00, 0x00,
    0x83, 0x00, 0x00, 0x00,             // mov dword [0x3000], 0x83   (PD[0]: 2 MiB at 0, P|W|PS)
    0xb8, 0x00, 0x10, 0x00, 0x00,       // mov eax, 0x1000
    0x0f, 0x22, 0xd8,                   // mov cr3, eax
    0x0f, 0x20, 0xe0,                   // mov eax, cr4
    0x83, 0xc8, 0x20,                   // or eax, 0x20              (PAE)
    0x0f, 0x22, 0xe0,                   // mov cr4, eax
    0xb9, 0x80, 0x00, 0x00, 0xc0,       // mov ecx, 0xc0000080       (EFER)
    0x0f, 0x32,                         // rdmsr
    0x0d, 0x00, 0x01, 0x00, 0x00,       // or eax, 0x100             (LME)
    0x0f, 0x30,                         // wrmsr
    0x0f, 0x20, 0xc0,                   // mov eax, cr0
    0x0d, 0x00, 0x00, 0x00, 0x80,       // or eax, 0x80000000        (PG: long mode is on)
    0x0f, 0x22, 0xc0,                   // mov cr0, eax
    0xea, 0x85, 0x7c, 0x00, 0x00, 0x18, 0x00, // jmp 0x18:0x7c85     (LM64_AT, 64-bit code)
    // 64-bit long mode, at 0x7c85
    0xbc, 0x00, 0x7c, 0x00, 0x00,       // mov esp, 0x7c00           (rsp, zero-extended)
    0x0f, 0x01, 0x1c, 0x25, 0xc6, 0x7c, 0x00, 0x00, // lidt [0x7cc6] (IDTR_AT)
    0xcc,                               // int3                      (vector 3 -> handler)
    0x66, 0xba, 0xf4, 0x00,             // mov dx, 0xf4
    0xb0, 0x2a,                         // mov al, 0x2a
    0xee,                               // out dx, al                (qemu exits 0x2a*2+1)
    0xf4,                               // hlt
    // the handler, at 0x7c9b
    0x48, 0xcf,                         // iretq
];

/// GDT: null, 32-bit flat code (0x08), flat data (0x10), 64-bit code (0x18).
const GDT: [u64; 4] = [
    0,
    0x00cf_9a00_0000_ffff,
    0x00cf_9200_0000_ffff,
    0x00af_9a00_0000_ffff,
];
const EXIT_OK: i32 = 0x2a * 2 + 1;

// The parts of the sector do not overlap, and the IDT ends before the
// boot signature (checked when compiling).
const _: () = assert!(
    CODE.len() <= GDT_AT
        && GDT_AT + 8 * GDT.len() <= GDTR_AT
        && GDTR_AT + 6 <= IDTR_AT
        && IDTR_AT + 10 <= IDT_AT
        && IDT_AT + 16 * (VECTOR + 1) <= 510
);

/// A 64-bit interrupt gate: `handler` in code segment 0x18, present, DPL 0.
fn idt_gate(handler: u64) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    g[2..4].copy_from_slice(&0x18u16.to_le_bytes());
    g[5] = 0x8e; // P=1, DPL=0, type 0xE (64-bit interrupt gate)
    g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    g
}

/// The 512-byte boot sector: code, GDT, the two table registers, the IDT.
fn boot_sector() -> [u8; 512] {
    let at = |off: usize| u32::from(LOAD) + off as u32;
    let mut img = [0u8; 512];
    img[..CODE.len()].copy_from_slice(&CODE);
    for (i, d) in GDT.iter().enumerate() {
        img[GDT_AT + 8 * i..GDT_AT + 8 * i + 8].copy_from_slice(&d.to_le_bytes());
    }
    // lgdt operand: limit, 32-bit base.
    img[GDTR_AT..GDTR_AT + 2].copy_from_slice(&(8 * GDT.len() as u16 - 1).to_le_bytes());
    img[GDTR_AT + 2..GDTR_AT + 6].copy_from_slice(&at(GDT_AT).to_le_bytes());
    // lidt operand in long mode: limit, 64-bit base.
    img[IDTR_AT..IDTR_AT + 2].copy_from_slice(&(16 * (VECTOR as u16 + 1) - 1).to_le_bytes());
    img[IDTR_AT + 2..IDTR_AT + 10].copy_from_slice(&u64::from(at(IDT_AT)).to_le_bytes());
    let gate = IDT_AT + 16 * VECTOR;
    img[gate..gate + 16].copy_from_slice(&idt_gate(u64::from(at(HANDLER_AT))));
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
    if let Some(line) = stderr.lines().find(|l| is_kvm_internal_error(l)) {
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
    let stderr = child.stderr.take().expect("piped");
    // qemu pauses a guest at a KVM internal error and waits: the reader
    // says so as soon as the line appears, so the trial ends there.
    let kvm_error = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&kvm_error);
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if is_kvm_internal_error(&line) {
                seen.store(true, Ordering::Relaxed);
            }
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    let finished = wait_until(Poll::every(Duration::from_millis(20), timeout), || {
        Ok::<_, std::convert::Infallible>(match child.try_wait() {
            Ok(Some(st)) => Some((st.code(), false)),
            Ok(None) if kvm_error.load(Ordering::Relaxed) => {
                let _ = child.kill();
                let _ = child.wait();
                Some((None, false))
            }
            Ok(None) => None,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Some((None, true))
            }
        })
    });
    let (exit, timed_out) = finished.unwrap_or_else(|_| {
        let _ = child.kill();
        let _ = child.wait();
        (None, true)
    });
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
pub fn run(qemu: &Path, with_kvm: bool, timeout: Duration) -> std::io::Result<ProbeReport> {
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
    h.update(PROBE_VERSION);
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

/// [`cache_key`] for the qemu-system-x86_64 on PATH (what libvirt runs).
pub fn host_key() -> String {
    let qemu = super::programs::find_program("qemu-system-x86_64")
        .unwrap_or_else(|| PathBuf::from("/usr/bin/qemu-system-x86_64"));
    cache_key(&qemu)
}

/// The directory of the probe's cache and of what real guests did
/// (`KVMDRIVE_CACHE_DIR` overrides `/var/cache/kvmdrive`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("KVMDRIVE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kvmdrive"))
}

/// Cache file of the probe's report.
pub fn cache_path() -> PathBuf {
    cache_dir().join("kvm-probe.json")
}

/// The cached report, if it was made under the same host state.
pub fn cached(qemu: &Path) -> Option<ProbeReport> {
    let report: ProbeReport = serde_json::from_slice(&std::fs::read(cache_path()).ok()?).ok()?;
    (report.key == cache_key(qemu)).then_some(report)
}

pub fn store(report: &ProbeReport) -> std::io::Result<()> {
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

    /// sha256 of the sector GNU as 2.40 assembled from the listing.
    const ASSEMBLED_SHA256: &str =
        "de30270944bdbaff58c6541e83443831cbd45f1dc52b4f4ca7e97d571c480cb7";

    fn u16_at(b: &[u8], i: usize) -> usize {
        u16::from_le_bytes([b[i], b[i + 1]]) as usize
    }
    fn u32_at(b: &[u8], i: usize) -> usize {
        u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize
    }
    const BASE: usize = LOAD as usize;
    /// Where the two far jumps land: 32-bit and 64-bit code.
    const PM32_AT: usize = 0x1e;
    const LM64_AT: usize = 0x85;

    #[test]
    fn boot_sector_is_bootable() {
        let b = boot_sector();
        assert_eq!(&b[510..], &[0x55, 0xAA]);
    }

    /// Byte-for-byte what `as --64` + `ld -Ttext 0x7c00 --oformat binary`
    /// made of the listing in [`CODE`]'s comments (with `.balign 8, 0` before
    /// the GDT and `.balign 16, 0` before the IDT).
    #[test]
    fn image_matches_the_assembled_listing() {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(boot_sector());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, ASSEMBLED_SHA256);
    }

    #[test]
    fn jumps_and_tables_point_where_they_should() {
        let b = boot_sector();
        // lgdt [GDTR] (16-bit operand) and the GDTR: limit 31, base = GDT.
        assert_eq!(&b[12..15], &[0x0f, 0x01, 0x16]);
        assert_eq!(u16_at(&b, 15), BASE + GDTR_AT);
        assert_eq!(u16_at(&b, GDTR_AT), 31);
        assert_eq!(u32_at(&b, GDTR_AT + 2), BASE + GDT_AT);
        // jmp 0x08:pm32 lands on `mov ax, 0x10` (66 b8).
        assert_eq!(b[PM32_AT - 5], 0xea);
        assert_eq!(u16_at(&b, PM32_AT - 4), BASE + PM32_AT);
        assert_eq!(u16_at(&b, PM32_AT - 2), 0x08);
        assert_eq!(&b[PM32_AT..PM32_AT + 2], &[0x66, 0xb8]);
        // jmp 0x18:lm64 (32-bit offset) lands on `mov esp` (bc).
        assert_eq!(b[LM64_AT - 7], 0xea);
        assert_eq!(u32_at(&b, LM64_AT - 6), BASE + LM64_AT);
        assert_eq!(u16_at(&b, LM64_AT - 2), 0x18);
        assert_eq!(b[LM64_AT], 0xbc);
        // Selector 0x18 is a 64-bit code segment (L bit), 0x08 a 32-bit one.
        assert_eq!(GDT[3] >> 53 & 1, 1);
        assert_eq!(GDT[1] >> 54 & 1, 1);
        // lidt [IDTR]; the IDTR covers vectors 0..=3 at IDT_AT.
        assert_eq!(u32_at(&b, LM64_AT + 9), BASE + IDTR_AT);
        assert_eq!(u16_at(&b, IDTR_AT), 63);
        assert_eq!(u32_at(&b, IDTR_AT + 2), BASE + IDT_AT);
        // int3, and gate 3 leads to `iretq` (48 cf) through selector 0x18.
        assert_eq!(b[LM64_AT + 13], 0xcc);
        let gate = IDT_AT + 16 * VECTOR;
        assert_eq!(u16_at(&b, gate), BASE + HANDLER_AT);
        assert_eq!(u16_at(&b, gate + 2), 0x18);
        assert_eq!(b[gate + 5], 0x8e);
        assert_eq!(&b[HANDLER_AT..HANDLER_AT + 2], &[0x48, 0xcf]);
        // The exit port write before the handler: out 0xf4 with 0x2a.
        assert_eq!(
            &b[HANDLER_AT - 8..HANDLER_AT],
            &[0x66, 0xba, 0xf4, 0x00, 0xb0, 0x2a, 0xee, 0xf4]
        );
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
