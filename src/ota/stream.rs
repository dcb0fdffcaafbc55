//! Streaming an OS bundle from the hub into RAUC (docs/os-updates.md, "Streamed"). RAUC's
//! HTTP streaming reads a verity bundle with Range requests while it installs, and, for an
//! adaptive bundle, only the blocks neither slot already holds. RAUC reaches the hub through
//! this relay on loopback, which holds the gateway's identity (token, certificate or TPM
//! key) and asks the hub for each range: no credential appears on RAUC's command line, in
//! its config or in a log, and the relay's one path is random, valid only while the install
//! runs. Each request's body is copied through a fixed buffer: memory does not grow with the
//! bundle or with the range asked for.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cloud::Cloud;

/// Connections RAUC's streaming helper may hold at once (curl's parallel transfers); more
/// are answered 503 and closed.
const MAX_CONNECTIONS: usize = 8;
/// A request head larger than this is refused (RAUC's are a few hundred bytes).
const MAX_HEAD: usize = 8 << 10;
/// An idle connection is closed after this.
const IDLE: Duration = Duration::from_secs(60);

struct Shared {
    cloud: Arc<Cloud>,
    /// `/SECRET/BUNDLE`: the only path served.
    path: String,
    id: String,
    size: u64,
    stop: AtomicBool,
    open: AtomicUsize,
    /// Body bytes relayed to RAUC.
    bytes: AtomicU64,
    requests: AtomicU64,
}

/// The relay of one bundle, for the time of one install.
pub struct Relay {
    shared: Arc<Shared>,
    port: u16,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Serves content `id` of `size` bytes (its size as the hub says it) on 127.0.0.1.
    pub fn start(cloud: Arc<Cloud>, id: &str, size: u64) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let mut secret = [0u8; 16];
        getrandom::getrandom(&mut secret).map_err(|e| io::Error::other(e.to_string()))?;
        let shared = Arc::new(Shared {
            cloud,
            path: format!("/{}/{id}", hex::encode(secret)),
            id: id.to_string(),
            size,
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("os-stream".into()).spawn(move || accept(&listener, &s))?;
        Ok(Self { shared, port, thread: Some(thread) })
    }

    /// The URL RAUC is given.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.shared.path)
    }

    /// Body bytes relayed so far, and the requests that carried them.
    pub fn relayed(&self) -> (u64, u64) {
        (self.shared.bytes.load(Ordering::Relaxed), self.shared.requests.load(Ordering::Relaxed))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut conn) = conn else { continue };
        if shared.open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            let _ = reply(&mut conn, "503 Service Unavailable", "too many connections");
            continue;
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new().name("os-stream-conn".into()).spawn(move || {
            if let Err(e) = serve(&mut conn, &s) {
                log::debug!("os stream: {e}");
            }
            s.open.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            log::warn!("os stream: {e}");
            shared.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn reply(conn: &mut TcpStream, status: &str, why: &str) -> io::Result<()> {
    write!(conn, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{why}", why.len())
}

/// One connection: GET requests of one range each, kept alive.
fn serve(conn: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(IDLE))?;
    let mut head = vec![0u8; MAX_HEAD];
    let mut have = 0;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        // A request head (RAUC sends no body).
        let end = loop {
            if let Some(i) = head[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if have == head.len() {
                return reply(conn, "431 Request Header Fields Too Large", "request head too large");
            }
            let n = conn.read(&mut head[have..])?;
            if n == 0 {
                return Ok(());
            }
            have += n;
        };
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&head[..end]), Ok(httparse::Status::Complete(_))) {
            return reply(conn, "400 Bad Request", "not an HTTP request");
        }
        if req.method != Some("GET") || req.path != Some(shared.path.as_str()) {
            return reply(conn, "404 Not Found", "no such bundle");
        }
        let range = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("range"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| parse_range(v, shared.size));
        let Some((start, last)) = range else {
            return reply(conn, "416 Range Not Satisfiable", "one byte range within the bundle, please");
        };
        head.copy_within(end..have, 0);
        have -= end;
        let (total, mut body) = match shared.cloud.content_range(&shared.id, start, last) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("os stream: bytes {start}-{last} of {}: {e}", shared.id);
                return reply(conn, "502 Bad Gateway", &e.to_string());
            }
        };
        if total != shared.size {
            log::warn!("os stream: {} changed on the hub ({total} bytes, was {})", shared.id, shared.size);
            return reply(conn, "502 Bad Gateway", "the bundle changed on the hub");
        }
        let len = last - start + 1;
        write!(
            conn,
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {len}\r\nContent-Range: bytes {start}-{last}/{total}\r\nAccept-Ranges: bytes\r\n\r\n"
        )?;
        let mut left = len;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = body.read(&mut buf[..want])?;
            if n == 0 {
                // The hub sent less than it said: the connection cannot go on.
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the hub's range ended early"));
            }
            conn.write_all(&buf[..n])?;
            left -= n as u64;
        }
        shared.bytes.fetch_add(len, Ordering::Relaxed);
        shared.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// `bytes=A-B` or `bytes=A-` within `size`: the first and last byte.
fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let last = match b.trim() {
        "" => size.checked_sub(1)?,
        b => b.parse::<u64>().ok()?.min(size.checked_sub(1)?),
    };
    (start <= last).then_some((start, last))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-3", 100), Some((0, 3)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=90-500", 100), Some((90, 99)));
        for bad in ["bytes=100-", "bytes=5-1", "items=1-2", "bytes=-5", "bytes=1-2,4-5", "bytes=a-b", ""] {
            assert_eq!(parse_range(bad, 100), None, "{bad}");
        }
        assert_eq!(parse_range("bytes=0-", 0), None);
    }
}
