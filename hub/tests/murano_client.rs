//! Exosite's own device client, unmodified: `murano-client` 21.12.22 from PyPI (its `gdc`
//! command line and its library, installed by scripts/setup.sh into
//! `hub/tests/clients/venv`), against the hub's device API and the agent's local GMQ API.
//! Every call it offers that the hub or GMQ serves: activate, write, read, read-write,
//! record (whole and fractional timestamps), long-poll with and without a change, content
//! list, info and download, timestamp.
//!
//! The client's own bugs, worked around here and only here:
//! - `_http_readwrite` compares a list with 0 (`read_list > 0`, a TypeError on Python 3)
//!   and calls `.decode` on a `str`: the read-write is sent with the library's own
//!   `send_post`, as `_http_readwrite` would send it, and read with its `ReadHandler`.
//! - `gdc http write` does not encode its value, so a value with `&` or `=` splits: the
//!   library's `http_write_multiple` (which encodes) writes that one.
//! - Its device-file form (`gdc -f FILE`, the `Device` class) cannot be built at all:
//!   `MuranoClient.__new__` takes the file name for its `memory_queue` flag and returns a
//!   client without a host ("Cannot parse supported protocol from murano_host parameter:
//!   None"), whatever the file holds. Activation is tested in its other form (`-u ID`).
//! - `HTTPWatchThread` always long-polls with `If-Modified-Since: 0`; `gdc http poll`
//!   passes the caller's value, which is what is tested.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::agent::{wait_for, Agent};
use common::{Backend, Client, HubProc};

fn venv() -> PathBuf {
    let v = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/venv/bin");
    assert!(v.join("gdc").exists(), "murano-client is not installed (scripts/setup.sh makes {})", v.display());
    v
}

/// `gdc [global options] http ARGS...` in `dir`: what it printed.
fn gdc(dir: &Path, host: &str, global: &[&str], args: &[&str]) -> String {
    let out = Command::new(venv().join("gdc"))
        .current_dir(dir)
        .args(["-H", host])
        .args(global)
        .arg("http")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "gdc {args:?}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// A Python snippet with the client library imported as `mc`.
fn python(script: &str) -> String {
    let out = Command::new(venv().join("python3")).args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn exosites_client_against_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(HubProc::start(&common::db_url(Backend::Sqlite, dir.path()), dir.path()));
    let c = Client::new(hub.clone());
    let dev = c.whitelist("acme", "gw1", "MUR1");
    let host = format!("{}/", hub.url);
    let d = dir.path();

    // Activate (Murano's form: id=).
    let token = gdc(d, &host, &["-u", "MUR1"], &["activate"]);
    assert_eq!(token.len(), 40, "activate printed {token:?}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        gdc(d, &host, &["-u", "MUR1"], &["activate"]),
        "[409] Received 409 from activation attempt. Device Not Enabled"
    );
    let k = ["-k", token.as_str()];

    // Write and read.
    assert_eq!(gdc(d, &host, &k, &["write", "temp", "21.5"]), "[204] No content");
    assert_eq!(gdc(d, &host, &k, &["read", "temp"]), "[200] temp=21.5");
    // `gdc http write` sends `alias=value` without encoding the value (the client's own
    // habit): `a&b` arrives as two pairs. The library's `http_write_multiple` encodes.
    let w = python(&format!(
        "from murano_client.http import MuranoHTTP\n\
         api = MuranoHTTP(murano_host='{host}', murano_token='{token}', form_encode=True)\n\
         print(api.http_write_multiple({{'note': 'a&b=c d'}}).code)"
    ));
    assert_eq!(w, "204");
    assert_eq!(gdc(d, &host, &k, &["read", "note"]), "[200] note=a&b=c d");
    assert_eq!(gdc(d, &host, &k, &["read", "nothing"]), "[204] No Content");

    // Read-write, as `_http_readwrite` sends it (see the module's note).
    let rw = python(&format!(
        "from murano_client.http import MuranoHTTP, ReadHandler\n\
         api = MuranoHTTP(murano_host='{host}', murano_token='{token}', form_encode=True)\n\
         from urllib.parse import urlencode\n\
         body = urlencode({{'humidity': '40'}})\n\
         h = {{'Content-Type': api._http_content_type, 'Accept': api._http_accept}}\n\
         h.update(api._auth_header())\n\
         r = ReadHandler(api.send_post(api._stack_alias_url() + '?temp&humidity', h, body))\n\
         print(r.code, r.body)"
    ));
    assert_eq!(rw, "200 temp=21.5&humidity=40");

    // Record, whole and fractional timestamps (the fraction is dropped: points are kept to
    // the second).
    assert_eq!(gdc(d, &host, &k, &["record", "1700000000", "level", "7"]), "[204] No content");
    assert_eq!(gdc(d, &host, &k, &["record", "1700000001.75", "level", "8"]), "[204] No content");
    let hist = c.op_get(&format!("/api/v1/devices/{dev}/dataports/level/history"));
    let hist: serde_json::Value = serde_json::from_slice(&hist.body).unwrap();
    let got: Vec<(i64, &str)> =
        hist.as_array().unwrap().iter().map(|p| (p["ts"].as_i64().unwrap(), p["value"].as_str().unwrap())).collect();
    assert_eq!(got, [(1_700_000_001, "8"), (1_700_000_000, "7")]);

    // Long-poll without a change: 304 at the timeout. With one: the value, at once.
    let now = common::now_ms() / 1000;
    let t0 = Instant::now();
    assert_eq!(gdc(d, &host, &k, &["poll", "cmd", "1500", &now.to_string()]), "[304] Not modified");
    assert!(t0.elapsed() >= Duration::from_millis(1400), "answered before its timeout");
    let poll = {
        let (d, host, token) = (d.to_path_buf(), host.clone(), token.clone());
        let since = (common::now_ms() / 1000 - 1).to_string();
        std::thread::spawn(move || gdc(&d, &host, &["-k", &token], &["poll", "cmd", "20000", &since]))
    };
    std::thread::sleep(Duration::from_millis(700));
    let r =
        c.op_send("PUT", &format!("/api/v1/devices/{dev}/dataports/cmd"), "application/json", br#"{"value":"reboot"}"#);
    assert!(r.status.is_success(), "{}", r.text());
    let t0 = Instant::now();
    assert_eq!(poll.join().unwrap(), "[200] cmd=reboot");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Polled again with the whole second the client knows: the same value is not delivered
    // again; the poll waits for a new one.
    let since = (common::now_ms() / 1000).to_string();
    assert_eq!(gdc(d, &host, &k, &["poll", "cmd", "1200", &since]), "[304] Not modified");

    // Content: list, info, download by the token alone.
    let pkg: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let up = c.op_send("PUT", "/api/v1/content/acme/gw1/sensor.v1.2.tar.gz", "application/gzip", &pkg);
    assert_eq!(up.status, 201, "{}", up.text());
    assert_eq!(gdc(d, &host, &k, &["content", "list"]), "sensor.v1.2.tar.gz");
    let info = gdc(d, &host, &k, &["content", "info", "sensor.v1.2.tar.gz"]);
    assert!(info.starts_with("[200] application/gzip,70000,"), "{info}");
    assert_eq!(gdc(d, &host, &k, &["content", "download", "sensor.v1.2.tar.gz"]), "[200] sensor.v1.2.tar.gz");
    assert_eq!(std::fs::read(d.join("sensor.v1.2.tar.gz")).unwrap(), pkg);
    assert!(gdc(d, &host, &k, &["content", "info", "none.v1.tar.gz"]).starts_with("[404]"));

    // Time, and a token that is not one.
    let ts: i64 = gdc(d, &host, &[], &["timestamp"]).parse().unwrap();
    assert!((ts - common::now_ms() / 1000).abs() <= 2);
    let bad = ["-k", "0000000000000000000000000000000000000000"];
    assert_eq!(gdc(d, &host, &bad, &["write", "temp", "1"]), "[401] No or invalid TOKEN.");
}

#[test]
fn exosites_client_against_gmq() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(HubProc::start(&common::db_url(Backend::Sqlite, dir.path()), dir.path()));
    let c = Client::new(hub.clone());
    let dev = c.whitelist("acme", "gw1", "GMQ1");
    let agent = Agent::start_as(&dir.path().join("agent"), &hub.url, "GMQ1", "", "");
    let host = format!("http://127.0.0.1:{}/", agent.ingest);
    let d = dir.path();

    // An app activates with GMQ by its serial and gets the local token.
    let token = gdc(d, &host, &["-u", "GMQ1"], &["activate"]);
    assert_eq!(token, agent.local_token());
    assert_eq!(gdc(d, &host, &["-u", "OTHER"], &["activate"]), "[404] Client <id> is not found on the system.");
    let k = ["-k", token.as_str()];
    assert_eq!(gdc(d, &host, &k, &["write", "temp", "19.5"]), "[204] No content");
    assert_eq!(gdc(d, &host, &k, &["record", "1700000100", "level", "1"]), "[204] No content");
    assert_eq!(gdc(d, &host, &k, &["record", "1700000101.5", "level", "2"]), "[204] No content");
    let ts: i64 = gdc(d, &host, &[], &["timestamp"]).parse().unwrap();
    assert!((ts - common::now_ms() / 1000).abs() <= 2);
    // Reads are the cloud's: GMQ says so.
    let read = gdc(d, &host, &k, &["read", "temp"]);
    assert!(read.starts_with("[400]"), "{read}");

    // What GMQ acknowledged reaches the hub, at the times the app gave.
    wait_for("the recorded points at the hub", 30, || common::agent::values(&c, dev, "level").len() == 2);
    let hist = c.op_get(&format!("/api/v1/devices/{dev}/dataports/level/history"));
    let hist: serde_json::Value = serde_json::from_slice(&hist.body).unwrap();
    let got: Vec<i64> = hist.as_array().unwrap().iter().map(|p| p["ts"].as_i64().unwrap()).collect();
    assert_eq!(got, [1_700_000_101, 1_700_000_100]);
    wait_for("the written value at the hub", 30, || common::agent::values(&c, dev, "temp") == ["19.5"]);
}

/// The client's TLS client-certificate mode (`gdc -C CERT -K KEY -E CACERT`): no token at
/// all; the hub (`--device-ca`) knows the device by its certificate's common name, its
/// serial number.
#[test]
fn exosites_client_with_a_tls_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = common::pki(d, "server");
    let leaves = [("MUR2".to_string(), "MUR2".to_string()), ("GHOST".to_string(), "GHOST".to_string())];
    let devices = common::issue(d, "devices", &leaves);
    let db = common::db_url(Backend::Sqlite, d);
    let ca = devices.ca_file.to_str().unwrap();
    let opts = common::HubOpts {
        db: &db,
        dir: d,
        port: 0,
        tls: Some((&server.cert, &server.key)),
        extra: &["--device-ca", ca],
    };
    let hub = Arc::new(HubProc::start_with(opts));
    let c = Client { hub: hub.clone(), agent: common::trusting(&server.ca_pem) };
    let dev = c.whitelist("acme", "gw1", "MUR2");
    let host = format!("{}/", hub.url);
    let cacert = server.ca_file.to_str().unwrap();
    let as_dev = |sn: &str| {
        [
            "-C".to_string(),
            d.join(format!("{sn}.pem")).display().to_string(),
            "-K".into(),
            d.join(format!("{sn}.key")).display().to_string(),
            "-E".into(),
            cacert.to_string(),
        ]
    };
    let mur2 = as_dev("MUR2");
    let m: Vec<&str> = mur2.iter().map(String::as_str).collect();

    assert_eq!(gdc(d, &host, &m, &["write", "temp", "19.5"]), "[204] No content");
    assert_eq!(gdc(d, &host, &m, &["read", "temp"]), "[200] temp=19.5");
    assert_eq!(gdc(d, &host, &m, &["record", "1700000000.5", "level", "3"]), "[204] No content");
    let latest = c.op_get(&format!("/api/v1/devices/{dev}/dataports/temp"));
    assert!(latest.text().contains("19.5"), "{}", latest.text());
    let pkg = b"payload".to_vec();
    let up = c.op_send("PUT", "/api/v1/content/acme/gw1/app.v1.tar.gz", "application/gzip", &pkg);
    assert_eq!(up.status, 201, "{}", up.text());
    assert_eq!(gdc(d, &host, &m, &["content", "list"]), "app.v1.tar.gz");
    assert_eq!(gdc(d, &host, &m, &["content", "download", "app.v1.tar.gz"]), "[200] app.v1.tar.gz");
    assert_eq!(std::fs::read(d.join("app.v1.tar.gz")).unwrap(), pkg);

    // A certificate of the device CA for a serial the hub has not whitelisted: refused,
    // and nothing is stored for it.
    let ghost = as_dev("GHOST");
    let g: Vec<&str> = ghost.iter().map(String::as_str).collect();
    let out = Command::new(venv().join("gdc"))
        .current_dir(d)
        .args(["-H", &host])
        .args(&g)
        .args(["http", "write", "temp", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("[401]"), "{text}");
    let raw = common::with_client_cert(&server.ca_pem, &d.join("GHOST.pem"), &d.join("GHOST.key"));
    let r = common::reply(
        raw.post(format!("{}/onep:v1/stack/alias", hub.url)).content_type(common::FORM).send(&b"temp=1"[..]),
    );
    assert_eq!(r.status, 401);
    assert!(r.text().contains("GHOST"), "the reason names the serial: {}", r.text());
    // A certificate of a CA that is not the device CA does not get past the handshake.
    let server_cert = common::with_client_cert(&server.ca_pem, &server.cert, &server.key);
    let r =
        server_cert.post(format!("{}/onep:v1/stack/alias", hub.url)).content_type(common::FORM).send(&b"temp=1"[..]);
    assert!(r.is_err(), "{:?}", r.map(|r| r.status()));
}
