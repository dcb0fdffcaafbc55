//! The agent's one wall clock: every timestamp a point, a state file, a fault or a check of
//! signed metadata takes comes from here, so a test can set the time and see what the agent
//! does at it (`set_for_this_thread`). Intervals and timeouts use `Instant`, not this.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

thread_local! {
    /// A time set by a test for the calling thread, in unix milliseconds.
    static FIXED_MS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Now: the system's clock, or the time a test set for this thread.
pub fn now() -> SystemTime {
    match FIXED_MS.with(Cell::get) {
        Some(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        None => SystemTime::now(),
    }
}

/// Since the epoch; zero for a clock set before 1970 (a board without its RTC set yet).
fn since_epoch() -> Duration {
    now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Unix seconds.
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Unix seconds, as points and the hub's API carry them.
pub fn unix_secs_i64() -> i64 {
    i64::try_from(unix_secs()).unwrap_or(i64::MAX)
}

/// Unix milliseconds.
pub fn unix_ms() -> i64 {
    i64::try_from(since_epoch().as_millis()).unwrap_or(i64::MAX)
}

/// Sets this thread's clock to `unix_ms` (None: the system's again). For tests.
#[doc(hidden)]
pub fn set_for_this_thread(unix_ms: Option<u64>) {
    FIXED_MS.with(|c| c.set(unix_ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_sets_the_time_for_its_own_thread_only() {
        set_for_this_thread(Some(1_700_000_000_123));
        assert_eq!((unix_secs(), unix_ms(), unix_secs_i64()), (1_700_000_000, 1_700_000_000_123, 1_700_000_000));
        let other = std::thread::spawn(unix_secs).join().unwrap();
        assert!(other > 1_700_000_000 + 86_400, "another thread keeps the system's clock: {other}");
        set_for_this_thread(None);
        assert!(unix_secs() > 1_700_000_000 + 86_400);
    }
}
