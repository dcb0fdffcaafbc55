//! The hub's one wall clock: every time it stores or compares (sessions, last seen, rollout
//! schedules, commands) comes from `now_ms`, so a test can move it forward
//! (`advance_for_tests`) and see what the hub does an hour later without waiting an hour.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How far a test moved this process's clock, in milliseconds.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    let system =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    system.saturating_add(OFFSET_MS.load(Ordering::Relaxed))
}

/// Moves this process's clock `ms` forward. For tests (the whole process sees it).
#[doc(hidden)]
pub fn advance_for_tests(ms: i64) {
    OFFSET_MS.fetch_add(ms, Ordering::Relaxed);
}
