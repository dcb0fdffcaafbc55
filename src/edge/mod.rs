//! The edge data and control paths (`docs/edge-protocol.md`).
//!
//! - `feed`: the `edge` queue consumer copies every data point apps wrote into the edge
//!   store (SQLite), then acknowledges it.
//! - `batcher`: every batch provider found through the orchestrator gets, at its own
//!   interval, the points its configuration selects (by provider name, else by the
//!   provider's group). A batch is saved before it is sent and sent again until the provider
//!   confirms it, so it survives restarts; providers store a batch id once.
//! - `control`: polls every `ctrlpoll` provider, checks each command against its schema,
//!   applies it in one transaction, writes the apps' generic configuration power-safely,
//!   tells the apps that asked, and reports the state read back to every `ctrlupdate`
//!   provider. It also refreshes the provider lists.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cloud::Cloud;
use crate::config::Config;
use crate::queue::Queue;
use crate::stop::Stop;
use crate::supervisor::Supervisor;

mod batcher;
mod control;
mod feed;
pub mod store;

pub const CONSUMER: &str = "edge";

/// A provider of one service, as the orchestrator gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    /// `http(s)://address:port/serviceUri`.
    pub url: String,
    pub token: String,
    pub group: Option<String>,
}

/// The providers of the edge services, refreshed by the control thread.
#[derive(Debug, Default)]
pub struct Directory {
    pub batch: Vec<Provider>,
    pub ctrlpoll: Vec<Provider>,
    pub ctrlupdate: Vec<Provider>,
}

/// Wakes the batcher when configurations or providers change, and at shutdown.
#[derive(Default)]
pub struct Bell {
    gen: Mutex<u64>,
    cv: Condvar,
}

impl Bell {
    pub fn ring(&self) {
        *self.gen.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cv.notify_all();
    }

    pub fn generation(&self) -> u64 {
        *self.gen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the bell rings after `seen` or `d` passes.
    pub fn wait(&self, seen: u64, d: Duration) {
        let g = self.gen.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.cv.wait_timeout_while(g, d, |g| *g == seen);
    }
}

pub struct Shared {
    pub system: String,
    pub dir: Mutex<Directory>,
    pub bell: Bell,
    /// A provider refused its token: orchestrate again soon.
    pub stale: std::sync::atomic::AtomicBool,
    pub stop: Arc<Stop>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.stopped()
    }
}

/// The running edge; `shutdown` wakes its threads so they see the stop flag.
pub struct Edge {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Edge {
    pub fn start(
        cfg: &Config,
        queue: &Queue,
        cloud: Arc<Cloud>,
        sup: Supervisor,
        system: &str,
        stop: Arc<Stop>,
    ) -> Result<Self, String> {
        let path = cfg.paths.edge_db();
        let opened =
            |what: &str| store::EdgeDb::open(&path).map_err(|e| format!("edge store {} ({what}): {e}", path.display()));
        let shared = Arc::new(Shared {
            system: system.to_string(),
            dir: Mutex::new(Directory::default()),
            bell: Bell::default(),
            stale: std::sync::atomic::AtomicBool::new(true),
            stop,
        });
        let consumer = queue.consumer(CONSUMER).map_err(|e| e.to_string())?;
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f).map_err(|e| format!("starting {name}: {e}"))
        };
        let (db, sh, max) = (opened("feed")?, shared.clone(), cfg.edge.max_points);
        threads.push(spawn("edge-feed", Box::new(move || feed::run(db, consumer, max, &sh)))?);
        let (db, sh, c, max) = (opened("batcher")?, shared.clone(), cloud.clone(), cfg.edge.max_batch_points);
        threads.push(spawn("edge-batch", Box::new(move || batcher::run(db, &c, max, &sh)))?);
        let ctl = control::Control {
            db: opened("control")?,
            cloud,
            sup,
            shared: shared.clone(),
            orchestrator: cfg.edge.orchestrator.clone(),
            app_config: cfg.paths.app_config(),
            poll: Duration::from_millis(cfg.edge.poll_ms.max(100)),
            discovery: Duration::from_secs(cfg.edge.discovery_secs.max(1)),
            parameters: Duration::from_secs(cfg.edge.parameters_secs.max(1)),
        };
        threads.push(spawn("edge-control", Box::new(move || ctl.run()))?);
        Ok(Self { shared, threads })
    }

    /// Call after the stop flag is set.
    pub fn shutdown(self) {
        self.shared.bell.ring();
        for t in self.threads {
            let _ = t.join();
        }
    }
}
