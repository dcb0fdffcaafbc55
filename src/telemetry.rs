//! Telemetry as Gateway Engine reported it: `device_info` (uname, df, free, ipaddrs),
//! `usage_report` and `engine_report`, written as points into the queue every report
//! interval, so they survive outages like any other data. The `update_interval` dataport
//! sets that interval: read from the cloud, applied (and kept in `state/update_interval`),
//! then cleared, as the original did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cloud::Cloud;
use crate::fsio;
use crate::ota::install::Installer;
use crate::queue::Queue;
use crate::stop::Stop;
use crate::usage::Usage;

fn read(p: &str) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `uname -a` as fields.
pub fn uname() -> Value {
    json!({
        "sysname": read("/proc/sys/kernel/ostype"),
        "nodename": read("/proc/sys/kernel/hostname"),
        "release": read("/proc/sys/kernel/osrelease"),
        "version": read("/proc/sys/kernel/version"),
        "machine": std::env::consts::ARCH,
    })
}

/// Where the kernel's pseudo filesystems live: a tmpfs there (`/dev/shm`, `/run`,
/// `/sys/fs/cgroup`) holds no data of the gateway's, so `df` leaves it out.
const PSEUDO_ROOTS: [&str; 4] = ["/dev", "/proc", "/run", "/sys"];

fn is_pseudo(mount: &str) -> bool {
    PSEUDO_ROOTS.iter().any(|r| mount.strip_prefix(r).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// `df`: every mounted block-device filesystem, plus tmpfs outside the kernel's pseudo
/// filesystems, in KiB.
pub fn df(mounts: &str) -> Value {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [dev, mount, fstype, ..] = f[..] else { continue };
        if !(dev.starts_with("/dev/") || fstype == "tmpfs" && !is_pseudo(mount)) || !seen.insert(mount.to_string()) {
            continue;
        }
        let Ok(sp) = crate::fsio::space(Path::new(mount)) else { continue };
        let size = sp.total / 1024;
        let avail = sp.available / 1024;
        let used = size.saturating_sub(sp.free / 1024);
        out.push(
            json!({"fs": dev, "type": fstype, "mount": mount, "size_kb": size, "used_kb": used, "avail_kb": avail}),
        );
    }
    Value::Array(out)
}

/// `free`, from /proc/meminfo, in KiB.
pub fn free(meminfo: &str) -> Value {
    let mut m = serde_json::Map::new();
    for l in meminfo.lines() {
        let Some((k, v)) = l.split_once(':') else { continue };
        let key = match k {
            "MemTotal" => "total_kb",
            "MemFree" => "free_kb",
            "MemAvailable" => "available_kb",
            "Buffers" => "buffers_kb",
            "Cached" => "cached_kb",
            "SwapTotal" => "swap_total_kb",
            "SwapFree" => "swap_free_kb",
            _ => continue,
        };
        if let Some(n) = v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()) {
            m.insert(key.into(), n.into());
        }
    }
    Value::Object(m)
}

/// Interface -> its IPv4 and IPv6 addresses.
pub fn ipaddrs() -> Value {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                v4.ip().to_string()
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                v6.ip().to_string()
            } else {
                continue;
            };
            out.entry(a.interface_name).or_default().push(ip);
        }
    }
    json!(out)
}

/// The operating system's name and version: `PRETTY_NAME` of os-release(5).
pub fn os_release(text: &str) -> Option<String> {
    let v = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?.trim();
    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
    (!v.is_empty()).then(|| v.to_string())
}

/// `{"os", "uname", "df", "free", "ipaddrs"}`, and on a board with A/B slots `"slots"`:
/// the booted slot, its image, version and compatible string, and the other slot's state
/// (`crate::ota::os::report` without the update in progress, which `engine_report` carries).
pub fn device_info(state_dir: &std::path::Path) -> Value {
    let os = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .ok()
        .and_then(|t| os_release(&t));
    let mut info = json!({
        "os": os,
        "uname": uname(),
        "df": df(&read("/proc/self/mounts")),
        "free": free(&read("/proc/meminfo")),
        "ipaddrs": ipaddrs(),
    });
    let mut slots = crate::ota::os::report(state_dir);
    if !slots["slot"].is_null() {
        if let Some(o) = slots.as_object_mut() {
            o.remove("update");
        }
        info["slots"] = slots;
    }
    info
}

/// `{"apps":[{"NAME":{"status","exitstatus","uptime","version"}}]}`.
/// `"queue": {"backlog", "disk_bytes", "max_bytes"}`: what waits on flash for the slowest
/// consumer (the fleet page's backlog column).
/// `"os"`, on a board with A/B slots: the booted slot, the image and its version, the last
/// OS update and where it stands (docs/os-updates.md).
pub fn engine_report(apps: &Installer, queue: &Queue, state_dir: &std::path::Path) -> Value {
    let versions: BTreeMap<String, Option<String>> =
        apps.installed().into_iter().map(|i| (i.name, i.current)).collect();
    let list: Vec<Value> = apps
        .supervisor()
        .status()
        .into_iter()
        .map(|s| {
            let version = versions.get(&s.name).cloned().flatten();
            json!({ s.name.clone(): {
                "status": s.state.as_str(),
                "exitstatus": s.exitstatus,
                "uptime": s.uptime,
                "version": version,
            }})
        })
        .collect();
    let q = queue.stats();
    let mut report = json!({
        "apps": list,
        "engine_version": crate::ota::selfupdate::version(),
        "queue": {"backlog": q.backlog(), "disk_bytes": q.disk_bytes, "max_bytes": q.max_bytes},
    });
    let faults = crate::health::list();
    if !faults.is_empty() {
        report["faults"] = json!(faults);
    }
    let os = crate::ota::os::report(state_dir);
    if !os["slot"].is_null() {
        report["os"] = os;
    }
    report
}

/// Gives the heap's free pages back to the system. glibc returns only the top of the heap by
/// itself; the pages of chunks freed below a live one (what starting up, activating or a big
/// batch used for a moment) stay resident until this. Called after each telemetry report.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases the allocator's free memory, under its own lock.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Appends `alias=value` to the queue as a point stamped now.
pub fn enqueue(queue: &Queue, alias: &str, value: &str) -> Result<u64, crate::queue::QueueError> {
    let ts = crate::clock::unix_secs_i64();
    queue.append_points(1, |_| (ts, alias, value.as_bytes()))
}

pub struct Telemetry {
    pub queue: Queue,
    pub usage: Arc<Usage>,
    pub apps: Arc<Installer>,
    pub cloud: Option<Arc<Cloud>>,
    pub state_dir: PathBuf,
    pub default_interval: Duration,
}

fn interval_file(dir: &Path) -> PathBuf {
    dir.join("update_interval")
}

impl Telemetry {
    pub fn start(self, stop: Arc<Stop>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("telemetry".into()).spawn(move || self.run(&stop))
    }

    fn report(&self) {
        let boot_id = read("/proc/sys/kernel/random/boot_id");
        let usage = self.usage.report(&read("/proc/net/dev"), &boot_id);
        for (alias, v) in [
            ("device_info", device_info(&self.state_dir)),
            ("usage_report", usage),
            ("engine_report", engine_report(&self.apps, &self.queue, &self.state_dir)),
        ] {
            if let Err(e) = enqueue(&self.queue, alias, &v.to_string()) {
                log::warn!("telemetry: queueing {alias}: {e}");
            }
        }
    }

    /// Applies and clears `update_interval` if the cloud holds one.
    fn check_interval(&self, current: Duration) -> Duration {
        let Some(cloud) = &self.cloud else { return current };
        let got = match cloud.read(&["update_interval"]) {
            Ok(v) => v,
            Err(e) => {
                log::debug!("telemetry: reading update_interval: {e}");
                return current;
            }
        };
        let Some((_, v)) = got.into_iter().find(|(k, v)| k == "update_interval" && !v.trim().is_empty()) else {
            return current;
        };
        let next = match v.trim().parse::<u64>() {
            Ok(secs) if secs >= 1 => {
                log::info!("update_interval set to {secs} s by the cloud");
                if let Err(e) = fsio::write_atomic(&interval_file(&self.state_dir), secs.to_string().as_bytes()) {
                    log::warn!("saving update_interval: {e}");
                }
                Duration::from_secs(secs)
            }
            _ => {
                log::warn!("update_interval {v:?} is not a whole number of seconds >= 1; ignored");
                current
            }
        };
        if let Err(e) = cloud.write(&[("update_interval", "")]) {
            log::debug!("telemetry: clearing update_interval: {e}");
        }
        next
    }

    fn run(self, stop: &Stop) {
        let mut interval = std::fs::read_to_string(interval_file(&self.state_dir))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .filter(|&s: &u64| s >= 1)
            .map_or(self.default_interval, Duration::from_secs);
        loop {
            interval = self.check_interval(interval);
            self.report();
            trim_heap();
            // Save unreported usage now and then, so a power cut loses little of it.
            let mut left = interval;
            while !left.is_zero() {
                let step = left.min(Duration::from_secs(600));
                if stop.sleep(step) {
                    self.usage.save();
                    return;
                }
                self.usage.save();
                left -= step;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_stamped_by_the_agent_s_clock() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), crate::queue::Options::default()).unwrap();
        crate::clock::set_for_this_thread(Some(1_234_567_890_999));
        enqueue(&q, "engine_report", "{}").unwrap();
        crate::clock::set_for_this_thread(None);
        drop(q);
        let mut stamps = Vec::new();
        crate::queue::inspect(dir.path(), 65_536, |_, payload| {
            let p = gwe_wire::point::decode(payload).unwrap();
            stamps.push((p.ts, p.alias.to_string()));
        })
        .unwrap();
        assert_eq!(stamps, [(1_234_567_890, "engine_report".to_string())]);
    }

    #[test]
    fn free_and_df_read_the_kernel_formats() {
        let m = free("MemTotal:        2048000 kB\nMemFree:          100 kB\nMemAvailable:    1500 kB\nBogus: x\n");
        assert_eq!(m, json!({"total_kb": 2048000, "free_kb": 100, "available_kb": 1500}));
        let d = df("proc /proc proc rw 0 0\ntmpfs /tmp tmpfs rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n\
                    tmpfs /run tmpfs rw 0 0\ntmpfs /sys/fs/cgroup tmpfs rw 0 0\n");
        assert_eq!(d.as_array().unwrap().len(), 1, "pseudo mounts are left out: {d}");
        assert_eq!(
            os_release("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_release("PRETTY_NAME=Buildroot 2025.02\n").as_deref(), Some("Buildroot 2025.02"));
        assert_eq!(os_release("NAME=x\n"), None);
        let d = d.as_array().unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0]["mount"], "/tmp");
        assert!(d[0]["size_kb"].as_u64().unwrap() > 0);
        let dir = tempfile::tempdir().unwrap();
        let info = device_info(dir.path());
        assert!(info["uname"]["release"].as_str().unwrap().len() > 1);
        // This host boots no RAUC slot (no rauc.slot= on its command line): nothing said.
        assert!(info.get("slots").is_none(), "{info}");
        assert!(info["ipaddrs"]["lo"].as_array().unwrap().iter().any(|a| a == "127.0.0.1"));
    }
}
