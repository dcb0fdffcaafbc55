//! Whole-image updates of the operating system, written by RAUC into the slot that is not
//! running (docs/os-updates.md). gwe does not write images: it hands a bundle to RAUC,
//! remembers what it asked for, and after the reboot decides whether the new system is good.
//!
//! The states, kept in `STATE_DIR/os-update.json` (replaced atomically):
//! - `installing`: RAUC is writing the slot not running (`to`: that slot once known).
//! - `rebooting`: RAUC installed the bundle into slot `to` and made it the one to boot;
//!   the board is about to restart (or waits for its reboot).
//! - `trial`: the board came up in slot `to`; the health check runs. The bootloader's
//!   counter is running down: if this boot never reaches the end of the check, the board
//!   falls back by itself after its tries.
//! - `good`: the check passed and RAUC marked the slot good.
//! - `failed`: the check failed; RAUC marked the slot bad and the board restarts into `from`.
//! - `rolled-back`: the board runs `from` again, with the reason.
//!
//! Each step is recoverable after a power cut: the state is written before the act it
//! announces, and the act is repeated or judged from what the bootloader booted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsio;

/// The state file, under the agent's state directory.
pub const STATE_FILE: &str = "os-update.json";

/// What RAUC last said of the slots (`Slots`), under the agent's state directory: read by
/// every `engine_report` without running RAUC, written when it changes (at the boot check,
/// after an install, after marking a slot).
pub const SLOTS_FILE: &str = "os-slots.json";

/// Whether this boot's judgement of the last update ([`Rauc::after_boot`]) is done. At boot,
/// a command a power cut interrupted is carried out again at once; its install waits for
/// the judgement, so the two never write the record at the same time. Open unless the agent
/// closed it at its start ([`judging_boot`]).
static JUDGED: (Mutex<bool>, Condvar) = (Mutex::new(true), Condvar::new());

/// Closes the gate: installs wait until [`boot_judged`].
pub fn judging_boot() {
    *JUDGED.0.lock().unwrap_or_else(|e| e.into_inner()) = false;
}

/// Opens the gate: this boot's judgement is done.
pub fn boot_judged() {
    *JUDGED.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
    JUDGED.1.notify_all();
}

/// Waits until this boot was judged, at most `limit`; false if it never was.
pub fn wait_boot_judged(limit: Duration) -> bool {
    let guard = JUDGED.0.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = JUDGED.1.wait_timeout_while(guard, limit, |judged| !*judged).unwrap_or_else(|e| e.into_inner());
    *guard
}

/// RAUC's view of the slots, as the fleet needs it: the system's compatible string and the
/// slot not booted (what an update wrote there, and whether the bootloader would take it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    pub compatible: Option<String>,
    pub other: Option<OtherSlot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherSlot {
    /// Its bootname (`A`, `B`).
    pub slot: String,
    /// RAUC's slot state (`inactive`, `active`: the one to boot next).
    pub state: Option<String>,
    /// The bootloader's word on it: `good` or `bad`.
    pub boot_status: Option<String>,
    /// The bundle RAUC last wrote there, and when.
    pub version: Option<String>,
    pub installed: Option<String>,
}

impl Slots {
    /// From `rauc status --detailed --output-format=json`.
    pub fn from_status(s: &serde_json::Value) -> Slots {
        let text = |v: &serde_json::Value| v.as_str().filter(|t| !t.is_empty()).map(str::to_string);
        let booted = s["booted"].as_str().unwrap_or("");
        let other = s["slots"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_object())
            .flat_map(|o| o.values())
            .filter(|v| v["bootname"].as_str().is_some_and(|b| b != booted))
            .find(|v| v["parent"].is_null())
            .map(|v| OtherSlot {
                slot: v["bootname"].as_str().unwrap_or("").to_string(),
                state: text(&v["state"]),
                boot_status: text(&v["boot_status"]),
                version: text(&v["slot_status"]["bundle"]["version"]),
                installed: text(&v["slot_status"]["installed"]["timestamp"]),
            });
        Slots { compatible: text(&s["compatible"]), other }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Installing,
    Rebooting,
    Trial,
    Good,
    Failed,
    RolledBack,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Installing => "installing",
            Phase::Rebooting => "rebooting",
            Phase::Trial => "trial",
            Phase::Good => "good",
            Phase::Failed => "failed",
            Phase::RolledBack => "rolled-back",
        }
    }
}

pub use gwe_wire::os::RebootAt;

/// What gwe asked RAUC for, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// The bundle's version and compatible string (its manifest, as RAUC read it).
    pub version: String,
    pub compatible: String,
    /// The slot (bootname) that ran when the bundle was installed, and the one it went to.
    pub from: String,
    pub to: String,
    pub phase: Phase,
    /// Why it failed or rolled back.
    pub reason: Option<String>,
    /// When the board restarts into it.
    #[serde(default)]
    pub reboot: RebootAt,
    /// The kernel's boot id when it was installed: the same id after an agent restart means
    /// the board has not rebooted yet.
    #[serde(default)]
    pub boot: String,
    /// Unix seconds of the last change.
    pub since: u64,
}

/// A failure of an OS update step, naming what failed.
#[derive(Debug)]
pub enum OsError {
    /// RAUC could not be run.
    Spawn(String, std::io::Error),
    /// RAUC ran and refused or failed; its own words.
    Rauc(String),
    /// The state file could not be read or written.
    State(PathBuf, std::io::Error),
}

impl std::fmt::Display for OsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OsError::Spawn(what, e) => write!(f, "running {what}: {e}"),
            OsError::Rauc(msg) => write!(f, "{msg}"),
            OsError::State(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for OsError {}

/// What the agent does with the state it finds after a boot.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterBoot {
    /// Nothing pending.
    Idle,
    /// Installed, the board not restarted yet: reboot when the policy says.
    Waiting(Update),
    /// The new system runs: check its health, then mark it good or bad.
    Check(Update),
    /// The board is back in the old system: report it.
    RolledBack(Update),
    /// A restart (a power cut) cut RAUC's install short: the old system runs, the slot
    /// written is not the one to boot; the pending command installs it again.
    Interrupted(Update),
}

/// RAUC, as the agent drives it.
#[derive(Clone)]
pub struct Rauc {
    /// The `rauc` program.
    pub program: PathBuf,
    /// The agent's state directory (the state file lives there).
    pub state_dir: PathBuf,
    /// Where RAUC's output goes while it runs through the supervisor: the run directory
    /// (tmpfs), not flash, and never a half-written file among the state a power cut
    /// leaves.
    pub run_dir: PathBuf,
    /// In the agent, RAUC runs through the supervisor (the one process that spawns and
    /// reaps); the command line (`gwe os`) runs it itself.
    pub sup: Option<crate::supervisor::Supervisor>,
}

/// How long RAUC may take for one command (an install writes a whole slot).
const RAUC_TIMEOUT: Duration = Duration::from_secs(3600);

fn now() -> u64 {
    crate::clock::unix_secs()
}

impl Rauc {
    fn state_path(&self) -> PathBuf {
        self.state_dir.join(STATE_FILE)
    }

    /// The update gwe last asked for, if any.
    pub fn state(&self) -> Result<Option<Update>, OsError> {
        let p = self.state_path();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| OsError::State(p, std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(OsError::State(p, e)),
        }
    }

    fn save(&self, u: &Update) -> Result<(), OsError> {
        let p = self.state_path();
        let bytes = serde_json::to_vec_pretty(u).expect("an update serializes");
        fsio::write_atomic(&p, &bytes).map_err(|e| OsError::State(p, e))
    }

    /// Moves the update to `phase`, with a reason when it failed.
    pub fn set(&self, mut u: Update, phase: Phase, reason: Option<String>) -> Result<Update, OsError> {
        u.phase = phase;
        u.reason = reason;
        u.since = now();
        self.save(&u)?;
        Ok(u)
    }

    fn run(&self, args: &[&str]) -> Result<String, OsError> {
        let (ok, out, err) = self.exec(args, &mut |_| {})?;
        if ok {
            return Ok(out);
        }
        let last = |t: &'_ str| t.lines().rfind(|l| !l.trim().is_empty()).map(str::to_string);
        let why = last(&err).or_else(|| last(&out)).unwrap_or_else(|| "no output".into());
        Err(OsError::Rauc(format!("rauc {}: {}", args.first().copied().unwrap_or(""), why.trim())))
    }

    /// RAUC's JSON answer: its one line that is a JSON object (through the supervisor, its
    /// messages share the output).
    fn run_json(&self, args: &[&str]) -> Result<serde_json::Value, OsError> {
        let text = self.run(args)?;
        let what = format!("rauc {}", args.first().copied().unwrap_or(""));
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with('{'))
            .ok_or_else(|| OsError::Rauc(format!("{what}: no JSON in its answer")))?;
        serde_json::from_str(line).map_err(|e| OsError::Rauc(format!("{what}: not JSON: {e}")))
    }

    /// Runs RAUC with `args`: whether it succeeded, its stdout and its stderr; `progress`
    /// sees its output lines as they come (every 2 s through the supervisor).
    fn exec(&self, args: &[&str], progress: &mut dyn FnMut(&str)) -> Result<(bool, String, String), OsError> {
        let what = format!("rauc {}", args.first().copied().unwrap_or(""));
        let Some(sup) = &self.sup else {
            let mut child = Command::new(&self.program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| OsError::Spawn(what.clone(), e))?;
            let stderr = child.stderr.take().expect("piped");
            let err_reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
            let mut out = String::new();
            if let Some(o) = child.stdout.take() {
                use std::io::BufRead;
                for line in std::io::BufReader::new(o).lines().map_while(Result::ok) {
                    progress(&line);
                    out.push_str(&line);
                    out.push('\n');
                }
            }
            let status = child.wait().map_err(|e| OsError::Spawn(what.clone(), e))?;
            return Ok((status.success(), out, err_reader.join().unwrap_or_default()));
        };
        // Through the supervisor: stdout and stderr together in one file, read as it grows;
        // a file of its own for each run (the boot check and an install may run RAUC at once).
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let log = self.run_dir.join(format!("rauc-{}.log", RUNS.fetch_add(1, Ordering::Relaxed)));
        let job = crate::supervisor::OneOff {
            command: std::iter::once(self.program.to_string_lossy().into_owned())
                .chain(args.iter().map(|a| a.to_string()))
                .collect(),
            dir: "/".into(),
            env: Vec::new(),
            output: log.clone(),
            timeout: RAUC_TIMEOUT,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let sup = sup.clone();
        std::thread::Builder::new()
            .name("rauc".into())
            .spawn(move || {
                let _ = tx.send(sup.run_once(job));
            })
            .map_err(|e| OsError::Spawn(what.clone(), e))?;
        let mut seen = 0;
        let mut emit = |all: &str, seen: &mut usize| {
            if let Some(done) = all.get(*seen..).and_then(|new| new.rfind('\n')) {
                for line in all[*seen..*seen + done].lines() {
                    progress(line);
                }
                *seen += done + 1;
            }
        };
        let result = loop {
            match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(r) => break r,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    emit(&std::fs::read_to_string(&log).unwrap_or_default(), &mut seen);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    break crate::supervisor::OneOffResult::SpawnFailed("the supervisor stopped".into())
                }
            }
        };
        let all = std::fs::read_to_string(&log).unwrap_or_default();
        emit(&all, &mut seen);
        let _ = std::fs::remove_file(&log);
        use crate::supervisor::OneOffResult;
        match result {
            OneOffResult::Exited(c) => Ok((c == 0, all, String::new())),
            OneOffResult::TimedOut => {
                Err(OsError::Rauc(format!("{what}: ran longer than {} s", RAUC_TIMEOUT.as_secs())))
            }
            OneOffResult::SpawnFailed(e) => Err(OsError::Rauc(format!("{what}: could not run: {e}"))),
        }
    }

    /// RAUC's view of the system: the booted slot's bootname, the primary's, every slot.
    pub fn status(&self) -> Result<serde_json::Value, OsError> {
        self.run_json(&["status", "--output-format=json"])
    }

    /// Asks RAUC about the slots and keeps its answer for the reports (written only when it
    /// changed: flash wears).
    pub fn refresh_slots(&self) -> Result<Slots, OsError> {
        let slots = Slots::from_status(&self.run_json(&["status", "--detailed", "--output-format=json"])?);
        let p = self.state_dir.join(SLOTS_FILE);
        let bytes = serde_json::to_vec(&slots).expect("slots serialize");
        if std::fs::read(&p).ok().as_deref() != Some(&bytes[..]) {
            fsio::write_atomic(&p, &bytes).map_err(|e| OsError::State(p, e))?;
        }
        Ok(slots)
    }

    /// The running system's compatible string, as RAUC reports it (kept from the last
    /// `rauc status`; RAUC is asked when nothing is kept).
    pub fn system_compatible(&self) -> Option<String> {
        let kept: Option<Slots> =
            std::fs::read(self.state_dir.join(SLOTS_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        match kept.and_then(|s| s.compatible) {
            Some(c) => Some(c),
            None => self.refresh_slots().ok().and_then(|s| s.compatible),
        }
    }

    /// The bootname of the slot the system runs from.
    pub fn booted(&self) -> Result<String, OsError> {
        let s = self.status()?;
        s["booted"].as_str().map(str::to_string).ok_or_else(|| OsError::Rauc("rauc status names no booted slot".into()))
    }

    /// Installs `bundle` (a file or a URL RAUC streams from) into the other slot and makes it
    /// the one to boot. RAUC checks the signature and the compatible string first; `progress`
    /// sees RAUC's progress lines.
    pub fn install(&self, bundle: &str, reboot: RebootAt, progress: &mut dyn FnMut(&str)) -> Result<Update, OsError> {
        if let Some(u) = self.state()? {
            let busy = match u.phase {
                Phase::Trial => true,
                Phase::Installing | Phase::Rebooting => u.boot == boot_id(),
                Phase::Good | Phase::Failed | Phase::RolledBack => false,
            };
            if busy {
                return Err(OsError::Rauc(format!(
                    "an update to {} ({} in slot {}) is {} already: one at a time",
                    u.version,
                    u.compatible,
                    u.to,
                    u.phase.as_str()
                )));
            }
        }
        let info = self.run_json(&["info", "--output-format=json", bundle])?;
        let version = info["version"].as_str().unwrap_or("").to_string();
        let compatible = info["compatible"].as_str().unwrap_or("").to_string();
        // The hub names a bundle NAME.vVERSION.raucb and rolls it out by that name: the
        // version in the name must be the signed one, or a renamed file could pass for it.
        let file = Path::new(bundle).file_name().and_then(|f| f.to_str()).unwrap_or("");
        if let Some((_, named)) = gwe_wire::os::bundle_parts(file) {
            if named != version {
                return Err(OsError::Rauc(format!(
                    "its name says version {named}, its signed manifest says {version:?}: refused"
                )));
            }
        }
        let from = self.booted()?;
        // Written first: a power cut during the install is recognised at the next boot.
        let before = self.state()?;
        let mut u = Update {
            version,
            compatible,
            from,
            to: String::new(),
            phase: Phase::Installing,
            reason: None,
            reboot,
            boot: boot_id(),
            since: now(),
        };
        self.save(&u)?;
        let r = self.rauc_install(bundle, progress);
        if let Err(e) = r {
            // Refused or failed: the slots are as they were, and so is the record.
            let p = self.state_path();
            match before {
                Some(b) => self.save(&b)?,
                None => std::fs::remove_file(&p).map_err(|e| OsError::State(p, e))?,
            }
            return Err(e);
        }
        let s = self.status()?;
        let primary = s["boot_primary"].as_str().unwrap_or("");
        u.to = s["slots"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_object())
            .flat_map(|o| o.iter())
            .find(|(name, _)| name.as_str() == primary)
            .and_then(|(_, v)| v["bootname"].as_str())
            .ok_or_else(|| {
                OsError::Rauc(format!("after the install, rauc status names no primary slot ({primary:?})"))
            })?
            .to_string();
        let u = self.set(u, Phase::Rebooting, None)?;
        self.refresh_slots_or_log();
        Ok(u)
    }

    /// `rauc install`, its progress lines to `progress`; RAUC's reason when it fails.
    fn rauc_install(&self, bundle: &str, progress: &mut dyn FnMut(&str)) -> Result<(), OsError> {
        // RAUC says why an install failed on a line of its own ("LastError: ..."); its last
        // line only says that it failed.
        let mut why = None;
        let (ok, out, err) = self.exec(&["install", bundle], &mut |line| {
            let line = line.trim();
            if let Some(e) = line.strip_prefix("LastError:") {
                why = Some(e.trim().to_string());
            } else if !line.is_empty() {
                progress(line);
            }
        })?;
        if ok {
            return Ok(());
        }
        let why = why
            .or_else(|| err.lines().find_map(|l| l.trim().strip_prefix("LastError:")).map(|e| e.trim().to_string()))
            .or_else(|| err.lines().chain(out.lines()).rfind(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()))
            .unwrap_or_else(|| "rauc install failed with no output".into());
        Err(OsError::Rauc(why))
    }

    /// What the state on disk means now that the system has booted from `booted`.
    pub fn after_boot(&self, booted: &str) -> Result<AfterBoot, OsError> {
        let Some(u) = self.state()? else { return Ok(AfterBoot::Idle) };
        Ok(match u.phase {
            Phase::Rebooting if u.boot == boot_id() => AfterBoot::Waiting(u),
            // The agent restarted while RAUC installs: nothing to judge yet.
            Phase::Installing if u.boot == boot_id() => AfterBoot::Idle,
            // The install finished and the board restarted into it before the record said so.
            Phase::Installing if booted != u.from => {
                let mut u = u;
                u.to = booted.to_string();
                AfterBoot::Check(self.set(u, Phase::Trial, None)?)
            }
            Phase::Installing => {
                let why =
                    format!("the install of {} was cut short by a restart; slot {booted} runs as before", u.version);
                AfterBoot::Interrupted(self.set(u, Phase::RolledBack, Some(why))?)
            }
            Phase::Rebooting | Phase::Trial if booted == u.to => {
                let u = if u.phase == Phase::Rebooting { self.set(u, Phase::Trial, None)? } else { u };
                AfterBoot::Check(u)
            }
            Phase::Rebooting | Phase::Trial => {
                let why = format!(
                    "the new system ({} in slot {}) did not come up: the bootloader went back to slot {booted}",
                    u.version, u.to
                );
                AfterBoot::RolledBack(self.set(u, Phase::RolledBack, Some(why))?)
            }
            Phase::Failed if booted != u.to => {
                let why = u.reason.clone();
                AfterBoot::RolledBack(self.set(u, Phase::RolledBack, why)?)
            }
            // Marked bad, but still running it (the reboot did not happen): reboot again.
            Phase::Failed => AfterBoot::Check(u),
            Phase::Good | Phase::RolledBack => AfterBoot::Idle,
        })
    }

    /// The new system passed its check: RAUC marks the booted slot good.
    pub fn mark_good(&self, u: Update) -> Result<Update, OsError> {
        self.run(&["status", "mark-good", "booted"])?;
        self.set(u, Phase::Good, None)
    }

    /// `refresh_slots`, a failure only logged (the reports keep RAUC's last answer).
    pub fn refresh_slots_or_log(&self) {
        if let Err(e) = self.refresh_slots() {
            log::warn!("os update: reading the slots: {e}");
        }
    }

    /// The new system failed its check: RAUC marks it bad, so the bootloader boots the other.
    pub fn mark_bad(&self, u: Update, reason: String) -> Result<Update, OsError> {
        let u = self.set(u, Phase::Failed, Some(reason))?;
        self.run(&["status", "mark-bad", "booted"])?;
        Ok(u)
    }
}

/// This boot's id (the kernel makes a new one at each boot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Restarts the board with `command` (the first word is the program); through the
/// supervisor in the agent.
pub fn reboot(command: &[String], sup: Option<&crate::supervisor::Supervisor>) -> Result<(), OsError> {
    let (prog, args) = command.split_first().ok_or_else(|| OsError::Rauc("no reboot command configured".into()))?;
    let Some(sup) = sup else {
        let st = Command::new(prog).args(args).status().map_err(|e| OsError::Spawn(command.join(" "), e))?;
        return if st.success() { Ok(()) } else { Err(OsError::Rauc(format!("{}: {st}", command.join(" ")))) };
    };
    let job = crate::supervisor::OneOff {
        command: command.to_vec(),
        dir: "/".into(),
        env: Vec::new(),
        output: "/dev/null".into(),
        timeout: Duration::from_secs(120),
    };
    match sup.run_once(job) {
        crate::supervisor::OneOffResult::Exited(0) => Ok(()),
        other => Err(OsError::Rauc(format!("{}: {other:?}", command.join(" ")))),
    }
}

/// Waits until `at` allows it, then restarts the board. The wait is computed again at
/// least every 5 minutes (the clock may be set meanwhile); `stopped` ends it early.
pub fn wait_and_reboot(
    at: RebootAt,
    command: &[String],
    sup: Option<&crate::supervisor::Supervisor>,
    stopped: &dyn Fn(std::time::Duration) -> bool,
) {
    loop {
        let Some(wait) = at.wait_secs(now()) else { return };
        if wait == 0 {
            log::info!("os update: restarting into the new system ({at})");
            if let Err(e) = reboot(command, sup) {
                log::error!("os update: {e}");
            }
            return;
        }
        if stopped(std::time::Duration::from_secs(wait.min(300))) {
            return;
        }
    }
}

/// The image this system runs: os-release's IMAGE_ID and IMAGE_VERSION.
pub fn image(os_release: &str) -> (Option<String>, Option<String>) {
    let field =
        |k: &str| os_release.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().trim_matches('"').to_string());
    (field("IMAGE_ID="), field("IMAGE_VERSION="))
}

/// The version of the image this system runs (os-release's IMAGE_VERSION), if it says one.
pub fn running_version() -> Option<String> {
    image(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()).1
}

/// The slot the kernel was booted from, as the bootloader told it (`rauc.slot=`).
pub fn booted_slot(cmdline: &str) -> Option<String> {
    cmdline.split_whitespace().find_map(|a| a.strip_prefix("rauc.slot=")).map(str::to_string)
}

/// What `engine_report` and `device_info` carry about the operating system's slots.
pub fn report(state_dir: &Path) -> serde_json::Value {
    let rel = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let (id, version) = image(&rel);
    let booted = booted_slot(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let read = |f: &str| std::fs::read(state_dir.join(f)).ok();
    let update: Option<Update> = read(STATE_FILE).and_then(|b| serde_json::from_slice(&b).ok());
    let slots: Option<Slots> = read(SLOTS_FILE).and_then(|b| serde_json::from_slice(&b).ok());
    let (compatible, other) = slots.map(|s| (s.compatible, s.other)).unwrap_or_default();
    serde_json::json!({
        "slot": booted,
        "image": id,
        "version": version,
        "compatible": compatible,
        "other": other,
        "update": update,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in `rauc` (a shell script) whose answers the test sets.
    fn fake_rauc(dir: &Path, booted: &str, primary: &str) -> Rauc {
        let prog = dir.join("rauc");
        let status = format!(
            r#"{{"compatible":"c1","booted":"{booted}","boot_primary":"{primary}","slots":[{{"rootfs.0":{{"bootname":"A","state":"booted"}}}},{{"rootfs.1":{{"bootname":"B","state":"inactive"}}}}]}}"#
        );
        let script = format!(
            "#!/bin/sh\ncase \"$1 $2\" in\n  'status --output-format=json') echo 'rauc-Message: 10:00:00.000: a message'; echo '{status}' ;;\n  'status --detailed') echo '{detailed}' ;;\n  'info --output-format=json') echo '{{\"compatible\":\"c1\",\"version\":\"2\"}}' ;;\n  'install '*) echo ' 50% Installing'; echo '100% Installing done.' ;;\n  'status mark-good'|'status mark-bad') echo \"$@\" >> {log} ;;\n  *) echo \"unexpected: $*\" >&2; exit 1 ;;\nesac\n",
            log = dir.join("marks").display(),
            detailed = DETAILED,
        );
        write_program(&prog, &script);
        Rauc { program: prog, state_dir: dir.to_path_buf(), run_dir: dir.to_path_buf(), sup: None }
    }

    /// Writes an executable script and waits until it can be run. Another test's thread
    /// may fork while the script is open for writing; its child holds that descriptor until
    /// it execs, and until then running the script fails with "Text file busy" (ETXTBSY,
    /// seen in CI). Once one run gets past that, no later one can meet it.
    fn write_program(prog: &Path, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(prog, script).unwrap();
        std::fs::set_permissions(prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        for _ in 0..1000 {
            match std::process::Command::new(prog).arg("probe").output() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("running {}: {e}", prog.display()),
                Ok(_) => return,
            }
        }
        panic!("{} stayed busy", prog.display());
    }

    /// `rauc status --detailed --output-format=json` as RAUC 1.8 prints it (its
    /// `r_status_formatter_json`): slot B holds bundle 2, bad; the bootloader slot has none.
    const DETAILED: &str = r#"{"compatible":"c1","variant":null,"system_version":null,"booted":"A","boot_primary":"rootfs.0","slots":[{"rootfs.1":{"class":"rootfs","device":"/dev/vda5","type":"ext4","bootname":"B","state":"inactive","parent":null,"mountpoint":null,"boot_status":"bad","slot_status":{"bundle":{"compatible":"c1","version":"2"},"installed":{"timestamp":"2026-12-06T10:00:00Z","count":3},"status":"ok"}}},{"bootloader.0":{"class":"bootloader","device":"/dev/vda1","type":"raw","bootname":null,"state":"inactive","parent":null,"mountpoint":null,"boot_status":null}},{"rootfs.0":{"class":"rootfs","device":"/dev/vda4","type":"ext4","bootname":"A","state":"booted","parent":null,"mountpoint":"/","boot_status":"good","slot_status":{"bundle":{"compatible":"c1","version":"1"},"status":"ok"}}}]}"#;

    #[test]
    fn the_other_slot_is_read_from_rauc_and_kept_for_the_reports() {
        let s = Slots::from_status(&serde_json::from_str(DETAILED).unwrap());
        let other = OtherSlot {
            slot: "B".into(),
            state: Some("inactive".into()),
            boot_status: Some("bad".into()),
            version: Some("2".into()),
            installed: Some("2026-12-06T10:00:00Z".into()),
        };
        assert_eq!(s, Slots { compatible: Some("c1".into()), other: Some(other.clone()) });
        // A system RAUC knows no slots of: nothing made up.
        assert_eq!(Slots::from_status(&serde_json::json!({})), Slots { compatible: None, other: None });

        let dir = tempfile::tempdir().unwrap();
        let r = fake_rauc(dir.path(), "A", "rootfs.1");
        assert_eq!(r.refresh_slots().unwrap().other, Some(other));
        let kept = std::fs::metadata(dir.path().join(SLOTS_FILE)).unwrap().modified().unwrap();
        r.refresh_slots().unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(SLOTS_FILE)).unwrap().modified().unwrap(),
            kept,
            "the same answer is not written again"
        );
        let rep = report(dir.path());
        assert_eq!((rep["compatible"].as_str(), rep["other"]["boot_status"].as_str()), (Some("c1"), Some("bad")));
    }

    /// What a reboot changes for the state: the boot id.
    fn reboot(r: &Rauc) {
        let mut u = r.state().unwrap().unwrap();
        u.boot = "an earlier boot".into();
        r.save(&u).unwrap();
    }

    #[test]
    fn an_install_remembers_both_slots_and_the_boot_decides() {
        let dir = tempfile::tempdir().unwrap();
        let r = fake_rauc(dir.path(), "A", "rootfs.1");
        // A bundle whose name says another version than its signed manifest (2) is refused
        // before anything is written.
        let e = r.install("/d/gw-os.v3.raucb", RebootAt::Now, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("name says version 3") && e.contains("\"2\""), "{e}");
        assert!(r.state().unwrap().is_none());
        let mut lines = Vec::new();
        let u = r.install("/d/gw-os.v2.raucb", RebootAt::Now, &mut |l| lines.push(l.to_string())).unwrap();
        assert_eq!((u.from.as_str(), u.to.as_str(), u.version.as_str(), u.phase), ("A", "B", "2", Phase::Rebooting));
        assert_eq!(lines, ["50% Installing", "100% Installing done."]);
        // A second install while the first waits for its reboot is refused.
        let e = r.install("/y.raucb", RebootAt::Now, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("one at a time"), "{e}");
        // The agent restarted before the board did: still waiting for the reboot.
        assert!(matches!(r.after_boot("A").unwrap(), AfterBoot::Waiting(_)));
        // Booted into B (another boot): the check runs.
        reboot(&r);
        let AfterBoot::Check(u) = r.after_boot("B").unwrap() else { panic!("no check") };
        assert_eq!(u.phase, Phase::Trial);
        let u = r.mark_good(u).unwrap();
        assert_eq!(u.phase, Phase::Good);
        assert_eq!(std::fs::read_to_string(dir.path().join("marks")).unwrap(), "status mark-good booted\n");
        assert_eq!(r.after_boot("B").unwrap(), AfterBoot::Idle);
    }

    #[test]
    fn a_boot_back_in_the_old_slot_is_a_rollback_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let r = fake_rauc(dir.path(), "A", "rootfs.1");
        r.install("/x.raucb", RebootAt::Now, &mut |_| {}).unwrap();
        reboot(&r);
        // The new slot never came up (a kernel that panics): the bootloader fell back.
        let AfterBoot::RolledBack(u) = r.after_boot("A").unwrap() else { panic!("no rollback") };
        assert!(u.reason.as_deref().unwrap().contains("did not come up"), "{u:?}");
        assert_eq!(r.after_boot("A").unwrap(), AfterBoot::Idle);

        // The new slot came up but failed its check: marked bad; back in A, the reason stays.
        r.set(u, Phase::Good, None).unwrap();
        r.install("/x.raucb", RebootAt::Now, &mut |_| {}).unwrap();
        reboot(&r);
        let u = match r.after_boot("B").unwrap() {
            AfterBoot::Check(u) => u,
            other => panic!("{other:?}"),
        };
        r.mark_bad(u, "app meter not RUNNING after 60 s".into()).unwrap();
        let AfterBoot::RolledBack(u) = r.after_boot("A").unwrap() else { panic!("no rollback") };
        assert_eq!(u.reason.as_deref(), Some("app meter not RUNNING after 60 s"));
    }

    #[test]
    fn rauc_refusing_a_bundle_is_an_error_with_its_words() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("rauc");
        write_program(
            &prog,
            "#!/bin/sh\necho 'rauc-Message: checking'\necho 'Failed to verify bundle: signature: certificate verify failed' >&2\nexit 1\n",
        );
        let r =
            Rauc { program: prog, state_dir: dir.path().to_path_buf(), run_dir: dir.path().to_path_buf(), sup: None };
        let e = r.install("/x.raucb", RebootAt::Now, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("certificate verify failed"), "{e}");
        assert_eq!(r.state().unwrap(), None, "nothing recorded for a refused bundle");
    }

    #[test]
    fn a_failed_install_says_rauc_s_reason_and_leaves_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let r = fake_rauc(dir.path(), "A", "rootfs.1");
        let script = std::fs::read_to_string(&r.program).unwrap().replace(
            "'install '*) echo ' 50% Installing'; echo '100% Installing done.' ;;",
            "'install '*) echo ' 40% Checking bundle failed.'; echo 'LastError: Compatible mismatch: Expected c1 but bundle manifest has c2'; echo 'Installing `x` failed'; exit 1 ;;",
        );
        write_program(&r.program, &script);
        let e = r.install("/x.raucb", RebootAt::Now, &mut |_| {}).unwrap_err().to_string();
        assert_eq!(e, "Compatible mismatch: Expected c1 but bundle manifest has c2");
        assert_eq!(r.state().unwrap(), None);
    }

    #[test]
    fn image_and_slot_come_from_os_release_and_the_command_line() {
        assert_eq!(
            image("NAME=x\nIMAGE_ID=gwe-qemu\nIMAGE_VERSION=\"2.1\"\n"),
            (Some("gwe-qemu".into()), Some("2.1".into()))
        );
        assert_eq!(booted_slot("console=ttyAMA0 root=/dev/vda4 rauc.slot=B"), Some("B".into()));
        assert_eq!(booted_slot("root=/dev/vda"), None);
    }

    #[test]
    fn an_install_a_cut_interrupted_is_no_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let r = fake_rauc(dir.path(), "A", "rootfs.0");
        let u = Update {
            version: "2".into(),
            compatible: "c".into(),
            from: "A".into(),
            to: String::new(),
            phase: Phase::Installing,
            reason: None,
            reboot: RebootAt::Now,
            boot: "a boot before the cut".into(),
            since: 0,
        };
        r.save(&u).unwrap();
        let AfterBoot::Interrupted(u) = r.after_boot("A").unwrap() else { panic!("not an interruption") };
        assert!(u.reason.as_deref().unwrap().contains("cut short by a restart"), "{u:?}");
        // Said once; the pending command's install starts a record of its own.
        assert_eq!(r.after_boot("A").unwrap(), AfterBoot::Idle);
        r.install("/x.raucb", RebootAt::Now, &mut |_| {}).unwrap();
    }

    #[test]
    fn an_install_waits_for_the_judgement_of_the_boot() {
        judging_boot();
        let t = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            boot_judged();
        });
        assert!(wait_boot_judged(Duration::from_secs(30)), "the judgement never came");
        t.join().unwrap();
        assert!(wait_boot_judged(Duration::ZERO), "open again for everyone after it");
    }
}
