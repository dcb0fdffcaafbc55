//! A stop signal threads can sleep on: `sleep` returns early when `stop` is called.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    pub fn stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `d` unless stopped first; true when stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut g = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        while !*g {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self.cv.wait_timeout(g, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

/// `d` scaled by a random factor in [0.5, 1.0): full-ish jitter so a fleet that lost its
/// hub at the same moment does not come back at the same moment.
pub fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::getrandom(&mut b).is_ok() { u16::from_le_bytes(b) } else { 0x8000 };
    d.mul_f64(0.5 + f64::from(r) / 131_072.0)
}
