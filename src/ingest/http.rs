//! The local API's HTTP/1.1 server: one I/O thread holds every connection and waits in
//! poll(2) (nothing else wakes it: no timer runs while no connection has a deadline); a
//! fixed pool of workers answers whole requests. A connection is owned by the I/O thread
//! while it is read and by one worker while its request is answered and the answer
//! written; then it comes back for the next request (keep-alive) or is closed.
//!
//! What a client can cost is bounded, so memory stays flat whatever it sends:
//! - a request head (request line and headers) of at most [`Limits::max_head`] bytes and
//!   [`Limits::max_headers`] headers (431 past either), a body of at most `max_body` bytes
//!   (413, before it is read when `Content-Length` says so);
//! - at most [`Limits::max_conns`] connections: past that, a new one takes the place of
//!   the connection idle the longest, or is answered 503 when none is idle; an idle
//!   connection holds a socket and a few words, no buffer;
//! - a request must arrive whole within [`Limits::request_timeout`] of its first byte (408
//!   then: a client sending one byte at a time holds nothing for long), and an idle
//!   keep-alive connection is closed after [`Limits::idle_timeout`];
//! - a refused request's connection is answered, its sending side shut, and what the client
//!   still sends is read and dropped for at most 2 s and 256 KiB before it is closed (a
//!   close with unread bytes resets the connection, and the reset can destroy the answer
//!   before the client reads it).
//!
//! Request heads are parsed by `httparse`; bodies are `Content-Length` or chunked.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// What one client may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head: usize,
    pub max_headers: usize,
    pub max_body: usize,
    pub max_conns: usize,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Limits {
    /// The defaults, with the configured body cap.
    pub fn with_body(max_body: usize) -> Self {
        Self {
            max_head: 8 << 10,
            max_headers: 32,
            max_body,
            max_conns: 1024,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A whole request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header of that name (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
    }
}

/// An answer: status and a short text body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

pub type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running server; stops its threads when shut down or dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    wake: Arc<TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// When this connection is closed unless a whole request has come.
    deadline: Instant,
    keep_alive: bool,
    continued: bool,
    /// Refused and answered, its sending side shut: the rest of what the client sends is
    /// read and dropped (this many bytes so far) until it closes, [`LINGER_BYTES`] or the
    /// deadline. Closing with unread bytes would send a reset, which can destroy the answer
    /// before the client reads it.
    lingering: Option<usize>,
}

/// How long, and how much, a refused connection is read and dropped before it is closed.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 << 10;

impl Server {
    /// Binds `addr`; answers with `threads` workers calling `handler`.
    pub fn start(addr: SocketAddr, threads: usize, limits: Limits, handler: Arc<Handler>) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // The workers give connections back through a channel and a byte on this loopback
        // pair, which wakes poll(2).
        let pair = TcpListener::bind("127.0.0.1:0")?;
        let wake = Arc::new(TcpStream::connect(pair.local_addr()?)?);
        let (wake_rx, _) = pair.accept()?;
        wake_rx.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (work_tx, work_rx) = mpsc::channel::<(Conn, Request)>();
        let (back_tx, back_rx) = mpsc::channel::<Conn>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        let mut handles = Vec::with_capacity(threads + 1);
        for i in 0..threads {
            let (rx, back, wake, handler, stop) =
                (work_rx.clone(), back_tx.clone(), wake.clone(), handler.clone(), stop.clone());
            handles.push(std::thread::Builder::new().name(format!("ingest-{i}")).spawn(move || {
                worker(&rx, &back, &wake, &*handler, &stop, limits);
            })?);
        }
        let io_stop = stop.clone();
        handles.push(std::thread::Builder::new().name("ingest-io".into()).spawn(move || {
            IoLoop { listener, wake_rx, work: work_tx, back: back_rx, limits, conns: Vec::new(), paused_until: None }
                .run(&io_stop);
        })?);
        Ok(Self { addr, stop, wake, threads: handles })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = (&*self.wake).write_all(b"x");
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker(
    rx: &Mutex<Receiver<(Conn, Request)>>,
    back: &Sender<Conn>,
    wake: &TcpStream,
    handler: &Handler,
    stop: &AtomicBool,
    limits: Limits,
) {
    loop {
        let job = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
        let Ok((mut conn, rq)) = job else { return };
        let reply = handler(&rq);
        let keep = conn.keep_alive && !stop.load(Ordering::Relaxed);
        if respond(&mut conn.stream, &reply, keep).is_ok() && keep {
            conn.deadline = Instant::now() + limits.idle_timeout;
            conn.continued = false;
            if back.send(conn).is_err() {
                return;
            }
            let _ = (&*wake).write_all(b"x");
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "",
    }
}

/// Writes an answer (blocking, with a deadline: a client that does not read is dropped).
fn respond(stream: &mut TcpStream, reply: &Reply, keep_alive: bool) -> io::Result<()> {
    let mut body = reply.body.as_bytes().to_vec();
    if !body.is_empty() && !body.ends_with(b"\n") && reply.status >= 400 {
        body.push(b'\n');
    }
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n",
        reply.status,
        reason(reply.status),
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    );
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    stream.write_all(&out)?;
    stream.set_nonblocking(true)
}

/// An answer for a request that could not be read; the connection then closes.
fn refuse(mut stream: TcpStream, status: u16, why: &str) {
    let _ = respond(&mut stream, &Reply { status, body: why.into() }, false);
}

/// What the start of a connection's buffer holds (public for the fuzz target).
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A whole request, and how many bytes of the buffer it took.
    Whole(Request, usize, bool),
    /// The head is whole and asks `Expect: 100-continue`: its body may follow.
    Continue,
    Refused(u16, String),
}

/// Reads a request out of the start of `buf`, within `limits`; `continued`: a `100
/// Continue` was sent for it already.
pub fn parse(buf: &[u8], limits: &Limits, continued: bool) -> Parsed {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut rq = httparse::Request::new(&mut headers);
    let head_len = match rq.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => {
            return Parsed::Refused(431, format!("the request head is over {} bytes", limits.max_head))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refused(431, format!("more than {} headers", limits.max_headers))
        }
        Err(e) => return Parsed::Refused(400, format!("malformed request: {e}")),
    };
    if head_len > limits.max_head {
        return Parsed::Refused(431, format!("the request head is over {} bytes", limits.max_head));
    }
    let method = rq.method.unwrap_or("").to_string();
    let target = rq.path.unwrap_or("").to_string();
    let http10 = rq.version == Some(0);
    let mut owned = Vec::with_capacity(rq.headers.len());
    for h in rq.headers.iter() {
        match std::str::from_utf8(h.value) {
            Ok(v) => owned.push((h.name.to_string(), v.to_string())),
            Err(_) => return Parsed::Refused(400, format!("header {} is not UTF-8", h.name)),
        }
    }
    let get = |n: &str| owned.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.trim().to_string());
    let connection = get("Connection").unwrap_or_default().to_ascii_lowercase();
    let keep_alive = if http10 { connection.contains("keep-alive") } else { !connection.contains("close") };
    let chunked = get("Transfer-Encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let rest = &buf[head_len..];
    let (body, used) = if chunked {
        match dechunk(rest, limits.max_body) {
            Ok(Some((body, used))) => (body, used),
            Ok(None) => return Parsed::Partial,
            Err(r) => return r,
        }
    } else {
        let len = match get("Content-Length").map(|v| v.parse::<usize>()) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return Parsed::Refused(400, "Content-Length is not a number".into()),
        };
        if len > limits.max_body {
            return Parsed::Refused(413, format!("body is over the limit of {} bytes", limits.max_body));
        }
        if rest.len() < len {
            let expect = get("Expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
            return if expect && !continued && rest.is_empty() { Parsed::Continue } else { Parsed::Partial };
        }
        (rest[..len].to_vec(), len)
    };
    Parsed::Whole(Request { method, target, headers: owned, body }, head_len + used, keep_alive)
}

/// A chunked body: `Some((body, bytes used))` once its last chunk and trailer are in.
fn dechunk(mut buf: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, Parsed> {
    let start = buf.len();
    let mut body = Vec::new();
    loop {
        let (skip, size) = match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Parsed::Refused(400, "malformed chunked body".into())),
        };
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > max.saturating_sub(body.len()) {
            return Err(Parsed::Refused(413, format!("body is over the limit of {max} bytes")));
        }
        buf = &buf[skip..];
        if size == 0 {
            // Trailer fields (none expected) end with an empty line.
            return match buf.windows(2).position(|w| w == b"\r\n") {
                Some(0) => Ok(Some((body, start - buf.len() + 2))),
                Some(_) => match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(p) => Ok(Some((body, start - buf.len() + p + 4))),
                    None => Ok(None),
                },
                None => Ok(None),
            };
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

struct IoLoop {
    listener: TcpListener,
    wake_rx: TcpStream,
    work: Sender<(Conn, Request)>,
    back: Receiver<Conn>,
    limits: Limits,
    conns: Vec<Conn>,
    /// After accept(2) failed for want of descriptors: the listener rests until then
    /// (instead of waking poll(2) again at once, forever).
    paused_until: Option<Instant>,
}

/// What happens to a connection after a round of poll(2).
enum Act {
    Keep,
    Close,
    TimedOut,
    Refuse(u16, String),
    Hand(Request, usize, bool),
}

impl IoLoop {
    fn run(mut self, stop: &AtomicBool) {
        let mut acts: Vec<(usize, Act)> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if self.paused_until.is_some_and(|t| t <= now) {
                self.paused_until = None;
            }
            let timeout = self
                .conns
                .iter()
                .map(|c| c.deadline)
                .chain(self.paused_until)
                .map(|t| t.saturating_duration_since(now))
                .min()
                .map_or(PollTimeout::NONE, |d| {
                    PollTimeout::try_from(d.as_millis().min(60_000) as i32 + 1).unwrap_or(PollTimeout::MAX)
                });
            acts.clear();
            let ready: Vec<usize>;
            let accept: bool;
            {
                let mut fds = Vec::with_capacity(self.conns.len() + 2);
                fds.push(PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN));
                let listen = if self.paused_until.is_some() { PollFlags::empty() } else { PollFlags::POLLIN };
                fds.push(PollFd::new(self.listener.as_fd(), listen));
                fds.extend(self.conns.iter().map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)));
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        log::error!("ingest: poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
                let hit = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                if hit(&fds[0]) {
                    let mut sink = [0u8; 64];
                    while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
                }
                ready = fds[2..].iter().enumerate().filter(|(_, f)| hit(f)).map(|(i, _)| i).collect();
                accept = hit(&fds[1]);
            }
            for i in ready {
                acts.push((i, self.read(i)));
            }
            // Connections back from a worker may already hold the next request.
            let back_from = self.conns.len();
            while let Ok(c) = self.back.try_recv() {
                self.conns.push(c);
            }
            for i in back_from..self.conns.len() {
                if !self.conns[i].buf.is_empty() {
                    acts.push((i, self.advance(i)));
                }
            }
            let now = Instant::now();
            for (i, c) in self.conns.iter().enumerate() {
                if c.deadline <= now {
                    acts.push((i, Act::TimedOut));
                }
            }
            // Highest index first, so swap_remove only moves connections already seen.
            acts.sort_by_key(|a| std::cmp::Reverse(a.0));
            acts.dedup_by_key(|a| a.0);
            for (i, act) in acts.drain(..) {
                match act {
                    Act::Keep => {}
                    Act::Close => drop(self.conns.swap_remove(i)),
                    Act::TimedOut => {
                        let c = self.conns.swap_remove(i);
                        if !c.buf.is_empty() {
                            refuse(c.stream, 408, "the request did not arrive whole in time");
                        }
                    }
                    Act::Refuse(status, why) => {
                        let c = &mut self.conns[i];
                        let answered = respond(&mut c.stream, &Reply { status, body: why }, false).is_ok();
                        if answered && c.stream.shutdown(std::net::Shutdown::Write).is_ok() {
                            c.buf = Vec::new();
                            c.lingering = Some(0);
                            c.deadline = Instant::now() + LINGER;
                        } else {
                            drop(self.conns.swap_remove(i));
                        }
                    }
                    Act::Hand(rq, used, keep_alive) => {
                        let mut c = self.conns.swap_remove(i);
                        c.buf.drain(..used);
                        if c.buf.is_empty() {
                            c.buf = Vec::new(); // an idle connection holds no buffer
                        }
                        c.keep_alive = keep_alive;
                        let _ = self.work.send((c, rq));
                    }
                }
            }
            // Last, when no index of this round is held any more: accepting may close one.
            if accept {
                self.accept();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= self.limits.max_conns {
                        // At the cap, the connection idle the longest makes room (a
                        // keep-alive client connects again); when every one is mid-request,
                        // the newcomer is refused.
                        let idle = (0..self.conns.len())
                            .filter(|&i| self.conns[i].buf.is_empty())
                            .min_by_key(|&i| self.conns[i].deadline);
                        match idle {
                            Some(i) => drop(self.conns.swap_remove(i)),
                            None => {
                                let _ = stream.set_nonblocking(false);
                                refuse(stream, 503, "too many connections to the local API; try again");
                                continue;
                            }
                        }
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    self.conns.push(Conn {
                        stream,
                        buf: Vec::new(),
                        deadline: Instant::now() + self.limits.idle_timeout,
                        keep_alive: true,
                        continued: false,
                        lingering: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors, say: leave the rest in the backlog and rest a
                    // second.
                    log::warn!("ingest: accept failed ({} connections open): {e}", self.conns.len());
                    self.paused_until = Some(Instant::now() + Duration::from_secs(1));
                    return;
                }
            }
        }
    }

    /// Reads what connection `i` sent, then what is to become of it.
    fn read(&mut self, i: usize) -> Act {
        let cap = self.limits.max_head + self.limits.max_body + 4096;
        let mut chunk = [0u8; 4096];
        if let Some(dropped) = self.conns[i].lingering {
            let c = &mut self.conns[i];
            let mut dropped = dropped;
            loop {
                match (&c.stream).read(&mut chunk) {
                    Ok(n) if n > 0 && dropped + n <= LINGER_BYTES => dropped += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    _ => return Act::Close, // closed by the client, too much, or an error
                }
            }
            c.lingering = Some(dropped);
            return Act::Keep;
        }
        loop {
            let c = &mut self.conns[i];
            match (&c.stream).read(&mut chunk) {
                Ok(0) => return Act::Close,
                Ok(n) => {
                    if c.buf.is_empty() {
                        c.deadline = Instant::now() + self.limits.request_timeout;
                    }
                    c.buf.extend_from_slice(&chunk[..n]);
                    if c.buf.len() > cap {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Act::Close,
            }
        }
        self.advance(i)
    }

    /// A whole request to hand to a worker, a bad one to refuse, or wait for more.
    fn advance(&mut self, i: usize) -> Act {
        let c = &mut self.conns[i];
        match parse(&c.buf, &self.limits, c.continued) {
            Parsed::Partial => Act::Keep,
            Parsed::Continue => {
                c.continued = true;
                let _ = (&c.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                Act::Keep
            }
            Parsed::Refused(status, why) => Act::Refuse(status, why),
            Parsed::Whole(rq, used, keep_alive) => Act::Hand(rq, used, keep_alive),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits { max_head: 200, max_headers: 4, max_body: 10, ..Limits::with_body(10) }
    }

    fn whole(buf: &[u8]) -> (Request, usize, bool) {
        match parse(buf, &lim(), false) {
            Parsed::Whole(r, n, k) => (r, n, k),
            _ => panic!("not whole: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn refused(buf: &[u8]) -> u16 {
        match parse(buf, &lim(), false) {
            Parsed::Refused(s, _) => s,
            _ => panic!("not refused: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn heads_and_bodies_are_read_within_limits() {
        assert!(matches!(parse(b"POST / HTTP/1.1\r\nContent-Le", &lim(), false), Parsed::Partial));
        let rq = b"POST /a?b HTTP/1.1\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabcNEXT";
        let (r, n, keep) = whole(rq);
        // The next request's bytes stay in the buffer.
        let used = rq.len() - "NEXT".len();
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), &r.body[..], n, keep),
            ("POST", "/a?b", &b"abc"[..], used, true)
        );
        assert_eq!(r.header("x-a"), Some("1"));
        let (_, _, keep) = whole(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!keep, "HTTP/1.0 closes unless asked to keep alive");
        let (_, _, keep) = whole(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!keep);
        assert_eq!(refused(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"), 413, "refused before the body comes");
        assert_eq!(refused(b"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n"), 431);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend([b'a'; 300]);
        assert_eq!(refused(&big), 431, "a head over max_head, even unfinished");
        assert_eq!(refused(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(refused(b"\x00\x01 garbage\r\n\r\n"), 400);
        let expect = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
        assert!(matches!(parse(expect, &lim(), false), Parsed::Continue));
        assert!(matches!(parse(expect, &lim(), true), Parsed::Partial));
    }

    #[test]
    fn chunked_bodies_are_joined_and_capped() {
        let rq = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nX";
        let (r, n, _) = whole(rq);
        assert_eq!((&r.body[..], n), (&b"abcde"[..], rq.len() - 1));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", &lim(), false),
            Parsed::Partial
        ));
        assert_eq!(refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n"), 413);
        assert_eq!(refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), 400);
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let limits = Limits { max_conns: 2, ..Limits::with_body(100) };
        let handler = |_: &Request| Reply { status: 204, body: String::new() };
        let server = Server::start("127.0.0.1:0".parse().unwrap(), 1, limits, Arc::new(handler)).unwrap();
        let a = server.local_addr();
        let first = TcpStream::connect(a).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut second = TcpStream::connect(a).unwrap();
        second.write_all(b"POST / HTTP/1.1\r\n").unwrap(); // mid-request: not idle
        std::thread::sleep(Duration::from_millis(50));
        // A third: the idle first one is closed for it.
        let mut third = TcpStream::connect(a).unwrap();
        third.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 256];
        let n = third.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 204"), "{}", String::from_utf8_lossy(&buf[..n]));
        let mut first = first;
        first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(first.read(&mut buf).unwrap(), 0, "the idle connection was closed");
        // Now both are mid-request or busy: a fourth is refused with 503.
        third.write_all(b"POST / HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut fourth = TcpStream::connect(a).unwrap();
        fourth.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut resp = Vec::new();
        let _ = fourth.read_to_end(&mut resp);
        assert!(resp.starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&resp));
        second.write_all(b"Content-Length: 0\r\n\r\n").unwrap();
        let n = second.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 204"));
    }
}
