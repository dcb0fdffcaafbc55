//! What a gateway's own key and certificate cost the agent against its token, side by side
//! in one run: the release agent (as shipped, on this machine's architecture) once with
//! `identity = "token"` and once with `identity = "certificate"`, each behind a relay that
//! counts the bytes on the wire to one TLS hub. For each: the bytes of getting an identity
//! and the first point through (activation, or key, enrollment and the certificate), the
//! bytes of N more points one batch each, and the agent's memory once it has settled
//! (VmRSS, Pss, VmHWM). Prints the ratios. The binary's size before and after is measured
//! with `scripts/cross-build.sh` (`docs/identity.md`).
//! `cargo bench --bench agent_identity -- [--points N]`

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "bench values (counts, sizes) are small"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::agent::{agent_bin, values, wait_for, Agent};
use common::relay::Relay;
use common::{Client, HubProc};

/// kB figures of /proc/PID/status and smaps_rollup.
fn memory(pid: u32) -> (u64, u64, u64) {
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (field(&status, "VmRSS:"), field(&smaps, "Pss:"), field(&status, "VmHWM:"))
}

struct Run {
    name: &'static str,
    setup: (u64, u64),
    points: (u64, u64),
    mem: (u64, u64, u64),
}

/// One hub, its relay and the run's size.
struct Bench<'a> {
    dir: &'a Path,
    c: &'a Client,
    relay: &'a Relay,
    n: usize,
}

fn run(b: &Bench, name: &'static str, serial: &str, cloud: &str, cert: bool) -> Run {
    let Bench { dir, c, relay, n } = *b;
    let agent_dir = dir.join(serial);
    std::fs::create_dir_all(&agent_dir).unwrap();
    if cert {
        let cfg = format!(
            "[device]\nvendor = \"acme\"\nmodel = \"gw1\"\nserial = \"{serial}\"\n[paths]\nstate_dir = \"{}/state\"\n",
            agent_dir.display()
        );
        std::fs::write(dir.join("factory.toml"), cfg).unwrap();
        let out = Command::new(agent_bin())
            .args(["--config", dir.join("factory.toml").to_str().unwrap(), "identity"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(c.op_send("POST", "/api/v1/keys", "text/csv", &out.stdout).status, 200);
    } else {
        c.whitelist("acme", "gw1", serial);
    }
    let url = format!("https://localhost:{}", relay.port);
    relay.take();
    let agent = Agent::start_as(&agent_dir, &url, serial, cloud, "");
    let dev = c.op_get("/api/v1/devices").json().as_array().unwrap().iter().find(|d| d["sn"] == serial).unwrap()["id"]
        .as_i64()
        .unwrap();
    let http = common::agent();
    agent.record(&http, "temp", &[(1_700_000_000, "0".into())]);
    wait_for("the first point", 60, || values(c, dev, "temp").len() == 1);
    let setup = relay.take();
    for i in 1..=n {
        agent.record(&http, "temp", &[(1_700_000_000 + i as i64, i.to_string())]);
        wait_for("the point", 60, || values(c, dev, "temp").len() == i + 1);
    }
    let points = relay.take();
    // Settled: what the agent holds between batches.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        std::thread::park_timeout(Duration::from_millis(100));
    }
    let mem = memory(agent.child.id());
    drop(agent);
    Run { name, setup, points, mem }
}

fn main() {
    let mut n = 50;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--points" => n = args.next().and_then(|v| v.parse().ok()).expect("--points N"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = common::pki(d, "server");
    let ca = common::DeviceCa::new(d);
    let db = common::db_url(common::Backend::Sqlite, d);
    let args = ca.hub_args("30");
    let hub = HubProc::start_tls(&db, d, &server, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let c = Client { hub: hub.clone(), agent: common::trusting(&server.ca_pem) };
    let relay = Relay::start(hub.port);
    let ca_line = format!("ca_file = \"{}\"\n", server.ca_file.display());
    let b = Bench { dir: d, c: &c, relay: &relay, n };
    let token = run(&b, "token", "TOK1", &ca_line, false);
    let cert = run(&b, "certificate", "CRT1", &format!("{ca_line}identity = \"certificate\"\n"), true);
    println!(
        "agent {} ({}), {n} points one batch each, after the first:",
        agent_bin().display(),
        std::env::consts::ARCH
    );
    for r in [&token, &cert] {
        println!(
            "{:<12} setup and first point: {:>6} B up {:>6} B down; {n} points: {:>7} B up {:>7} B down ({:.0} B a point); VmRSS {} kB, Pss {} kB, VmHWM {} kB",
            r.name,
            r.setup.0,
            r.setup.1,
            r.points.0,
            r.points.1,
            (r.points.0 + r.points.1) as f64 / n as f64,
            r.mem.0,
            r.mem.1,
            r.mem.2
        );
    }
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    println!(
        "certificate / token: setup bytes {:.2}x, bytes a point {:.2}x, VmRSS {:.2}x, Pss {:.2}x",
        ratio(cert.setup.0 + cert.setup.1, token.setup.0 + token.setup.1),
        ratio(cert.points.0 + cert.points.1, token.points.0 + token.points.1),
        ratio(cert.mem.0, token.mem.0),
        ratio(cert.mem.1, token.mem.1)
    );
}
