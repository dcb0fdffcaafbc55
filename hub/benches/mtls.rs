//! What a gateway's own TLS client certificate costs the hub against its token, side by
//! side on one hub in one run. N gateways (default 10,000) each open a new TLS connection
//! (a full handshake, as a gateway does when its cellular link comes back) and write one
//! value: first every gateway with its token (`X-Exosite-CIK` over server-authenticated
//! TLS), then every gateway with its own certificate (mutual TLS, `--device-ca`, no token),
//! then the token path once more, so drift shows. Prints the hub's CPU time per connection
//! (utime + stime from /proc) and the p50/p99 from connecting to the answer, and the ratios.
//! `cargo bench --bench mtls -- [--gateways N] [--threads T]`

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Client, HubProc, FORM};

/// The hub process's CPU time so far (user + system), from /proc.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').skip(11).take(2).map(|v| v.parse().unwrap()).collect();
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis((f[0] + f[1]) * 1000 / hz)
}

struct Phase {
    name: &'static str,
    cpu: Duration,
    wall: Duration,
    lat: Vec<Duration>,
}

impl Phase {
    fn pct(&self, p: f64) -> Duration {
        self.lat[((self.lat.len() - 1) as f64 * p).round() as usize]
    }

    fn cpu_per_conn_us(&self) -> f64 {
        self.cpu.as_micros() as f64 / self.lat.len() as f64
    }

    fn print(&self) {
        println!(
            "{:<28} {:>6} connections in {:>6.1} s; hub CPU {:>7} ms = {:>6.0} us a connection; p50 {:>6.1} ms, p99 {:>6.1} ms",
            self.name,
            self.lat.len(),
            self.wall.as_secs_f64(),
            self.cpu.as_millis(),
            self.cpu_per_conn_us(),
            self.pct(0.5).as_secs_f64() * 1e3,
            self.pct(0.99).as_secs_f64() * 1e3,
        );
    }
}

/// Every gateway once, `threads` at a time: a new client (so a new connection and a full
/// handshake) and one write, which must be answered 204.
fn phase(
    name: &'static str,
    hub: &HubProc,
    n: usize,
    threads: usize,
    client: &(dyn Fn(usize) -> (ureq::Agent, Option<String>) + Sync),
) -> Phase {
    let next = AtomicUsize::new(0);
    let (cpu0, t0) = (cpu(hub.child.id()), Instant::now());
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break mine;
                        }
                        let (agent, token) = client(i);
                        let start = Instant::now();
                        let mut rq =
                            agent.post(format!("{}/onep:v1/stack/alias", hub.url)).header("Content-Type", FORM);
                        if let Some(t) = &token {
                            rq = rq.header("X-Exosite-CIK", t);
                        }
                        let r = common::reply(rq.send(format!("temp={i}")));
                        assert_eq!(r.status, 204, "{name}: gateway {i}: {}", r.text());
                        mine.push(start.elapsed());
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let (wall, cpu) = (t0.elapsed(), cpu(hub.child.id()) - cpu0);
    lat.sort();
    Phase { name, cpu, wall, lat }
}

fn main() {
    let (mut n, mut threads) = (10_000usize, 32usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--gateways" => n = args.next().and_then(|v| v.parse().ok()).expect("--gateways N"),
            "--threads" => threads = args.next().and_then(|v| v.parse().ok()).expect("--threads T"),
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = common::pki(d, "server");
    let sns: Vec<String> = (0..n).map(|i| format!("M{i:05}")).collect();
    let leaves: Vec<(String, String)> = sns.iter().map(|s| (s.clone(), s.clone())).collect();
    let t = Instant::now();
    let devices = common::issue(d, "devices", &leaves);
    println!("{n} device certificates (ECDSA P-256) issued in {:.1} s", t.elapsed().as_secs_f64());
    let db = common::db_url(common::Backend::Sqlite, d);
    let ca = devices.ca_file.to_str().unwrap().to_string();
    let extra = ["--device-ca", ca.as_str()];
    let hub = HubProc::start_tls(&db, d, &server, &extra);
    let c = Client { hub: hub.clone(), agent: common::trusting(&server.ca_pem) };
    let tokens: Vec<String> = sns
        .iter()
        .map(|sn| {
            c.whitelist("acme", "gw1", sn);
            let r = c.activate("acme", "gw1", sn);
            assert_eq!(r.status, 200, "{}", r.text());
            r.text().trim().to_string()
        })
        .collect();
    let files = |sn: &str| -> (PathBuf, PathBuf) { (d.join(format!("{sn}.pem")), d.join(format!("{sn}.key"))) };
    let ca_pem = server.ca_pem.clone();
    let by_token = |i: usize| (common::trusting(&ca_pem), Some(tokens[i].clone()));
    let by_cert = |i: usize| {
        let (cert, key): (PathBuf, PathBuf) = files(&sns[i]);
        (common::with_client_cert(&ca_pem, Path::new(&cert), Path::new(&key)), None)
    };
    println!("{n} gateways, {threads} at a time, a new TLS connection each:");
    let a = phase("token over TLS", &hub, n, threads, &by_token);
    a.print();
    let m = phase("client certificate (mTLS)", &hub, n, threads, &by_cert);
    m.print();
    // Each certificate's write went to the device of its serial: now two values each.
    for id in [1, n] {
        let h = c.op_get(&format!("/api/v1/devices/{id}/dataports/temp/history?limit=10"));
        assert_eq!(h.json().as_array().map(Vec::len), Some(2), "device {id}: {}", h.text());
    }
    let b = phase("token over TLS, again", &hub, n, threads, &by_token);
    b.print();
    let token_cpu = (a.cpu_per_conn_us() + b.cpu_per_conn_us()) / 2.0;
    let token_p99 = (a.pct(0.99) + b.pct(0.99)).as_secs_f64() / 2.0;
    println!(
        "mTLS / token: hub CPU a connection {:.2}x, p99 {:.2}x",
        m.cpu_per_conn_us() / token_cpu,
        m.pct(0.99).as_secs_f64() / token_p99
    );
}
