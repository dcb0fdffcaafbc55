//! The edge data and control paths, measured with the real agent and the real hub:
//!
//! - points per second from an app, through the edge store, in batches to the hub's
//!   database, beside the forwarder (GMQ queue to the hub's dataports) carrying the very
//!   same points in the same run;
//! - the bytes the agent process handed to write calls meanwhile, per point (`wchar` of
//!   `/proc/PID/io`: its files; its sockets use send(2), which it does not count), and the
//!   write calls. Not `write_bytes`: with large folios (ext4 on Linux 6.16 and newer) it
//!   counts a whole folio each time a synced one is dirtied again, up to 0.6 MB a call;
//!   measured here: 75 to 588 MB for the same run;
//! - the latency from an operator issuing a command to the hub showing the edge's new state
//!   (ctrlpoll every `--poll-ms`, default 5000 as deployed), p50 and p99.
//!
//! `cargo bench --manifest-path hub/Cargo.toml --bench edge -- [--points N] [--commands M]
//! [--poll-ms MS] [--db sqlite|postgres|both]`

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::agent::{wait_for, Agent};
use common::{Backend, Client, HubOpts, HubProc};

const NAMES: [&str; 10] = ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"];

fn control(c: &Client, system: &str) -> Value {
    serde_json::from_slice(&c.op_get(&format!("/edge/cmd/{system}?last=true")).body).unwrap_or(Value::Null)
}

/// Points the hub stored from the edge's batches.
fn edge_count(c: &Client) -> usize {
    let r = c.op_get("/api/v1/edge/BENCH/batches");
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    v["batches"].as_array().map_or(0, |b| b.iter().map(|b| b["points"].as_u64().unwrap_or(0) as usize).sum())
}

fn forwarded(c: &Client, dev: i64) -> usize {
    NAMES.iter().map(|a| c.point_count(dev, a)).sum()
}

/// Bytes the process handed to write calls, and those calls.
fn disk_writes(pid: u32) -> (u64, u64) {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("the agent's /proc/PID/io");
    let field = |name: &str| {
        io.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).expect("a /proc/PID/io field")
    };
    (field("wchar: "), field("syscw: "))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn run(backend: Backend, points: usize, commands: usize, poll_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(backend, dir.path());
    let opts = HubOpts { db: &db, dir: dir.path(), port: 0, tls: None, extra: &["--system-name", "gwe-hub"] };
    let hub = Arc::new(HubProc::start_with(opts));
    let c = Client::new(hub.clone());
    let dev = c.whitelist("acme", "gw1", "BENCH");
    let sections = format!("[edge]\npoll_ms = {poll_ms}\ndiscovery_secs = 60\n");
    let agent = Agent::start_as(&dir.path().join("agent"), &hub.url, "BENCH", "batch_records = 5000\n", &sections);
    wait_for("the edge's first state at the hub", 60, || control(&c, "BENCH")["state"]["system"] == "BENCH");
    let cmd = json!({"id": "batch", "batch": {"gwe-hub": {"interval_ms": 200, "filter": ["e?"]}}});
    c.op_send("POST", "/edge/cmd/BENCH", "application/json", cmd.to_string().as_bytes());
    wait_for("the batch configuration applied", 60, || control(&c, "BENCH")["state"]["last_command"]["id"] == "batch");
    std::thread::sleep(Duration::from_millis(500));

    // Data path: the app writes `points` points, 1,000 per request.
    let http = common::agent();
    let written0 = disk_writes(agent.child.id());
    let start = Instant::now();
    let per_name = points / NAMES.len();
    for chunk_start in (0..per_name).step_by(100) {
        for name in NAMES {
            let pts: Vec<(i64, String)> = (chunk_start..(chunk_start + 100).min(per_name))
                .map(|i| (1_700_000_000 + i as i64, format!("{i}.5")))
                .collect();
            agent.record(&http, name, &pts);
        }
    }
    let written = start.elapsed();
    let total = per_name * NAMES.len();
    let (mut t_edge, mut t_fwd) = (None, None);
    wait_for("every point through both paths", 600, || {
        if t_edge.is_none() && edge_count(&c) >= total {
            t_edge = Some(start.elapsed());
        }
        if t_fwd.is_none() && forwarded(&c, dev) >= total {
            t_fwd = Some(start.elapsed());
        }
        t_edge.is_some() && t_fwd.is_some()
    });
    let (t_edge, t_fwd) = (t_edge.unwrap().as_secs_f64(), t_fwd.unwrap().as_secs_f64());
    let disk = disk_writes(agent.child.id());
    let (disk, calls) = (disk.0 - written0.0, disk.1 - written0.1);
    assert_eq!(edge_count(&c), total, "every point once at the batch provider");
    let stored = c.op_get("/api/v1/edge/BENCH/points?limit=10000000");
    let n = serde_json::from_slice::<Value>(&stored.body).unwrap()["points"].as_array().unwrap().len();
    assert_eq!(n, total, "the points table holds every point once");
    let eps = total as f64 / t_edge;
    let fps = total as f64 / t_fwd;

    // Control path: command issued -> new state at the hub.
    let mut lat = Vec::new();
    for i in 0..commands {
        let id = format!("lat{i}");
        let cmd = json!({"id": id, "config": {"i": i}});
        let t0 = Instant::now();
        c.op_send("POST", "/edge/cmd/BENCH", "application/json", cmd.to_string().as_bytes());
        wait_for("the command's state", 120, || control(&c, "BENCH")["state"]["last_command"]["id"] == id.as_str());
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        // The next command at a spread-out moment of the poll cycle.
        std::thread::sleep(Duration::from_millis((i as u64 * 7919) % 1000 * poll_ms / 1000));
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{backend:?}: {total} points written in {:.2} s; at the hub via edge batches after {t_edge:.2} s \
         ({eps:.0} points/s), via the forwarder after {t_fwd:.2} s ({fps:.0} points/s); edge/forwarder {:.2}",
        written.as_secs_f64(),
        eps / fps
    );
    println!(
        "{backend:?}: the agent wrote {:.1} MB to its files for them, {:.0} bytes per point, in {calls} write calls \
         (queue, forwarder, edge)",
        disk as f64 / 1e6,
        disk as f64 / total as f64
    );
    if !lat.is_empty() {
        println!(
            "{backend:?}: command -> new state at the hub, {} commands, ctrlpoll every {poll_ms} ms: \
             p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat[lat.len() - 1]
        );
    }
}

fn main() {
    let (mut points, mut commands, mut poll_ms, mut db) = (100_000usize, 40usize, 5000u64, "both".to_string());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--points" => points = args.next().and_then(|v| v.parse().ok()).expect("--points N"),
            "--commands" => commands = args.next().and_then(|v| v.parse().ok()).expect("--commands M"),
            "--poll-ms" => poll_ms = args.next().and_then(|v| v.parse().ok()).expect("--poll-ms MS"),
            "--db" => db = args.next().expect("--db sqlite|postgres|both"),
            _ => {}
        }
    }
    if db != "postgres" {
        run(Backend::Sqlite, points, commands, poll_ms);
    }
    if db != "sqlite" {
        run(Backend::Postgres, points, commands, poll_ms);
    }
}
