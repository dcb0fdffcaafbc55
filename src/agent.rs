//! The running agent: opens what it owns, starts its threads, waits for a stop signal.

use std::fmt;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::identity::{self, Identity};
use crate::ingest::{Ingest, IngestServer};
use crate::queue::{Queue, QueueError};

/// Why the agent could not start.
#[derive(Debug)]
pub enum StartError {
    /// The device identity could not be resolved.
    Identity(std::io::Error),
    /// The queue could not be opened.
    Queue(QueueError),
    /// The local token could not be read or made.
    Token(std::io::Error),
    /// The ingest API could not listen.
    Ingest(std::io::Error),
    /// Signal handlers could not be installed.
    Signals(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity(e) => write!(f, "device identity: {e}"),
            Self::Queue(e) => write!(f, "{e}"),
            Self::Token(e) => write!(f, "local token: {e}"),
            Self::Ingest(e) => write!(f, "{e}"),
            Self::Signals(e) => write!(f, "installing signal handlers: {e}"),
        }
    }
}

/// Runs until SIGTERM or SIGINT.
pub fn run(cfg: &Config) -> Result<(), StartError> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(StartError::Signals)?;
    let identity = Identity::resolve(&cfg.device, std::path::Path::new("/sys/class/net"))
        .map_err(StartError::Identity)?;
    let queue =
        Queue::open(&cfg.paths.queue_dir(), cfg.queue.options()).map_err(StartError::Queue)?;
    let token = identity::local_token(&cfg.paths.secrets_dir()).map_err(StartError::Token)?;
    let ingest = Arc::new(Ingest {
        queue: queue.clone(),
        identity: identity.clone(),
        token,
        max_body: cfg.ingest.max_body,
    });
    let server = IngestServer::start(cfg.ingest.listen, cfg.ingest.threads, ingest)
        .map_err(StartError::Ingest)?;
    let s = queue.stats();
    log::info!(
        "gwe {} up as {}/{}/{}; queue: {} records not yet acknowledged, next seq {}, {} bytes",
        env!("CARGO_PKG_VERSION"),
        identity.vendor,
        identity.model,
        identity.serial,
        s.backlog(),
        s.next_seq,
        s.disk_bytes
    );
    if let Some(sig) = signals.forever().next() {
        log::info!("signal {sig}: stopping");
    }
    server.shutdown();
    Ok(())
}
