//! Faults of the data partition as the agent meets them: full, read-only, failing. Each part
//! that writes there says when a write failed and when one worked again. `gwe ctl status`
//! and `engine_report` show the faults still standing; the log says when one starts and
//! when it ends. Nothing else changes: the agent keeps supervising its apps and tries the
//! write again (the queue when the next batch comes, the others on their own schedules).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fault {
    /// What could not write: `queue`, `edge store`, or the file's path.
    pub part: String,
    pub error: String,
    /// Unix seconds of the first failure.
    pub since: u64,
    /// Failed writes since then.
    pub count: u64,
}

static FAULTS: Mutex<Vec<Fault>> = Mutex::new(Vec::new());
/// Whether any fault stands: `ok` on a hot path is one atomic load when none does.
static ANY: AtomicBool = AtomicBool::new(false);

fn faults() -> std::sync::MutexGuard<'static, Vec<Fault>> {
    FAULTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A write by `part` failed.
pub fn failed(part: &str, error: &dyn std::fmt::Display) {
    let mut f = faults();
    if let Some(x) = f.iter_mut().find(|x| x.part == part) {
        x.count += 1;
        x.error = error.to_string();
        return;
    }
    let since = crate::clock::unix_secs();
    log::error!("data partition: {part} cannot write: {error}; supervising on, trying again");
    f.push(Fault { part: part.to_string(), error: error.to_string(), since, count: 1 });
    ANY.store(true, Ordering::Release);
}

/// A write by `part` worked: its fault, if any, is over.
pub fn ok(part: &str) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let mut f = faults();
    if let Some(i) = f.iter().position(|x| x.part == part) {
        let x = f.remove(i);
        log::info!("data partition: {part} writes again (after {} failed writes)", x.count);
    }
    ANY.store(!f.is_empty(), Ordering::Release);
}

/// The faults standing now.
pub fn list() -> Vec<Fault> {
    if !ANY.load(Ordering::Acquire) {
        return Vec::new();
    }
    faults().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_stands_until_the_same_part_writes_again() {
        let part = "health-test part";
        failed(part, &"No space left on device (os error 28)");
        failed(part, &"Read-only file system (os error 30)");
        let f = list().into_iter().find(|x| x.part == part).unwrap();
        assert_eq!((f.count, f.error.as_str()), (2, "Read-only file system (os error 30)"));
        ok("health-test other part");
        assert!(list().iter().any(|x| x.part == part));
        ok(part);
        assert!(!list().iter().any(|x| x.part == part));
    }
}
