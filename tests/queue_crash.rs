//! Crash harness: a child process appends as fast as it can from 4 threads and prints each
//! acknowledged seq; the parent SIGKILLs it at a random moment, reopens the queue and checks
//! that every acknowledged record is present, intact and in order. Cycles: GWE_CRASH_CYCLES
//! (CI 20; `scripts/crash-campaign.sh queue --cycles 1000` for the full campaign).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gwe::queue::{Options, Queue};
use rand::Rng;

fn opts() -> Options {
    // Small segments so rolls and deletions happen inside the campaign.
    Options { consumers: vec!["verify".into()], segment_bytes: 64 << 10, max_bytes: 256 << 20, ..Options::default() }
}

fn payload(producer: u64, counter: u64) -> Vec<u8> {
    let mut p = format!("p{producer}-c{counter}-").into_bytes();
    let fill = 40 + (counter * 7 + producer) % 120;
    p.extend((0..fill).map(|i| b'a' + ((i + counter) % 26) as u8));
    p
}

/// The child: run only when the parent sets GWE_CRASH_CHILD_DIR.
#[test]
#[ignore = "child process of acknowledged_records_survive_sigkill"]
fn crash_child() {
    let Some(dir) = std::env::var_os("GWE_CRASH_CHILD_DIR") else {
        return;
    };
    let q = Arc::new(Queue::open(dir.as_ref(), opts()).unwrap());
    let start: u64 = std::env::var("GWE_CRASH_CHILD_START").unwrap().parse().unwrap();
    println!("READY");
    let threads: Vec<_> = (0..4u64)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                let out = std::io::stdout();
                for c in start.. {
                    let seq = q.append(&payload(p, c)).unwrap();
                    // One write per line: a line in the pipe is a whole acknowledgement.
                    let line = format!("ACK {seq} {p} {c}\n");
                    out.lock().write_all(line.as_bytes()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let cycles: u32 = std::env::var("GWE_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let (mut total_acked, mut total_checked) = (0u64, 0u64);
    let started = Instant::now();
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("GWE_CRASH_CHILD_DIR", dir.path())
            .env("GWE_CRASH_CHILD_START", (u64::from(cycle) * 10_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.split_whitespace().collect();
                if let ["ACK", s, p, c] = f[..] {
                    acks.push((s.parse::<u64>().unwrap(), p.parse::<u64>().unwrap(), c.parse::<u64>().unwrap()));
                }
            }
            acks
        });
        // Cut at a random moment: sometimes during start-up and recovery, mostly mid-write.
        let cut_ms = rng.gen_range(5..250);
        std::thread::sleep(Duration::from_millis(cut_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();

        let q = Queue::open(dir.path(), opts()).unwrap();
        let mut c = q.consumer("verify").unwrap();
        let mut found: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut last = 0;
        while c
            .poll(10_000, Duration::ZERO, |s, p| {
                assert!(s > last, "cycle {cycle}: seq {s} after {last}: out of order");
                last = s;
                found.insert(s, p.to_vec());
            })
            .unwrap()
            > 0
        {}
        for &(seq, p, ctr) in &acks {
            let got = found
                .get(&seq)
                .unwrap_or_else(|| panic!("cycle {cycle} (cut at {cut_ms} ms): acknowledged seq {seq} is lost"));
            assert_eq!(got, &payload(p, ctr), "cycle {cycle}: seq {seq} corrupted");
        }
        let s = q.stats();
        assert_eq!(s.counters.lost_records, 0, "cycle {cycle}");
        assert_eq!(s.counters.corrupt_segments, 0, "cycle {cycle}");
        total_acked += acks.len() as u64;
        total_checked += found.len() as u64;
        println!(
            "cycle {cycle:4}: cut at {cut_ms:3} ms, {:6} acknowledged, {:6} on disk, torn bytes so far {}",
            acks.len(),
            found.len(),
            s.counters.torn_bytes
        );
        c.ack(last).unwrap();
    }
    println!(
        "crash campaign: {cycles} SIGKILL cycles, {total_acked} acknowledged records all found intact and in order \
         ({total_checked} read back), {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
