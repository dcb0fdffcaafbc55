//! The edge data and control paths end to end: two real agents (edges), two real hubs
//! (providers) that find each other through the service registry of the first. On
//! SQLite each hub has its own database; on PostgreSQL both share one.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use common::agent::{wait_for, wait_for_or, Agent};
use common::{Backend, Client, HubOpts, HubProc};

const EDGE: &str = "[edge]\npoll_ms = 300\ndiscovery_secs = 2\nparameters_secs = 5\n";

fn hub(db: &str, dir: &Path, extra: &[&str]) -> Arc<HubProc> {
    std::fs::create_dir_all(dir).unwrap();
    Arc::new(HubProc::start_with(HubOpts { db, dir, port: 0, tls: None, extra }))
}

fn issue(c: &Client, system: &str, cmd: Value) {
    let r = c.op_send("POST", &format!("/edge/cmd/{system}"), "application/json", cmd.to_string().as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
}

fn control(c: &Client, system: &str) -> Value {
    let r = c.op_get(&format!("/edge/cmd/{system}?last=true"));
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// Waits until `system`'s state, as reported to `c`'s hub, shows command `id` with `result`.
fn wait_result(c: &Client, system: &str, id: &str, result: &str) -> Value {
    let mut state = Value::Null;
    wait_for(&format!("{system} to report command {id} {result}"), 30, || {
        state = control(c, system)["state"].clone();
        state["last_command"]["id"] == id && state["last_command"]["result"] == result
    });
    state
}

fn points(c: &Client, system: &str, provider: &str) -> Vec<Value> {
    let r = c.op_get(&format!("/api/v1/edge/{system}/points?provider={provider}&limit=1000000"));
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice::<Value>(&r.body).unwrap()["points"].as_array().unwrap().clone()
}

fn batch_times(c: &Client, system: &str, provider: &str) -> Vec<i64> {
    let r = c.op_get(&format!("/api/v1/edge/{system}/batches?provider={provider}"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["batches"].as_array().unwrap().iter().map(|b| b["received_ms"].as_i64().unwrap()).collect()
}

/// Values of the points with name `name`, checked to be stored once each, but for the
/// values an app sent twice because a send of it failed (the agent may have stored it before
/// it was killed): those may be there twice.
fn once_each_but(pts: &[Value], name: &str, resent: &HashSet<u64>) -> Vec<u64> {
    let mut seen = HashMap::new();
    for p in pts.iter().filter(|p| p["name"] == name) {
        *seen.entry(p["value"].as_str().unwrap().parse::<u64>().unwrap()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(v, n)| **n > 1 && !(**n == 2 && resent.contains(*v))).collect();
    assert!(twice.is_empty(), "{name}: stored twice: {twice:?}");
    let mut v: Vec<u64> = seen.into_keys().collect();
    v.sort_unstable();
    v
}

/// An app writing `name` = 0, 1, 2, ... through an edge's ingest API until stopped.
struct Writer {
    /// The edge's ingest port (it changes when the edge restarts).
    port: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicUsize>,
    /// Values whose send failed at least once (sent again; maybe stored twice).
    resent: Arc<Mutex<HashSet<u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(ingest: u16, token: String, names: &'static [&'static str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let port = Arc::new(AtomicU16::new(ingest));
        let resent = Arc::new(Mutex::new(HashSet::new()));
        let (s, n, pt, rs) = (stop.clone(), next.clone(), port.clone(), resent.clone());
        let thread = std::thread::spawn(move || {
            let http = common::agent();
            while !s.load(Ordering::Relaxed) {
                let i = n.load(Ordering::Relaxed);
                let body = format!("{}={i}", 1_700_000_000 + i);
                for name in names {
                    // Until acknowledged: while the agent restarts, the app tries again.
                    loop {
                        let url = format!("http://127.0.0.1:{}/onep:v1/stack/alias/{name}", pt.load(Ordering::Relaxed));
                        let r = http
                            .post(&url)
                            .header("X-Exosite-CIK", &token)
                            .header("Content-Type", common::FORM)
                            .send(body.as_str());
                        if matches!(r, Ok(ref r) if r.status() == 204) {
                            break;
                        }
                        rs.lock().unwrap().insert(i as u64);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                n.store(i + 1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { port, stop, next, resent, thread: Some(thread) }
    }

    /// Waits until the app has written `more` values past where it is now (each acknowledged
    /// by the agent): the test's workload, counted rather than timed.
    fn write_more(&self, more: usize) {
        let target = self.next.load(Ordering::Relaxed) + more;
        wait_for(&format!("{more} more values written"), 60, || self.next.load(Ordering::Relaxed) >= target);
    }

    /// Stops; answers how many values were written (0..n, each acknowledged for every name)
    /// and which were sent more than once.
    fn finish(mut self) -> (u64, HashSet<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (self.next.load(Ordering::Relaxed) as u64, self.resent.lock().unwrap().clone())
    }
}

fn median_gap(times: &[i64]) -> i64 {
    let mut gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    gaps[gaps.len() / 2]
}

fn two_edges_two_providers(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("edge.secret");
    let secret_s = secret.to_str().unwrap();
    let (db_a, db_b) = match backend {
        Backend::Sqlite => {
            (common::db_url(backend, &dir.path().join("a")), common::db_url(backend, &dir.path().join("b")))
        }
        Backend::Postgres => {
            let db = common::pg_database();
            (db.clone(), db)
        }
    };
    let hub_a = hub(
        &db_a,
        &dir.path().join("a"),
        &["--system-name", "hub-a", "--group", "north", "--edge-secret-file", secret_s],
    );
    let a = Client::new(hub_a.clone());
    let token_a = dir.path().join("a/operator.token");
    let hub_b = hub(
        &db_b,
        &dir.path().join("b"),
        &[
            "--system-name",
            "hub-b",
            "--group",
            "north",
            "--edge-secret-file",
            secret_s,
            "--registry",
            &hub_a.url,
            "--registry-token-file",
            token_a.to_str().unwrap(),
        ],
    );
    let b = Client::new(hub_b.clone());
    // Both hubs are in the registry: hub-b registered itself with hub-a.
    wait_for("hub-b in the registry", 20, || {
        let r = a.op_send(
            "POST",
            "/serviceregistry/query",
            "application/json",
            br#"{"serviceDefinitionRequirement":"batch"}"#,
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        v["serviceQueryData"].as_array().is_some_and(|d| d.len() == 2)
    });
    a.whitelist("acme", "gw1", "EDGE1");
    a.whitelist("acme", "gw1", "EDGE2");

    // Edge 2 has an app that wants a signal when the generic configuration changes.
    let e2_dir = dir.path().join("e2");
    std::fs::create_dir_all(e2_dir.join("programs.d")).unwrap();
    let marker = e2_dir.join("hup.count");
    std::fs::write(
        e2_dir.join("programs.d/cfgapp.conf"),
        format!(
            "[program:cfgapp]\ncommand = /bin/sh -c \"trap 'echo hup >> {}' HUP; while true; do sleep 0.1; done\"\n\
             startsecs = 0\nconfig_change = HUP\n",
            marker.display()
        ),
    )
    .unwrap();
    let e1_dir = dir.path().join("e1");
    let e1 = Agent::start_as(&e1_dir, &hub_a.url, "EDGE1", "", EDGE);
    let e2 = Agent::start_as(&e2_dir, &hub_a.url, "EDGE2", "", EDGE);

    // Discovery and ctrlupdate: each edge reports its state and parameters to both hubs.
    for c in [&a, &b] {
        for e in ["EDGE1", "EDGE2"] {
            wait_for(&format!("{e}'s state and parameters at a hub"), 30, || {
                let v = control(c, e);
                v["state"]["system"] == e && v["parameters"]["batch"]["interval_ms"]["min"] == 100
            });
        }
    }

    // EDGE1: hub-a gets temperatures every 500 ms; hub-b has no configuration yet.
    issue(&a, "EDGE1", json!({"id": "c1", "batch": {"hub-a": {"interval_ms": 500, "filter": ["temp*"]}}}));
    let state = wait_result(&b, "EDGE1", "c1", "applied");
    assert_eq!(state["batch"]["hub-a"]["filter"], json!(["temp*"]));
    // Fetched once: nothing is pending any more, and last=true still shows it.
    let v = control(&a, "EDGE1");
    assert_eq!(v["pending"], Value::Null);
    assert_eq!(v["lastCommand"]["id"], "c1");

    let w = Writer::start(e1.ingest, e1.local_token(), &["temp1", "hum"]);
    w.write_more(50);
    // The edge's parameters are the points it can send, refreshed as the app adds names:
    // both hubs learn temp1 and hum (numbers) without being the agent's cloud.url.
    for c in [&a, &b] {
        wait_for("temp1 and hum among EDGE1's parameters", 20, || {
            let p = control(c, "EDGE1")["parameters"]["points"].clone();
            let has = |n: &str| p.as_array().is_some_and(|v| v.iter().any(|x| x["name"] == n && x["type"] == "number"));
            has("temp1") && has("hum")
        });
    }
    // Runtime reconfiguration through the other hub: hub-a now gets humidity every 1.5 s,
    // the group (hub-b, which has no configuration of its own) temperatures every 300 ms.
    issue(
        &b,
        "EDGE1",
        json!({"id": "c2", "batch": {
        "hub-a": {"interval_ms": 1500, "filter": ["hum"]},
        "group:north": {"interval_ms": 300, "filter": ["temp?"]}}}),
    );
    let c2_at = wait_result(&a, "EDGE1", "c2", "applied")["last_command"]["at_ms"].as_i64().unwrap();
    let switched = w.next.load(Ordering::Relaxed) as u64;
    // Timed on purpose: the batch intervals (1.5 s, 300 ms) are what is measured below.
    std::thread::sleep(Duration::from_secs(3));
    // A restart in the middle of the stream: batches in flight are sent again, stored once.
    drop(e1);
    let e1 = Agent::start_as(&e1_dir, &hub_a.url, "EDGE1", "", EDGE);
    w.port.store(e1.ingest, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(5));
    let (written, resent) = w.finish();
    assert!(written > 100, "the writer wrote only {written} values");

    // hub-a: temp1 only before c2, hum only after (give or take the batch in flight).
    wait_for("every humidity value at hub-a", 30, || {
        once_each_but(&points(&a, "EDGE1", "hub-a"), "hum", &resent).last() == Some(&(written - 1))
    });
    wait_for("every temperature value at hub-b", 30, || {
        once_each_but(&points(&b, "EDGE1", "hub-b"), "temp1", &resent).last() == Some(&(written - 1))
    });
    let at_a = points(&a, "EDGE1", "hub-a");
    let temp_a = once_each_but(&at_a, "temp1", &resent);
    let hum_a = once_each_but(&at_a, "hum", &resent);
    let temp_b = once_each_but(&points(&b, "EDGE1", "hub-b"), "temp1", &resent);
    assert!(!temp_a.is_empty() && *temp_a.last().unwrap() <= switched + 50, "hub-a kept getting temperatures");
    // From the switch on, every humidity value reached hub-a exactly once, across the restart.
    let first_hum = hum_a[0];
    assert!(first_hum <= switched + 50, "humidity started at {first_hum}, switch at {switched}");
    assert_eq!(hum_a, (first_hum..written).collect::<Vec<_>>(), "humidity values missing at hub-a");
    let first_temp = temp_b[0];
    assert_eq!(temp_b, (first_temp..written).collect::<Vec<_>>(), "temperature values missing at hub-b");
    assert!(points(&b, "EDGE1", "hub-b").iter().all(|p| p["name"] == "temp1"), "filter temp? let something else in");
    // The intervals show in the arrival times: 1.5 s at hub-a, 300 ms at hub-b.
    let after_c2: Vec<i64> = batch_times(&a, "EDGE1", "hub-a").into_iter().filter(|t| *t > c2_at + 100).collect();
    let gap_a = median_gap(&after_c2);
    let gap_b = median_gap(&batch_times(&b, "EDGE1", "hub-b"));
    assert!(gap_a >= 1200, "hub-a batches every {gap_a} ms, configured 1500");
    assert!(gap_b < 1000, "hub-b batches every {gap_b} ms, configured 300");

    // hub-b goes down while EDGE1 batches for it; EDGE1 is killed with the batch unconfirmed
    // and restarted, then hub-b comes back: the saved batch and the rest arrive, once each.
    let b_port = hub_b.port;
    drop(b);
    drop(hub_b);
    let w3 = Writer::start(e1.ingest, e1.local_token(), &["temp2"]);
    w3.write_more(40);
    let pending_before = w3.next.load(Ordering::Relaxed);
    drop(e1);
    let e1 = Agent::start_as(&e1_dir, &hub_a.url, "EDGE1", "", EDGE);
    w3.port.store(e1.ingest, Ordering::Relaxed);
    w3.write_more(20);
    let (written3, resent3) = w3.finish();
    let hub_b = Arc::new(HubProc::start_with(HubOpts {
        db: &db_b,
        dir: &dir.path().join("b"),
        port: b_port,
        tls: None,
        extra: &["--system-name", "hub-b", "--group", "north", "--edge-secret-file", secret_s],
    }));
    let b = Client::new(hub_b.clone());
    wait_for("every temp2 value at hub-b after its outage", 40, || {
        once_each_but(&points(&b, "EDGE1", "hub-b"), "temp2", &resent3) == (0..written3).collect::<Vec<_>>()
    });
    assert!(pending_before > 10, "only {pending_before} values were written during the outage");
    eprintln!(
        "edge e2e: {written} values x 2 names, batch gaps hub-a {gap_a} ms hub-b {gap_b} ms, \
         {written3} values across a provider outage and an agent kill; values an app sent again: {resent:?} {resent3:?}"
    );
    assert!(points(&a, "EDGE1", "hub-a").iter().all(|p| p["name"] != "temp2"));

    // EDGE2: no configuration for any provider: nothing is sent anywhere.
    let w2 = Writer::start(e2.ingest, e2.local_token(), &["temp1"]);
    w2.write_more(40);
    // That nothing arrives can only be seen by waiting: two batch intervals and more.
    std::thread::sleep(Duration::from_secs(1));
    assert!(points(&a, "EDGE2", "hub-a").is_empty() && points(&b, "EDGE2", "hub-b").is_empty());
    // A command the edge would refuse is refused by the hub at once, with the edge's reason;
    // nothing reaches the edge.
    let bad = json!({"id": "bad", "batch": {"hub-a": {"interval_ms": 5, "filter": ["temp*"]}}});
    let r = a.op_send("POST", "/edge/cmd/EDGE2", "application/json", bad.to_string().as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("interval_ms 5"), "{}", r.text());
    assert!(control(&a, "EDGE2")["pending"].is_null());
    // Hub-b has no device EDGE2, but the edge reported to it: it is known there.
    let r = b.op_send("POST", "/edge/cmd/NOSUCH", "application/json", br#"{"id":"x","config":{}}"#);
    assert_eq!(r.status, 404, "{}", r.text());
    // Two hubs' commands for one edge at once (with separate databases: in the same poll
    // cycle; sharing PostgreSQL the hubs keep one latest command, so the second waits for
    // the first to be fetched): each hub sees its own command's outcome by its id, whatever
    // the other's did after it.
    issue(&a, "EDGE1", json!({"id": "both-a", "config": {"from": "a"}}));
    if matches!(backend, Backend::Postgres) {
        wait_for("both-a fetched", 30, || control(&a, "EDGE1")["pending"].is_null());
    }
    issue(&b, "EDGE1", json!({"id": "both-b", "config": {"from": "b"}}));
    let applied = |v: &Value, id: &str| {
        v["state"]["results"].as_array().is_some_and(|r| r.iter().any(|x| x["id"] == id && x["result"] == "applied"))
    };
    for (c, id) in [(&a, "both-a"), (&b, "both-b")] {
        wait_for(&format!("{id}'s outcome at its hub"), 30, || applied(&control(c, "EDGE1"), id));
        if matches!(backend, Backend::Sqlite) {
            // Its own database: the hub's last command is its own, shown with its result.
            let v = control(c, "EDGE1");
            assert_eq!(
                (v["lastCommandResult"]["id"].as_str(), v["lastCommandResult"]["result"].as_str()),
                (Some(id), Some("applied")),
                "{v}"
            );
        }
    }
    let v = control(&a, "EDGE1");
    assert!(applied(&v, "both-a") && applied(&v, "both-b"), "{}", v["state"]["results"]);
    // The generic configuration reaches the app's file, and the app gets its SIGHUP.
    issue(&b, "EDGE2", json!({"id": "cfg1", "config": {"sensor": {"rate_hz": 5}}}));
    let state = wait_result(&b, "EDGE2", "cfg1", "applied");
    assert_eq!(state["config_version"], 1);
    let file: Value = serde_json::from_slice(&std::fs::read(e2_dir.join("state/config/apps.json")).unwrap()).unwrap();
    assert_eq!(file, json!({"sensor": {"rate_hz": 5}}));
    let hups = || std::fs::read_to_string(&marker).map(|t| t.lines().count()).unwrap_or(0);
    // What the agent did about the apps, to tell a lost signal from a doubled one.
    let told = || {
        let log = std::fs::read_to_string(e2_dir.join("agent.err")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("cfgapp") || l.contains("configuration")).collect();
        format!(": the app got {} SIGHUPs; the agent's lines about it:\n{}", hups(), lines.join("\n"))
    };
    wait_for_or("the app's one SIGHUP", 10, || hups() == 1, told);
    let (written2, _) = w2.finish();
    assert!(points(&a, "EDGE2", "hub-a").is_empty() && points(&b, "EDGE2", "hub-b").is_empty());
    // The documented choice (docs/edge-protocol.md, "Back-fill"): a provider's first
    // configuration starts from the newest point (what EDGE2 wrote before is not sent); a
    // configuration removed and restored sends everything written meanwhile.
    issue(&a, "EDGE2", json!({"id": "bf1", "batch": {"hub-a": {"interval_ms": 200, "filter": ["bf*", "temp*"]}}}));
    wait_result(&a, "EDGE2", "bf1", "applied");
    let w = Writer::start(e2.ingest, e2.local_token(), &["bf1"]);
    wait_for("the first bf1 values at hub-a", 30, || !points(&a, "EDGE2", "hub-a").is_empty());
    issue(&a, "EDGE2", json!({"id": "bf2", "batch": {"hub-a": null}}));
    wait_result(&a, "EDGE2", "bf2", "applied");
    w.write_more(40); // values written with no configuration
    issue(&a, "EDGE2", json!({"id": "bf3", "batch": {"hub-a": {"interval_ms": 200, "filter": ["bf*", "temp*"]}}}));
    wait_result(&a, "EDGE2", "bf3", "applied");
    w.write_more(20);
    let (written_bf, resent_bf) = w.finish();
    wait_for("every bf1 value at hub-a, those of the gap back-filled", 30, || {
        once_each_but(&points(&a, "EDGE2", "hub-a"), "bf1", &resent_bf) == (0..written_bf).collect::<Vec<_>>()
    });
    assert!(
        points(&a, "EDGE2", "hub-a").iter().all(|p| p["name"] != "temp1"),
        "{written2} temp1 values written before the first configuration were not to be sent"
    );
    drop(e1);
    drop(e2);
}
backends!(edge_paths, two_edges_two_providers);

/// Orchestration for `service`, asked with a device token as `system`.
fn orchestrate(c: &Client, token: &str, system: &str, service: &str) -> common::Reply {
    let rq = json!({"requesterSystem": {"systemName": system}, "requestedService": {"serviceDefinitionRequirement": service}});
    common::reply(
        c.agent
            .post(format!("{}/orchestrator/orchestration", c.hub.url))
            .header("X-Exosite-CIK", token)
            .header("Content-Type", "application/json")
            .send(rq.to_string()),
    )
}

/// The first provider's authorization token in an orchestration answer.
fn provider_token(r: &common::Reply) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["response"][0]["authorizationTokens"]["HTTP-INSECURE-JSON"].as_str().unwrap().to_string()
}

/// A command is fetched exactly once, even when many pollers race on two hubs.
fn fetched_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("edge.secret");
    let db = common::db_url(backend, dir.path());
    let extra = ["--edge-secret-file", secret.to_str().unwrap()];
    let h1 = hub(&db, &dir.path().join("one"), &extra);
    let c = Client::new(h1.clone());
    c.whitelist("acme", "gw1", "RACE");
    let token = c.activate("acme", "gw1", "RACE").text().trim().to_string();
    // The orchestrator hands out the ctrlpoll token.
    let r = orchestrate(&c, &token, "RACE", "ctrlpoll");
    assert_eq!(r.status, 200, "{}", r.text());
    let poll_token = provider_token(&r);
    // Another device cannot orchestrate as RACE.
    let r = orchestrate(&c, &token, "OTHER", "ctrlpoll");
    assert_eq!(r.status, 403, "{}", r.text());
    // On PostgreSQL a second hub shares the database; on SQLite the same hub twice.
    let h2 = match backend {
        Backend::Postgres => hub(&db, &dir.path().join("two"), &extra),
        Backend::Sqlite => h1.clone(),
    };
    for round in 0..5 {
        issue(&c, "RACE", json!({"id": format!("r{round}"), "config": {"round": round}}));
        let got = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let url = format!("{}/edge/ctrlpoll", if i % 2 == 0 { &h1.url } else { &h2.url });
                let (t, got) = (poll_token.clone(), got.clone());
                std::thread::spawn(move || {
                    let r =
                        common::reply(common::agent().get(url).header("Authorization", format!("Bearer {t}")).call());
                    match r.status.as_u16() {
                        200 => {
                            got.fetch_add(1, Ordering::Relaxed);
                        }
                        204 => {}
                        s => panic!("ctrlpoll answered {s}: {}", r.text()),
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(got.load(Ordering::Relaxed), 1, "round {round}: the command was fetched by exactly one poller");
    }
    // A batch sent twice (its confirmation was lost) is stored once.
    let batch_token = provider_token(&orchestrate(&c, &token, "RACE", "batch"));
    let batch = json!({"batch_id": "RACE.1", "system": "RACE", "points": [{"n": "t", "t": 1, "v": "1"}, {"n": "t", "t": 2, "v": "2"}]});
    for (i, h) in [&h1, &h2].into_iter().enumerate() {
        let r = common::reply(
            common::agent()
                .post(format!("{}/edge/batch", h.url))
                .header("Authorization", format!("Bearer {batch_token}"))
                .header("Content-Type", "application/json")
                .send(batch.to_string()),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let ack: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(ack["duplicate"], i == 1, "{ack}");
    }
    let stored = c.op_get("/api/v1/edge/RACE/points");
    let v: Value = serde_json::from_slice(&stored.body).unwrap();
    assert_eq!(v["points"].as_array().unwrap().len(), 2, "{v}");
    // A batch token does not open ctrlpoll, and another system's batch is refused.
    let r = common::reply(
        common::agent()
            .get(format!("{}/edge/ctrlpoll", h1.url))
            .header("Authorization", format!("Bearer {batch_token}"))
            .call(),
    );
    assert_eq!(r.status, 401);
    let other = json!({"batch_id": "X.1", "system": "OTHER", "points": []});
    let r = common::reply(
        common::agent()
            .post(format!("{}/edge/batch", h1.url))
            .header("Authorization", format!("Bearer {batch_token}"))
            .send(other.to_string()),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // A wrong or missing token is refused.
    let r = common::reply(
        common::agent().get(format!("{}/edge/ctrlpoll", h1.url)).header("Authorization", "Bearer v1.9.x.y.z").call(),
    );
    assert_eq!(r.status, 401);
}
backends!(command_fetched_once, fetched_once);

/// Two hubs with one system name at two addresses (each its own database): a batch
/// configuration for that name reaches both, every point at each, neither shadowing the
/// other; when one dies, the other goes on.
#[test]
fn two_providers_of_one_name_do_not_shadow_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("edge.secret");
    let secret_s = secret.to_str().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let url_a = common::db_url(Backend::Sqlite, &dir.path().join("a"));
    let hub_a = hub(&url_a, &da, &["--system-name", "twin", "--edge-secret-file", secret_s]);
    let a = Client::new(hub_a.clone());
    let token_a = da.join("operator.token");
    let url_b = common::db_url(Backend::Sqlite, &dir.path().join("b"));
    let hub_b = hub(
        &url_b,
        &db,
        &[
            "--system-name",
            "twin",
            "--edge-secret-file",
            secret_s,
            "--registry",
            &hub_a.url,
            "--registry-token-file",
            token_a.to_str().unwrap(),
        ],
    );
    let b = Client::new(hub_b.clone());
    a.whitelist("acme", "gw1", "EDGE1");
    let e1 = Agent::start_as(&dir.path().join("e1"), &hub_a.url, "EDGE1", "", EDGE);
    wait_for("EDGE1's state at both twins", 30, || {
        control(&a, "EDGE1")["state"]["system"] == "EDGE1" && control(&b, "EDGE1")["state"]["system"] == "EDGE1"
    });
    issue(&a, "EDGE1", json!({"id": "t1", "batch": {"twin": {"interval_ms": 200, "filter": ["temp*"]}}}));
    wait_result(&a, "EDGE1", "t1", "applied");
    let w = Writer::start(e1.ingest, e1.local_token(), &["temp1"]);
    w.write_more(60);
    let (written, resent) = w.finish();
    let mut firsts = Vec::new();
    for c in [&a, &b] {
        wait_for(&format!("every temperature at {}", c.hub.url), 30, || {
            once_each_but(&points(c, "EDGE1", "twin"), "temp1", &resent).last() == Some(&(written - 1))
        });
        let got = once_each_but(&points(c, "EDGE1", "twin"), "temp1", &resent);
        assert_eq!(got, (got[0]..written).collect::<Vec<_>>(), "values missing at {}", c.hub.url);
        firsts.push(got[0]);
    }
    assert!(firsts.iter().all(|f| *f <= 5), "a twin started late: {firsts:?}");
    // Twin A dies; twin B goes on receiving.
    drop(a);
    drop(hub_a);
    let w = Writer::start(e1.ingest, e1.local_token(), &["temp2"]);
    w.write_more(40);
    let (written2, resent2) = w.finish();
    wait_for("every temp2 at the living twin", 30, || {
        once_each_but(&points(&b, "EDGE1", "twin"), "temp2", &resent2) == (0..written2).collect::<Vec<_>>()
    });
}
