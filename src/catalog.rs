//! The data points the gateway's apps write, as the edge offers them to providers (its
//! parameters, `docs/edge-protocol.md`): each name with what is known of its type (number
//! or text) and rate. Kept in memory, fed by the local API as points are queued (no
//! allocation for a name seen before), at most [`MAX_NAMES`] names; a new name marks the
//! catalog changed, so the edge reports its parameters again soon.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

/// Names kept; more are not listed (they are still queued and sent).
pub const MAX_NAMES: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Stat {
    count: u64,
    numeric: bool,
    first_ts: i64,
    last_ts: i64,
}

#[derive(Debug, Default)]
pub struct Catalog {
    names: Mutex<HashMap<String, Stat>>,
    changed: AtomicBool,
}

impl Catalog {
    /// One point an app wrote.
    pub fn saw(&self, name: &str, ts: i64, value: &str) {
        self.saw_all([(name, ts, value)]);
    }

    /// The points of one request `(name, ts, value)`, under one lock.
    pub fn saw_all<'a>(&self, points: impl IntoIterator<Item = (&'a str, i64, &'a str)>) {
        let mut m = self.names.lock().unwrap_or_else(|e| e.into_inner());
        for (name, ts, value) in points {
            let numeric = value.trim().parse::<f64>().is_ok_and(f64::is_finite);
            if let Some(s) = m.get_mut(name) {
                s.count += 1;
                s.numeric &= numeric;
                s.first_ts = s.first_ts.min(ts);
                s.last_ts = s.last_ts.max(ts);
            } else if m.len() < MAX_NAMES {
                m.insert(name.to_string(), Stat { count: 1, numeric, first_ts: ts, last_ts: ts });
                self.changed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Whether a name was added since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }

    /// `[{"name", "type": "number"|"text", "points", "per_minute"}]`, by name. The rate is
    /// points per minute over the span of their timestamps (null with one point).
    pub fn points(&self) -> Value {
        let m = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(&String, &Stat)> = m.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        Value::Array(
            v.into_iter()
                .map(|(name, s)| {
                    let span = s.last_ts - s.first_ts;
                    let per_minute =
                        (span > 0).then(|| ((s.count - 1) as f64 * 60.0 / span as f64 * 10.0).round() / 10.0);
                    json!({"name": name, "type": if s.numeric { "number" } else { "text" },
                           "points": s.count, "per_minute": per_minute})
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_types_and_rates() {
        let c = Catalog::default();
        for t in 0..61 {
            c.saw("temp", 1_700_000_000 + t, "21.5");
        }
        c.saw("state", 1_700_000_000, "on");
        c.saw("mixed", 1_700_000_000, "1");
        c.saw("mixed", 1_700_000_030, "n/a");
        assert!(c.take_changed() && !c.take_changed(), "a new name marks the catalog once");
        c.saw("temp", 1_700_000_061, "22");
        assert!(!c.take_changed(), "a known name does not");
        assert_eq!(
            c.points(),
            json!([
                {"name": "mixed", "type": "text", "points": 2, "per_minute": 2.0},
                {"name": "state", "type": "text", "points": 1, "per_minute": null},
                {"name": "temp", "type": "number", "points": 62, "per_minute": 60.0},
            ])
        );
        for i in 0..MAX_NAMES + 10 {
            c.saw(&format!("n{i}"), 0, "1");
        }
        assert_eq!(c.points().as_array().unwrap().len(), MAX_NAMES);
    }
}
