//! The running agent: opens what it owns, starts its threads, waits for a stop signal.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::cloud::Cloud;
use crate::config::Config;
use crate::ctl;
use crate::forwarder;
use crate::fsio;
use crate::identity::{self, Identity};
use crate::ingest::{Ingest, IngestServer};
use crate::ota::extract::Limits;
use crate::ota::fetch::Fetcher;
use crate::ota::install::{Installer, Policy, Setup};
use crate::ota::package;
use crate::ota::release::Trust;
use crate::ota::selfupdate;
use crate::ota::store::AppStore;
use crate::queue::{Queue, QueueError};
use crate::stop::Stop;
use crate::supervisor::{self, Supervisor};
use crate::telemetry::Telemetry;
use crate::usage::Usage;

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
    /// A directory of the data partition could not be made.
    Dir(PathBuf, std::io::Error),
    /// The app supervisor could not start.
    Supervisor(std::io::Error),
    /// The installed apps could not be read.
    AppStore(std::io::Error),
    /// The control socket could not be served.
    Control(std::io::Error),
    /// A thread of the agent could not be started.
    Thread(&'static str, std::io::Error),
    /// The cloud link's configuration is unusable (a bad CA bundle, ...).
    Cloud(crate::cloud::SetupError),
}

impl StartError {
    /// A fault of the configuration (fix the config file), not of the machine.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Cloud(_))
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity(e) => write!(f, "device identity: {e}"),
            Self::Queue(e) => write!(f, "{e}"),
            Self::Token(e) => write!(f, "local token: {e}"),
            Self::Ingest(e) => write!(f, "{e}"),
            Self::Signals(e) => write!(f, "installing signal handlers: {e}"),
            Self::Dir(p, e) => write!(f, "{}: {e}", p.display()),
            Self::Supervisor(e) => write!(f, "app supervisor: {e}"),
            Self::AppStore(e) => write!(f, "installed apps: {e}"),
            Self::Control(e) => write!(f, "control socket: {e}"),
            Self::Thread(name, e) => write!(f, "starting the {name} thread: {e}"),
            Self::Cloud(e) => write!(f, "cloud link: {e}"),
        }
    }
}

/// Keeps the agent's memory small on a gateway. Called first, before any thread starts.
/// One malloc arena for all threads: they allocate little and seldom, and each extra arena
/// keeps its own free pages. Big buffers (a forwarder batch's compressor, a download) are
/// always mmapped and so given back when freed: by default glibc raises that threshold after
/// the first such buffer is freed, and later ones then stay resident in the heap.
pub fn lean_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings, and no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}

/// Raises the soft limit on open files to the hard one: the local API may hold up to
/// `Limits::max_conns` (1,024) connections beside the agent's own files, and a BusyBox
/// or systemd default soft limit is often 1,024.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct; raising a soft limit up to the hard one is
        // always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            log::warn!("raising the open-file limit: {}", std::io::Error::last_os_error());
        }
    }
}

/// Why the agent stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// SIGTERM or SIGINT.
    Stopped,
    /// A new agent was installed: restart through the launcher (`ota::selfupdate`).
    Restart,
}

/// Runs until SIGTERM or SIGINT, or until a new agent is installed (SIGUSR1 to itself).
pub fn run(cfg: &Config) -> Result<Ended, StartError> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR1, SIGHUP]).map_err(StartError::Signals)?;
    let identity =
        Identity::resolve(&cfg.device, std::path::Path::new("/sys/class/net")).map_err(StartError::Identity)?;
    let edge_on = cfg.edge.enabled && !cfg.cloud.url.is_empty();
    if edge_on && !cfg!(feature = "edge") {
        log::warn!("[edge] is enabled but this agent was built without the edge feature");
    }
    #[cfg_attr(not(feature = "edge"), allow(unused_mut))]
    let mut qopts = cfg.queue.options();
    #[cfg(feature = "edge")]
    if edge_on {
        qopts.consumers.push(crate::edge::CONSUMER.into());
    }
    let queue = Queue::open(&cfg.paths.queue_dir(), qopts).map_err(StartError::Queue)?;
    let token = identity::local_token(&cfg.paths.secrets_dir()).map_err(StartError::Token)?;
    let usage = Arc::new(Usage::open(&cfg.paths.secrets_dir().join("usage.json")));
    let catalog = Arc::new(crate::catalog::Catalog::default());
    let ingest = Arc::new(Ingest {
        queue: queue.clone(),
        identity: identity.clone(),
        token,
        max_body: cfg.ingest.max_body,
        usage: Some(usage.clone()),
        reread: std::sync::OnceLock::new(),
        catalog: Some(catalog.clone()),
    });
    let server =
        IngestServer::start(cfg.ingest.listen, cfg.ingest.threads, ingest.clone()).map_err(StartError::Ingest)?;
    let apps = start_apps(cfg)?;
    {
        let apps = apps.clone();
        let _ = ingest.reread.set(Box::new(move || apps.apply()));
    }
    let socket = ctl::serve(&cfg.paths.run_dir, apps.clone()).map_err(StartError::Control)?;
    let stop = Arc::new(Stop::default());
    let mut threads = Vec::new();
    let cloud = if cfg.cloud.url.is_empty() {
        log::info!("no cloud.url configured: data stays queued, no cloud link");
        None
    } else {
        let cloud = Cloud::new(&cfg.cloud, identity.clone(), &cfg.paths.secrets_dir(), usage.clone())
            .map_err(StartError::Cloud)?;
        Some(Arc::new(cloud))
    };
    if let Some(cloud) = &cloud {
        let opts = forwarder::Options {
            batch_records: cfg.cloud.batch_records,
            linger: Duration::from_millis(cfg.cloud.linger_ms),
            retry_max: Duration::from_secs(cfg.cloud.retry_max_secs.max(1)),
        };
        threads.push(forwarder::start(&queue, cloud.clone(), opts, stop.clone()).map_err(StartError::Queue)?);
        let fetcher = Fetcher {
            cloud: cloud.clone(),
            apps: apps.clone(),
            queue: queue.clone(),
            state_dir: cfg.paths.secrets_dir(),
            poll: Duration::from_millis(cfg.cloud.poll_ms.max(1000)),
            retry_max: Duration::from_secs(cfg.cloud.retry_max_secs.max(1)),
            max_package: cfg.ota.max_unpacked_bytes,
            os: cfg.ota.os_updates.then(|| crate::ota::fetch::OsUpdates {
                rauc: crate::ota::os::Rauc {
                    program: cfg.ota.rauc.clone(),
                    state_dir: cfg.paths.secrets_dir(),
                    run_dir: cfg.paths.run_dir.clone(),
                    sup: Some(apps.supervisor().clone()),
                },
                reboot_command: cfg.ota.reboot_command.clone(),
                max_bundle: cfg.ota.max_os_bundle_bytes,
            }),
        };
        if cfg.ota.os_updates {
            // A pending OS install waits for the os-check thread's judgement of this boot.
            crate::ota::os::judging_boot();
        }
        // Not joined at shutdown: it may sit in a long-poll of minutes, and what it must keep
        // (the pending command) is already on disk, replaced atomically.
        fetcher.start(stop.clone()).map_err(|e| StartError::Thread("ota fetch", e))?;
    }
    #[cfg(feature = "edge")]
    let edge = match &cloud {
        // The edge paths are an extra: when their state cannot be read (a failing data
        // partition), the agent runs without them rather than not at all.
        Some(cloud) if edge_on => {
            match crate::edge::Edge::start(
                cfg,
                &queue,
                cloud.clone(),
                apps.supervisor().clone(),
                &identity.serial,
                catalog.clone(),
                stop.clone(),
            ) {
                Ok(e) => Some(e),
                Err(e) => {
                    log::error!("edge paths not started: {e}");
                    crate::health::failed("edge store", &e);
                    None
                }
            }
        }
        _ => None,
    };
    let telemetry = Telemetry {
        queue: queue.clone(),
        usage: usage.clone(),
        apps: apps.clone(),
        cloud: cloud.clone(),
        state_dir: cfg.paths.secrets_dir(),
        default_interval: Duration::from_secs(cfg.cloud.report_interval_secs),
    };
    threads.push(telemetry.start(stop.clone()).map_err(|e| StartError::Thread("telemetry", e))?);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let s = queue.stats();
    log::info!(
        "gwe {} up as {}/{}/{}; queue: {} records not yet acknowledged, next seq {}, {} bytes",
        selfupdate::version(),
        identity.vendor,
        identity.model,
        identity.serial,
        s.backlog(),
        s.next_seq,
        s.disk_bytes
    );
    if std::env::var_os(selfupdate::ENV_TRIAL).is_some() {
        let deadline = Duration::from_secs(cfg.ota.self_update_deadline_secs);
        let check = TrialCheck { apps: apps.clone(), cloud: cloud.clone(), deadline };
        threads.push(check.start(stop.clone()).map_err(|e| StartError::Thread("self-update check", e))?);
    }
    if cfg.ota.os_updates {
        let check = OsCheck {
            rauc: crate::ota::os::Rauc {
                program: cfg.ota.rauc.clone(),
                state_dir: cfg.paths.secrets_dir(),
                run_dir: cfg.paths.run_dir.clone(),
                sup: Some(apps.supervisor().clone()),
            },
            apps: apps.clone(),
            queue: queue.clone(),
            cloud: cloud.clone(),
            deadline: Duration::from_secs(cfg.ota.os_check_secs),
            reboot: cfg.ota.reboot_command.clone(),
        };
        threads.push(check.start(stop.clone()).map_err(|e| StartError::Thread("os-update check", e))?);
    }
    let mut ended = Ended::Stopped;
    for sig in signals.forever() {
        match sig {
            // As supervisord's: read the program files again and apply the changes.
            SIGHUP => {
                let started = apps.apply();
                log::info!("SIGHUP: program files read again; {} programs start by themselves", started.len());
            }
            SIGUSR1 => {
                ended = Ended::Restart;
                log::info!("a new agent was installed: stopping to restart into it");
                break;
            }
            _ => {
                log::info!("signal {sig}: stopping");
                break;
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    stop.stop();
    #[cfg(feature = "edge")]
    if let Some(e) = edge {
        e.shutdown();
    }
    for t in threads {
        let _ = t.join();
    }
    usage.save();
    apps.supervisor().shutdown();
    server.shutdown();
    let _ = std::fs::remove_file(socket);
    Ok(ended)
}

/// A new agent on trial confirms itself once its supervisor answers and, with a cloud link,
/// the hub has answered. The launcher enforces the deadline; this only confirms.
struct TrialCheck {
    apps: Arc<Installer>,
    cloud: Option<Arc<Cloud>>,
    deadline: Duration,
}

impl TrialCheck {
    fn start(self, stop: Arc<Stop>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("trial-check".into()).spawn(move || self.run(&stop))
    }

    fn run(self, stop: &Stop) {
        let version = selfupdate::version();
        let until = std::time::Instant::now() + self.deadline;
        while std::time::Instant::now() < until {
            let supervising = !self.apps.supervisor().status().is_empty() || self.apps.programs().programs.is_empty();
            let linked = self.cloud.as_ref().is_none_or(|c| c.reached());
            if supervising && linked {
                match selfupdate::confirm(self.apps.app_store()) {
                    Ok(()) => {
                        log::info!("agent {version} is healthy: confirmed");
                        if let Some(c) = &self.cloud {
                            let msg = format!("agent {version} running and confirmed healthy");
                            if let Err(e) = c.write(&[(crate::ota::fetch::STATUS, &msg)]) {
                                log::warn!("writing fetch_status: {e}");
                            }
                        }
                    }
                    Err(e) => log::error!("confirming agent {version}: {e}"),
                }
                return;
            }
            // Once a second, only while on trial.
            if stop.sleep(Duration::from_secs(1)) {
                return;
            }
        }
        log::error!("agent {version} could not confirm itself healthy; the launcher will roll it back");
    }
}

/// After a boot into a new operating system (docs/os-updates.md): the system is good once
/// the agent is up, every app is RUNNING (or stopped on purpose) and, with a cloud link, the
/// hub has answered, within the deadline. Then RAUC marks the slot good; otherwise it marks
/// it bad and the board restarts into the old system. A boot back in the old system after
/// an update is reported as a rollback, with its reason.
struct OsCheck {
    rauc: crate::ota::os::Rauc,
    apps: Arc<Installer>,
    queue: Queue,
    cloud: Option<Arc<Cloud>>,
    deadline: Duration,
    reboot: Vec<String>,
}

impl OsCheck {
    fn start(self, stop: Arc<Stop>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("os-check".into()).spawn(move || self.run(&stop))
    }

    /// An outcome, in `fetch_status` at once and in an `engine_report` queued now (not at
    /// the next report interval), so the fleet shows the slot's new state with it.
    fn say(&self, msg: &str) {
        if let Some(c) = &self.cloud {
            if let Err(e) = c.write(&[(crate::ota::fetch::STATUS, msg)]) {
                log::warn!("writing fetch_status: {e}");
            }
        }
        let report = crate::telemetry::engine_report(&self.apps, &self.queue, &self.rauc.state_dir).to_string();
        if let Err(e) = crate::telemetry::enqueue(&self.queue, "engine_report", &report) {
            log::warn!("queueing engine_report: {e}");
        }
    }

    /// Why the system is not (yet) good, or None when it is.
    fn unhealthy(&self) -> Option<String> {
        use crate::supervisor::State;
        let bad: Vec<String> = self
            .apps
            .supervisor()
            .status()
            .into_iter()
            .filter(|a| !matches!(a.state, State::Running | State::Stopped))
            .map(|a| format!("{} {}", a.name, a.state.as_str()))
            .collect();
        if !bad.is_empty() {
            return Some(format!("apps not RUNNING: {}", bad.join(", ")));
        }
        if self.cloud.as_ref().is_some_and(|c| !c.reached()) {
            return Some("the hub has not answered".into());
        }
        None
    }

    fn run(self, stop: &Stop) {
        use crate::ota::os::{booted_slot, AfterBoot, Phase};
        let booted = match booted_slot(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default()) {
            Some(b) => Ok(b),
            None => self.rauc.booted(),
        };
        let booted = match booted {
            Ok(b) => b,
            Err(e) => {
                log::error!("os update: which slot booted: {e}");
                crate::ota::os::boot_judged();
                return;
            }
        };
        // Once a boot: what RAUC says of the other slot, for the reports.
        self.rauc.refresh_slots_or_log();
        let judged = self.rauc.after_boot(&booted);
        crate::ota::os::boot_judged();
        let u = match judged {
            Ok(AfterBoot::Idle) => return,
            Ok(AfterBoot::Waiting(u)) => {
                log::info!("os update: {} waits in slot {} for its reboot ({})", u.version, u.to, u.reboot);
                crate::ota::os::wait_and_reboot(u.reboot, &self.reboot, self.rauc.sup.as_ref(), &|d| stop.sleep(d));
                return;
            }
            Ok(AfterBoot::RolledBack(u)) => {
                let msg = gwe_wire::os::rolled_back_line(
                    &u.version,
                    u.reason.as_deref().unwrap_or("no reason known"),
                    &booted,
                );
                log::error!("{msg}");
                self.say(&msg);
                return;
            }
            Ok(AfterBoot::Interrupted(u)) => {
                let msg = gwe_wire::os::interrupted_line(&u.version, &booted);
                log::warn!("{msg}");
                self.say(&msg);
                return;
            }
            Ok(AfterBoot::Check(u)) => u,
            Err(e) => {
                log::error!("os update: {e}");
                return;
            }
        };
        if u.phase == Phase::Failed {
            log::error!("os update to {} was marked bad but still runs: rebooting again", u.version);
            if let Err(e) = crate::ota::os::reboot(&self.reboot, self.rauc.sup.as_ref()) {
                log::error!("os update: {e}");
            }
            return;
        }
        log::info!("os update: {} runs in slot {booted}; checking it (at most {:?})", u.version, self.deadline);
        let until = std::time::Instant::now() + self.deadline;
        let mut why = self.unhealthy();
        while why.is_some() && std::time::Instant::now() < until {
            // Once a second, only while a new system is on trial.
            if stop.sleep(Duration::from_secs(1)) {
                return;
            }
            why = self.unhealthy();
        }
        match why {
            None => match self.rauc.mark_good(u) {
                Ok(u) => {
                    self.rauc.refresh_slots_or_log();
                    let msg = gwe_wire::os::marked_good_line(&u.compatible, &u.version, &u.to);
                    log::info!("{msg}");
                    self.say(&msg);
                }
                Err(e) => log::error!("os update: marking the slot good: {e}"),
            },
            Some(why) => {
                let why = format!("{why} {} s after the boot", self.deadline.as_secs());
                let msg = gwe_wire::os::failed_check_line(&u.version, &why, &u.from);
                log::error!("{msg}");
                self.say(&msg);
                match self.rauc.mark_bad(u, why) {
                    Ok(_) => {
                        if let Err(e) = crate::ota::os::reboot(&self.reboot, self.rauc.sup.as_ref()) {
                            log::error!("os update: {e}");
                        }
                    }
                    Err(e) => log::error!("os update: marking the slot bad: {e}"),
                }
            }
        }
    }
}

/// How packages are checked: release metadata under the root keys, or the old way.
pub fn ota_policy(cfg: &Config) -> Policy {
    let keys = |list: &[String]| list.iter().filter_map(|k| package::parse_public_key(k)).collect::<Vec<_>>();
    let legacy = keys(&cfg.ota.trusted_keys);
    if cfg.ota.root_keys.is_empty() {
        if !legacy.is_empty() {
            log::warn!(
                "ota: no [ota] root_keys: packages are checked by their .sig only, which binds no name, version or target (docs/ota-format.md)"
            );
        }
        return Policy::legacy(legacy, cfg.ota.allow_unsigned);
    }
    let trust = Trust {
        roots: keys(&cfg.ota.root_keys),
        builtin_keys: cfg.ota.keys_file.clone(),
        state: cfg.paths.state_dir.join("ota"),
        vendor: cfg.device.vendor.clone(),
        model: cfg.device.model.clone(),
        compatible: cfg.ota.compatible.clone(),
        clock: cfg.ota.clock,
    };
    Policy {
        release: Some(trust),
        legacy,
        allow_legacy: cfg.ota.allow_legacy_signatures,
        allow_unsigned: cfg.ota.allow_unsigned,
    }
}

/// Starts the supervisor with every program (the image's and the installed apps'), settles
/// installs a power cut interrupted, and installs the image's preinstalled packages.
fn start_apps(cfg: &Config) -> Result<Arc<Installer>, StartError> {
    let state = cfg.paths.secrets_dir();
    fsio::create_dir_all_durable(&state).map_err(|e| StartError::Dir(state.clone(), e))?;
    let watchdog = watchdog_interval(std::env::var("WATCHDOG_USEC").ok(), std::env::var("WATCHDOG_PID").ok());
    let opts = supervisor::Options { state_file: cfg.paths.app_pids(), watchdog };
    let (sup, _thread) = Supervisor::start(Vec::new(), opts).map_err(StartError::Supervisor)?;
    let store = AppStore::open(&cfg.paths.apps_dir()).map_err(StartError::AppStore)?;
    let installer = Installer::new(Setup {
        store,
        sup,
        programs_dir: cfg.supervisor.programs_dir.clone(),
        log_dir: cfg.paths.log_dir.clone(),
        policy: ota_policy(cfg),
        limits: Limits { max_bytes: cfg.ota.max_unpacked_bytes, max_entries: cfg.ota.max_entries },
        install_timeout: std::time::Duration::from_secs(cfg.ota.install_timeout_secs),
    });
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
