//! The real agent (`gwe run`) against the real hub: activation, forwarding through an
//! outage, re-activation after the operator revoked the token, telemetry and
//! `update_interval`.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::agent::{free_port, values, wait_for, Agent};
use common::{Backend, Client, HubOpts, HubProc, FORM};

fn outage(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(backend, dir.path());
    let port = free_port();
    let opts = |p| HubOpts { db: &db, dir: dir.path(), port: p, tls: None, extra: &[] };
    let hub = Arc::new(HubProc::start_with(opts(port)));
    let c = Client::new(hub.clone());
    let dev = c.whitelist("acme", "gw1", "E2E1");
    let agent_dir = dir.path().join("agent");
    let agent = Agent::start(&agent_dir, &hub.url, "");
    wait_for("activation", 20, || agent_dir.join("state/state/cloud_token").exists());
    let meta = std::fs::metadata(agent_dir.join("state/state/cloud_token")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);
    // Telemetry arrives as dataports.
    wait_for("device_info", 20, || !values(&c, dev, "device_info").is_empty());
    let info: serde_json::Value = serde_json::from_str(&values(&c, dev, "device_info")[0]).unwrap();
    assert!(info["uname"]["release"].is_string() && info["free"]["total_kb"].is_u64(), "{info}");
    let report: serde_json::Value = serde_json::from_str(&values(&c, dev, "engine_report")[0]).unwrap();
    assert!(report["apps"].is_array(), "{report}");
    // The queue's backlog for the fleet page: a number, and the queue's bounds.
    assert!(report["queue"]["backlog"].is_u64() && report["queue"]["max_bytes"].as_u64() > Some(0), "{report}");

    // 10,000 points, the hub stopped for the middle part.
    let http = common::agent();
    let total = 10_000;
    let per_request = 100;
    let mut next = 0;
    let mut send = |n: usize| {
        for _ in 0..n / per_request {
            let pts: Vec<(i64, String)> =
                (next..next + per_request).map(|i| (1_700_000_000 + i as i64, i.to_string())).collect();
            agent.record(&http, "temp", &pts);
            next += per_request;
        }
    };
    send(3000);
    drop(c);
    let hub = Arc::try_unwrap(hub).ok().expect("one owner");
    drop(hub); // SIGKILL: the hub is gone mid-stream
    send(4000);
    std::thread::sleep(Duration::from_secs(2));
    let hub = Arc::new(HubProc::start_with(opts(port)));
    let c = Client::new(hub.clone());
    send(3000);
    wait_for("all 10,000 points at the hub", 60, || values(&c, dev, "temp").len() >= total);
    std::thread::sleep(Duration::from_secs(1));
    let got = values(&c, dev, "temp");
    assert_eq!(got.len(), total, "every point once, none twice");
    let mut nums: Vec<usize> = got.iter().map(|v| v.parse().unwrap()).collect();
    nums.sort_unstable();
    assert!(nums.iter().enumerate().all(|(i, &n)| i == n), "each of 0..10000 exactly once");

    // The operator revokes the token: the agent activates again and goes on.
    let old = std::fs::read_to_string(agent_dir.join("state/state/cloud_token")).unwrap();
    assert_eq!(c.op_send("POST", &format!("/api/v1/devices/{dev}/enable"), FORM, b"").status, 204);
    agent.record(&http, "after", &[(1_700_100_000, "1".into())]);
    wait_for("the point sent after re-activation", 30, || values(&c, dev, "after").len() == 1);
    let new = std::fs::read_to_string(agent_dir.join("state/state/cloud_token")).unwrap();
    assert_ne!(old, new, "a fresh token was saved");
}
backends!(agent_outage_and_reactivation, outage);

#[test]
fn update_interval_is_applied_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(Backend::Sqlite, dir.path());
    let hub = Arc::new(HubProc::start(&db, dir.path()));
    let c = Client::new(hub.clone());
    let dev = c.whitelist("acme", "gw1", "E2E1");
    let body = br#"{"value":"1"}"#;
    assert_eq!(
        c.op_send("PUT", &format!("/api/v1/devices/{dev}/dataports/update_interval"), "application/json", body).status,
        204
    );
    let agent_dir = dir.path().join("agent");
    let _agent = Agent::start(&agent_dir, &hub.url, "report_interval_secs = 3600\n");
    wait_for("update_interval to be cleared", 20, || {
        let r = c.op_get(&format!("/api/v1/devices/{dev}/dataports/update_interval"));
        serde_json::from_slice::<serde_json::Value>(&r.body).map(|v| v["value"] == "").unwrap_or(false)
    });
    assert_eq!(std::fs::read_to_string(agent_dir.join("state/state/update_interval")).unwrap(), "1");
    // Reports now come every second instead of every hour.
    wait_for("three engine reports", 20, || values(&c, dev, "engine_report").len() >= 3);
}

#[test]
fn agent_verifies_the_hub_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki(dir.path(), "hub");
    let db = common::db_url(Backend::Sqlite, dir.path());
    let hub = Arc::new(HubProc::start_with(HubOpts {
        db: &db,
        dir: dir.path(),
        port: 0,
        tls: Some((&pki.cert, &pki.key)),
        extra: &[],
    }));
    let c = Client { hub: hub.clone(), agent: common::trusting(&pki.ca_pem) };
    let dev = c.whitelist("acme", "gw1", "E2E1");

    // An agent whose bundle holds another CA refuses the hub: it never activates.
    let other = common::pki(dir.path(), "other");
    let wrong_dir = dir.path().join("wrong");
    let wrong = Agent::start(&wrong_dir, &hub.url, &format!("ca_file = \"{}\"\n", other.ca_file.display()));
    wait_for("the agent to report the certificate", 20, || {
        std::fs::read_to_string(wrong_dir.join("agent.err")).unwrap_or_default().contains("certificate")
    });
    assert!(!wrong_dir.join("state/state/cloud_token").exists(), "activated with an untrusted hub");
    drop(wrong);
    assert!(c.op_get(&format!("/api/v1/devices/{dev}")).text().contains("\"enabled\""), "the hub saw no activation");

    // With the hub's CA it activates over HTTPS and forwards.
    let right_dir = dir.path().join("right");
    let agent = Agent::start(&right_dir, &hub.url, &format!("ca_file = \"{}\"\n", pki.ca_file.display()));
    agent.record(&common::agent(), "temp", &[(1_700_000_000, "21.5".into())]);
    wait_for("the point over HTTPS", 30, || values(&c, dev, "temp") == ["21.5"]);
}
