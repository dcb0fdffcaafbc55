//! The dashboard in a real browser: Debian's headless Chromium driven through chromedriver
//! (both installed by scripts/setup.sh), against a real hub and a real agent.
//!
//! - an operator signs in, finds the gateway on the fleet page, opens it, sees its
//!   telemetry charts, sends an edge command and sees the gateway's state change;
//! - an operator starts a staged rollout of a version that fails; it pauses by itself after
//!   the first stage, says why, and the operator aborts it;
//! - the fleet page with 10,000 gateways: how long until the first row is painted and a
//!   filter is on screen (printed; the figures go in the README, this is not a timed
//!   pass/fail); columns, tags, saved filters and a bulk action on a selection.
//!
//! Every page is checked as a person sees it (`seen`): no console error or CSP violation
//! since it loaded, no serious or critical axe-core violation, every control reached by
//! the Tab key, and screenshots at a desktop and a narrow width in
//! `hub/target/screenshots/`. Rows are checked on screen: each inside the viewport at its
//! own height, and the element at its centre is that row.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;

use common::agent::{free_port, wait_for, Agent};
use common::{Backend, Client, HubProc};

const PASSWORD: &str = "a long enough secret";

/// chromedriver and the Chromium it starts, in a process group of their own: when a test
/// fails before it closes its browser, dropping this still ends every one of them.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) with the negated pid of the group this test made; no memory passed.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .process_group(0)
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
                        "--window-size=1400,1000", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run"]}),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("starting Chromium through chromedriver");
    // The page waits for what the test waits for (`wait_text`): up to a minute and more.
    let t = fantoccini::wd::TimeoutConfiguration::new(Some(Duration::from_secs(120)), None, None);
    b.update_timeouts(t).await.unwrap();
    b
}

fn add_operator(db: &str) {
    add_operator_as(db, "ops", "admin");
}

fn add_operator_as(db: &str, name: &str, role: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gwe-hub"))
        .args(["operator", "add", name, "--role", role, "--db", db])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());
}

async fn sign_in(b: &Browser, driver: &Driver, url: &str) {
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
    // The browser logs the refused sign-in's 401: expected here, and nothing else.
    let errors = console_errors(b, driver).await;
    assert!(errors.iter().all(|e| e.contains("/ui/login") && e.contains("401")), "{errors:#?}");
    let name = b.find(Locator::Css("#name")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(name.as_deref(), Some("ops"), "a wrong password keeps the name");
    b.find(Locator::Css("#password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    b.find(Locator::Css("#signin")).await.unwrap().click().await.unwrap();
    b.wait().for_url(&format!("{url}/ui/fleet").parse().unwrap()).await.unwrap();
}

/// The browser's console since the last call: every error (a CSP violation is one) fails
/// the test. Read from chromedriver's log endpoint, so nothing in the page has to catch it.
async fn console_errors(b: &Browser, driver: &Driver) -> Vec<String> {
    let sid = b.session_id().await.unwrap().unwrap();
    let url = format!("http://127.0.0.1:{}/session/{sid}/se/log", driver.1);
    let body = json!({"type": "browser"}).to_string();
    let text =
        ureq::post(&url).header("Content-Type", "application/json").send(&body).unwrap().into_body().read_to_string();
    let out: serde_json::Value = serde_json::from_str(&text.unwrap()).unwrap();
    out["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "SEVERE" || e["message"].as_str().unwrap_or("").contains("Content Security Policy"))
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

fn axe_source() -> String {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(p).expect("axe-core is not installed (scripts/setup.sh: npm ci --prefix hub/tests/browser)")
}

/// axe-core in the page: its serious and critical violations.
async fn axe_violations(b: &Browser) -> Vec<String> {
    b.execute(&axe_source(), vec![]).await.unwrap();
    let v = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
                      v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))))
                 .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .unwrap();
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

/// Presses a key as the keyboard does, wherever the focus is.
async fn press(b: &Browser, key: char) {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let k = KeyActions::new("keyboard".into()).then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
    b.perform_actions(k).await.unwrap();
}

const TAB: char = '\u{e004}';
const ENTER: char = '\u{e007}';

/// What names a control to a person (its kind, id, label, link and text), the same for the
/// element a redraw puts in its place: the fleet page redraws its rows every few seconds.
const CONTROL_KEY: &str = "const key = e => [e.tagName, e.id, e.getAttribute('aria-label'), e.getAttribute('href'), \
                           e.name, e.textContent.trim().slice(0, 40)].join('|');";

/// Presses Tab until focus comes round again; fails unless every visible, enabled control
/// of the page (links, buttons, fields, summaries) got the focus.
async fn keyboard_reaches_every_control(b: &Browser, page: &str) {
    let controls =
        "a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select:not([disabled]), \
                    textarea:not([disabled]), summary";
    let want: std::collections::BTreeSet<String> = serde_json::from_value(
        b.execute(
            &format!(
                "{CONTROL_KEY} return [...document.querySelectorAll('{controls}')].filter(e => {{
                     const r = e.getBoundingClientRect();
                     return r.width > 0 && r.height > 0 && e.checkVisibility({{visibilityProperty: true, opacityProperty: true}});
                 }}).map(key);"
            ),
            vec![],
        )
        .await
        .unwrap(),
    )
    .unwrap();
    b.execute("document.activeElement && document.activeElement.blur(); window.focus();", vec![]).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..(want.len() * 2 + 20) {
        press(b, TAB).await;
        let k = b
            .execute(
                &format!(
                    "{CONTROL_KEY} const e = document.activeElement; return e && e !== document.body ? key(e) : '';"
                ),
                vec![],
            )
            .await
            .unwrap();
        seen.insert(k.as_str().unwrap_or("").to_string());
        if want.is_subset(&seen) {
            return;
        }
    }
    let missed: Vec<&String> = want.difference(&seen).collect();
    panic!("{page}: the Tab key never reached {missed:?}");
}

/// Saves what the page looks like at a desktop and a narrow width.
async fn screenshots(b: &Browser, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for (w, h, tag) in [(1400, 1000, "desktop"), (420, 900, "narrow")] {
        b.set_window_size(w, h).await.unwrap();
        b.execute("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);", vec![])
            .await
            .unwrap();
        next_frames(b).await;
        std::fs::write(dir.join(format!("{name}-{tag}.png")), b.screenshot().await.unwrap()).unwrap();
    }
    b.set_window_size(1400, 1000).await.unwrap();
}

/// The page as a person meets it: no console errors or CSP violations, no serious axe
/// violation, every control reachable by keyboard (unless `kb` is false: a page of
/// thousands of rows), screenshots saved.
async fn seen(b: &Browser, driver: &Driver, name: &str, kb: bool) {
    let errors = console_errors(b, driver).await;
    assert!(errors.is_empty(), "{name}: console errors: {errors:#?}");
    let axe = axe_violations(b).await;
    assert!(axe.is_empty(), "{name}: accessibility: {axe:#?}");
    if kb {
        keyboard_reaches_every_control(b, name).await;
    }
    screenshots(b, name).await;
    let errors = console_errors(b, driver).await;
    assert!(errors.is_empty(), "{name}: console errors: {errors:#?}");
}

/// The fleet rows a person sees: each drawn row inside the table's viewport at its own
/// height, the element at its serial's centre that row, its serial's text visible. Returns
/// the serials from top to bottom.
async fn rows_on_screen(b: &Browser) -> Vec<String> {
    let v = b
        .execute(
            "const box = document.getElementById('fleet-rows').getBoundingClientRect();
             const out = [];
             for (const r of document.querySelectorAll('#fleet-rows .row')) {
                 const rr = r.getBoundingClientRect();
                 if (rr.bottom <= box.top || rr.top >= box.bottom) continue;  // drawn ahead, out of view
                 const cell = r.querySelector('.c-sn') || r.children[1];
                 const c = cell.getBoundingClientRect();
                 const x = c.left + Math.min(c.width / 2, 20), y = c.top + c.height / 2;
                 const hit = y > box.top && y < box.bottom ? document.elementFromPoint(x, y) : null;
                 const st = getComputedStyle(cell);
                 out.push({sn: r.dataset.sn, top: Math.round(rr.top), height: Math.round(rr.height),
                           inside: rr.top >= box.top - 1 && rr.bottom <= box.bottom + 1,
                           hit: hit && hit.closest('.row') ? hit.closest('.row').dataset.sn : null,
                           visible: st.visibility === 'visible' && st.opacity !== '0' && c.width > 0 && cell.innerText.trim() !== ''});
             }
             return out;",
            vec![],
        )
        .await
        .unwrap();
    let rows = v.as_array().unwrap();
    let mut tops = std::collections::HashSet::new();
    let mut sns = Vec::new();
    for r in rows {
        let sn = r["sn"].as_str().unwrap().to_string();
        assert!(r["height"].as_i64().unwrap() >= 20, "row {sn} is {} px tall", r["height"]);
        let top = r["top"].as_i64().unwrap();
        assert!(tops.insert(top), "row {sn} is drawn at the height of another: {rows:?}");
        if r["inside"] == true {
            assert_eq!(r["hit"].as_str(), Some(sn.as_str()), "at row {sn}'s place the screen shows {}", r["hit"]);
            assert_eq!(r["visible"], true, "row {sn}'s text is not visible");
            sns.push((top, sn));
        }
    }
    // Top to bottom as the screen shows them, which is also the order a screen reader reads.
    let read: Vec<String> = sns.iter().map(|(_, sn)| sn.clone()).collect();
    sns.sort();
    let seen: Vec<String> = sns.into_iter().map(|(_, sn)| sn).collect();
    assert_eq!(read, seen, "the document's order of the rows is not the screen's");
    seen
}

/// The rows of a table (`css` selects them) a person sees: each at its own height, the
/// element at its centre inside it, its text visible. Returns their texts, top to bottom.
async fn table_rows_on_screen(b: &Browser, css: &str) -> Vec<String> {
    let v = b
        .execute(
            "const out = [];
             for (const r of document.querySelectorAll(arguments[0])) {
                 const rr = r.getBoundingClientRect();
                 if (rr.bottom <= 0 || rr.top >= innerHeight) continue;
                 const x = rr.left + Math.min(rr.width / 2, 40), y = rr.top + rr.height / 2;
                 const inView = y > 0 && y < innerHeight;
                 const hit = inView ? document.elementFromPoint(x, y) : null;
                 out.push({top: Math.round(rr.top), height: Math.round(rr.height), text: r.innerText, inView,
                           hit: !!hit && hit.closest('tr') === r, shown: getComputedStyle(r).visibility === 'visible'});
             }
             return out;",
            vec![serde_json::json!(css)],
        )
        .await
        .unwrap();
    let rows = v.as_array().unwrap();
    let mut tops = std::collections::HashSet::new();
    for r in rows {
        assert!(r["height"].as_i64().unwrap() >= 16, "a row {} px tall: {r}", r["height"]);
        assert!(tops.insert(r["top"].as_i64().unwrap()), "two rows at one height: {rows:?}");
        if r["inView"] == true {
            assert_eq!((r["hit"].as_bool(), r["shown"].as_bool()), (Some(true), Some(true)), "hidden row: {r}");
        }
    }
    rows.iter().map(|r| r["text"].as_str().unwrap().replace('\t', " ")).collect()
}

/// Whether the element `css` selects is there and drawn (not hidden by its role).
async fn shown(b: &Browser, css: &str) -> bool {
    b.execute("const e = document.querySelector(arguments[0]); return !!e && e.checkVisibility();", vec![json!(css)])
        .await
        .unwrap()
        .as_bool()
        .unwrap()
}

/// The text a person reads in `css` now. The pages redraw themselves every few seconds,
/// so an element found may be replaced before its text is read: that is read again.
async fn text_of(b: &Browser, css: &str) -> String {
    for _ in 0..20 {
        match b.find(Locator::Css(css)).await.unwrap().text().await {
            Ok(t) => return t,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{css}: {e}"),
        }
    }
    panic!("{css}: redrawn under every read")
}

/// Returns once the page has drawn two more frames: what a change asked for is on screen.
async fn next_frames(b: &Browser) {
    b.execute_async(
        "const done = arguments[arguments.length - 1];
         requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
        vec![],
    )
    .await
    .unwrap();
}

/// Waits (reloading when asked) until `css` matches an element whose text has `want`.
/// Without reloads the page itself watches, frame by frame, so the test waits on the change
/// and not on a timer; a page that must be reloaded is asked again every 500 ms.
///
/// A click may send the page elsewhere (Start goes to the new rollout's page) while the
/// watching script runs: its document is gone and chromedriver answers with an error
/// (a "script timeout" long before the timeout, in the CI run that failed on it). The
/// watch then starts again on the new page, with the time that is left.
async fn wait_text(b: &Browser, css: &str, want: &str, secs: u64, reload: bool) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    if !reload {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let r = b
                .execute_async(
                    "const [css, want, ms, done] = arguments;
                     const t0 = performance.now();
                     (function look() {
                         const e = document.querySelector(css);
                         const t = e ? e.innerText : null;
                         if (t !== null && t.includes(want)) return done({ok: true, text: t});
                         if (performance.now() - t0 > ms) return done({ok: false, text: t});
                         requestAnimationFrame(look);
                     })();",
                    vec![json!(css), json!(want), json!(left.as_millis() as u64)],
                )
                .await;
            let r = match r {
                Ok(r) => r,
                Err(e) if Instant::now() < until => {
                    eprintln!("{css}: the page went away under the watch ({e}); watching the next");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => panic!("{css}: watching for {want:?}: {e}"),
            };
            let text = r["text"].as_str().map(str::to_string);
            assert!(r["ok"] == true, "{css}: {want:?} did not show in {secs} s; it says {text:?}");
            return text.unwrap_or_default();
        }
    }
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
        sign_in(&b, &driver, &hub.url).await;
        // The README's address leads to the fleet.
        b.goto(&format!("{}/ui/", hub.url)).await.unwrap();
        assert!(b.current_url().await.unwrap().path().ends_with("/ui/fleet"));
        // The fleet: three rows on screen at three heights; the gateway is online.
        wait_text(&b, "#fleet-count", "of 3 gateways, 1 online", 20, true).await;
        let mut on_screen = rows_on_screen(&b).await;
        on_screen.sort();
        assert_eq!(on_screen, ["EDGE1", "OTHER1", "OTHER2"]);
        // Last seen ages on screen and the page refreshes itself, without a reload.
        let edge_row = "#fleet-rows .row[data-sn='EDGE1'] .c-last_seen_ms";
        let before = text_of(&b, edge_row).await;
        wait_text(&b, "#fleet-fresh", "Updated", 5, false).await;
        // A keyboard user on the gateway's link: the refreshes keep it (and its focus).
        let link = "#fleet-rows .row[data-sn='EDGE1'] a.sn";
        b.execute(&format!("document.querySelector(\"{link}\").focus()"), vec![]).await.unwrap();
        let held = b.find(Locator::Css(link)).await.unwrap();
        // What the row says besides 'last seen', which the refresh must leave as it was.
        let cells = "return [...document.querySelectorAll(\"#fleet-rows .row[data-sn='EDGE1'] [role=cell]:not(.c-last_seen_ms)\")].map(c => c.innerText)";
        let cells_before = b.execute(cells, vec![]).await.unwrap();
        let until = Instant::now() + Duration::from_secs(25);
        loop {
            let now = text_of(&b, edge_row).await;
            if now != before {
                break;
            }
            assert!(Instant::now() < until, "'last seen' stayed {before:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(held.text().await.expect("the link a refresh must keep"), "EDGE1");
        assert_eq!(b.execute(cells, vec![]).await.unwrap(), cells_before, "a refresh changed EDGE1's other cells");
        let focused = b
            .execute(&format!("return document.activeElement === document.querySelector(\"{link}\")"), vec![])
            .await
            .unwrap();
        assert_eq!(focused, serde_json::json!(true), "the refresh took the focus off the gateway's link");
        seen(&b, &driver, "fleet", true).await;
        // Sorting by keyboard: Enter on a column's button.
        let sort = b.find(Locator::Css(".row.head button[data-key='sn']")).await.unwrap();
        sort.send_keys("\u{e007}").await.unwrap();
        let order = b.find(Locator::Css(".row.head [role=columnheader].c-sn")).await.unwrap().attr("aria-sort").await.unwrap();
        assert_eq!(order.as_deref(), Some("descending"));
        assert_eq!(rows_on_screen(&b).await, ["OTHER2", "OTHER1", "EDGE1"]);
        // The filter finds it.
        b.find(Locator::Css("#fleet-filter")).await.unwrap().send_keys("edge1 online").await.unwrap();
        wait_text(&b, "#fleet-count", "1 of 3 gateways", 5, false).await;
        assert_eq!(rows_on_screen(&b).await, ["EDGE1"]);
        b.find(Locator::Css("#fleet-rows .row[data-sn='EDGE1'] a.sn")).await.unwrap().click().await.unwrap();
        b.wait().for_url(&format!("{}/ui/devices/{dev}", hub.url).parse().unwrap()).await.unwrap();

        // Its page: no stray "null"; the inventory; charts with dated time ticks, units,
        // several value ticks, rates, no pseudo mounts; a hover value.
        wait_text(&b, "#device-online", "online", 10, false).await;
        let text = text_of(&b, "main").await;
        assert!(!text.contains("null") && !text.contains("undefined"), "{text}");
        let inv = text_of(&b, "#inventory").await;
        assert!(inv.contains(std::env::consts::ARCH), "{inv}");
        for title in ["Memory", "Disk used", "Queue depth", "Bandwidth per interface"] {
            let css = format!("figure[data-title='{title}'] polyline");
            let until = Instant::now() + Duration::from_secs(20);
            while b.find(Locator::Css(&css)).await.is_err() {
                assert!(Instant::now() < until, "no {title} chart line");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let charts: serde_json::Value = b
            .execute(
                "return [...document.querySelectorAll('figure.chart')].filter(f => f.querySelector('svg')).map(f => ({
                     title: f.dataset.title, caption: f.querySelector('figcaption').textContent,
                     ticks: [...f.querySelectorAll('text.tick')].map(t => t.textContent),
                     legend: [...f.querySelectorAll('.legend span')].map(s => s.textContent)}))",
                vec![],
            )
            .await
            .unwrap();
        let month = |t: &str| ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            .iter()
            .any(|m| t.contains(m));
        for ch in charts.as_array().unwrap() {
            let ticks: Vec<&str> = ch["ticks"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            assert!(ticks.iter().any(|t| month(t)), "{}: no date on the time axis: {ticks:?}", ch["title"]);
            assert!(ticks.iter().filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_digit())).count() >= 4,
                    "{}: too few ticks: {ticks:?}", ch["title"]);
            assert!(ch["caption"].as_str().unwrap().contains('('), "{}: no unit", ch["caption"]);
            let legend = ch["legend"].to_string();
            for bad in ["unnamed", "/dev/shm", "/sys/fs/cgroup", "/run"] {
                assert!(!legend.contains(&format!("\"{bad}")), "{}: series {bad}: {legend}", ch["title"]);
            }
        }
        // Bandwidth is a rate per report interval: one point fewer than reports (the first
        // report has no interval), and no point is a counter's total since boot.
        let bw: serde_json::Value = b
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch('/ui/api/devices/' + location.pathname.split('/').pop()).then(r => r.json()).then(d => {
                     const usage = d.series.usage_report.length;
                     const f = document.querySelector(\"figure[data-title='Bandwidth per interface']\");
                     const lines = [...f.querySelectorAll('polyline')].map(p => p.getAttribute('points').split(' ').length);
                     done([usage, lines]);
                 });",
                vec![],
            )
            .await
            .unwrap();
        let reports = bw[0].as_u64().unwrap();
        assert!(reports >= 2, "{bw}");
        for n in bw[1].as_array().unwrap() {
            assert!(n.as_u64().unwrap() < reports, "a series has a point per report, the first too: {bw}");
        }
        let readout = b
            .execute(
                "const f = document.querySelector(\"figure[data-title='Memory']\"), r = f.querySelector('rect.hover').getBoundingClientRect();
                 f.querySelector('rect.hover').dispatchEvent(new MouseEvent('mousemove', {clientX: r.right - 2, clientY: r.top + 5, bubbles: true}));
                 return f.querySelector('.readout').textContent;",
                vec![],
            )
            .await
            .unwrap();
        assert!(readout.as_str().unwrap().contains("available"), "hover: {readout}");
        seen(&b, &driver, "gateway", true).await;

        // A tag: odd characters are refused beside the field; a good one shows.
        let tag = b.find(Locator::Css("#tag-tags")).await.unwrap();
        tag.send_keys("a b<").await.unwrap();
        tag.send_keys("\u{e007}").await.unwrap();
        wait_text(&b, "#tag-tags-error", "1 to 32 letters", 5, false).await;
        tag.clear().await.unwrap();
        tag.send_keys("north").await.unwrap();
        tag.send_keys("\u{e007}").await.unwrap();
        wait_text(&b, "#device-tags", "north", 5, false).await;
        // A package the hub does not host is refused beside its field.
        b.find(Locator::Css("#install")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#install-package-error", "Choose a package", 5, false).await;

        // A command: the gateway applies it and its reported state changes on the page.
        let cmd = b.find(Locator::Css("#edge-command")).await.unwrap();
        cmd.clear().await.unwrap();
        cmd.send_keys("[1, 2]").await.unwrap();
        b.find(Locator::Css("#send-command")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#edge-command-error", "not a JSON object", 5, false).await;
        cmd.clear().await.unwrap();
        cmd.send_keys(r#"{"id": "ui-test-1", "config": {"rate": 7}}"#).await.unwrap();
        b.find(Locator::Css("#send-command")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#command-msg", "Sent: edge command ui-test-1", 5, false).await;
        wait_text(&b, "#control-state", "ui-test-1", 60, false).await;
        let cfg = std::fs::read_to_string(agent_dir.join("state/config/apps.json")).unwrap_or_default();
        assert!(cfg.contains("\"rate\":7") || cfg.contains("\"rate\": 7"), "apps.json: {cfg}");
        let errors = console_errors(&b, &driver).await;
        assert!(errors.is_empty(), "console errors: {errors:#?}");

        // The tag is a filter on the fleet page.
        b.goto(&format!("{}/ui/fleet", hub.url)).await.unwrap();
        // Whitelisting with a blank field: the message stands beside it; nothing is added.
        // The box is built by the page's script once the fleet has loaded.
        let wl = b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#whitelist-box summary"));
        wl.await.unwrap().click().await.unwrap();
        b.find(Locator::Css("#whitelist-vendor")).await.unwrap().send_keys("acme").await.unwrap();
        b.find(Locator::Css("#whitelist button[type=submit]")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#whitelist-model-error", "Type the gateway's model", 5, false).await;
        b.find(Locator::Css("#whitelist-model")).await.unwrap().send_keys("gw1").await.unwrap();
        b.find(Locator::Css("#whitelist-sn")).await.unwrap().send_keys("EDGE1").await.unwrap();
        b.find(Locator::Css("#whitelist button[type=submit]")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#whitelist-sn-error", "whitelisted already", 5, false).await;
        // (The browser logs the hub's 409 for the twin: expected, and nothing else.)
        let errors = console_errors(&b, &driver).await;
        assert!(errors.iter().all(|e| e.contains("/ui/api/devices") && e.contains("409")), "{errors:#?}");
        wait_text(&b, "#fleet-count", "of 3 gateways", 5, false).await;
        b.find(Locator::Css("#fleet-filter")).await.unwrap().send_keys("tag:north").await.unwrap();
        wait_text(&b, "#fleet-count", "1 of 3 gateways", 5, false).await;
        assert_eq!(rows_on_screen(&b).await, ["EDGE1"]);

        // Signing out takes the operator back to the sign-in page.
        b.find(Locator::Css("#logout")).await.unwrap().click().await.unwrap();
        b.wait().for_url(&format!("{}/ui/login", hub.url).parse().unwrap()).await.unwrap();
        seen(&b, &driver, "login", true).await;
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
        // Every fifth gateway came back from OS 2 to OS 1 in slot A; the rest run 2 in slot B.
        let os = if i % 5 == 0 {
            json!({"slot": "A", "image": "gwe", "version": "1", "update": {"version": "2", "phase": "rolled-back"}})
        } else {
            json!({"slot": "B", "image": "gwe", "version": "2", "update": null})
        };
        let report = json!({"engine_version": if i % 10 == 0 { "0.2.9" } else { "0.3.0" }, "os": os,
            "apps": [{"sensor": {"status": "RUNNING", "version": format!("2.{}", i % 4)}},
                     {"logger": {"status": if i % 50 == 0 { "FATAL" } else { "RUNNING" }, "version": "1.0"}},
                     {"modbus": {"status": "RUNNING", "version": "3.1"}}, {"ticker": {"status": "RUNNING", "version": null}}],
            "queue": {"backlog": i % 100, "disk_bytes": 4194304, "max_bytes": 16777216}});
        tx.execute(
            "INSERT INTO points(device_id, alias, value, ts, modified_ms) VALUES (?1, 'engine_report', ?2, ?3, ?4)",
            rusqlite::params![id, report.to_string(), now / 1000, now],
        )
        .unwrap();
        let info = json!({"os": "Debian GNU/Linux 12 (bookworm)",
            "uname": {"sysname": "Linux", "release": "6.1.0-47-arm64", "machine": "aarch64"},
            "ipaddrs": {"lo": ["127.0.0.1"], "eth0": [format!("10.{}.{}.{}", i / 65536, i / 256 % 256, i % 256)]}});
        tx.execute(
            "INSERT INTO points(device_id, alias, value, ts, modified_ms) VALUES (?1, 'device_info', ?2, ?3, ?4)",
            rusqlite::params![id, info.to_string(), now / 1000, now],
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
        sign_in(&b, &driver, &hub.url).await;
        let mut figures = Vec::new();
        for _ in 0..3 {
            b.goto(&format!("{}/ui/fleet", hub.url)).await.unwrap();
            wait_text(&b, "#fleet-count", "10000 of 10000 gateways", 30, false).await;
            let until = Instant::now() + Duration::from_secs(10);
            let ms = loop {
                let v = b
                    .execute("return [document.body.dataset.fleetPaintMs, document.body.dataset.fleetParts]", vec![])
                    .await
                    .unwrap();
                if let (Some(a), Some(f)) = (v[0].as_str(), v[1].as_str()) {
                    break (a.parse::<u64>().unwrap(), f.to_string());
                }
                assert!(Instant::now() < until, "the page did not say when its first row was painted");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            figures.push(ms);
        }
        // The first screen holds rows at distinct heights, as does the middle of the list.
        let first = rows_on_screen(&b).await;
        assert!(first.len() >= 20, "only {} rows on screen: {first:?}", first.len());
        assert_eq!(first[0], "SN00000", "sorted by serial");
        b.execute("document.getElementById('fleet-rows').scrollTop = 28 * 5000", vec![]).await.unwrap();
        next_frames(&b).await;
        let middle = rows_on_screen(&b).await;
        assert!(middle.len() >= 20 && middle.contains(&"SN05002".to_string()), "{middle:?}");
        let drawn = b.find_all(Locator::Css("#fleet-rows .row")).await.unwrap().len();
        assert!(drawn < 200, "only the rows in view are drawn ({drawn})");
        seen(&b, &driver, "fleet-10000", false).await;

        // A filter over 10,000 rows: time from the key to the frame that shows it.
        let mut filter_ms = Vec::new();
        for q in ["SN0987", "gw1 online", "fatal"] {
            let f = b.find(Locator::Css("#fleet-filter")).await.unwrap();
            f.clear().await.unwrap();
            b.execute("delete document.body.dataset.filterMs", vec![]).await.unwrap();
            f.send_keys(q).await.unwrap();
            // The page stamps the frame that shows the filtered rows: wait for the stamp.
            let ms = b
                .execute_async(
                    "const done = arguments[0];
                     (function look() {
                         if (document.body.dataset.filterMs) return done(document.body.dataset.filterMs);
                         requestAnimationFrame(look);
                     })();",
                    vec![],
                )
                .await
                .unwrap();
            filter_ms.push(ms.as_str().unwrap().parse::<u64>().unwrap());
        }
        wait_text(&b, "#fleet-count", "200 of 10000 gateways", 5, false).await;
        // A gateway deep in the list is one filter away, and sorting reverses the order.
        let f = b.find(Locator::Css("#fleet-filter")).await.unwrap();
        f.clear().await.unwrap();
        f.send_keys("SN09876").await.unwrap();
        wait_text(&b, "#fleet-count", "1 of 10000 gateways", 5, false).await;
        assert_eq!(rows_on_screen(&b).await, ["SN09876"]);
        f.clear().await.unwrap();
        f.send_keys("tag:none-yet").await.unwrap();
        wait_text(&b, "#fleet-empty", "No gateway matches the filter", 5, false).await;
        // The OS image column is shown by default; the gateways that rolled back are a filter away.
        f.clear().await.unwrap();
        f.send_keys("rolled-back").await.unwrap();
        wait_text(&b, "#fleet-count", "2000 of 10000 gateways", 5, false).await;
        assert_eq!(text_of(&b, "#fleet-rows .row .c-os_image").await, "1 (slot A), 2 rolled-back");
        assert_eq!(rows_on_screen(&b).await[..2], ["SN00000", "SN00005"]);
        f.clear().await.unwrap();
        f.send_keys("gw2 fatal").await.unwrap();
        wait_text(&b, "#fleet-count", "67 of 10000 gateways", 5, false).await;

        // A bulk action on the selection: tag the 67; the confirmation names how many.
        b.find(Locator::Css("#select-all")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#bulk-count", "67 selected", 5, false).await;
        b.find(Locator::Css("#bulk-action")).await.unwrap().select_by_value("tag-add").await.unwrap();
        b.find(Locator::Css("#bulk-apply")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#bulk-error", "Type a tag", 5, false).await;
        b.find(Locator::Css("#bulk-arg")).await.unwrap().send_keys("recall-7").await.unwrap();
        b.find(Locator::Css("#bulk-apply")).await.unwrap().click().await.unwrap();
        let ask = wait_text(&b, "#confirm-text", "67 gateways", 5, false).await;
        assert!(ask.contains("recall-7"), "{ask}");
        press(&b, ENTER).await; // on the focused "Apply"
        wait_text(&b, "#bulk-msg", "Done on 67 gateways", 10, false).await;
        // Saved as a filter, it finds the same 67 after a reload.
        f.clear().await.unwrap();
        f.send_keys("tag:recall-7").await.unwrap();
        wait_text(&b, "#fleet-count", "67 of 10000 gateways", 5, false).await;
        b.find(Locator::Css("#filters-box summary")).await.unwrap().click().await.unwrap();
        b.find(Locator::Css("#filter-name")).await.unwrap().send_keys("recall").await.unwrap();
        b.find(Locator::Css("#save-filter button[type=submit]")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#filter-msg", "Saved the filter recall", 5, false).await;
        b.refresh().await.unwrap();
        wait_text(&b, "#fleet-count", "10000 of 10000", 30, false).await;
        let saved = b.wait().for_element(Locator::Css("#saved-filters option[data-name='recall']")).await.unwrap();
        saved.click().await.unwrap();
        wait_text(&b, "#fleet-count", "67 of 10000 gateways", 5, false).await;

        // Columns: the operator shows the OS column, moves it first, and it stays so.
        b.find(Locator::Css("#columns-menu summary")).await.unwrap().click().await.unwrap();
        b.find(Locator::Css("#columns-list input[data-col='kernel']")).await.unwrap().click().await.unwrap();
        for _ in 0..10 {
            b.find(Locator::Css("#columns-list button[aria-label='Move Kernel left']"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
        b.refresh().await.unwrap();
        wait_text(&b, "#fleet-count", "10000 of 10000", 30, false).await;
        let heads: Vec<String> = serde_json::from_value(
            b.execute("return [...document.querySelectorAll('.row.head button.sort')].map(b => b.textContent)", vec![])
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(heads[..2], ["Kernel", "Serial"], "{heads:?}");
        let kernel = text_of(&b, "#fleet-rows .row .c-kernel").await;
        assert_eq!(kernel, "6.1.0-47-arm64");
        let errors = console_errors(&b, &driver).await;
        assert!(errors.is_empty(), "console errors: {errors:#?}");

        for (i, (paint, parts)) in figures.iter().enumerate() {
            let p: Vec<&str> = parts.split(' ').collect();
            println!(
                "fleet page, 10,000 gateways, load {}: first row painted {paint} ms after navigation start \
                 (script started at {} ms; API answered and parsed {} ms; rows prepared {} ms; sorted and drawn {} ms)",
                i + 1,
                p[0],
                p[1],
                p[2],
                p[3]
            );
        }
        println!("fleet page, 10,000 gateways: a filter's key to its frame: {filter_ms:?} ms");
        b.close().await.unwrap();
    });
}

#[test]
fn a_rollout_pauses_on_failures_and_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(Backend::Sqlite, dir.path());
    add_operator(&db);
    add_operator_as(&db, "vic", "viewer");
    let hub = Arc::new(HubProc::start(&db, dir.path()));
    let c = Arc::new(Client::new(hub.clone()));
    let mut tokens = Vec::new();
    for i in 0..10 {
        let sn = format!("R{i:02}");
        c.whitelist("acme", "gw1", &sn);
        tokens.push(c.activate("acme", "gw1", &sn).text());
    }
    let pkg = "sensor.v2.9.tar.gz";
    for content in [pkg, "gw-os.v2.raucb"] {
        assert_eq!(
            c.op_send("PUT", &format!("/api/v1/content/acme/gw1/{content}"), "application/octet-stream", b"p").status,
            201
        );
    }
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
        sign_in(&b, &driver, &hub.url).await;
        b.find(Locator::Css("#nav-rollouts")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollouts-empty", "No rollouts yet", 10, false).await;
        let form = b.wait().for_element(Locator::Css("#new-rollout")).await.unwrap();
        seen(&b, &driver, "rollouts-empty", true).await;
        // Bad input is refused beside its field and makes nothing.
        b.find(Locator::Css("#start-rollout")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollout-package-error", "Choose a package", 5, false).await;
        let pick = form.find(Locator::Css("select[name='package']")).await.unwrap();
        pick.select_by_label("sensor 2.9 — acme/gw1").await.unwrap();
        // Before Start: the group's size and each stage's members.
        let preview = wait_text(&b, "#rollout-preview", "The group: 10 gateways", 10, false).await;
        assert!(preview.contains("Stage 1 (1 %): 1 gateway") && preview.contains("Stage 3 (100 %): 9 gateways"), "{preview}");
        wait_text(&b, "#start-rollout", "Start the rollout to 10 gateways", 5, false).await;
        b.find(Locator::Css("#start-rollout")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollout-name-error", "1 to 100 characters", 5, false).await;
        form.find(Locator::Css("input[name='name']")).await.unwrap().send_keys("sensor 2.9").await.unwrap();
        let stages = form.find(Locator::Css("input[name='stages']")).await.unwrap();
        stages.clear().await.unwrap();
        stages.send_keys("50, 10").await.unwrap();
        b.find(Locator::Css("#start-rollout")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollout-stages-error", "rising percentages", 5, false).await;
        let query = form.find(Locator::Css("input[name='query']")).await.unwrap();
        query.send_keys("tag:<x>").await.unwrap();
        stages.clear().await.unwrap();
        stages.send_keys("10, 50, 100").await.unwrap();
        b.find(Locator::Css("#start-rollout")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollout-query-error", "a tag is 1 to 32", 5, false).await;
        query.clear().await.unwrap();
        assert!(c.op_get("/api/v1/devices").text().contains("R00"), "the hub still answers");
        // The reboot time is asked only for an OS bundle, and checked beside its field.
        let reboot = form.find(Locator::Css("input[name='reboot']")).await.unwrap();
        let stream = form.find(Locator::Css("input[name='stream']")).await.unwrap();
        assert!(!reboot.is_displayed().await.unwrap(), "a package's rollout asks no reboot time");
        assert!(!stream.is_displayed().await.unwrap(), "a package is not streamed");
        pick.select_by_label("OS bundle gw-os 2 — acme/gw1").await.unwrap();
        assert!(reboot.is_displayed().await.unwrap(), "an OS bundle's rollout asks when to reboot");
        assert!(stream.is_displayed().await.unwrap(), "an OS bundle's rollout offers streaming");
        reboot.clear().await.unwrap();
        reboot.send_keys("25:00-01:00").await.unwrap();
        b.find(Locator::Css("#start-rollout")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollout-reboot-error", "a window HH:MM-HH:MM (UTC)", 5, false).await;
        screenshots(&b, "rollout-form-os").await;
        pick.select_by_label("sensor 2.9 — acme/gw1").await.unwrap();
        assert!(!reboot.is_displayed().await.unwrap() && !stream.is_displayed().await.unwrap());
        // A start too far ahead is refused beside its field (a scheduled rollout waits:
        // tests/dashboard.rs).
        b.execute("const i = document.querySelector(\"input[name='start_at']\"); i.value = '2099-01-01T12:00';
                   i.dispatchEvent(new Event('input', {bubbles: true}));", vec![]).await.unwrap();
        seen(&b, &driver, "rollout-form", true).await;
        b.find(Locator::Css("#start-rollout")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollout-start_at-error", "a year away", 5, false).await;
        b.execute("document.querySelector(\"input[name='start_at']\").value = ''", vec![]).await.unwrap();
        b.find(Locator::Css("#start-rollout")).await.unwrap().click().await.unwrap();
        // Start opens the new rollout's own page.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let path = b.current_url().await.unwrap().path().to_string();
            if path.strip_prefix("/ui/rollouts/").is_some_and(|id| !id.is_empty()) {
                break;
            }
            assert!(Instant::now() < until, "Start did not open the rollout's page: still at {path}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The first stage (one gateway) fails: the rollout pauses by itself and says why.
        wait_text(&b, "#rollout-state", "paused", 30, false).await;
        let reason = text_of(&b, "#rollout-reason").await;
        assert!(reason.contains("stage 1") && reason.contains("1 of 1 gateways failed"), "{reason}");
        let counts = text_of(&b, "#rollout-counts").await;
        assert!(counts.contains("1 failed") && counts.contains("9 pending"), "{counts}");
        let bars: serde_json::Value = b
            .execute(
                "return [...document.querySelectorAll('#rollout-stages progress')].map(p => [p.value, p.max, p.getBoundingClientRect().width])",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(bars[0][0], 1.0, "stage 1: one of one answered: {bars}");
        assert!(bars.as_array().unwrap().iter().all(|b| b[2].as_f64().unwrap() > 50.0), "bars on screen: {bars}");
        let row = text_of(&b, "#rollout-devices tr:has(b.state.failed)").await;
        assert!(row.contains("rolled back to 2.1"), "{row}");
        seen(&b, &driver, "rollout-paused", true).await;
        // The operator aborts it (confirmed by keyboard): nothing more is sent.
        b.find(Locator::Css("#abort")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#confirm-text", "Abort this rollout", 5, false).await;
        press(&b, ENTER).await;
        wait_text(&b, "#rollout-state", "aborted", 10, false).await;
        wait_text(&b, "#rollout-counts", "9 skipped", 5, false).await;
        b.find(Locator::Css("#nav-rollouts")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollouts", "aborted", 10, false).await;
        seen(&b, &driver, "rollouts", true).await;
        // The audit log shows who did it: the abort on top, each entry on its own line.
        b.find(Locator::Css("#nav-audit")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#audit", "rollout.abort", 10, false).await;
        let lines = table_rows_on_screen(&b, "#audit tbody tr").await;
        assert!(lines.len() >= 3, "{lines:?}");
        assert!(lines[0].contains("operator:ops") && lines[0].contains("rollout.abort"), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("rollout.create")), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("signin") && l.contains("127.0.0.1")), "{lines:?}");
        let csv = b.find(Locator::Css("#audit-csv")).await.unwrap().attr("href").await.unwrap().unwrap();
        assert_eq!(csv, "/ui/api/audit?format=csv&limit=100000");
        seen(&b, &driver, "audit", true).await;

        // A viewer sees the fleet, the rollouts and the log, and no control to change them.
        b.find(Locator::Css("#logout")).await.unwrap().click().await.unwrap();
        b.wait().for_url(&format!("{}/ui/login", hub.url).parse().unwrap()).await.unwrap();
        b.find(Locator::Css("#name")).await.unwrap().send_keys("vic").await.unwrap();
        b.find(Locator::Css("#password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
        b.find(Locator::Css("#signin")).await.unwrap().click().await.unwrap();
        b.wait().for_url(&format!("{}/ui/fleet", hub.url).parse().unwrap()).await.unwrap();
        wait_text(&b, "#role", "(viewer)", 5, false).await;
        wait_text(&b, "#fleet-count", "10 gateways", 10, false).await;
        assert!(shown(&b, "#fleet-filter").await, "a viewer filters the fleet");
        for css in ["#whitelist-box", "#save-filter"] {
            assert!(!shown(&b, css).await, "a viewer sees {css}");
        }
        seen(&b, &driver, "fleet-viewer", true).await;
        b.find(Locator::Css("#nav-rollouts")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollouts", "aborted", 10, false).await;
        assert!(!shown(&b, "#new-rollout").await, "a viewer sees the rollout form");
        b.find(Locator::Css("#rollouts a")).await.unwrap().click().await.unwrap();
        wait_text(&b, "#rollout-state", "aborted", 10, false).await;
        assert!(!shown(&b, "#abort").await && !shown(&b, "#pause").await);
        seen(&b, &driver, "rollout-viewer", true).await;
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
