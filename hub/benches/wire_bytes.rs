//! Bytes on the wire per 1,000 points, side by side through one byte-counting TCP relay in
//! front of one hub:
//! - gwe: the real agent (`gwe run`); an app records the points through its local API and
//!   the forwarder sends them as deflated GWB1 batches;
//! - form, batched: the same points as plain form-encoded `POST /onep:v1/stack/record`
//!   requests, one request per alias per 250 points, on a kept-alive connection;
//! - form, one per point: one record request per point, as a naive client sends them.
//!
//! Counts TCP payload both ways (requests, answers, headers), not IP/TCP headers.
//! `cargo bench --bench wire_bytes -- [--points N]`

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::agent::{values, wait_for, Agent};
use common::relay::Relay;
use common::{Client, HubProc, FORM};

const ALIASES: [&str; 4] = ["temperature", "humidity", "pressure", "co2_ppm"];

/// Sensor-like points: a value every second per alias, drifting slowly.
fn points(n: usize) -> Vec<(&'static str, i64, String)> {
    let mut v = [21.5f64, 45.0, 1013.2, 412.0];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let a = i % ALIASES.len();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v[a] += ((seed % 21) as f64 - 10.0) / 100.0;
        out.push((ALIASES[a], 1_700_000_000 + (i / ALIASES.len()) as i64, format!("{:.2}", v[a])));
    }
    out
}

fn main() {
    let mut n = 1000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--points" {
            n = args.next().and_then(|v| v.parse().ok()).expect("--points N");
        }
    }
    let pts = points(n);
    let payload: usize = pts.iter().map(|(a, t, v)| a.len() + t.to_string().len() + v.len()).sum();
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(common::Backend::Sqlite, dir.path());
    let hub = Arc::new(HubProc::start(&db, dir.path()));
    let c = Client::new(hub.clone());
    let counts = Relay::start(hub.port);
    let via = format!("http://localhost:{}", counts.port);

    // gwe: the agent forwards what an app recorded, 50 points per local request.
    let dev = c.whitelist("acme", "gw1", "E2E1");
    let agent = Agent::start(&dir.path().join("agent"), &via, "report_interval_secs = 86400\n");
    wait_for("the agent's first telemetry at the hub", 30, || !values(&c, dev, "engine_report").is_empty());
    std::thread::sleep(Duration::from_secs(2));
    counts.take();
    let http = common::agent();
    for a in ALIASES {
        let mine: Vec<(i64, String)> = pts.iter().filter(|p| p.0 == a).map(|p| (p.1, p.2.clone())).collect();
        for chunk in mine.chunks(50) {
            agent.record(&http, a, chunk);
        }
    }
    wait_for("every point at the hub", 60, || ALIASES.iter().map(|a| values(&c, dev, a).len()).sum::<usize>() >= n);
    // values() goes to the hub directly, not through the relay.
    let gwe = counts.take();
    drop(agent);

    // The same points as plain record requests of another device, through the same relay.
    c.whitelist("acme", "gw1", "FORM1");
    let token = c.activate("acme", "gw1", "FORM1").text();
    let client = common::agent();
    let post = |body: String| {
        let r = common::reply(
            client
                .post(format!("{via}/onep:v1/stack/record"))
                .header("X-Exosite-CIK", &token)
                .header("Content-Type", FORM)
                .header("User-Agent", "gwe/0.1.0")
                .send(body),
        );
        assert_eq!(r.status, 204, "{}", r.text());
    };
    counts.take();
    for a in ALIASES {
        let mine: Vec<_> = pts.iter().filter(|p| p.0 == a).collect();
        for chunk in mine.chunks(250) {
            let mut f = form_urlencoded::Serializer::new(String::new());
            f.append_pair("alias", a);
            for (_, t, v) in chunk {
                f.append_pair(&t.to_string(), v);
            }
            post(f.finish());
        }
    }
    let batched = counts.take();
    for (a, t, v) in &pts {
        let mut f = form_urlencoded::Serializer::new(String::new());
        f.append_pair("alias", a).append_pair(&t.to_string(), v);
        post(f.finish());
    }
    let single = counts.take();

    let per_k = |(u, d): (u64, u64)| (u + d) as f64 * 1000.0 / n as f64;
    println!("bytes on the wire per 1,000 points ({n} points, 4 aliases, payload {payload} bytes of text)");
    println!("| sender | up | down | total per 1,000 points | gwe / this |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, c) in [
        ("gwe forwarder (deflated batches)", gwe),
        ("form record, batched", batched),
        ("form record, one per point", single),
    ] {
        println!("| {name} | {} | {} | {:.0} | {:.3} |", c.0, c.1, per_k(c), per_k(gwe) / per_k(c));
    }
    println!(
        "RESULT gwe/form_batched={:.3} gwe/form_single={:.3} (target <= 0.40)",
        per_k(gwe) / per_k(batched),
        per_k(gwe) / per_k(single)
    );
}
