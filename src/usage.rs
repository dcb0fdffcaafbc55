//! Bytes the gateway moved, for `usage_report`: per network interface (from
//! `/proc/net/dev`), per cloud API method of the agent, and per app (what each app pushed
//! through the local ingest API, named by its `X-GWE-App` header; the supervisor gives apps
//! `GWE_APP`). Reports are deltas since the previous report. What was counted but not yet
//! reported is saved in `state/usage.json` (every few minutes and at shutdown), and
//! interface counters are compared with the boot they were read in, so the deltas survive
//! reboots: the kernel's counters restart at zero at boot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::fsio;

/// The original's fields for one API method (or app).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub tot_rx: u64,
    pub max_rx: u64,
    pub tot_tx: u64,
    pub max_tx: u64,
    pub num: u64,
}

impl Counter {
    fn add(&mut self, tx: u64, rx: u64) {
        self.tot_tx += tx;
        self.tot_rx += rx;
        self.max_tx = self.max_tx.max(tx);
        self.max_rx = self.max_rx.max(rx);
        self.num += 1;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    /// Not yet reported.
    api: BTreeMap<String, Counter>,
    apps: BTreeMap<String, Counter>,
    /// Interface counters at the last report, and the boot they belong to.
    boot_id: String,
    ifaces: BTreeMap<String, (u64, u64)>,
}

pub struct Usage {
    path: PathBuf,
    state: Mutex<(Saved, bool)>,
}

/// `/proc/net/dev`: interface -> (rx bytes, tx bytes).
pub fn parse_net_dev(text: &str) -> BTreeMap<String, (u64, u64)> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            Some((name.trim().to_string(), (*f.first()?, *f.get(8)?)))
        })
        .collect()
}

/// Adds one request to `key`'s counter; a key is allocated only the first time, and no new
/// one once `max_keys` are counted.
fn count(map: &mut BTreeMap<String, Counter>, key: &str, tx: u64, rx: u64, max_keys: usize) {
    if let Some(c) = map.get_mut(key) {
        c.add(tx, rx);
    } else if map.len() < max_keys {
        map.entry(key.to_string()).or_default().add(tx, rx);
    }
}

impl Usage {
    /// Loads what the last run counted but did not report.
    pub fn open(path: &Path) -> Self {
        let saved = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Self { path: path.to_path_buf(), state: Mutex::new((saved, false)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Saved, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request of the agent to the cloud.
    pub fn api(&self, method: &str, tx: u64, rx: u64) {
        let mut s = self.lock();
        count(&mut s.0.api, method, tx, rx, usize::MAX);
        s.1 = true;
    }

    /// Bytes an app handed to the ingest API (they go to the cloud).
    pub fn app(&self, name: &str, tx: u64) {
        let mut s = self.lock();
        count(&mut s.0.apps, name, tx, 0, 256);
        s.1 = true;
    }

    /// Saves the unreported counts if they changed.
    pub fn save(&self) {
        let mut s = self.lock();
        if !s.1 {
            return;
        }
        let json = serde_json::to_vec(&s.0).unwrap_or_default();
        match fsio::write_atomic(&self.path, &json) {
            Ok(()) => s.1 = false,
            Err(e) => log::warn!("saving usage counters to {}: {e}", self.path.display()),
        }
    }

    /// The `usage_report` value: deltas since the last report, which it resets.
    pub fn report(&self, net_dev: &str, boot_id: &str) -> serde_json::Value {
        let now = parse_net_dev(net_dev);
        let mut s = self.lock();
        let same_boot = s.0.boot_id == boot_id;
        let ifaces: BTreeMap<&String, serde_json::Value> = now
            .iter()
            .map(|(name, &(rx, tx))| {
                let (prx, ptx) = if same_boot { s.0.ifaces.get(name).copied().unwrap_or((0, 0)) } else { (0, 0) };
                // A counter below its last value wrapped or was reset: count from zero.
                let d = |n: u64, p: u64| if n >= p { n - p } else { n };
                (name, serde_json::json!({"rx": d(rx, prx), "tx": d(tx, ptx)}))
            })
            .collect();
        let top = s.0.api.iter().max_by_key(|(_, c)| c.tot_rx + c.tot_tx).map(|(k, _)| k.clone());
        let top_app = s.0.apps.iter().max_by_key(|(_, c)| c.tot_tx).map(|(k, _)| k.clone());
        let report = serde_json::json!({
            "interfaces": ifaces,
            "api": s.0.api,
            "apps": s.0.apps,
            "top_consumer": top,
            "top_app": top_app,
        });
        s.0.api.clear();
        s.0.apps.clear();
        s.0.ifaces = now;
        s.0.boot_id = boot_id.to_string();
        s.1 = true;
        drop(s);
        self.save();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV1: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:    5000      50    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
";

    #[test]
    fn deltas_survive_a_restart_and_a_reboot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        let u = Usage::open(&path);
        u.api("batch", 100, 20);
        u.api("batch", 300, 20);
        u.app("sensor", 50);
        let r = u.report(DEV1, "boot-a");
        assert_eq!(r["interfaces"]["eth0"], serde_json::json!({"rx": 5000, "tx": 2000}));
        assert_eq!(
            r["api"]["batch"],
            serde_json::json!({"tot_rx": 40, "max_rx": 20, "tot_tx": 400, "max_tx": 300, "num": 2})
        );
        assert_eq!(r["apps"]["sensor"]["tot_tx"], 50);
        assert_eq!(r["top_consumer"], "batch");
        // Counted, saved, then the agent restarts: nothing counted is lost.
        u.api("write", 10, 5);
        u.save();
        drop(u);
        let u = Usage::open(&path);
        let dev2 = DEV1.replace("5000", "7000");
        let r = u.report(&dev2, "boot-a");
        assert_eq!(r["interfaces"]["eth0"]["rx"], 2000);
        assert_eq!(r["interfaces"]["eth0"]["tx"], 0);
        assert_eq!(r["api"]["write"]["num"], 1);
        assert!(r["api"].get("batch").is_none(), "reported counts are not reported twice");
        // After a reboot the kernel counts from zero: the whole value is the delta.
        let dev3 = DEV1.replace("5000", "300");
        let r = u.report(&dev3, "boot-b");
        assert_eq!(r["interfaces"]["eth0"]["rx"], 300);
    }
}
