//! The edge data and control paths (`docs/edge-protocol.md`).
//!
//! - `store`: no copy of the points: they stay in the queue, read through the `edge`
//!   consumer from each provider's cursor; cursors, batches in flight and the control state
//!   are two small files replaced atomically.
//! - `batcher`: every batch provider found through the orchestrator gets, at its own
//!   interval, the points its configuration selects (by provider name, else by the
//!   provider's group). A batch is saved before it is sent and sent again until the provider
//!   confirms it, so it survives restarts; providers store a batch id once.
//! - `control`: polls every `ctrlpoll` provider, checks each command against its schema,
//!   applies it in one file replacement, writes the apps' generic configuration power-safely,
//!   tells the apps that asked, and reports the state read back to every `ctrlupdate`
//!   provider. It also refreshes the provider lists.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gwe_wire::edge::BatchConfig;

use crate::cloud::Cloud;
use crate::config::Config;
use crate::queue::{Queue, QueueError};
use crate::stop::Stop;
use crate::supervisor::Supervisor;

mod batcher;
mod control;
pub mod store;

pub const CONSUMER: &str = "edge";

/// A provider of one service, as the orchestrator gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    /// `NAME@ADDRESS:PORT`: the provider's identity, as Arrowhead's registry keys it; two
    /// providers of one name are two providers (each has its own cursor).
    pub key: String,
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
    /// The batch configurations, as the control store last saved them.
    pub configs: Mutex<BTreeMap<String, BatchConfig>>,
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

/// Why the edge paths did not start.
#[derive(Debug)]
pub enum EdgeStartError {
    Store(store::EdgeStoreError),
    Queue(QueueError),
    Thread(&'static str, std::io::Error),
}

impl std::fmt::Display for EdgeStartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store(e) => write!(f, "edge store: {e}"),
            Self::Queue(e) => write!(f, "{e}"),
            Self::Thread(name, e) => write!(f, "starting {name}: {e}"),
        }
    }
}

impl std::error::Error for EdgeStartError {}

impl Edge {
    pub fn start(
        cfg: &Config,
        queue: &Queue,
        cloud: Arc<Cloud>,
        sup: Supervisor,
        system: &str,
        catalog: Arc<crate::catalog::Catalog>,
        stop: Arc<Stop>,
    ) -> Result<Self, EdgeStartError> {
        let dir = cfg.paths.edge_dir();
        let mut control = store::ControlStore::open(&dir).map_err(EdgeStartError::Store)?;
        migrate(cfg, &mut control);
        let shared = Arc::new(Shared {
            system: system.to_string(),
            dir: Mutex::new(Directory::default()),
            configs: Mutex::new(control.state().batch.clone()),
            bell: Bell::default(),
            stale: std::sync::atomic::AtomicBool::new(true),
            stop,
        });
        let consumer = queue.consumer(CONSUMER).map_err(EdgeStartError::Queue)?;
        let log =
            store::PointLog::open(&dir, queue.clone(), consumer, cfg.edge.max_points).map_err(EdgeStartError::Store)?;
        let mut threads = Vec::new();
        let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f).map_err(|e| EdgeStartError::Thread(name, e))
        };
        let (sh, c, max) = (shared.clone(), cloud.clone(), cfg.edge.max_batch_points);
        threads.push(spawn("edge-batch", Box::new(move || batcher::run(log, &c, max, &sh)))?);
        let ctl = control::Control {
            db: control,
            cloud,
            sup,
            shared: shared.clone(),
            orchestrator: cfg.edge.orchestrator.clone(),
            app_config: cfg.paths.app_config(),
            poll: Duration::from_millis(cfg.edge.poll_ms.max(100)),
            discovery: Duration::from_secs(cfg.edge.discovery_secs.max(1)),
            parameters: Duration::from_secs(cfg.edge.parameters_secs.max(1)),
            ping: cfg.edge.ping_providers,
            catalog,
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

/// An earlier agent kept the edge state in SQLite (`edge.db`). Its generic
/// configuration is also in the apps' file, so it is taken from there; its batch
/// configurations and unsent points are not carried over (an operator sends the batch
/// configuration again). The old database files are removed.
fn migrate(cfg: &Config, control: &mut store::ControlStore) {
    let old = cfg.paths.state_dir.join("edge.db");
    if !old.exists() {
        return;
    }
    log::warn!(
        "edge: {} from an earlier agent is no longer used; its batch configurations must be sent again",
        old.display()
    );
    if let Some(v) = std::fs::read(cfg.paths.app_config())
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(serde_json::Value::is_object)
    {
        if let Err(e) = control.adopt_config(v) {
            log::error!("edge: keeping the generic configuration: {e}");
            return;
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(cfg.paths.state_dir.join(format!("edge.db{suffix}")));
    }
    let _ = crate::fsio::sync_dir(&cfg.paths.state_dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_sqlite_store_leaves_its_generic_configuration_and_goes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("gwe.toml");
        std::fs::write(&p, format!("[paths]\nstate_dir = \"{}\"\n", d.path().display())).unwrap();
        let cfg = Config::from_file(&p).unwrap();
        std::fs::write(d.path().join("edge.db"), b"SQLite format 3\0").unwrap();
        std::fs::write(d.path().join("edge.db-wal"), b"").unwrap();
        std::fs::create_dir_all(cfg.paths.app_config().parent().unwrap()).unwrap();
        std::fs::write(cfg.paths.app_config(), br#"{"rate": 5}"#).unwrap();
        let mut control = store::ControlStore::open(&cfg.paths.edge_dir()).unwrap();
        migrate(&cfg, &mut control);
        assert!(!d.path().join("edge.db").exists() && !d.path().join("edge.db-wal").exists());
        let again = store::ControlStore::open(&cfg.paths.edge_dir()).unwrap();
        assert_eq!(again.edge_state("gw").config, serde_json::json!({"rate": 5}));
        assert_eq!(again.edge_state("gw").config_version, 1);
    }
}
