//! The dashboard in a real browser: Debian's headless Chromium driven through chromedriver
//! (both installed by scripts/setup.sh), against a real hub and a real agent.
//!
//! - an operator signs in, finds the gateway on the fleet page, opens it, sees its
//!   telemetry charts, sends an edge command and sees the gateway's state change;
//! - an operator starts a staged rollout of a version that fails; it pauses by itself after
//!   the first stage, says why, and the operator aborts it;
//! - the fleet page with 10,000 gateways: how long until the rows are on screen (printed;
//!   the figure goes in the README, this is not a timed pass/fail).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::agent::{free_port, wait_for, Agent};
use common::{Backend, Client, HubProc};
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;

const PASSWORD: &str = "a long enough secret";

struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed (scripts/setup.sh installs chromium-driver)");
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "chromedriver did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver(child, port)
}

async fn browser(driver: &Driver) -> Browser {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                        "--window-size=1400,1000"]}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("starting Chromium through chromedriver")
}

fn add_operator(db: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gwe-hub"))
        .args(["operator", "add", "ops", "--db", db])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());
}

async fn sign_in(b: &Browser, url: &str) {
    b.goto(&format!("{url}/ui/fleet")).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/ui/login"), "signed out: the sign-in page");
    b.find(Locator::Css("#name")).await.unwrap().send_keys("ops").await.unwrap();
    b.find(Locator::Css("#password")).await.unwrap().send_keys("wrong password").await.unwrap();
    b.find(Locator::Css("#signin")).await.unwrap().click().await.unwrap();
    // The sign-in page has an empty #message too: until the answer has replaced the page,
    // the element found may be the old one (or go stale while it is read).
    let mut msg = String::new();
    for _ in 0..100 {
        if let Ok(e) = b.find(Locator::Css("#message")).await {
            msg = e.text().await.unwrap_or_default();
            if !msg.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(msg.contains("Wrong name or password"), "{msg:?}");
    b.find(Locator::Css("#name")).await.unwrap().send_keys("ops").await.unwrap();
    b.find(Locator::Css("#password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    b.find(Locator::Css("#signin")).await.unwrap().click().await.unwrap();
    b.wait().for_url(&format!("{url}/ui/fleet").parse().unwrap()).await.unwrap();
}

/// Waits (reloading when asked) until `css` matches an element whose text has `want`.
async fn wait_text(b: &Browser, css: &str, want: &str, secs: u64, reload: bool) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(e) = b.find(Locator::Css(css)).await {
            let t = e.text().await.unwrap_or_default();
            if t.contains(want) {
                return t;
            }
            assert!(Instant::now() < until, "{css}: {want:?} did not show in {secs} s; it says {t:?}");
        } else {
            assert!(Instant::now() < until, "{css} did not show in {secs} s");
        }
        if reload {
            b.refresh().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[test]
fn operator_finds_a_gateway_sees_its_charts_and_commands_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(Backend::Sqlite, dir.path());
    add_operator(&db);
    let hub = Arc::new(HubProc::start(&db, dir.path()));
    let c = Client::new(hub.clone());
    let dev = c.whitelist("acme", "gw1", "EDGE1");
    for sn in ["OTHER1", "OTHER2"] {
        c.whitelist("acme", "gw1", sn);
    }
    let agent_dir = dir.path().join("agent");
    let _agent = Agent::start_as(
        &agent_dir,
        &hub.url,
        "EDGE1",
        "report_interval_secs = 1",
        "[edge]\npoll_ms = 300\ndiscovery_secs = 2\nparameters_secs = 5\n",
    );
    wait_for("three telemetry reports", 30, || common::agent::values(&c, dev, "device_info").len() >= 3);

    let driver = chromedriver();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = browser(&driver).await;
        sign_in(&b, &hub.url).await;
        // The fleet: the gateway is online and runs the agent; the filter finds it.
        wait_text(&b, "#fleet-count", "of 3 gateways, 1 online", 20, true).await;
        b.find(Locator::Css("#fleet-filter")).await.unwrap().send_keys("edge1 online").await.unwrap();
        wait_text(&b, "#fleet-count", "1 of 3 gateways", 5, false).await;
        let row = b.find(Locator::Css("#fleet-rows a.row[data-sn='EDGE1']")).await.unwrap();
        assert!(row.text().await.unwrap().contains("online"));
        row.click().await.unwrap();
        b.wait().for_url(&format!("{}/ui/devices/{dev}", hub.url).parse().unwrap()).await.unwrap();

        // Its charts: memory and queue depth drawn from the reports.
        for title in ["Memory", "Disk used", "Queue depth"] {
            let css = format!("figure[data-title='{title}'] polyline");
            let until = Instant::now() + Duration::from_secs(20);
            while b.find(Locator::Css(&css)).await.is_err() {
                assert!(Instant::now() < until, "no {title} chart line");
                b.refresh().await.unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let state = b.find(Locator::Css("#device-online")).await.unwrap().text().await.unwrap();
        assert_eq!(state, "online");

        // A command: the gateway applies it and its reported state changes on the page.
        let cmd = b.find(Locator::Css("#edge-command")).await.unwrap();
        cmd.clear().await.unwrap();
        cmd.send_keys(r#"{"id": "ui-test-1", "config": {"rate": 7}}"#).await.unwrap();
        b.find(Locator::Css("#send-command")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#command-msg", "Sent: edge command ui-test-1", 5, false).await;
        wait_text(&b, "#control-state", "ui-test-1", 60, false).await;
        let cfg = std::fs::read_to_string(agent_dir.join("state/config/apps.json")).unwrap_or_default();
        assert!(cfg.contains("\"rate\":7") || cfg.contains("\"rate\": 7"), "apps.json: {cfg}");

        // Signing out takes the operator back to the sign-in page.
        b.find(Locator::Css("#logout")).await.unwrap().click().await.unwrap();
        b.wait().for_url(&format!("{}/ui/login", hub.url).parse().unwrap()).await.unwrap();
        b.goto(&format!("{}/ui/fleet", hub.url)).await.unwrap();
        assert!(b.current_url().await.unwrap().path().ends_with("/ui/login"));
        b.close().await.unwrap();
    });
}

/// A hub database with `n` gateways, each with an engine_report of four apps.
fn seed_fleet(path: &std::path::Path, n: usize) {
    let db = rusqlite::Connection::open(path).unwrap();
    let tx = db.unchecked_transaction().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for i in 0..n {
        let id = i as i64 + 1;
        let seen = if i % 7 == 0 { now - 3_600_000 } else { now - (i as i64 % 60) * 1000 };
        tx.execute(
            "INSERT INTO devices(id, vendor, model, sn, status, token_hint, created_ms, last_seen_ms)
             VALUES (?1, 'acme', ?2, ?3, 'activated', ?4, ?5, ?6)",
            rusqlite::params![id, format!("gw{}", i % 3), format!("SN{i:05}"), format!("{:04x}", i % 65536), now, seen],
        )
        .unwrap();
        let report = json!({"engine_version": if i % 10 == 0 { "0.2.9" } else { "0.3.0" },
            "apps": [{"sensor": {"status": "RUNNING", "version": format!("2.{}", i % 4)}},
                     {"logger": {"status": if i % 50 == 0 { "FATAL" } else { "RUNNING" }, "version": "1.0"}},
                     {"modbus": {"status": "RUNNING", "version": "3.1"}}, {"ticker": {"status": "RUNNING", "version": null}}],
            "queue": {"backlog": i % 100, "disk_bytes": 4194304, "max_bytes": 16777216}});
        tx.execute(
            "INSERT INTO points(device_id, alias, value, ts, modified_ms) VALUES (?1, 'engine_report', ?2, ?3, ?4)",
            rusqlite::params![id, report.to_string(), now / 1000, now],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn the_fleet_page_with_10000_gateways() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(Backend::Sqlite, dir.path());
    add_operator(&db); // makes the schema too
    seed_fleet(&dir.path().join("hub.db"), 10_000);
    let hub = HubProc::start(&db, dir.path());
    let driver = chromedriver();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = browser(&driver).await;
        sign_in(&b, &hub.url).await;
        let mut figures = Vec::new();
        for _ in 0..3 {
            b.goto(&format!("{}/ui/fleet", hub.url)).await.unwrap();
            wait_text(&b, "#fleet-count", "10000 of 10000 gateways", 30, false).await;
            let until = Instant::now() + Duration::from_secs(10);
            let ms = loop {
                let v = b
                    .execute("return [document.body.dataset.fleetRenderedMs, document.body.dataset.fleetParts]", vec![])
                    .await
                    .unwrap();
                if let (Some(a), Some(f)) = (v[0].as_str(), v[1].as_str()) {
                    break (a.parse::<u64>().unwrap(), f.to_string());
                }
                assert!(Instant::now() < until, "the page did not say when its rows were drawn");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            figures.push(ms);
        }
        // A gateway deep in the list is one filter away, and sorting reverses the order.
        b.find(Locator::Css("#fleet-filter")).await.unwrap().send_keys("SN09876").await.unwrap();
        wait_text(&b, "#fleet-count", "1 of 10000 gateways", 5, false).await;
        let row = b.find(Locator::Css("#fleet-rows a.row")).await.unwrap().attr("data-sn").await.unwrap();
        assert_eq!(row.as_deref(), Some("SN09876"));
        b.find(Locator::Css("#fleet-filter")).await.unwrap().clear().await.unwrap();
        b.find(Locator::Css("#fleet-filter")).await.unwrap().send_keys(" ").await.unwrap();
        b.find(Locator::Css(".row.head [data-key='id']")).await.unwrap().click().await.unwrap();
        let first = b.find(Locator::Css("#fleet-rows a.row")).await.unwrap().attr("data-sn").await.unwrap();
        assert_eq!(first.as_deref(), Some("SN09999"), "sorted by id, descending");
        let shown = b.find_all(Locator::Css("#fleet-rows a.row")).await.unwrap().len();
        assert!(shown < 200, "only the rows in view are drawn ({shown})");
        for (i, (total, parts)) in figures.iter().enumerate() {
            let p: Vec<&str> = parts.split(' ').collect();
            println!(
                "fleet page, 10,000 gateways, load {}: rows on screen {total} ms after navigation start \
                 (script started at {} ms; API answered and parsed {} ms; rows prepared {} ms; sorted and drawn {} ms)",
                i + 1,
                p[0],
                p[1],
                p[2],
                p[3]
            );
        }
        b.close().await.unwrap();
    });
}

#[test]
fn a_rollout_pauses_on_failures_and_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(Backend::Sqlite, dir.path());
    add_operator(&db);
    let hub = Arc::new(HubProc::start(&db, dir.path()));
    let c = Arc::new(Client::new(hub.clone()));
    let mut tokens = Vec::new();
    for i in 0..10 {
        let sn = format!("R{i:02}");
        c.whitelist("acme", "gw1", &sn);
        tokens.push(c.activate("acme", "gw1", &sn).text());
    }
    let pkg = "sensor.v2.9.tar.gz";
    assert_eq!(
        c.op_send("PUT", &format!("/api/v1/content/acme/gw1/{pkg}"), "application/octet-stream", b"p").status,
        201
    );
    // Gateways whose new version does not stay up: each rolls back and says so.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _gateways = {
        let (c, stop) = (c.clone(), stop.clone());
        StopOnDrop(
            stop.clone(),
            Some(std::thread::spawn(move || {
                let mut answered = vec![false; tokens.len()];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for (i, t) in tokens.iter().enumerate() {
                        if !answered[i] && c.dev_get(t, "/onep:v1/stack/alias?engine_fetch", &[]).text().contains(pkg) {
                            let status =
                                format!("{pkg}: version 2.9 did not stay up (exited at once); rolled back to 2.1");
                            let body: String = form_urlencoded::Serializer::new(String::new())
                                .append_pair("fetch_status", &status)
                                .finish();
                            c.dev_post(t, "/onep:v1/stack/alias", &body);
                            answered[i] = true;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })),
        )
    };

    let driver = chromedriver();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = browser(&driver).await;
        sign_in(&b, &hub.url).await;
        b.find(Locator::Css("#nav-rollouts")).await.unwrap().click().await.unwrap();
        let form = b.wait().for_element(Locator::Css("#new-rollout")).await.unwrap();
        for (name, value) in [("name", "sensor 2.9"), ("package", pkg), ("vendor", "acme"), ("model", "gw1")] {
            form.find(Locator::Css(&format!("input[name='{name}']"))).await.unwrap().send_keys(value).await.unwrap();
        }
        let stages = form.find(Locator::Css("input[name='stages']")).await.unwrap();
        stages.clear().await.unwrap();
        stages.send_keys("10, 50, 100").await.unwrap();
        b.find(Locator::Css("#start-rollout")).await.unwrap().click().await.unwrap();
        // The first stage (one gateway) fails: the rollout pauses by itself and says why.
        wait_text(&b, "#rollout-state", "paused", 30, false).await;
        let reason = b.find(Locator::Css("#rollout-reason")).await.unwrap().text().await.unwrap();
        assert!(reason.contains("stage 1") && reason.contains("1 of 1 gateways failed"), "{reason}");
        let counts = b.find(Locator::Css("#rollout-counts")).await.unwrap().text().await.unwrap();
        assert!(counts.contains("1 failed") && counts.contains("9 pending"), "{counts}");
        let failed = b.find(Locator::Css("#rollout-devices b.state.failed")).await.unwrap();
        let row = failed.find(Locator::XPath("./ancestor::tr")).await.unwrap().text().await.unwrap();
        assert!(row.contains("rolled back to 2.1"), "{row}");
        // The operator aborts it: nothing more is sent.
        b.find(Locator::Css("#abort")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollout-state", "aborted", 10, false).await;
        wait_text(&b, "#rollout-counts", "9 skipped", 5, false).await;
        b.find(Locator::Css("#nav-rollouts")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollouts", "aborted", 10, false).await;
        b.close().await.unwrap();
    });
}

/// Stops and joins a helper thread when the test ends, also when it panics: the thread holds
/// the hub, which is killed only when its last holder lets go. A hub left running keeps the
/// test run's output pipe open, so `cargo test` would never end.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.1.take() {
            let r = t.join();
            if r.is_err() && !std::thread::panicking() {
                panic!("the fake gateways' thread panicked");
            }
        }
    }
}
