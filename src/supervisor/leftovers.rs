//! The record of running app processes, so an agent that was SIGKILLed (or crashed) and
//! started again can end what its predecessor left before starting anything: never two
//! instances of an app, no orphan running unsupervised.
//!
//! Each entry holds the app's pid (= its process group, as it called setsid) and the
//! process's start time in clock ticks since boot, with the boot id. A group is killed only
//! when its leader is still the same process (same start time), or the leader is gone but
//! members remain (the kernel does not reuse a pid while it names a live process group).

use std::path::Path;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::procfs;
use crate::fsio;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub pid: i32,
    pub start_ticks: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Record {
    pub boot_id: String,
    pub apps: Vec<Entry>,
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Whether any process of group `pgid` is alive (a zombie is not).
pub fn group_alive(pgid: i32) -> bool {
    procfs::all().any(|s| s.pgrp == pgid && s.alive())
}

pub fn save(path: &Path, rec: &Record) {
    let res =
        serde_json::to_vec(rec).map_err(std::io::Error::other).and_then(|b| fsio::write_atomic_mode(path, &b, 0o600));
    if let Err(e) = res {
        log::error!("supervisor: cannot record app pids in {}: {e}", path.display());
    }
}

/// Kills the process groups a previous agent left running. Returns the names ended.
pub fn kill(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read(path) else {
        return Vec::new();
    };
    let rec: Record = match serde_json::from_slice(&text) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("supervisor: {} is unreadable ({e}); ignoring it", path.display());
            return Vec::new();
        }
    };
    if rec.boot_id != boot_id() {
        return Vec::new(); // a reboot ended them all
    }
    let mut killed = Vec::new();
    for e in &rec.apps {
        let ours = match procfs::stat(e.pid) {
            Some(st) => st.start_ticks == e.start_ticks,
            None => true, // leader gone; members, if any, still carry its group id
        };
        if ours && killpg(Pid::from_raw(e.pid), Signal::SIGKILL).is_ok() {
            killed.push(e.name.clone());
            // Wait until the group is gone, so the new instance never overlaps the old.
            for _ in 0..400 {
                if !group_alive(e.pid) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    killed
}
