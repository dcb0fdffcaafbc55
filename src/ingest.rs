//! The local GMQ ingest API: HTTP on 127.0.0.1:8090 speaking the Exosite device API forms
//! that gateway apps already use. A write is answered 204 only once its points are durable
//! in the queue. Bad requests get a 4xx naming the problem and touch nothing.

use std::borrow::Cow;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use gwe_wire::{form, point};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::identity::Identity;
use crate::queue::{Queue, QueueError};

/// What the request handlers need.
pub struct Ingest {
    pub queue: Queue,
    pub identity: Identity,
    /// Token apps get from `/provision/activate` and present as `X-Exosite-CIK`.
    pub token: String,
    pub max_body: usize,
    /// Counts what each app sends (named by its `X-GWE-App` header), for usage_report.
    pub usage: Option<Arc<crate::usage::Usage>>,
}

/// A running server; stops its threads when shut down or dropped.
pub struct IngestServer {
    server: Arc<Server>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl IngestServer {
    /// Binds `addr` and answers requests on `threads` threads.
    pub fn start(addr: SocketAddr, threads: usize, ingest: Arc<Ingest>) -> io::Result<Self> {
        let server = Server::http(addr)
            .map_err(|e| io::Error::new(io::ErrorKind::AddrInUse, format!("ingest API on {addr}: {e}")))?;
        let server = Arc::new(server);
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let (server, ingest) = (server.clone(), ingest.clone());
            let h = std::thread::Builder::new().name(format!("ingest-{i}")).spawn(move || {
                while let Ok(mut rq) = server.recv() {
                    let reply = ingest.handle(&mut rq);
                    if let Err(e) = rq.respond(reply.into_response()) {
                        log::debug!("ingest: answering a client failed: {e}");
                    }
                }
            })?;
            handles.push(h);
        }
        log::info!("ingest API listening on {addr}");
        Ok(Self { server, threads: handles, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for _ in 0..self.threads.len() {
            self.server.unblock();
        }
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for IngestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A status and a short text body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Self { status, body: body.into() }
    }

    fn no_content() -> Self {
        Self::new(204, "")
    }

    fn into_response(self) -> Response<io::Cursor<Vec<u8>>> {
        let mut body = self.body.into_bytes();
        if !body.is_empty() && !body.ends_with(b"\n") && self.status >= 400 {
            body.push(b'\n');
        }
        let mut r = Response::from_data(body).with_status_code(self.status);
        if let Ok(h) = Header::from_bytes("Content-Type", "text/plain; charset=utf-8") {
            r.add_header(h);
        }
        r
    }
}

const ALIAS_PATH: &str = "/onep:v1/stack/alias";
const RECORD_PATH: &str = "/onep:v1/stack/record";
const ACTIVATE_PATH: &str = "/provision/activate";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// One data point of a request, borrowed from the body where no decoding was needed.
struct Pt<'a> {
    ts: i64,
    alias: Cow<'a, str>,
    value: Cow<'a, str>,
}

impl Ingest {
    /// Answers one request.
    pub fn handle(&self, rq: &mut Request) -> Reply {
        let url = rq.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let is_post = *rq.method() == Method::Post;
        match path {
            "/timestamp" if *rq.method() == Method::Get => Reply::new(200, now().to_string()),
            ALIAS_PATH if !query.is_empty() => {
                Reply::new(400, "reads are not served by the local queue; ask the cloud")
            }
            ACTIVATE_PATH | ALIAS_PATH | RECORD_PATH if !is_post => Reply::new(405, format!("{path} takes POST")),
            ACTIVATE_PATH => self.body(rq).map_or_else(|r| r, |b| self.activate(&b)),
            ALIAS_PATH => self.authed_body(rq).map_or_else(|r| r, |b| self.write(&b)),
            RECORD_PATH => self.authed_body(rq).map_or_else(|r| r, |b| self.record(None, &b)),
            p if p.starts_with(ALIAS_PATH) && p.as_bytes().get(ALIAS_PATH.len()) == Some(&b'/') => {
                if !is_post {
                    return Reply::new(405, format!("{p} takes POST"));
                }
                let raw = &p[ALIAS_PATH.len() + 1..];
                let alias: String =
                    form_urlencoded::parse(format!("a={raw}").as_bytes()).map(|(_, v)| v.into_owned()).collect();
                self.authed_body(rq).map_or_else(|r| r, |b| self.record(Some(&alias), &b))
            }
            _ => Reply::new(404, format!("no such path: {path}")),
        }
    }

    fn authed_body(&self, rq: &mut Request) -> Result<Vec<u8>, Reply> {
        self.authorize(rq)?;
        let body = self.body(rq)?;
        if let Some(u) = &self.usage {
            let app = rq.headers().iter().find(|h| h.field.equiv("X-GWE-App")).map(|h| h.value.as_str().trim());
            u.app(app.filter(|a| !a.is_empty() && a.len() <= 64).unwrap_or("unnamed"), body.len() as u64);
        }
        Ok(body)
    }

    fn authorize(&self, rq: &Request) -> Result<(), Reply> {
        let header =
            |name: &'static str| rq.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().trim());
        if let Some(cik) = header("X-Exosite-CIK") {
            return if cik == self.token {
                Ok(())
            } else {
                Err(Reply::new(401, "X-Exosite-CIK is not this gateway's token"))
            };
        }
        if let Some(vms) = header("X-Exosite-VMS") {
            let id = &self.identity;
            let mut it = vms.split_whitespace();
            return if (it.next(), it.next(), it.next(), it.next())
                == (Some(id.vendor.as_str()), Some(id.model.as_str()), Some(id.serial.as_str()), None)
            {
                Ok(())
            } else {
                Err(Reply::new(401, "X-Exosite-VMS does not name this gateway"))
            };
        }
        Err(Reply::new(401, "missing X-Exosite-CIK (or X-Exosite-VMS) header"))
    }

    fn body(&self, rq: &mut Request) -> Result<Vec<u8>, Reply> {
        let ct = rq.headers().iter().find(|h| h.field.equiv("Content-Type")).map(|h| h.value.as_str());
        form::content_type(ct).map_err(Reply::from)?;
        let too_big = || Reply::new(413, format!("body is over the limit of {} bytes", self.max_body));
        if rq.body_length().is_some_and(|n| n > self.max_body) {
            return Err(too_big());
        }
        let mut body = Vec::with_capacity(rq.body_length().unwrap_or(0));
        if let Err(e) = rq.as_reader().take(self.max_body as u64 + 1).read_to_end(&mut body) {
            return Err(Reply::new(400, format!("reading the body failed: {e}")));
        }
        if body.len() > self.max_body {
            return Err(too_big());
        }
        Ok(body)
    }

    fn activate(&self, body: &[u8]) -> Reply {
        let (mut vendor, mut model, mut sn) = (None, None, None);
        let pairs = match form::all_pairs(body) {
            Ok(p) => p,
            Err(e) => return e.into(),
        };
        for (k, v) in pairs {
            match &*k {
                "vendor" => vendor = Some(v),
                "model" => model = Some(v),
                "sn" | "id" => sn = Some(v),
                _ => return Reply::new(400, format!("unknown activation field {k:?}")),
            }
        }
        let Some(sn) = sn else {
            return Reply::new(400, "activation needs sn= (or id=)");
        };
        let id = &self.identity;
        let vendor_ok = vendor.as_deref().is_none_or(|v| v == id.vendor);
        let model_ok = model.as_deref().is_none_or(|m| m == id.model);
        if vendor_ok && model_ok && sn == id.serial {
            Reply::new(200, self.token.clone())
        } else {
            Reply::new(404, "no such device on this gateway")
        }
    }

    /// `alias=value&...`: each value is a point at the current time.
    fn write(&self, body: &[u8]) -> Reply {
        let ts = now();
        let mut pts = Vec::new();
        for pair in form::pairs(body) {
            let (alias, value) = match pair {
                Ok(p) => p,
                Err(e) => return e.into(),
            };
            pts.push(Pt { ts, alias, value });
        }
        self.enqueue(&pts)
    }

    /// `<ts>=<value>&...` for `alias` (path form), or `alias=<a>&<ts>=<value>&...`.
    fn record(&self, alias: Option<&str>, body: &[u8]) -> Reply {
        let mut alias: Option<Cow<'_, str>> = alias.map(Cow::Borrowed);
        let mut pts = Vec::new();
        for pair in form::pairs(body) {
            let (k, value) = match pair {
                Ok(p) => p,
                Err(e) => return e.into(),
            };
            if k == "alias" {
                alias = Some(value);
                continue;
            }
            let ts = match form::timestamp(&k) {
                Ok(ts) => ts,
                Err(e) => return e.into(),
            };
            let Some(a) = &alias else {
                return Reply::new(400, "record needs alias=<alias> before its values");
            };
            pts.push(Pt { ts, alias: a.clone(), value });
        }
        self.enqueue(&pts)
    }

    fn enqueue(&self, pts: &[Pt<'_>]) -> Reply {
        if pts.is_empty() {
            return Reply::new(400, "no values in the body");
        }
        for p in pts {
            if p.alias.is_empty() || p.alias.len() > point::MAX_ALIAS {
                return Reply::new(400, format!("alias {:?} must be 1 to {} bytes", p.alias, point::MAX_ALIAS));
            }
        }
        let res = self.queue.append_many(
            pts.len(),
            |i| point::encoded_len(&pts[i].alias, pts[i].value.as_bytes()),
            |i, buf| {
                let p = &pts[i];
                // The buffer is exactly encoded_len bytes and the alias was checked above.
                let _ = point::encode(p.ts, &p.alias, p.value.as_bytes(), buf);
            },
        );
        match res {
            Ok(_) => Reply::no_content(),
            Err(e @ (QueueError::TooLarge { .. } | QueueError::BatchTooLarge { .. })) => Reply::new(413, e.to_string()),
            Err(e @ QueueError::Full { .. }) => Reply::new(503, e.to_string()),
            Err(e @ QueueError::DiskFull) => Reply::new(507, e.to_string()),
            Err(e) => {
                log::error!("ingest: {e}");
                Reply::new(500, e.to_string())
            }
        }
    }
}

impl From<form::FormError> for Reply {
    fn from(e: form::FormError) -> Self {
        Reply::new(e.status(), e.to_string())
    }
}
