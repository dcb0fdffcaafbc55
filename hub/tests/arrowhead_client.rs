//! Arrowhead's own Python client, unmodified (`arrowhead-client` 0.4.4a0 from PyPI, in the
//! venv scripts/setup.sh makes), against a hub in Arrowhead's insecure mode: the whole
//! story is `tests/clients/arrowhead_story.py` (register, query, orchestrate and consume a
//! third party's service; orchestrate and consume the hub's cmd, ctrlpoll, ctrlupdate and
//! batch; unregister; a refused registration read as Arrowhead's JSON error). Here: the
//! hub, and what the story left in it, seen from the operator's side.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::agent::free_port;
use common::{Backend, Client, HubOpts, HubProc};

/// Runs `tests/clients/SCRIPT` with the venv's Python (arrowhead-client, from
/// scripts/setup.sh) and `args`; fails unless it reached its `done` step, showing its
/// output and `extra()`. Answers what it printed.
fn story(script: &str, args: &[String], extra: impl FnOnce() -> String) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let python = dir.join("venv/bin/python3");
    assert!(python.exists(), "arrowhead-client is not installed (scripts/setup.sh)");
    let out = Command::new(&python).arg(dir.join(script)).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains(r#"{"step": "done"}"#),
        "the story stopped:\n{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        extra()
    );
    text
}

#[test]
fn arrowheads_client_completes_every_step_against_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(Backend::Sqlite, dir.path());
    let opts = HubOpts { db: &db, dir: dir.path(), port: 0, tls: None, extra: &["--arrowhead-insecure"] };
    let hub = Arc::new(HubProc::start_with(opts));
    let c = Client::new(hub.clone());
    // The consumer plays a gateway's edge: the hub knows its serial.
    c.whitelist("acme", "gw1", "dashboard");
    // A command for a serial no gateway has, or one the edge would refuse, is refused now.
    let r = c.op_send("POST", "/edge/cmd/nobody", "application/json", br#"{"id":"x","config":{}}"#);
    assert_eq!(r.status, 404, "{}", r.text());
    let r = c.op_send(
        "POST",
        "/edge/cmd/dashboard",
        "application/json",
        br#"{"id":"x","batch":{"p":{"interval_ms":0,"filter":[]}}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let port: u16 = hub.url.rsplit(':').next().unwrap().parse().unwrap();
    story("arrowhead_story.py", &["127.0.0.1".into(), port.to_string(), free_port().to_string()], String::new);
    // What the client did is what the operator sees: its state report and its batch.
    let cmd = c.op_get("/edge/cmd/dashboard?last=true");
    let v: serde_json::Value = serde_json::from_slice(&cmd.body).unwrap();
    assert_eq!(v["state"]["last_command"]["id"], "ah-1", "{v}");
    let points = c.op_get("/api/v1/edge/dashboard/points");
    assert!(points.text().contains("21.5"), "{}", points.text());
}

/// Arrowhead's certificate mode: the hub serves TLS with a certificate of the local cloud
/// and takes the cloud's client certificates as identities; the registry, orchestrator and
/// authorization system answer on ports of their own. The same story, every call over
/// HTTPS with the system's own certificate, plus what a certificate may not do.
#[test]
fn arrowheads_client_completes_every_step_in_certificate_mode() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::cloud_pki(dir.path(), &["gwe-hub", "thermometer", "dashboard"]);
    let db = common::db_url(Backend::Sqlite, dir.path());
    let (sr, orch, auth) = (free_port(), free_port(), free_port());
    let ports = format!("{sr},{orch},{auth}");
    let ca = pki.ca_file.to_str().unwrap();
    let opts = HubOpts {
        db: &db,
        dir: dir.path(),
        port: 0,
        tls: Some((&pki.cert, &pki.key)),
        extra: &["--arrowhead-ca", ca, "--arrowhead-ports", &ports],
    };
    let hub = Arc::new(HubProc::start_with(opts));
    let c = Client { hub: hub.clone(), agent: common::trusting(&pki.ca_pem) };
    c.whitelist("acme", "gw1", "dashboard");

    // Without a certificate, registering is the operator's: refused, as Arrowhead's error.
    let form = br#"{"serviceDefinition":"x","providerSystem":{"systemName":"dashboard","address":"127.0.0.1","port":9},
        "serviceUri":"x","secure":"CERTIFICATE","interfaces":["HTTP-SECURE-JSON"]}"#;
    let reg = format!("https://localhost:{sr}/serviceregistry/register");
    let r = common::reply(c.agent.post(&reg).header("Content-Type", "application/json").send(&form[..]));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains(r#""exceptionType":"AUTH""#), "{}", r.text());
    // With the system's own certificate, it registers itself.
    let dash =
        common::with_client_cert(&pki.ca_pem, &dir.path().join("dashboard.pem"), &dir.path().join("dashboard.key"));
    let r = common::reply(dash.post(&reg).header("Content-Type", "application/json").send(&form[..]));
    assert_eq!(r.status, 201, "{}", r.text());
    // The registry's port serves the registry only.
    let r = common::reply(dash.get(format!("https://localhost:{sr}/edge/cmd/dashboard")).call());
    assert_eq!(r.status, 404, "{}", r.text());
    // A certificate of another CA does not get past the handshake.
    let stranger_dir = tempfile::tempdir().unwrap();
    common::cloud_pki(stranger_dir.path(), &["dashboard"]);
    let stranger = common::with_client_cert(
        &pki.ca_pem,
        &stranger_dir.path().join("dashboard.pem"),
        &stranger_dir.path().join("dashboard.key"),
    );
    assert!(stranger.post(&reg).header("Content-Type", "application/json").send(&form[..]).is_err());
    // The authorization system's key is the hub's.
    let key = common::reply(c.agent.get(format!("https://localhost:{auth}/authorization/publickey")).call());
    assert_eq!(key.status, 200);
    assert!(key.text().starts_with("\"MFkw"), "an EC P-256 public key in base64 DER: {}", key.text());

    let args = [
        "127.0.0.1".to_string(),
        hub.port.to_string(),
        free_port().to_string(),
        dir.path().display().to_string(),
        sr.to_string(),
        orch.to_string(),
        auth.to_string(),
    ];
    let text = story("arrowhead_story.py", &args, String::new);
    for step in ["refused-other-system", "refused-posing", "consumed", "ctrlpoll", "batch"] {
        assert!(text.contains(&format!(r#""step": "{step}""#)), "no step {step}:\n{text}");
    }
    let cmd = c.op_get("/edge/cmd/dashboard?last=true");
    let v: serde_json::Value = serde_json::from_slice(&cmd.body).unwrap();
    assert_eq!(v["state"]["last_command"]["id"], "ah-1", "{v}");
    let points = c.op_get("/api/v1/edge/dashboard/points");
    assert!(points.text().contains("21.5"), "{}", points.text());
}

/// The demo's edge story on two hubs and two edges (real agents), with Arrowhead's client
/// playing a third-party provider (`sink`, a `batch` service of its own) and a third-party
/// consumer (`console`, commanding the edges through both hubs' `cmd`):
/// `tests/clients/edge_story.py`. Here: the hubs, the edges and their apps, and what the
/// story left in the hubs and on the gateways.
#[test]
fn the_demos_edge_story_with_two_hubs_two_edges_and_arrowheads_client() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("edge.secret");
    let secret = secret.to_str().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    // Two hubs with their default names; B registers its services in A's registry.
    let url_a = common::db_url(Backend::Sqlite, &da);
    let flags_a = ["--arrowhead-insecure", "--edge-secret-file", secret];
    let hub_a = Arc::new(HubProc::start_with(HubOpts { db: &url_a, dir: &da, port: 0, tls: None, extra: &flags_a }));
    let a = Client::new(hub_a.clone());
    let url_b = common::db_url(Backend::Sqlite, &db);
    let token_a = da.join("operator.token");
    let flags_b = [
        "--arrowhead-insecure",
        "--edge-secret-file",
        secret,
        "--registry",
        &hub_a.url,
        "--registry-token-file",
        token_a.to_str().unwrap(),
    ];
    let hub_b = Arc::new(HubProc::start_with(HubOpts { db: &url_b, dir: &db, port: 0, tls: None, extra: &flags_b }));
    let b = Client::new(hub_b.clone());
    a.whitelist("acme", "gw1", "EDGE1");
    a.whitelist("acme", "gw1", "EDGE2");
    let edge = "[edge]\npoll_ms = 300\ndiscovery_secs = 2\nparameters_secs = 5\n";
    let e1 = common::agent::Agent::start_as(&dir.path().join("e1"), &hub_a.url, "EDGE1", "", edge);
    let e2 = common::agent::Agent::start_as(&dir.path().join("e2"), &hub_a.url, "EDGE2", "", edge);
    // An app on each edge writes a point every 200 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let apps: Vec<_> = [(e1.ingest, e1.local_token(), "temp1"), (e2.ingest, e2.local_token(), "hum")]
        .into_iter()
        .map(|(port, token, name)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let http = common::agent();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = http
                        .post(format!("http://127.0.0.1:{port}/onep:v1/stack/alias/{name}"))
                        .header("X-Exosite-CIK", &token)
                        .header("Content-Type", common::FORM)
                        .send(format!("{}={i}", 1_700_000_000 + i));
                    i += 1;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            })
        })
        .collect();

    let args = [hub_a.port.to_string(), hub_b.port.to_string(), free_port().to_string()];
    story("edge_story.py", &args, || {
        format!("EDGE1: {}", std::fs::read_to_string(dir.path().join("e1/agent.err")).unwrap_or_default())
    });
    // EDGE2 sends its humidity to hub B, as the console configured it through hub B; hub
    // A, configured for nothing, gets nothing from either edge.
    let name_b = format!("gwe-hub-127.0.0.1-{}", hub_b.port);
    common::agent::wait_for("EDGE2's humidity at hub B", 30, || {
        let r = b.op_get(&format!("/api/v1/edge/EDGE2/points?provider={name_b}"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["points"].as_array().is_some_and(|p| p.len() >= 5 && p.iter().all(|p| p["name"] == "hum"))
    });
    for e in ["EDGE1", "EDGE2"] {
        let r = a.op_get(&format!("/api/v1/edge/{e}/points"));
        assert!(r.text().contains(r#""points":[]"#), "{e} at hub A: {}", r.text());
    }
    // The generic configuration reached EDGE2's apps.
    let cfg = std::fs::read_to_string(dir.path().join("e2/state/config/apps.json")).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&cfg).unwrap(), serde_json::json!({"mode": "eco"}));
    stop.store(true, Ordering::Relaxed);
    for t in apps {
        t.join().unwrap();
    }
    drop((e1, e2));
}
