//! The local API under abuse, with the real agent: 1,000 connections held open, a 32 MB
//! request head, oversized bodies and clients that send one byte at a time, while an app
//! keeps writing. The app's writes all get their 204; the agent's memory and threads stay
//! flat. Resident memory is asserted under 8 MB on the release build, as shipped (a debug
//! build alone is 12 MB); the figures are printed.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "a measured count of connections, small and positive"
)]

#[path = "support/cargo_env.rs"]
mod cargo_env;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The agent, its state directory (kept while it runs) and its API's port.
struct Agent(Child, #[allow(dead_code)] tempfile::TempDir, u16);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The agent as shipped: the release build (cargo builds it once; CI's benches reuse it).
fn release_bin() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // As a plain `cargo build --release` makes it: CI's supervisor benchmark reuses it.
    let ok = cargo_env::cargo()
        .args(["build", "--quiet", "--release", "--locked", "--bin", "gwe", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .status()
        .unwrap();
    assert!(ok.success(), "building the release agent failed");
    root.join("target/release/gwe")
}

fn start() -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = format!(
        "[device]\nserial = \"L1\"\n[paths]\nstate_dir = \"{0}/state\"\nlog_dir = \"{0}/log\"\nrun_dir = \"{0}/run\"\n\
         [ingest]\nlisten = \"127.0.0.1:{port}\"\n[supervisor]\nprograms_dir = \"{0}/programs.d\"\n",
        dir.path().display()
    );
    std::fs::write(dir.path().join("gwe.toml"), cfg).unwrap();
    let child = Command::new(release_bin())
        .arg("--config")
        .arg(dir.path().join("gwe.toml"))
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "the agent's API did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Agent(child, dir, port)
}

/// (VmRSS kB, threads) of a process.
fn rss_threads(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| -> u64 {
        s.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

fn status_of(resp: &[u8]) -> u16 {
    String::from_utf8_lossy(resp).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "measures a native process's memory: under qemu-user (scripts/test-arm.sh) it would measure QEMU"
)]
fn abuse_costs_the_agent_nothing_and_apps_still_get_their_204s() {
    let agent = start();
    let (pid, port) = (agent.0.id(), agent.2);
    let token = {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let body = "sn=L1";
        write!(
            s,
            "POST /provision/activate HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r.split("\r\n\r\n").nth(1).unwrap().trim().to_string()
    };
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, threads0) = rss_threads(pid);

    // 1,000 connections held open, idle.
    let held: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    // Slow clients: a byte every 100 ms.
    let slow: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dripper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let req = b"POST /onep:v1/stack/alias HTTP/1.1\r\nHost: x\r\n";
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < req.len() {
                for mut s in &slow {
                    let _ = s.write_all(&req[i..i + 1]);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            slow
        })
    };
    // Oversized requests: a 32 MB head, a body over max_body, a flood of headers.
    let abuse = std::thread::spawn(move || {
        let mut statuses = Vec::new();
        for kind in 0..3 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let head: Vec<u8> = match kind {
                0 => {
                    let mut h = b"POST /onep:v1/stack/alias HTTP/1.1\r\nX-Big: ".to_vec();
                    h.extend(std::iter::repeat_n(b'a', 32 << 20));
                    h
                }
                1 => b"POST /onep:v1/stack/alias HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n".to_vec(),
                _ => {
                    let mut h = b"POST /onep:v1/stack/alias HTTP/1.1\r\n".to_vec();
                    for i in 0..200 {
                        h.extend(format!("X-H{i}: v\r\n").bytes());
                    }
                    h.extend(b"\r\n");
                    h
                }
            };
            let _ = s.write_all(&head); // the agent may close its side before all of it is sent
            let mut resp = Vec::new();
            let _ = s.read_to_end(&mut resp);
            statuses.push(status_of(&resp));
        }
        statuses
    });

    // Meanwhile an app writes, one request after another on its own connection.
    let mut app = TcpStream::connect(("127.0.0.1", port)).unwrap();
    app.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    app.set_nodelay(true).unwrap();
    let mut lat = Vec::new();
    let mut peak = (0, 0);
    for i in 0..400 {
        let body = format!("temp={i}");
        let rq = format!(
            "POST /onep:v1/stack/alias HTTP/1.1\r\nHost: x\r\nX-Exosite-CIK: {token}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let t = Instant::now();
        app.write_all(rq.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = app.read(&mut buf).unwrap();
        lat.push(t.elapsed());
        assert_eq!(status_of(&buf[..n]), 204, "write {i}: {}", String::from_utf8_lossy(&buf[..n]));
        if i % 20 == 0 {
            let now = rss_threads(pid);
            peak = (peak.0.max(now.0), peak.1.max(now.1));
        }
    }
    let statuses = abuse.join().unwrap();
    let during = rss_threads(pid);
    peak = (peak.0.max(during.0), peak.1.max(during.1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let slow = dripper.join().unwrap();
    assert_eq!(statuses, [431, 413, 431], "32 MB head, 100 MB body, 200 headers");
    // A slow client that has not sent a whole request in 10 s is answered 408 and closed.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"POST /onep:v1/stack/alias HTTP/1.1\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    assert_eq!(status_of(&resp), 408, "{}", String::from_utf8_lossy(&resp));
    assert!(t.elapsed() < Duration::from_secs(15));
    drop((held, slow));

    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "local API under abuse: {} app writes, p50 {:?}, p99 {:?}, max {:?}; agent VmRSS {rss0} kB before, \
         {} kB at the peak; threads {threads0} before, {} at the peak",
        lat.len(),
        p(0.5),
        p(0.99),
        lat[lat.len() - 1],
        peak.0,
        peak.1
    );
    assert!(peak.0 < 8 * 1024, "the agent's VmRSS reached {} kB", peak.0);
    assert!(peak.1 <= threads0 + 2, "threads grew from {threads0} to {}: a thread per connection?", peak.1);
}
