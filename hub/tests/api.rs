//! The hub's device and operator APIs over real sockets, once against SQLite and once
//! against a real PostgreSQL server.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Client, HubProc, FORM};

fn hub(backend: Backend) -> (tempfile::TempDir, Client) {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(backend, dir.path());
    let hub = Arc::new(HubProc::start(&db, dir.path()));
    (dir, Client::new(hub))
}

/// Whitelists and activates a device; returns (id, token).
fn device(c: &Client, sn: &str) -> (i64, String) {
    let id = c.whitelist("acme", "gw1", sn);
    let r = c.activate("acme", "gw1", sn);
    assert_eq!(r.status, 200, "{}", r.text());
    (id, r.text())
}

fn activation(b: Backend) {
    let (_d, c) = hub(b);
    let r = c.activate("acme", "gw1", "SN1");
    assert_eq!(r.status, 404, "an unknown device must not activate");
    assert!(r.text().contains("acme/gw1/SN1"), "{}", r.text());
    let id = c.whitelist("acme", "gw1", "SN1");
    let r = c.activate("acme", "gw1", "SN1");
    assert_eq!(r.status, 200);
    let token = r.text();
    assert_eq!(token.len(), 40);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    let again = c.activate("acme", "gw1", "SN1");
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(c.dev_post(&token, "/onep:v1/stack/alias", "a=1").status, 204);
    // The device list shows a hint of the token, never the token.
    let list = c.op_get("/api/v1/devices").text();
    assert!(!list.contains(&token), "{list}");
    assert!(list.contains(&token[..4]));
    // Re-enabled by the operator: the old token stops working, a new activation succeeds.
    assert_eq!(c.op_send("POST", &format!("/api/v1/devices/{id}/enable"), FORM, b"").status, 204);
    let r = c.activate("acme", "gw1", "SN1");
    assert_eq!(r.status, 200);
    let fresh = r.text();
    assert_ne!(fresh, token);
    assert_eq!(c.dev_post(&token, "/onep:v1/stack/alias", "a=2").status, 401);
    assert_eq!(c.dev_post(&fresh, "/onep:v1/stack/alias", "a=2").status, 204);
    // The Murano form: id=<serial>.
    c.whitelist("acme", "gw1", "SN2");
    let r = common::reply(
        c.agent.post(format!("{}/provision/activate", c.hub.url)).header("Content-Type", FORM).send("id=SN2"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Whitelisting twice is refused.
    let body = br#"{"vendor":"acme","model":"gw1","sn":"SN2"}"#;
    assert_eq!(c.op_send("POST", "/api/v1/devices", "application/json", body).status, 409);
}
backends!(activation_flow, activation);

fn writes_reads_records(b: Backend) {
    let (_d, c) = hub(b);
    let (id, t) = device(&c, "SN1");
    assert_eq!(c.dev_post(&t, "/onep:v1/stack/alias", "temp=21.5&note=a%26b%3Dc").status, 204);
    let r = c.dev_get(&t, "/onep:v1/stack/alias?temp&note&missing", &[]);
    assert_eq!(r.status, 200);
    let got: Vec<(String, String)> = form_urlencoded::parse(&r.body).into_owned().collect();
    assert_eq!(got, vec![("temp".into(), "21.5".into()), ("note".into(), "a&b=c".into())]);
    assert_eq!(c.dev_get(&t, "/onep:v1/stack/alias?missing", &[]).status, 204);
    // Hybrid: write and read in one request.
    let r = c.dev_post(&t, "/onep:v1/stack/alias?temp", "temp=22");
    assert_eq!((r.status.as_u16(), r.text()), (200, "temp=22".into()));
    // Records with timestamps, both forms.
    assert_eq!(c.dev_post(&t, "/onep:v1/stack/record", "alias=hum&1700000000=40&1700000060=41").status, 204);
    assert_eq!(c.dev_post(&t, "/onep:v1/stack/alias/hum", "1700000120=42").status, 204);
    let hist = c.op_get(&format!("/api/v1/devices/{id}/dataports/hum/history"));
    let hist: Vec<serde_json::Value> = serde_json::from_slice(&hist.body).unwrap();
    let vals: Vec<&str> = hist.iter().map(|p| p["value"].as_str().unwrap()).collect();
    assert_eq!(vals, ["42", "41", "40"], "newest first");
    // The latest value follows the newest timestamp, not the arrival order.
    assert_eq!(c.dev_post(&t, "/onep:v1/stack/alias/hum", "1600000000=old").status, 204);
    assert_eq!(c.dev_get(&t, "/onep:v1/stack/alias?hum", &[]).text(), "hum=42");
    let ts = c.dev_get(&t, "/timestamp", &[]).text();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(ts.parse::<u64>().unwrap().abs_diff(now) < 5);
    // The operator writes a dataport; the device reads it.
    let r = c.op_send(
        "PUT",
        &format!("/api/v1/devices/{id}/dataports/engine_fetch"),
        "application/json",
        br#"{"value":"{\"install\":[]}"}"#,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        c.dev_get(&t, "/onep:v1/stack/alias?engine_fetch", &[]).text(),
        "engine_fetch=%7B%22install%22%3A%5B%5D%7D"
    );
}
backends!(writes_and_reads, writes_reads_records);

fn long_poll(b: Backend) {
    let (_d, c) = hub(b);
    let (_, t) = device(&c, "SN1");
    // Timeout: 304 after about the time asked for.
    let start = Instant::now();
    let r = c.dev_get(&t, "/onep:v1/stack/alias?cmd", &[("Request-Timeout", "700")]);
    assert_eq!(r.status, 304);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(650) && took < Duration::from_secs(5), "{took:?}");
    // Wake-up: a write during the poll answers it at once.
    let c = Arc::new(c);
    let (c2, t2) = (c.clone(), t.clone());
    let poll = std::thread::spawn(move || {
        let start = Instant::now();
        (c2.dev_get(&t2, "/onep:v1/stack/alias?cmd", &[("Request-Timeout", "20000")]), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(c.dev_post(&t, "/onep:v1/stack/alias", "cmd=reboot").status, 204);
    let (r, took) = poll.join().unwrap();
    assert_eq!((r.status.as_u16(), r.text()), (200, "cmd=reboot".into()));
    assert!(took < Duration::from_secs(5), "the poll waited {took:?}");
    assert!(r.headers.contains_key("last-modified"));
    let exact = r.headers["x-gwe-modified"].to_str().unwrap().to_string();
    // If-Modified-Since before the write: answered at once; at the write: waits.
    let r = c.dev_get(&t, "/onep:v1/stack/alias?cmd", &[("Request-Timeout", "5000"), ("If-Modified-Since", "1000")]);
    assert_eq!(r.status, 200);
    let r = c.dev_get(&t, "/onep:v1/stack/alias?cmd", &[("Request-Timeout", "300"), ("If-Modified-Since", &exact)]);
    assert_eq!(r.status, 304);
    let lm = r.headers.get("last-modified").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(lm, None);
    // A write to another device does not wake this one.
    let (_, other) = device(&c, "SN2");
    let (c2, t2) = (c.clone(), t.clone());
    let poll = std::thread::spawn(move || {
        c2.dev_get(&t2, "/onep:v1/stack/alias?cmd", &[("Request-Timeout", "800"), ("If-Modified-Since", &exact)])
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.dev_post(&other, "/onep:v1/stack/alias", "cmd=other").status, 204);
    assert_eq!(poll.join().unwrap().status, 304);
}
backends!(long_polls, long_poll);

fn content(b: Backend) {
    let (_d, c) = hub(b);
    let (_, t) = device(&c, "SN1");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = c.op_send("PUT", "/api/v1/content/acme/gw1/app.v1.tar.gz", "application/gzip", &data);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = c.dev_get(&t, "/provision/download?vendor=acme&model=gw1", &[]);
    assert_eq!(r.text(), "app.v1.tar.gz\n");
    let r = c.dev_get(&t, "/provision/download?vendor=acme&model=gw1&id=app.v1.tar.gz&info=true", &[]);
    assert!(r.text().starts_with("application/gzip,100000,"), "{}", r.text());
    let whole = c.dev_get(&t, "/provision/download?vendor=acme&model=gw1&id=app.v1.tar.gz", &[]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, data);
    // Resume: the rest from an offset.
    let r = c.dev_get(&t, "/provision/download?vendor=acme&model=gw1&id=app.v1.tar.gz", &[("Range", "bytes=60000-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.headers["content-range"], "bytes 60000-99999/100000");
    assert_eq!(r.body, &data[60000..]);
    let r = c.dev_get(&t, "/provision/download?vendor=acme&model=gw1&id=app.v1.tar.gz", &[("Range", "bytes=10-19")]);
    assert_eq!(r.body, &data[10..20]);
    let r = c.dev_get(&t, "/provision/download?vendor=acme&model=gw1&id=app.v1.tar.gz", &[("Range", "bytes=100000-")]);
    assert_eq!(r.status, 416, "{}", r.text());
    assert_eq!(c.dev_get(&t, "/provision/download?vendor=acme&model=gw1&id=nope", &[]).status, 404);
    // Another model's content is not this device's.
    assert_eq!(c.dev_get(&t, "/provision/download?vendor=acme&model=gw2", &[]).status, 403);
}
backends!(content_download, content);

fn isolation_and_bad_input(b: Backend) {
    let (_d, c) = hub(b);
    let (a_id, a) = device(&c, "SNA");
    let (_, bt) = device(&c, "SNB");
    assert_eq!(c.dev_post(&a, "/onep:v1/stack/alias", "secret=42").status, 204);
    // B reads only B's dataports.
    assert_eq!(c.dev_get(&bt, "/onep:v1/stack/alias?secret", &[]).status, 204);
    assert_eq!(c.dev_get("0000000000000000000000000000000000000000", "/onep:v1/stack/alias?secret", &[]).status, 401);
    let r = common::reply(c.agent.get(format!("{}/onep:v1/stack/alias?secret", c.hub.url)).call());
    assert_eq!(r.status, 401);
    assert!(r.text().contains("X-Exosite-CIK"));
    // The operator API wants its token.
    let r = common::reply(c.agent.get(format!("{}/api/v1/devices", c.hub.url)).call());
    assert_eq!(r.status, 401);
    let r = common::reply(
        c.agent.get(format!("{}/api/v1/devices", c.hub.url)).header("Authorization", "Bearer nope").call(),
    );
    assert_eq!(r.status, 401);

    let before = c.point_count(a_id, "secret");
    let bad: Vec<(&str, &str, &str, u16, &str)> = vec![
        ("/onep:v1/stack/alias", "application/json", "{\"a\":1}", 415, "application/x-www-form-urlencoded"),
        ("/onep:v1/stack/alias", FORM, "", 400, "alias=value"),
        ("/onep:v1/stack/alias", FORM, "=5", 400, "alias"),
        ("/onep:v1/stack/record", FORM, "alias=secret&yesterday=1", 400, "\"yesterday\" is not unix seconds"),
        ("/onep:v1/stack/record", FORM, "1700000000=1", 400, "alias=<name>"),
        ("/onep:v1/stack/alias/secret", FORM, "", 400, "no <ts>=<value>"),
        ("/gwe/v1/batch", "application/x-gwe-batch", "garbage, not a batch", 400, "GWB1"),
        ("/gwe/v1/batch", "application/json", "GWB1", 415, "application/x-gwe-batch"),
        ("/gwe/v1/batch", "application/x-gwe-batch", "GWB1", 400, "truncated"),
        ("/provision/activate", FORM, "vendor=acme", 400, "vendor, model and sn"),
    ];
    for (path, ctype, body, status, msg) in bad {
        let r = common::reply(
            c.agent
                .post(format!("{}{path}", c.hub.url))
                .header("X-Exosite-CIK", &a)
                .header("Content-Type", ctype)
                .send(body),
        );
        assert_eq!(r.status, status, "{path} {body:?}: {}", r.text());
        assert!(r.text().contains(msg), "{path} {body:?}: {}", r.text());
    }
    let r = c.dev_get(&a, "/onep:v1/stack/alias?a&b", &[("Request-Timeout", "100")]);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = c.dev_get(&a, "/onep:v1/stack/alias?a", &[("Request-Timeout", "soon")]);
    assert_eq!(r.status, 400);
    let r = c.dev_get(&a, "/onep:v1/stack/alias?a", &[("Request-Timeout", "100"), ("If-Modified-Since", "last week")]);
    assert_eq!(r.status, 400);
    // A deflate bomb is cut at the limit.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(b"GWB1").unwrap();
    z.write_all(&vec![0u8; 20 << 20]).unwrap();
    let r = common::reply(
        c.agent
            .post(format!("{}/gwe/v1/batch", c.hub.url))
            .header("X-Exosite-CIK", &a)
            .header("Content-Encoding", "deflate")
            .send(z.finish().unwrap()),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    // An oversized body.
    // An oversized body is refused from its Content-Length, before it is sent.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.hub.port)).unwrap();
    write!(
        s,
        "POST /onep:v1/stack/alias HTTP/1.1\r\nHost: x\r\nX-Exosite-CIK: {a}\r\nContent-Type: {FORM}\r\nContent-Length: {}\r\n\r\nsecret=",
        2 << 20
    )
    .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut s, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    assert_eq!(c.point_count(a_id, "secret"), before, "bad requests changed nothing");
    assert_eq!(c.dev_get(&a, "/onep:v1/stack/alias?secret", &[]).text(), "secret=42");
}
backends!(isolation_and_malformed, isolation_and_bad_input);

fn encode_batch(stream: u64, seqs: std::ops::RangeInclusive<u64>, alias: &str) -> Vec<u8> {
    let mut w = gwe_wire::batch::BatchWriter::default();
    w.reset(stream);
    for seq in seqs {
        let v = seq.to_string();
        let mut buf = vec![0; gwe_wire::point::encoded_len(alias, v.as_bytes())];
        gwe_wire::point::encode(1_700_000_000 + seq as i64, alias, v.as_bytes(), &mut buf).unwrap();
        w.push(seq, &buf);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(w.bytes()).unwrap();
    z.finish().unwrap()
}

fn batches(b: Backend) {
    let (_d, c) = hub(b);
    let (id, t) = device(&c, "SN1");
    let send = |body: Vec<u8>| {
        common::reply(
            c.agent
                .post(format!("{}/gwe/v1/batch", c.hub.url))
                .header("X-Exosite-CIK", &t)
                .header("Content-Encoding", "deflate")
                .header("Content-Type", "application/x-gwe-batch")
                .send(body),
        )
    };
    let r = send(encode_batch(9, 1..=100, "t"));
    assert_eq!((r.status.as_u16(), r.text()), (200, "acked=100".into()));
    // The same batch again (its answer was lost): nothing stored twice.
    assert_eq!(send(encode_batch(9, 1..=100, "t")).text(), "acked=100");
    // Overlapping: only the new part is stored.
    assert_eq!(send(encode_batch(9, 51..=150, "t")).text(), "acked=150");
    assert_eq!(c.point_count(id, "t"), 150);
    // A new stream (a new queue on the gateway) starts over.
    assert_eq!(send(encode_batch(10, 1..=10, "t")).text(), "acked=10");
    assert_eq!(c.point_count(id, "t"), 160);
    assert_eq!(c.dev_get(&t, "/onep:v1/stack/alias?t", &[]).text(), "t=150");
    // Seqs and stream ids past what the database keeps: refused with the reason, nothing
    // stored, and the stream goes on as before.
    let r = send(encode_batch(9, (1 << 63)..=(1 << 63), "t"));
    assert_eq!(
        (r.status.as_u16(), r.text().trim()),
        (400, format!("batch: seq {} is past 2^63 - 1", 1u64 << 63).as_str())
    );
    let r = send(encode_batch(u64::MAX, 1..=1, "t"));
    assert_eq!(
        (r.status.as_u16(), r.text().trim()),
        (400, format!("batch: stream {} is past 2^63 - 1", u64::MAX).as_str())
    );
    assert_eq!(c.point_count(id, "t"), 160);
    assert_eq!(send(encode_batch(9, 151..=151, "t")).text(), "acked=151");
}
backends!(batch_ingest, batches);

#[test]
fn hubs_share_postgres_and_wake_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::pg_database();
    let a = Arc::new(HubProc::start(&db, dir.path()));
    let b = Arc::new(HubProc::start(&db, dir.path()));
    let (ca, cb) = (Client::new(a), Arc::new(Client::new(b)));
    let (_, t) = device(&ca, "SN1");
    let (cb2, t2) = (cb.clone(), t.clone());
    let poll =
        std::thread::spawn(move || cb2.dev_get(&t2, "/onep:v1/stack/alias?cmd", &[("Request-Timeout", "20000")]));
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    assert_eq!(ca.dev_post(&t, "/onep:v1/stack/alias", "cmd=go").status, 204);
    let r = poll.join().unwrap();
    assert_eq!((r.status.as_u16(), r.text()), (200, "cmd=go".into()));
    assert!(start.elapsed() < Duration::from_secs(5));
    // Batches retried on the other hub are stored once.
    let send = |c: &Client| {
        common::reply(
            c.agent
                .post(format!("{}/gwe/v1/batch", c.hub.url))
                .header("X-Exosite-CIK", &t)
                .header("Content-Encoding", "deflate")
                .send(encode_batch(1, 1..=50, "x")),
        )
    };
    assert_eq!(send(&ca).text(), "acked=50");
    assert_eq!(send(&cb).text(), "acked=50");
    let id = serde_json::from_slice::<Vec<serde_json::Value>>(&ca.op_get("/api/v1/devices").body).unwrap()[0]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(cb.point_count(id, "x"), 50);
}

#[test]
fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki(dir.path(), "hub");
    let db = common::db_url(Backend::Sqlite, dir.path());
    let hub = HubProc::start_with(common::HubOpts {
        db: &db,
        dir: dir.path(),
        port: 0,
        tls: Some((&pki.cert, &pki.key)),
        extra: &[],
    });
    let ok = common::trusting(&pki.ca_pem).get(format!("{}/timestamp", hub.url)).call().unwrap();
    assert_eq!(ok.status(), 200);
    // A client that trusts another CA refuses the hub.
    let other = common::pki(dir.path(), "other");
    let e = common::trusting(&other.ca_pem).get(format!("{}/timestamp", hub.url)).call().unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

/// A hub remembers tokens, and asks the database every 15 s which devices were revoked
/// lately: a token replaced through another hub stops working here within that, though
/// each sweep renews what was not revoked (so without the revocation it would work on).
fn token_replaced_on_another_hub(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(b, dir.path());
    let (a, other) = (
        Client::new(Arc::new(HubProc::start(&db, dir.path()))),
        Client::new(Arc::new(HubProc::start(&db, dir.path()))),
    );
    let (id, old) = device(&a, "SN1");
    assert_eq!(a.dev_post(&old, "/onep:v1/stack/alias", "a=1").status, 204, "remembered by hub a now");
    assert_eq!(other.op_send("POST", &format!("/api/v1/devices/{id}/enable"), FORM, b"").status, 204);
    let r = other.activate("acme", "gw1", "SN1");
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = r.text();
    let t0 = Instant::now();
    while a.dev_post(&old, "/onep:v1/stack/alias", "a=2").status != 401 {
        assert!(t0.elapsed() < Duration::from_secs(25), "hub a still takes the replaced token");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(a.dev_post(&fresh, "/onep:v1/stack/alias", "a=3").status, 204);
}
backends!(a_token_replaced_on_another_hub_stops_working_within_15_s, token_replaced_on_another_hub);

/// A write moves its device's `last_seen_ms` once 30 s have passed since the last time it
/// did, and not before (most writes then leave the device row alone). A second hub on the
/// same database keeps to the same 30 s, counted from its own last try.
fn last_seen_every_30_s(b: Backend) {
    use gwe_hub::store::{DeviceKey, Store};
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(b, dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let open = || gwe_hub::store::open(&db, Arc::new(gwe_hub::notify::Notifier::default()));
        let (one, two) = (open().await.unwrap(), open().await.unwrap());
        let key = DeviceKey { vendor: "acme".into(), model: "gw1".into(), sn: "SN1".into() };
        let dev = one.add_device(&key, 0).await.unwrap().id;
        let seen = || async { one.device(dev).await.unwrap().unwrap().last_seen_ms };
        assert_eq!(seen().await, None);
        let t0 = 1_700_000_000_000i64;
        let write = |s: &Arc<dyn Store>, t: i64| {
            let s = s.clone();
            async move { s.write(dev, &[("a".into(), t.to_string())], t / 1000, t).await.unwrap() }
        };
        write(&one, t0).await;
        assert_eq!(seen().await, Some(t0), "the first write sets it");
        write(&one, t0 + 10_000).await;
        write(&one, t0 + 29_999).await;
        assert_eq!(seen().await, Some(t0), "writes within 30 s leave it");
        write(&one, t0 + 30_000).await;
        assert_eq!(seen().await, Some(t0 + 30_000), "30 s later it moves");
        // The other hub's first write finds the row 10 s old and leaves it; that hub then
        // waits its own 30 s, so with writes spread over hubs the row is at most 60 s old.
        write(&two, t0 + 40_000).await;
        assert_eq!(seen().await, Some(t0 + 30_000), "another hub keeps to the 30 s");
        write(&two, t0 + 69_999).await;
        assert_eq!(seen().await, Some(t0 + 30_000));
        write(&two, t0 + 70_000).await;
        assert_eq!(seen().await, Some(t0 + 70_000));
        // The values themselves are all stored.
        let v = one.read(dev, &["a".into()]).await.unwrap();
        assert_eq!(v[0].as_ref().map(|v| v.value.as_str()), Some("1700000070000"));
    });
}
backends!(last_seen_moves_every_30_s, last_seen_every_30_s);
