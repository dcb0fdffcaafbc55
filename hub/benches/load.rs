//! Load generator: N simulated gateways against hub processes on one machine. Each gateway
//! keeps a long-poll open on its `cmd` dataport (as the agent waits for commands) and writes
//! a value every 5 s on a second kept-alive connection. Meanwhile an operator issues
//! commands to random gateways and the time until that gateway's long-poll returns them is
//! measured. Printed per database: sustained gateways (connected all along, every write
//! answered 204), writes/s, write latency p50/p99 (from the moment the write was due, so a
//! stalled hub cannot hide behind a stalled generator), command wake-up p50/p99, and CPU.
//!
//! This sandbox allows 20,000 open files per process, so one hub process can hold about
//! 9,000 gateways (two connections each): gateways are spread over `--hubs` processes on
//! their own ports, as a load balancer would, and the simulated gateways over worker
//! processes of this bench.
//!
//! `cargo bench --bench load -- [--gateways N] [--seconds S] [--db sqlite|postgres|both]
//! [--hubs H] [--interval-ms 5000]`

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Client, HubOpts, HubProc};

/// Gateways per worker process and per hub process (two sockets each, under 20,000 files).
const PER_WORKER: usize = 8_000;
const PER_HUB: usize = 8_500;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Spec {
    ports: Vec<u16>,
    tokens: Vec<(usize, String)>,
    /// Unix ms: measurement window.
    window: (u64, u64),
    interval_ms: u64,
    poll_ms: u64,
    /// Gateways this worker starts per second.
    ramp_per_sec: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stats {
    write_us: Vec<u32>,
    /// Writes slower than 100 ms: (ms from the window's start when due, latency ms, hub).
    slow: Vec<(u32, u32, u8)>,
    wake_ms: Vec<u32>,
    write_errors: u64,
    poll_errors: u64,
    gateways: u64,
    /// Unix ms when the last of these gateways had its first write answered: the ramp's end.
    ramp_done_ms: u64,
    /// Gateways with no error and every due write answered.
    sustained: u64,
}

impl Stats {
    fn merge(&mut self, s: Stats) {
        self.write_us.extend(s.write_us);
        self.slow.extend(s.slow);
        self.wake_ms.extend(s.wake_ms);
        self.write_errors += s.write_errors;
        self.poll_errors += s.poll_errors;
        self.gateways += s.gateways;
        self.ramp_done_ms = self.ramp_done_ms.max(s.ramp_done_ms);
        self.sustained += s.sustained;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The tokio instant of a unix-ms time.
fn at(ms: u64) -> tokio::time::Instant {
    let now = unix_ms();
    let now_i = tokio::time::Instant::now();
    if ms >= now {
        now_i + Duration::from_millis(ms - now)
    } else {
        now_i.checked_sub(Duration::from_millis(now - ms)).unwrap_or(now_i)
    }
}

/// One kept-alive HTTP/1.1 connection, spoken by hand: requests are formatted bytes and
/// only the status, `Content-Length` and `X-Gwe-Modified` of a response are read. The
/// generator shares the 2 cores with the hubs it measures, so it does no more than that.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

struct Response {
    status: u16,
    modified: Option<String>,
    body: Vec<u8>,
}

impl Conn {
    /// Connects from `src`, a loopback address of this gateway's own: with 100,000
    /// connections from one address to a few ports, the kernel's search for a free
    /// ephemeral port took more CPU than everything else in the run.
    async fn open(src: std::net::Ipv4Addr, port: u16) -> std::io::Result<Self> {
        let sock = tokio::net::TcpSocket::new_v4()?;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd and a c_int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        sock.bind((src, 0).into())?;
        let s = sock.connect(([127, 0, 0, 1], port).into()).await?;
        s.set_nodelay(true)?;
        Ok(Self { s, buf: Vec::with_capacity(512) })
    }

    async fn call(&mut self, rq: &[u8]) -> std::io::Result<Response> {
        self.s.write_all(rq).await?;
        self.buf.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut headers);
            let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
            if let httparse::Status::Complete(head) = r.parse(&self.buf).map_err(|e| bad(e.to_string()))? {
                let mut len = 0usize;
                let mut modified = None;
                for h in r.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = std::str::from_utf8(h.value).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
                    } else if h.name.eq_ignore_ascii_case("x-gwe-modified") {
                        modified = std::str::from_utf8(h.value).ok().map(str::to_string);
                    }
                }
                let status = r.code.unwrap_or(0);
                while self.buf.len() < head + len {
                    if self.s.read_buf(&mut self.buf).await? == 0 {
                        return Err(bad("connection closed mid-body".into()));
                    }
                }
                return Ok(Response { status, modified, body: self.buf[head..head + len].to_vec() });
            }
            if self.s.read_buf(&mut self.buf).await? == 0 {
                return Err(bad("connection closed".into()));
            }
        }
    }
}

/// One gateway: a writer and a long-poller until the window ends.
async fn gateway(src: std::net::Ipv4Addr, hub: usize, token: String, spec: Arc<Spec>, phase_ms: u64) -> Stats {
    let port = spec.ports[hub];
    let (w_start, w_end) = spec.window;
    // The long-polls stay open a while after the window: 50,000 of them closing at one
    // instant is a burst of work for the hubs that the writes of the window's last second
    // would otherwise be measured against.
    let end = at(w_end + 3_000);
    let host = format!("127.0.0.1:{port}");
    // The writer's half of the stats, and whether every due write was answered.
    let writer = async {
        let mut out = Stats::default();
        let mut all_ok = true;
        let Ok(mut conn) = Conn::open(src, port).await else {
            out.write_errors += 1;
            return (out, false);
        };
        let first = unix_ms() + phase_ms;
        let mut k = 0u64;
        loop {
            let due_ms = first + k * spec.interval_ms;
            if due_ms >= w_end {
                break;
            }
            k += 1;
            let due = at(due_ms);
            tokio::time::sleep_until(due).await;
            // The same bytes the agent sends: its token, a form body, keep-alive.
            let body = format!("temperature={}.{}", 20 + k % 7, k % 10);
            let rq = format!(
                "POST /onep:v1/stack/alias HTTP/1.1\r\nhost: {host}\r\nx-exosite-cik: {token}\r\n\
                 content-type: application/x-www-form-urlencoded; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            match conn.call(rq.as_bytes()).await {
                Ok(Response { status: 204, .. }) => {
                    if out.ramp_done_ms == 0 {
                        out.ramp_done_ms = unix_ms();
                    }
                    if due_ms >= w_start {
                        let us = due.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        out.write_us.push(us);
                        if us > 100_000 {
                            out.slow.push(((due_ms - w_start) as u32, us / 1000, hub as u8));
                        }
                    }
                }
                _ => {
                    out.write_errors += 1;
                    all_ok = false;
                    match Conn::open(src, port).await {
                        Ok(c) => conn = c,
                        Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
            }
        }
        // Kept open until the long-polls close too: 50,000 connections closing in the
        // window's last 5 s, each after its gateway's last write, cost the hubs as much as
        // the writes and were measured as a stall of every hub.
        tokio::time::sleep_until(end).await;
        drop(conn);
        (out, all_ok)
    };
    let poller = async {
        let mut out = (Vec::new(), 0u64);
        let mut conn = match Conn::open(src, port).await {
            Ok(c) => c,
            Err(_) => {
                out.1 += 1;
                return out;
            }
        };
        let mut since: Option<String> = None;
        let poll = async {
            loop {
                let mut rq = format!(
                    "GET /onep:v1/stack/alias?cmd HTTP/1.1\r\nhost: {host}\r\nx-exosite-cik: {token}\r\n\
                     request-timeout: {}\r\n",
                    spec.poll_ms
                );
                if let Some(s) = &since {
                    rq.push_str(&format!("if-modified-since: {s}\r\n"));
                }
                rq.push_str("\r\n");
                match conn.call(rq.as_bytes()).await {
                    Ok(Response { status: 200, modified, body }) => {
                        since = modified;
                        let issued = std::str::from_utf8(&body)
                            .ok()
                            .and_then(|b| b.strip_prefix("cmd="))
                            .and_then(|v| v.parse::<u64>().ok());
                        if let Some(t) = issued {
                            out.0.push(unix_ms().saturating_sub(t) as u32);
                        }
                    }
                    Ok(Response { status: 304, .. }) => {}
                    _ => {
                        out.1 += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if let Ok(c) = Conn::open(src, port).await {
                            conn = c;
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = poll => {}
            () = tokio::time::sleep_until(end) => {}
        }
        out
    };
    let ((st, all_ok), (wake_ms, poll_errors)) = tokio::join!(writer, poller);
    Stats { gateways: 1, sustained: u64::from(all_ok && poll_errors == 0), wake_ms, poll_errors, ..st }
}

fn worker(spec: Spec) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let spec = Arc::new(spec);
    let stats = rt.block_on(async {
        let mut tasks = Vec::new();
        // Each start at its own instant: sleeping a gap after each start ran late by the
        // timer's millisecond and by a busy machine, and the ramp reached into the window.
        let gap_us = 1_000_000 / spec.ramp_per_sec.max(1);
        let t0 = tokio::time::Instant::now();
        for (i, (dev, token)) in spec.tokens.iter().enumerate() {
            let hub = dev % spec.ports.len();
            let phase = (i as u64 * 7919) % spec.interval_ms;
            let src = std::net::Ipv4Addr::new(127, 2, (dev / 250 % 250) as u8, (dev % 250 + 1) as u8);
            tasks.push(tokio::spawn(gateway(src, hub, token.clone(), spec.clone(), phase)));
            tokio::time::sleep_until(t0 + Duration::from_micros((i as u64 + 1) * gap_us)).await;
        }
        let mut all = Stats::default();
        for t in tasks {
            all.merge(t.await.unwrap_or_default());
        }
        all
    });
    println!("{}", serde_json::to_string(&stats).expect("json"));
}

/// CPU seconds a process's threads ran so far, from the scheduler's own nanosecond
/// counts (`/proc/PID/task/*/schedstat`): the tick-sampled `utime`/`stime` of
/// `/proc/PID/stat` undercounted the hub by half on this machine.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    let mut ns = 0u64;
    for t in tasks.flatten() {
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    ns as f64 / 1e9
}

/// Busy CPU seconds of the whole machine, and the seconds the host gave to others (steal:
/// on a shared virtual machine a run's tail can be the neighbours').
fn machine_busy_steal_secs() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    ((f.iter().sum::<u64>() - idle) as f64 / 100.0, f.get(7).copied().unwrap_or(0) as f64 / 100.0)
}

/// Bytes the block devices were asked to write so far (`/sys/block/*/stat`, in sectors).
fn disk_written_bytes() -> u64 {
    let Ok(devs) = std::fs::read_dir("/sys/block") else { return 0 };
    devs.flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("stat")).ok())
        .filter_map(|s| s.split_whitespace().nth(6).and_then(|v| v.parse::<u64>().ok()))
        .sum::<u64>()
        * 512
}

/// Connections of earlier runs still in TIME_WAIT (`/proc/net/sockstat`): 100,000 of them
/// in the kernel's tables made the next run's tail several times longer.
fn tcp_time_wait() -> u64 {
    let s = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let tcp = s.lines().find(|l| l.starts_with("TCP:")).unwrap_or("");
    let mut it = tcp.split_whitespace();
    while let Some(w) = it.next() {
        if w == "tw" {
            return it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    0
}

fn pct(v: &mut [u32], p: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

struct Args {
    gateways: usize,
    seconds: u64,
    dbs: Vec<&'static str>,
    hubs: Option<usize>,
    interval_ms: u64,
}

fn run(db_kind: &str, a: &Args) -> bool {
    let t0 = Instant::now();
    while tcp_time_wait() > 1_000 && t0.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(500));
    }
    if t0.elapsed() > Duration::from_secs(1) {
        eprintln!(
            "load: waited {:.0} s for an earlier run's connections to leave TIME_WAIT",
            t0.elapsed().as_secs_f64()
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db = common::db_url(
        if db_kind == "postgres" { common::Backend::Postgres } else { common::Backend::Sqlite },
        dir.path(),
    );
    let n = a.gateways;
    let hubs = a.hubs.unwrap_or(n.div_ceil(PER_HUB)).max(1);
    let workers = n.div_ceil(PER_WORKER).max(1);
    // Provision through the store itself: N activations over HTTP would only time the setup.
    let t0 = Instant::now();
    let tokens: Vec<(usize, String)> = {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let store = gwe_hub::store::open(&db, Arc::new(gwe_hub::notify::Notifier::default())).await.expect("store");
            let mut out = Vec::with_capacity(n);
            for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
                let mut set = tokio::task::JoinSet::new();
                for &i in chunk {
                    let store = store.clone();
                    set.spawn(async move {
                        let key = gwe_hub::store::DeviceKey {
                            vendor: "acme".into(),
                            model: "gw1".into(),
                            sn: format!("LOAD{i:06}"),
                        };
                        let d = store.add_device(&key, 0).await.expect("add device");
                        let token = gwe_hub::new_token();
                        store.activate(&key, &gwe_hub::token_hash(&token), &token[..4]).await.expect("activate");
                        (d.id as usize, token)
                    });
                }
                while let Some(r) = set.join_next().await {
                    out.push(r.expect("provisioning task"));
                }
            }
            out
        })
    };
    eprintln!("load: {n} devices provisioned in {:.1} s", t0.elapsed().as_secs_f64());
    let procs: Vec<Arc<HubProc>> = (0..hubs)
        .map(|_| Arc::new(HubProc::start_with(HubOpts { db: &db, dir: dir.path(), port: 0, tls: None, extra: &[] })))
        .collect();
    let ports: Vec<u16> = procs.iter().map(|h| h.port).collect();
    let ramp_per_sec = 4_000u64;
    let ramp_ms = (n as u64 * 1000) / ramp_per_sec;
    let w_start = unix_ms() + ramp_ms + a.interval_ms + 3_000;
    let w_end = w_start + a.seconds * 1000;
    eprintln!("load: the window is unix ms {w_start} to {w_end}");
    let mut children = Vec::new();
    for w in 0..workers {
        let mine: Vec<(usize, String)> = tokens.iter().skip(w).step_by(workers).cloned().collect();
        let spec = Spec {
            ports: ports.clone(),
            tokens: mine,
            window: (w_start, w_end),
            interval_ms: a.interval_ms,
            poll_ms: 300_000,
            ramp_per_sec: ramp_per_sec / workers as u64,
        };
        // A file, not the environment: one environment string may not exceed 128 KiB.
        let spec_file = dir.path().join(format!("worker-{w}.json"));
        std::fs::write(&spec_file, serde_json::to_vec(&spec).expect("json")).expect("worker spec file");
        let child = Command::new(std::env::current_exe().expect("own path"))
            .env("GWE_LOAD_WORKER", &spec_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("worker process");
        children.push(child);
    }
    // Commands: an operator sets `cmd` for random gateways through the hub that gateway uses.
    while unix_ms() < w_start {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (cpu_hub0, cpu_gen0, (busy0, steal0), disk0) = (
        procs.iter().map(|h| cpu_secs(h.child.id())).sum::<f64>(),
        children.iter().map(|c| cpu_secs(c.id())).sum::<f64>(),
        machine_busy_steal_secs(),
        disk_written_bytes(),
    );
    let clients: Vec<Client> = procs.iter().map(|h| Client::new(h.clone())).collect();
    let mut cmds = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    while unix_ms() + 1_000 < w_end {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let dev = tokens[(seed % n as u64) as usize].0;
        let body = format!("{{\"value\":\"{}\"}}", unix_ms());
        let c = &clients[dev % hubs];
        let r = c.op_send("PUT", &format!("/api/v1/devices/{dev}/dataports/cmd"), "application/json", body.as_bytes());
        if r.status == 204 {
            cmds += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    while unix_ms() < w_end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (cpu_hub, cpu_gen, (busy, steal), disk) = (
        procs.iter().map(|h| cpu_secs(h.child.id())).sum::<f64>() - cpu_hub0,
        children.iter().map(|c| cpu_secs(c.id())).sum::<f64>() - cpu_gen0,
        machine_busy_steal_secs(),
        disk_written_bytes().saturating_sub(disk0),
    );
    let (busy, steal) = (busy - busy0, steal - steal0);
    let mut all = Stats::default();
    for mut c in children {
        let mut line = String::new();
        BufReader::new(c.stdout.take().expect("stdout")).read_line(&mut line).expect("worker output");
        let _ = c.wait();
        all.merge(serde_json::from_str(&line).unwrap_or_default());
    }
    let secs = a.seconds as f64;
    let writes = all.write_us.len();
    let (p50, p99, max) =
        (pct(&mut all.write_us, 0.50), pct(&mut all.write_us, 0.99), all.write_us.last().copied().unwrap_or(0));
    let (w50, w99) = (pct(&mut all.wake_ms, 0.50), pct(&mut all.wake_ms, 0.99));
    let other = (busy - cpu_hub - cpu_gen).max(0.0);
    println!(
        "| {db_kind} | {n} | {hubs} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {}/{cmds} | {w50} | {w99} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {} |",
        all.sustained,
        writes as f64 / secs,
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        max as f64 / 1000.0,
        all.wake_ms.len(),
        cpu_hub / secs,
        other / secs,
        cpu_gen / secs,
        steal / secs,
        disk as f64 / 1e6 / secs,
        all.write_errors + all.poll_errors,
    );
    eprintln!(
        "load: the last gateway's first write was answered {:.1} s {} the window began",
        (all.ramp_done_ms as f64 - w_start as f64).abs() / 1000.0,
        if all.ramp_done_ms <= w_start { "before" } else { "after" }
    );
    report_slow(&all.slow, hubs);
    let ok = all.sustained as usize == n && p99 < 100_000;
    println!(
        "RESULT db={db_kind} gateways={n} sustained={} write_p99_ms={:.1} wake_p99_ms={w99} hub_cores={:.2} target_met={ok}",
        all.sustained,
        p99 as f64 / 1000.0,
        cpu_hub / secs
    );
    ok
}

/// Where the writes slower than 100 ms fell: by 200 ms of the window, how many, the
/// slowest, and how many went to each hub. A stall of one hub process shows in one column,
/// a stall of the shared database or of the whole machine in all of them.
fn report_slow(slow: &[(u32, u32, u8)], hubs: usize) {
    let mut by: std::collections::BTreeMap<u32, (u32, u32, Vec<u32>)> = Default::default();
    for &(due, ms, hub) in slow {
        let b = by.entry(due / 200).or_insert_with(|| (0, 0, vec![0; hubs]));
        b.0 += 1;
        b.1 = b.1.max(ms);
        if let Some(h) = b.2.get_mut(hub as usize) {
            *h += 1;
        }
    }
    eprintln!("load: {} writes took over 100 ms, in {} spans of 200 ms", slow.len(), by.len());
    let mut worst: Vec<_> = by.into_iter().collect();
    worst.sort_by_key(|(_, (n, ..))| std::cmp::Reverse(*n));
    worst.truncate(12);
    worst.sort_by_key(|(t, _)| *t);
    for (t, (n, max, per)) in worst {
        eprintln!("load:   at {:5.1} s: {n:5} slow, slowest {max} ms, per hub {per:?}", t as f64 / 5.0);
    }
}

fn main() {
    if let Ok(spec) = std::env::var("GWE_LOAD_WORKER") {
        worker(serde_json::from_slice(&std::fs::read(spec).expect("worker spec file")).expect("worker spec"));
        return;
    }
    // A durable PostgreSQL, as SQLite's commits are (synchronous=FULL).
    std::env::set_var("GWE_PG_DURABLE", "1");
    let mut a = Args { gateways: 1000, seconds: 20, dbs: vec!["sqlite", "postgres"], hubs: None, interval_ms: 5000 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--gateways" => a.gateways = val().parse().expect("--gateways N"),
            "--seconds" => a.seconds = val().parse().expect("--seconds S"),
            "--hubs" => a.hubs = Some(val().parse().expect("--hubs H")),
            "--interval-ms" => a.interval_ms = val().parse().expect("--interval-ms MS"),
            "--db" => {
                a.dbs = match val().as_str() {
                    "sqlite" => vec!["sqlite"],
                    "postgres" => vec!["postgres"],
                    _ => vec!["sqlite", "postgres"],
                }
            }
            _ => {} // cargo bench adds --bench
        }
    }
    println!(
        "load: {} gateways, a write every {} ms each plus a long-poll, {} s measured",
        a.gateways, a.interval_ms, a.seconds
    );
    println!("| db | gateways | hub procs | sustained | writes/s | write p50 ms | p99 ms | max ms | cmds woken | wake p50 ms | p99 ms | hub cores | db+other cores | generator cores | stolen cores | disk MB/s | errors |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let dbs = a.dbs.clone();
    let mut all_ok = true;
    for db in dbs {
        all_ok &= run(db, &a);
    }
    if !all_ok {
        println!("RESULT target missed (every gateway sustained, write p99 < 100 ms)");
    }
}
