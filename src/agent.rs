//! The running agent: opens what it owns, starts its threads, waits for a stop signal.

use std::fmt;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::ctl;
use crate::fsio;
use crate::identity::{self, Identity};
use crate::ingest::{Ingest, IngestServer};
use crate::ota::extract::Limits;
use crate::ota::install::Installer;
use crate::ota::package;
use crate::ota::store::AppStore;
use crate::queue::{Queue, QueueError};
use crate::supervisor::{self, Supervisor};

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
    /// The supervisor or its control socket could not start.
    Supervisor(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity(e) => write!(f, "device identity: {e}"),
            Self::Queue(e) => write!(f, "{e}"),
            Self::Token(e) => write!(f, "local token: {e}"),
            Self::Ingest(e) => write!(f, "{e}"),
            Self::Signals(e) => write!(f, "installing signal handlers: {e}"),
            Self::Supervisor(e) => write!(f, "app supervisor: {e}"),
        }
    }
}

/// Runs until SIGTERM or SIGINT.
pub fn run(cfg: &Config) -> Result<(), StartError> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(StartError::Signals)?;
    let identity =
        Identity::resolve(&cfg.device, std::path::Path::new("/sys/class/net")).map_err(StartError::Identity)?;
    let queue = Queue::open(&cfg.paths.queue_dir(), cfg.queue.options()).map_err(StartError::Queue)?;
    let token = identity::local_token(&cfg.paths.secrets_dir()).map_err(StartError::Token)?;
    let ingest =
        Arc::new(Ingest { queue: queue.clone(), identity: identity.clone(), token, max_body: cfg.ingest.max_body });
    let server = IngestServer::start(cfg.ingest.listen, cfg.ingest.threads, ingest).map_err(StartError::Ingest)?;
    let apps = start_apps(cfg)?;
    let socket = ctl::serve(&cfg.paths.run_dir, apps.clone()).map_err(StartError::Supervisor)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
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
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    apps.sup.shutdown();
    server.shutdown();
    let _ = std::fs::remove_file(socket);
    Ok(())
}

/// Starts the supervisor with every program (the image's and the installed apps'), settles
/// installs a power cut interrupted, and installs the image's preinstalled packages.
fn start_apps(cfg: &Config) -> Result<Arc<Installer>, StartError> {
    fsio::create_dir_all_durable(&cfg.paths.secrets_dir()).map_err(StartError::Supervisor)?;
    let watchdog = watchdog_interval(std::env::var("WATCHDOG_USEC").ok(), std::env::var("WATCHDOG_PID").ok());
    let opts = supervisor::Options { state_file: cfg.paths.app_pids(), watchdog };
    let (sup, _thread) = Supervisor::start(Vec::new(), opts).map_err(StartError::Supervisor)?;
    let store = AppStore::open(&cfg.paths.apps_dir()).map_err(StartError::Supervisor)?;
    let installer = Installer {
        store,
        sup,
        programs_dir: cfg.supervisor.programs_dir.clone(),
        log_dir: cfg.paths.log_dir.clone(),
        trusted: cfg.ota.trusted_keys.iter().filter_map(|k| package::parse_public_key(k)).collect(),
        allow_unsigned: cfg.ota.allow_unsigned,
        limits: Limits { max_bytes: cfg.ota.max_unpacked_bytes, max_entries: cfg.ota.max_entries },
        install_timeout: std::time::Duration::from_secs(cfg.ota.install_timeout_secs),
        busy: Default::default(),
    };
    installer.apply();
    installer.resume_trials();
    installer.preinstall(&cfg.ota.preinstall_dir);
    Ok(Arc::new(installer))
}

/// How often to ping systemd's watchdog: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// says: enabled when `WATCHDOG_USEC` is set, unless `WATCHDOG_PID` names another process.
fn watchdog_interval(usec: Option<String>, pid: Option<String>) -> Option<std::time::Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(std::time::Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::watchdog_interval;
    use std::time::Duration;

    #[test]
    fn watchdog_follows_sd_watchdog_enabled() {
        let me = std::process::id().to_string();
        assert_eq!(watchdog_interval(Some("30000000".into()), None), Some(Duration::from_secs(15)));
        assert_eq!(watchdog_interval(Some("30000000".into()), Some(me)), Some(Duration::from_secs(15)));
        assert_eq!(watchdog_interval(Some("30000000".into()), Some("1".into())), None);
        assert_eq!(watchdog_interval(None, None), None);
        assert_eq!(watchdog_interval(Some("0".into()), None), None);
    }
}
