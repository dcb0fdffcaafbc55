//! One rule set for bad input on both sides (`docs/cloud-protocol.md`, "Bad input"): the
//! same requests, sent to the hub's device API and to the agent's local GMQ API, get the
//! same status with a one-line reason naming the problem, and store nothing.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use common::agent::Agent;
use common::{Backend, Client, HubProc, FORM};

/// Sends a raw request (so bytes that are not UTF-8 go as they are); status and body.
fn raw(port: u16, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut rq = format!("{head}Host: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    rq.extend_from_slice(body);
    s.write_all(&rq).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// What is sent, and how both sides must answer: (what, path, extra headers, body,
/// status, what the reason names).
type Case<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str);

#[test]
fn the_hub_and_the_agent_refuse_bad_input_alike() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(HubProc::start(&common::db_url(Backend::Sqlite, dir.path()), dir.path()));
    let c = Client::new(hub.clone());
    let dev = c.whitelist("acme", "gw1", "BAD1");
    let hub_token = c.activate("acme", "gw1", "BAD1").text();
    // The agent runs without a cloud, so what it queues stays countable on its disk.
    let agent = Agent::start_as(&dir.path().join("agent"), "", "BAD1", "", "");
    let hub_port: u16 = hub.url.rsplit(':').next().unwrap().parse().unwrap();
    let sides = [("hub", hub_port, hub_token), ("agent", agent.ingest, agent.local_token())];

    let form = format!("Content-Type: {FORM}\r\n");
    let long_alias = format!("{}=1", "a".repeat(300));
    let cases: Vec<Case> = vec![
        ("bad percent escape", "/onep:v1/stack/alias", &form, b"a=%ZZ".to_vec(), 400, "bad percent escape"),
        ("a cut escape", "/onep:v1/stack/alias", &form, b"a=1&b=x%4".to_vec(), 400, "pair 2 has a bad percent escape"),
        ("escaped non-UTF-8", "/onep:v1/stack/alias", &form, b"a=%FF%FE".to_vec(), 400, "not UTF-8"),
        ("raw non-UTF-8", "/onep:v1/stack/alias", &form, b"a=\xff\xfe".to_vec(), 400, "not UTF-8"),
        ("a pair without =", "/onep:v1/stack/alias", &form, b"a=1&broken".to_vec(), 400, "(\"broken\") has no '='"),
        ("an empty body", "/onep:v1/stack/alias", &form, Vec::new(), 400, "in the body"),
        ("an empty alias", "/onep:v1/stack/alias", &form, b"=5".to_vec(), 400, "must be 1 to"),
        ("a long alias", "/onep:v1/stack/alias", &form, long_alias.into_bytes(), 400, "must be 1 to"),
        (
            "JSON",
            "/onep:v1/stack/alias",
            "Content-Type: application/json\r\n",
            b"{\"a\":1}".to_vec(),
            415,
            "is not application/x-www-form-urlencoded",
        ),
        (
            "a timestamp in words",
            "/onep:v1/stack/record",
            &form,
            b"alias=x&yesterday=1".to_vec(),
            400,
            "\"yesterday\" is not unix seconds",
        ),
        ("an exponent", "/onep:v1/stack/record", &form, b"alias=x&1e9=1".to_vec(), 400, "is not unix seconds"),
        ("a negative time", "/onep:v1/stack/alias/x", &form, b"-5=1".to_vec(), 400, "is not unix seconds"),
        ("points before their alias", "/onep:v1/stack/record", &form, b"1700000000=1".to_vec(), 400, "alias="),
    ];
    let mut failures = Vec::new();
    for (what, path, extra, body, want, reason) in &cases {
        for (side, port, token) in &sides {
            let head = format!("POST {path} HTTP/1.1\r\nX-Exosite-CIK: {token}\r\n{extra}");
            let (status, text) = raw(*port, &head, body);
            let one_line = text.trim_end().lines().count() == 1;
            if status != *want || !text.contains(reason) || !one_line {
                failures.push(format!("{side}, {what}: {status} {text:?} (want {want} naming {reason:?})"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Good input is taken alike, fractional timestamps too; and only it was stored.
    for (side, port, token) in &sides {
        let head = format!("POST /onep:v1/stack/record HTTP/1.1\r\nX-Exosite-CIK: {token}\r\n{form}");
        let (status, text) = raw(*port, &head, b"alias=level&1700000000.5=3&1700000001=4");
        assert_eq!(status, 204, "{side}: {text}");
    }
    let hist = c.op_get(&format!("/api/v1/devices/{dev}/dataports/level/history"));
    let hist: serde_json::Value = serde_json::from_slice(&hist.body).unwrap();
    assert_eq!(hist.as_array().unwrap().len(), 2, "the hub stored the good points only: {hist}");
    let out = std::process::Command::new(common::agent::agent_bin())
        .arg("--config")
        .arg(agent.dir.join("gwe.toml"))
        .args(["queue", "dump"])
        .output()
        .unwrap();
    let queued: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4 && !["device_info", "usage_report", "engine_report"].contains(&f[2]))
                .then(|| (f[1].to_string(), f[2].to_string()))
        })
        .collect();
    let want = [("1700000000", "level"), ("1700000001", "level")].map(|(t, a)| (t.to_string(), a.to_string()));
    assert_eq!(queued, want, "the agent queued the good points only");

    // The hub's long-poll headers have ranges too.
    let (_, _, token) = &sides[0];
    let head =
        format!("GET /onep:v1/stack/alias?level HTTP/1.1\r\nX-Exosite-CIK: {token}\r\nRequest-Timeout: 300001\r\n");
    let (status, text) = raw(hub_port, &head, b"");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Request-Timeout \"300001\" is not whole milliseconds from 0 to 300000"), "{text}");
    let head = format!("GET /onep:v1/stack/alias?%ZZ HTTP/1.1\r\nX-Exosite-CIK: {token}\r\n");
    assert_eq!(raw(hub_port, &head, b"").0, 400);
}
