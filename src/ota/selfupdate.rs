//! Updating the agent itself (`docs/ota-format.md`, "The agent itself").
//!
//! A package named `gwe` (`gwe.vVERSION.tar.gz`, holding the new `gwe` binary) is verified,
//! unpacked and switched in the app store like any app, but put on trial and not started
//! as an app: the agent restarts into it. The binary the init system starts (the factory
//! one, on the read-only root) is the launcher: at `gwe run` it looks at `apps/gwe/`:
//! - nothing installed: it runs itself;
//! - a confirmed version: it `exec`s that binary (same pid, no extra process);
//! - a version on trial: it counts the start in `apps/gwe/boots` (replaced atomically)
//!   and runs the new binary as its child. The child confirms itself once its supervisor
//!   answers and, with a cloud configured, the hub has answered. If it has not within
//!   `[ota] self_update_deadline_secs`, or it fails [`MAX_TRIAL_BOOTS`] starts (crashes, or
//!   power cuts before it confirmed), the launcher switches back to the previous version
//!   (or itself), writes why to `apps/gwe/rolled_back`, and runs that. The restored agent
//!   reports it in `fetch_status`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::AppStore;
use crate::fsio;

/// The package name that means "the agent".
pub const AGENT: &str = "gwe";
/// Starts of a version on trial before it is given up.
pub const MAX_TRIAL_BOOTS: u32 = 3;
/// Exit status of an agent that asks the launcher to decide again (after an update).
pub const EXIT_RESTART: u8 = 75;
/// Set for the binary the launcher chose: it runs the agent and launches nothing.
const ENV_CHOSEN: &str = "GWE_AGENT_CHOSEN";
/// Set for a version on trial, run as the launcher's child.
pub const ENV_TRIAL: &str = "GWE_AGENT_TRIAL";
/// The launcher's own path, for an agent that must restart through it.
const ENV_LAUNCHER: &str = "GWE_LAUNCHER";
/// The version the launcher chose (for engine_report).
pub const ENV_VERSION: &str = "GWE_AGENT_VERSION";

/// The agent's version: the installed package's when launched from the store.
pub fn version() -> String {
    std::env::var(ENV_VERSION).unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string())
}

fn boots_file(store: &AppStore) -> PathBuf {
    store.app_dir(AGENT).join("boots")
}

pub fn rolled_back_file(store: &AppStore) -> PathBuf {
    store.app_dir(AGENT).join("rolled_back")
}

/// The binary of `version` in the store.
pub fn binary(store: &AppStore, version: &str) -> PathBuf {
    store.app_dir(AGENT).join(version).join(AGENT)
}

/// Called by the installer when the agent package was switched in: starts the count.
pub fn begin_trial(store: &AppStore) -> std::io::Result<()> {
    fsio::write_atomic(&boots_file(store), b"0")
}

/// Called by the agent on trial once it is healthy.
pub fn confirm(store: &AppStore) -> std::io::Result<()> {
    store.confirm(AGENT)?;
    match std::fs::remove_file(boots_file(store)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => fsio::sync_dir(&store.app_dir(AGENT)),
    }
}

fn give_up(store: &AppStore, version: &str, why: &str) {
    log::error!("agent {version}: {why}; going back to the previous agent");
    let now = store.roll_back(AGENT, true).ok().flatten();
    let text = format!(
        "agent {version} {why}; rolled back to {}",
        now.unwrap_or_else(|| format!("the built-in agent {}", env!("CARGO_PKG_VERSION")))
    );
    if let Err(e) = fsio::write_atomic(&rolled_back_file(store), text.as_bytes()) {
        log::error!("recording the rollback: {e}");
    }
    let _ = std::fs::remove_file(boots_file(store));
}

/// The command line of the chosen binary: ours, with the chosen markers.
fn command(bin: &Path, version: &str, launcher: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args(std::env::args_os().skip(1)).env(ENV_CHOSEN, "1").env(ENV_LAUNCHER, launcher).env(ENV_VERSION, version);
    c
}

static CHILD: AtomicI32 = AtomicI32::new(0);

/// Runs before the agent at `gwe run`: returns None to run the agent in this process, or
/// the exit status to end with (the chosen agent ran as a child and ended).
pub fn launch(apps_dir: &Path, deadline: Duration) -> Option<ExitCode> {
    // Chosen already, or no agent ever installed (most starts): nothing to open or clean.
    if std::env::var_os(ENV_CHOSEN).is_some()
        || std::fs::symlink_metadata(apps_dir.join(AGENT).join("current")).is_err()
    {
        return None;
    }
    let store = match AppStore::open(apps_dir) {
        Ok(s) => s,
        Err(e) => {
            log::error!("self-update: opening {}: {e}; running the built-in agent", apps_dir.display());
            return None;
        }
    };
    let launcher = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/gwe"));
    loop {
        let inst = store.get(AGENT);
        let version = inst.current?; // nothing installed: the built-in agent runs
        let bin = binary(&store, &version);
        if inst.trial.is_none() {
            let e = command(&bin, &version, &launcher).exec();
            log::error!("self-update: running {}: {e}; running the built-in agent", bin.display());
            return None;
        }
        let boots: u32 =
            std::fs::read_to_string(boots_file(&store)).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0) + 1;
        if boots > MAX_TRIAL_BOOTS {
            give_up(&store, &version, &format!("did not confirm itself in {MAX_TRIAL_BOOTS} starts"));
            continue;
        }
        if let Err(e) = fsio::write_atomic(&boots_file(&store), boots.to_string().as_bytes()) {
            log::error!("self-update: counting the start: {e}");
        }
        log::info!("agent {version} on trial: start {boots} of {MAX_TRIAL_BOOTS}");
        match run_trial(&store, &version, &bin, &launcher, deadline) {
            Trial::Again => continue,
            Trial::Exit(code) => return Some(ExitCode::from(code)),
        }
    }
}

enum Trial {
    /// Decide again (restart asked, crashed before confirming, or rolled back).
    Again,
    Exit(u8),
}

fn run_trial(store: &AppStore, version: &str, bin: &Path, launcher: &Path, deadline: Duration) -> Trial {
    let mut cmd = command(bin, version, launcher);
    // WATCHDOG_PID names this launcher; without it the child pings systemd's watchdog itself
    // (sd_watchdog_enabled(3)), which the unit's NotifyAccess=all accepts.
    cmd.env(ENV_TRIAL, "1").env_remove("WATCHDOG_PID");
    // SAFETY: prctl is async-signal-safe; it only asks for SIGTERM when this launcher dies,
    // so a killed launcher never leaves its agent behind.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            give_up(store, version, &format!("could not be started: {e}"));
            return Trial::Again;
        }
    };
    CHILD.store(crate::supervisor::raw_pid(child.id()), Ordering::SeqCst);
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    forward_signals(stopping.clone());
    let until = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => {
                log::error!("self-update: waiting for the agent: {e}");
                break std::process::ExitStatus::default();
            }
        }
        if store.get(AGENT).trial.is_none() {
            log::info!("agent {version} confirmed itself healthy");
            // From here on simply wait for it.
            match child.wait() {
                Ok(st) => break st,
                Err(_) => break std::process::ExitStatus::default(),
            }
        }
        if Instant::now() >= until && !stopping.load(Ordering::SeqCst) {
            log::error!("agent {version} did not confirm itself within {} s; stopping it", deadline.as_secs());
            stop_child(&mut child);
            give_up(store, version, &format!("did not confirm itself healthy within {} s", deadline.as_secs()));
            return Trial::Again;
        }
        // Once a second, and only while a new agent is on trial.
        std::thread::sleep(Duration::from_secs(1));
    };
    CHILD.store(0, Ordering::SeqCst);
    let code = status.code().unwrap_or(1);
    if stopping.load(Ordering::SeqCst) {
        return Trial::Exit(u8::try_from(code.clamp(0, 255)).unwrap_or(u8::MAX));
        // stopped by init: not a failed trial
    }
    if code == i32::from(EXIT_RESTART) {
        return Trial::Again;
    }
    if store.get(AGENT).trial.is_some() {
        log::warn!("agent {version} on trial ended ({status}) before confirming itself");
        return Trial::Again;
    }
    Trial::Exit(u8::try_from(code.clamp(0, 255)).unwrap_or(u8::MAX))
}

fn stop_child(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(crate::supervisor::raw_pid(child.id()));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, SIGINT and SIGHUP to the launcher go to the agent it runs. SIGHUP only asks
/// the agent to read its program files again: the launcher is not stopping then.
fn forward_signals(stopping: Arc<std::sync::atomic::AtomicBool>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(move || {
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) else { return };
        let _ = std::thread::Builder::new().name("launcher-signals".into()).spawn(move || {
            for sig in signals.forever() {
                if sig != SIGHUP {
                    stopping.store(true, Ordering::SeqCst);
                }
                let pid = CHILD.load(Ordering::SeqCst);
                if pid > 0 {
                    if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), s);
                    }
                }
            }
        });
    });
}

/// Asks the running agent (its signal loop) to stop and restart through the launcher.
pub fn request_restart() {
    log::info!("restarting into the new agent");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGUSR1);
}

/// How an agent that installed a new agent restarts: through the launcher that chose it
/// (exit [`EXIT_RESTART`] to a launcher waiting on a trial, or exec the launcher).
pub fn restart() -> ExitCode {
    if std::env::var_os(ENV_TRIAL).is_some() {
        return ExitCode::from(EXIT_RESTART);
    }
    let launcher: OsString = std::env::var_os(ENV_LAUNCHER)
        .or_else(|| std::env::current_exe().ok().map(PathBuf::into_os_string))
        .unwrap_or_else(|| "/usr/bin/gwe".into());
    let e = Command::new(&launcher)
        .args(std::env::args_os().skip(1))
        .env_remove(ENV_CHOSEN)
        .env_remove(ENV_VERSION)
        .env_remove(ENV_LAUNCHER)
        .exec();
    log::error!("restarting through {}: {e}", Path::new(&launcher).display());
    ExitCode::from(EXIT_RESTART)
}
