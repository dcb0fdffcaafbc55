//! The local GMQ ingest API over a real socket: happy paths and every class of bad request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use gwe::identity::Identity;
use gwe::ingest::{Ingest, IngestServer};
use gwe::queue::{self, Options, Queue};
use gwe_wire::point;

const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";

struct Fixture {
    _dir: tempfile::TempDir,
    qdir: std::path::PathBuf,
    server: IngestServer,
}

fn start(max_body: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("queue");
    let queue = Queue::open(&qdir, Options { consumers: vec!["fwd".into()], ..Options::default() }).unwrap();
    let identity = Identity { vendor: "acme".into(), model: "gw1".into(), serial: "SN-7".into() };
    let ingest = Arc::new(Ingest {
        queue,
        identity,
        token: TOKEN.into(),
        max_body,
        usage: None,
        reread: std::sync::OnceLock::new(),
        catalog: None,
    });
    let _ = ingest.reread.set(Box::new(|| vec!["a".to_string(), "b".to_string()]));
    let server = IngestServer::start("127.0.0.1:0".parse().unwrap(), 2, ingest).unwrap();
    Fixture { _dir: dir, qdir, server }
}

/// Sends a raw HTTP/1.1 request; returns status and body.
fn send(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(b"Connection: close\r\n\r\n").unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn post(addr: SocketAddr, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let auth = auth.map(|a| format!("{a}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n{auth}Content-Length: {}\r\n",
        body.len()
    );
    send(addr, &head, body.as_bytes())
}

fn cik() -> Option<&'static str> {
    Some("X-Exosite-CIK: 0123456789abcdef0123456789abcdef01234567")
}

/// Every point durably in the queue directory, read the way `gwe queue dump` reads it.
fn points(f: &Fixture) -> Vec<(i64, String, String)> {
    let mut v = Vec::new();
    queue::inspect(&f.qdir, 1 << 20, |_, p| {
        let p = point::decode(p).unwrap();
        v.push((p.ts, p.alias.to_string(), String::from_utf8(p.value.to_vec()).unwrap()));
    })
    .unwrap();
    v
}

#[test]
fn activation_gives_the_token_to_this_gateway_only() {
    let f = start(4096);
    let a = f.server.local_addr();
    assert_eq!(post(a, "/provision/activate", None, "vendor=acme&model=gw1&sn=SN-7"), (200, TOKEN.into()));
    assert_eq!(post(a, "/provision/activate", None, "id=SN-7").0, 200);
    assert_eq!(post(a, "/provision/activate", None, "vendor=acme&model=gw1&sn=other").0, 404);
    let (s, b) = post(a, "/provision/activate", None, "vendor=acme&model=gw1");
    assert_eq!(s, 400);
    assert!(b.contains("sn="), "{b}");
    assert_eq!(send(a, "GET /provision/activate HTTP/1.1\r\nHost: x\r\n", b"").0, 405);
}

#[test]
fn writes_and_records_are_durable_when_answered() {
    let f = start(4096);
    let a = f.server.local_addr();
    assert_eq!(post(a, "/onep:v1/stack/alias", cik(), "temp=21.5&note=a%26b%3Dc%20d").0, 204);
    // Answered 204: already on disk, as a fresh reader of the files sees.
    let p = points(&f);
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].1.as_str(), p[0].2.as_str()), ("temp", "21.5"));
    assert_eq!((p[1].1.as_str(), p[1].2.as_str()), ("note", "a&b=c d"), "percent-encoded & and = survive");

    assert_eq!(post(a, "/onep:v1/stack/alias/hum", cik(), "1700000000=40&1700000001=41").0, 204);
    let vms = Some("X-Exosite-VMS: acme gw1 SN-7");
    assert_eq!(post(a, "/onep:v1/stack/record", vms, "alias=press&1700000002=1013").0, 204);
    let p = points(&f);
    assert_eq!(
        p[2..],
        [
            (1_700_000_000, "hum".to_string(), "40".to_string()),
            (1_700_000_001, "hum".into(), "41".into()),
            (1_700_000_002, "press".into(), "1013".into())
        ]
    );
    let (s, text) = send(a, "POST /reread HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n", b"");
    assert_eq!((s, text.as_str()), (200, "program files read again; 2 programs run"));
    let (s, ts) = send(a, "GET /timestamp HTTP/1.1\r\nHost: x\r\n", b"");
    assert_eq!(s, 200);
    assert!(ts.trim().parse::<i64>().unwrap() > 1_700_000_000);
}

#[test]
fn bad_requests_get_4xx_with_a_message_and_change_nothing() {
    let f = start(256);
    let a = f.server.local_addr();
    assert_eq!(post(a, "/onep:v1/stack/alias", cik(), "kept=1").0, 204);
    let cases: Vec<(u16, &str, (u16, String))> = vec![
        (404, "no such path", post(a, "/onep:v1/other", cik(), "a=1")),
        (401, "missing X-Exosite-CIK", post(a, "/onep:v1/stack/alias", None, "a=1")),
        (401, "not this gateway's token", post(a, "/onep:v1/stack/alias", Some("X-Exosite-CIK: 1111111111111111111111111111111111111111"), "a=1")),
        (401, "does not name this gateway", post(a, "/onep:v1/stack/alias", Some("X-Exosite-VMS: acme gw1 SN-8"), "a=1")),
        (400, "has no '='", post(a, "/onep:v1/stack/alias", cik(), "a=1&broken")),
        (400, "bad percent escape", post(a, "/onep:v1/stack/alias", cik(), "a=%zz")),
        (400, "alias", post(a, "/onep:v1/stack/alias", cik(), "=novalias")),
        (400, "no values", post(a, "/onep:v1/stack/alias", cik(), "")),
        (400, "is not unix seconds", post(a, "/onep:v1/stack/alias/x", cik(), "yesterday=1")),
        (400, "not UTF-8", post(a, "/onep:v1/stack/alias", cik(), "a=%FF")),
        (400, "needs alias=", post(a, "/onep:v1/stack/record", cik(), "1700000000=1")),
        (413, "over the limit of 256 bytes", post(a, "/onep:v1/stack/alias", cik(), &format!("a={}", "x".repeat(300)))),
        (405, "takes POST", send(a, "GET /onep:v1/stack/alias/x HTTP/1.1\r\nHost: x\r\n", b"")),
        (415, "Content-Type", send(a, "POST /onep:v1/stack/alias HTTP/1.1\r\nHost: x\r\nX-Exosite-CIK: 0123456789abcdef0123456789abcdef01234567\r\nContent-Type: application/json\r\nContent-Length: 2\r\n", b"{}")),
    ];
    for (want, text, (status, body)) in cases {
        assert_eq!(status, want, "{body}");
        assert!(body.contains(text), "{want}: {body:?} should mention {text:?}");
    }
    // Many tiny points within max_body can still be more than one queue write takes: the
    // answer names that limit (the default config's body cap, 64 KiB, of `a=1` pairs).
    let many = start(65_536);
    let body = vec!["a=1"; 16_000].join("&");
    let (s, text) = post(many.server.local_addr(), "/onep:v1/stack/alias", cik(), &body);
    assert_eq!(s, 413, "{text}");
    assert!(text.contains("queue.batch_bytes") && text.contains("send fewer points"), "{text}");
    // A chunked body over the limit is refused too, without a Content-Length to go by.
    let big = "x".repeat(400);
    let chunked = format!("{:x}\r\na={big}\r\n0\r\n\r\n", big.len() + 2);
    let (s, _) = send(
        a,
        "POST /onep:v1/stack/alias HTTP/1.1\r\nHost: x\r\nX-Exosite-CIK: 0123456789abcdef0123456789abcdef01234567\r\nTransfer-Encoding: chunked\r\n",
        chunked.as_bytes(),
    );
    assert_eq!(s, 413);
    let p = points(&f);
    assert_eq!(p.len(), 1, "only the one good write is queued: {p:?}");
    // And the server still works.
    assert_eq!(post(a, "/onep:v1/stack/alias", cik(), "after=2").0, 204);
}

#[test]
fn concurrent_apps_all_land() {
    let f = start(4096);
    let a = f.server.local_addr();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..30 {
                    assert_eq!(post(a, "/onep:v1/stack/alias", cik(), &format!("app{t}={i}")).0, 204);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let p = points(&f);
    assert_eq!(p.len(), 180);
    for t in 0..6 {
        let vals: Vec<_> = p.iter().filter(|x| x.1 == format!("app{t}")).map(|x| x.2.parse::<u32>().unwrap()).collect();
        assert_eq!(vals, (0..30).collect::<Vec<_>>(), "app{t} in order");
    }
}

#[test]
fn an_oversized_body_gets_its_413_not_a_reset() {
    // The server answers 413 from the head, before the body; a client still sending the
    // body must be able to read that answer (closing with unread bytes would reset the
    // connection, and a reset can destroy the answer before the client reads it).
    let f = start(256);
    let a = f.server.local_addr();
    for round in 0..10 {
        let s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = vec![b'x'; 200_000];
        let head = format!(
            "POST /onep:v1/stack/alias HTTP/1.1\r\nHost: x\r\nX-Exosite-CIK: 0123456789abcdef0123456789abcdef01234567\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\na=",
            body.len() + 2
        );
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(&body);
        });
        let mut resp = Vec::new();
        (&s).read_to_end(&mut resp).unwrap_or_else(|e| panic!("round {round}: {e} instead of the answer"));
        let text = String::from_utf8_lossy(&resp);
        assert!(text.starts_with("HTTP/1.1 413"), "round {round}: {text}");
        assert!(text.contains("over the limit of 256 bytes"), "{text}");
        writer.join().unwrap();
    }
}
