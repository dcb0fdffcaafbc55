//! The local GMQ ingest API: HTTP on 127.0.0.1:8090 speaking the Exosite device API forms
//! that gateway apps already use. A write is answered 204 only once its points are durable
//! in the queue. Bad requests get a 4xx naming the problem and touch nothing.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use gwe_wire::{form, point};

use crate::identity::Identity;
use crate::queue::{Queue, QueueError};
use http::{Limits, Request, Server};

pub mod http;

pub use http::Reply;

/// What the request handlers need.
pub struct Ingest {
    pub queue: Queue,
    pub identity: Identity,
    /// Token apps get from `/provision/activate` and present as `X-Exosite-CIK`.
    pub token: String,
    pub max_body: usize,
    /// Counts what each app sends (named by its `X-GWE-App` header), for usage_report.
    pub usage: Option<Arc<crate::usage::Usage>>,
    /// `POST /reread` (GMQ's): reads the program files again and applies them; returns the
    /// programs that start by themselves. Set once the supervisor runs.
    pub reread: std::sync::OnceLock<Box<dyn Fn() -> Vec<String> + Send + Sync>>,
    /// The names of the points apps write, for the edge's parameters.
    pub catalog: Option<Arc<crate::catalog::Catalog>>,
}

/// The running local API (`http::Server`); stops when shut down or dropped.
pub struct IngestServer {
    server: Server,
}

impl IngestServer {
    /// Binds `addr` and answers requests on `threads` worker threads.
    pub fn start(addr: SocketAddr, threads: usize, ingest: Arc<Ingest>) -> io::Result<Self> {
        let limits = Limits::with_body(ingest.max_body);
        let handler = move |rq: &Request| ingest.handle(rq);
        let server = Server::start(addr, threads, limits, Arc::new(handler))
            .map_err(|e| io::Error::new(e.kind(), format!("ingest API on {addr}: {e}")))?;
        log::info!("ingest API listening on {}", server.local_addr());
        Ok(Self { server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn shutdown(self) {
        drop(self);
    }
}

impl Reply {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Self { status, body: body.into() }
    }

    fn no_content() -> Self {
        Self::new(204, "")
    }
}

const ALIAS_PATH: &str = "/onep:v1/stack/alias";
const RECORD_PATH: &str = "/onep:v1/stack/record";
const ACTIVATE_PATH: &str = "/provision/activate";

fn now() -> i64 {
    crate::clock::unix_secs_i64()
}

/// One data point of a request, borrowed from the body where no decoding was needed.
struct Pt<'a> {
    ts: i64,
    alias: Cow<'a, str>,
    value: Cow<'a, str>,
}

impl Ingest {
    /// Answers one request.
    pub fn handle(&self, rq: &Request) -> Reply {
        let (path, query) = rq.target.split_once('?').unwrap_or((rq.target.as_str(), ""));
        let is_post = rq.method == "POST";
        match path {
            "/timestamp" if rq.method == "GET" => Reply::new(200, now().to_string()),
            "/reread" if is_post => match self.reread.get() {
                Some(reread) => {
                    let started = reread();
                    Reply::new(200, format!("program files read again; {} programs run", started.len()))
                }
                None => Reply::new(503, "the supervisor is starting; try again"),
            },
            "/reread" => Reply::new(405, "/reread takes POST"),
            ALIAS_PATH if !query.is_empty() => {
                Reply::new(400, "reads are not served by the local queue; ask the cloud")
            }
            ACTIVATE_PATH | ALIAS_PATH | RECORD_PATH if !is_post => Reply::new(405, format!("{path} takes POST")),
            ACTIVATE_PATH => self.body(rq).map_or_else(|r| r, |b| self.activate(b)),
            ALIAS_PATH => self.authed_body(rq).map_or_else(|r| r, |b| self.write(b)),
            RECORD_PATH => self.authed_body(rq).map_or_else(|r| r, |b| self.record(None, b)),
            p if p.starts_with(ALIAS_PATH) && p.as_bytes().get(ALIAS_PATH.len()) == Some(&b'/') => {
                if !is_post {
                    return Reply::new(405, format!("{p} takes POST"));
                }
                let raw = &p[ALIAS_PATH.len() + 1..];
                let alias: String =
                    form_urlencoded::parse(format!("a={raw}").as_bytes()).map(|(_, v)| v.into_owned()).collect();
                self.authed_body(rq).map_or_else(|r| r, |b| self.record(Some(&alias), b))
            }
            _ => Reply::new(404, format!("no such path: {path}")),
        }
    }

    fn authed_body<'r>(&self, rq: &'r Request) -> Result<&'r [u8], Reply> {
        self.authorize(rq)?;
        let body = self.body(rq)?;
        if let Some(u) = &self.usage {
            let app = rq.header("X-GWE-App");
            u.app(app.filter(|a| !a.is_empty() && a.len() <= 64).unwrap_or("unnamed"), body.len() as u64);
        }
        Ok(body)
    }

    fn authorize(&self, rq: &Request) -> Result<(), Reply> {
        let header = |name: &'static str| rq.header(name);
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

    /// The form body (the server already held it to `max_body`).
    fn body<'r>(&self, rq: &'r Request) -> Result<&'r [u8], Reply> {
        form::content_type(rq.header("Content-Type")).map_err(Reply::from)?;
        if rq.body.len() > self.max_body {
            return Err(Reply::new(413, format!("body is over the limit of {} bytes", self.max_body)));
        }
        Ok(&rq.body)
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
        let res = self.queue.append_points(pts.len(), |i| (pts[i].ts, &pts[i].alias, pts[i].value.as_bytes()));
        match res {
            Ok(_) => {
                if let Some(c) = &self.catalog {
                    c.saw_all(pts.iter().map(|p| (&*p.alias, p.ts, &*p.value)));
                }
                Reply::no_content()
            }
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
