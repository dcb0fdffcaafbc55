//! The real agent (`gwe run`) against the real hub: activation, forwarding through an
//! outage, re-activation after the operator revoked the token, telemetry and
//! `update_interval`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{Backend, Client, HubOpts, HubProc, FORM};

/// The agent binary, built from the root workspace (already built when CI ran its tests).
fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--bin", "gwe", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .status()
            .unwrap();
        assert!(ok.success(), "building the agent failed");
        root.join("target/debug/gwe")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Agent {
    child: Child,
    dir: PathBuf,
    ingest: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(dir: &Path, hub_url: &str, extra: &str) -> Self {
        let ingest = free_port();
        let cfg = format!(
            "[device]\nvendor = \"acme\"\nmodel = \"gw1\"\nserial = \"E2E1\"\n\
             [paths]\nstate_dir = \"{0}/state\"\nlog_dir = \"{0}/log\"\nrun_dir = \"{0}/run\"\n\
             [ingest]\nlisten = \"127.0.0.1:{ingest}\"\n[supervisor]\nprograms_dir = \"{0}/programs.d\"\n\
             [cloud]\nurl = \"{hub_url}\"\nlinger_ms = 200\nretry_max_secs = 1\n{extra}",
            dir.display()
        );
        std::fs::create_dir_all(dir.join("programs.d")).unwrap();
        std::fs::write(dir.join("gwe.toml"), cfg).unwrap();
        let child = Command::new(agent_bin())
            .arg("--config")
            .arg(dir.join("gwe.toml"))
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.err")).unwrap())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", ingest)).is_err() {
            assert!(Instant::now() < until, "the agent's ingest API did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, dir: dir.to_path_buf(), ingest }
    }

    fn local_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/state/local_token")).unwrap().trim().to_string()
    }

    /// An app records points through the local ingest API; 204 means durable on flash.
    fn record(&self, agent: &ureq::Agent, alias: &str, points: &[(i64, String)]) {
        let body: String = points.iter().map(|(t, v)| format!("{t}={v}")).collect::<Vec<_>>().join("&");
        let r = common::reply(
            agent
                .post(format!("http://127.0.0.1:{}/onep:v1/stack/alias/{alias}", self.ingest))
                .header("X-Exosite-CIK", self.local_token())
                .header("X-GWE-App", "sensor")
                .header("Content-Type", FORM)
                .send(body),
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn values(c: &Client, dev: i64, alias: &str) -> Vec<String> {
    let r = c.op_get(&format!("/api/v1/devices/{dev}/dataports/{alias}/history?limit=100000"));
    serde_json::from_slice::<Vec<serde_json::Value>>(&r.body)
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap().to_string())
        .collect()
}

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
