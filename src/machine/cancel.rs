//! Ctrl-C handling: the first interrupt asks every step to stop at its next
//! check point and roll back what this run created.

use std::sync::atomic::{AtomicBool, Ordering};

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C / SIGTERM handler (once per process).
pub fn install_handler() {
    let _ = ctrlc::set_handler(|| {
        if CANCELLED.swap(true, Ordering::SeqCst) {
            // Second interrupt: the user really wants out.
            std::process::exit(130);
        }
        eprintln!("interrupted: cleaning up (press Ctrl-C again to quit at once)");
    });
}

pub fn is_cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// Marks the run as cancelled (tests; also used on fatal errors).
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}
