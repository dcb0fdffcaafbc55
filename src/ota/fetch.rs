//! OTA commands from the cloud (`docs/ota-format.md`, "From the hub"). The `engine_fetch`
//! dataport is long-polled; a command is saved power-safely in `state/engine_fetch`, then
//! cleared in the cloud (picked up), then carried out: each package is downloaded from the
//! hub's content area (free space checked first, resumed with Range after a cut, a bounded
//! number of tries, never a retry of what the hub refused), its signature beside it, and
//! installed by the [`Installer`]. Progress and results go to `fetch_status`; a fresh
//! `engine_report` follows. A command interrupted by a power cut is finished at the next
//! start (installs are idempotent: an installed version is "already installed").
//!
//! ```json
//! {"install": [{"name": "sensor.v1.4.2.tar.gz"}, {"name": "modbus", "version": "2.0"}],
//!  "remove": [{"name": "old-app"}]}
//! ```
//!
//! An operating-system bundle (docs/os-updates.md) comes the same way, downloaded like a
//! package and handed to RAUC; `reboot` is `now` (the default), `manual`, or a window
//! `HH:MM-HH:MM` (UTC):
//!
//! ```json
//! {"os": {"name": "gateway-os.v2.raucb", "reboot": "02:00-04:00"}}
//! ```
//!
//! With `"stream": true` the bundle is not downloaded: RAUC streams it from the hub through
//! [`super::stream::Relay`], fetching (for an adaptive bundle) only the blocks neither slot has.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::install::{InstallError, Installer};
use super::os::{Rauc, RebootAt};
use super::package::PackageName;
use crate::cloud::{Cloud, CloudError};
use crate::fsio;
use crate::queue::Queue;
use crate::stop::{jitter, Stop};

pub const ALIAS: &str = "engine_fetch";
pub const STATUS: &str = "fetch_status";
/// How OTA shows in the faults of the data partition (`gwe ctl status`, `engine_report`).
const HEALTH_PART: &str = "ota downloads";
/// Tries of one download while the hub is unreachable or the link drops.
const DOWNLOAD_TRIES: u32 = 6;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    name: String,
    /// A version pin: `name` is then the app name and the package `NAME.vVERSION.tar.gz`.
    #[serde(default)]
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OsItem {
    name: String,
    #[serde(default)]
    reboot: Option<String>,
    #[serde(default)]
    stream: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchCommand {
    #[serde(default)]
    install: Vec<Item>,
    #[serde(default)]
    remove: Vec<Item>,
    #[serde(default)]
    os: Option<OsItem>,
}

/// Why a download did not leave a whole file in `downloads/`; each message is written here
/// once, as `fetch_status` says it after the file's name.
#[derive(Debug)]
pub enum DownloadError {
    /// The data partition cannot hold it (a standing fault until a download fits).
    NoSpace { need: u64, free: u64 },
    /// A local file or directory could not be written (`ENOSPC` among them).
    Io(PathBuf, std::io::Error),
    /// The hub refused, or was not reached in the tries given; `what` is the file asked for
    /// when it is not the one being downloaded.
    Hub { what: Option<String>, error: CloudError },
    /// The file's name or its signed release metadata refuse it before a byte is fetched.
    Refused(String),
    /// Larger than this gateway takes.
    TooBig { what: &'static str, size: u64, max: u64 },
    /// The hub's size is not the one the release metadata signed.
    NotSigned { offered: u64, signed: u64 },
    /// The hub said one size and sent another.
    Short { got: u64, size: u64 },
}

impl DownloadError {
    /// The data partition is full: the OTA part of the gateway's health fails.
    pub fn is_no_space(&self) -> bool {
        match self {
            DownloadError::NoSpace { .. } => true,
            DownloadError::Io(_, e) => e.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

impl std::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadError::NoSpace { need, free } => {
                write!(f, "not enough free space to download: {need} bytes needed, {free} free")
            }
            DownloadError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            DownloadError::Hub { what: Some(w), error } => write!(f, "{w}: {error}"),
            DownloadError::Hub { what: None, error } => write!(f, "{error}"),
            DownloadError::Refused(why) => f.write_str(why),
            DownloadError::TooBig { what, size, max } => {
                write!(f, "the {what} is {size} bytes, over the limit of {max}")
            }
            DownloadError::NotSigned { offered, signed } => {
                write!(f, "the hub offers {offered} bytes; the release metadata signed {signed}")
            }
            DownloadError::Short { got, size } => write!(f, "downloaded {got} bytes, the hub said {size}"),
        }
    }
}

impl std::error::Error for DownloadError {}

/// What a command asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Package file names to install.
    pub install: Vec<String>,
    /// App names to remove.
    pub remove: Vec<String>,
    /// An operating-system bundle.
    pub os: Option<OsOrder>,
}

/// An operating-system bundle to install.
#[derive(Debug, PartialEq, Eq)]
pub struct OsOrder {
    /// A file name of the hub's content.
    pub name: String,
    /// When to reboot into it.
    pub reboot: RebootAt,
    /// Streamed by RAUC from the hub rather than downloaded first.
    pub stream: bool,
}

/// Why an `engine_fetch` command is refused (nothing of it is carried out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Not the command's JSON (serde's words).
    NotACommand(String),
    /// A package name or version that is not one (the name rules' words).
    Package(String),
    /// A removal that names a version or not an app.
    Remove(String),
    /// An OS bundle name that is not `NAME.raucb` of the hub's content.
    OsBundle(String),
    /// A reboot time that is not `now`, `manual` or `HH:MM-HH:MM`.
    Reboot(String),
    Empty,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotACommand(e) => write!(f, "engine_fetch is not a command: {e}"),
            Self::Package(e) | Self::Reboot(e) => write!(f, "engine_fetch: {e}"),
            Self::Remove(name) => write!(f, "engine_fetch: remove {name:?}: name an installed app, without a version"),
            Self::OsBundle(name) => {
                write!(f, "engine_fetch: os {name:?}: name a RAUC bundle (NAME.raucb) of the hub's content")
            }
            Self::Empty => f.write_str("engine_fetch names nothing to install or remove"),
        }
    }
}

impl std::error::Error for CommandError {}

/// What the command asks for, or why it is not one.
pub fn parse(text: &str) -> Result<Plan, CommandError> {
    let c: FetchCommand = serde_json::from_str(text).map_err(|e| CommandError::NotACommand(e.to_string()))?;
    let mut install = Vec::new();
    for i in c.install {
        let file = match i.version {
            Some(v) => format!("{}.v{v}.tar.gz", i.name),
            None => i.name,
        };
        PackageName::parse(&file).map_err(|e| CommandError::Package(e.to_string()))?;
        install.push(file);
    }
    let mut remove = Vec::new();
    for r in c.remove {
        if r.name.is_empty() || r.name.contains('/') || r.version.is_some() {
            return Err(CommandError::Remove(r.name));
        }
        remove.push(r.name);
    }
    let os = match c.os {
        None => None,
        Some(o) => {
            let ok = o.name.ends_with(".raucb")
                && !o.name.starts_with('.')
                && o.name.len() <= 255
                && o.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b));
            if !ok {
                return Err(CommandError::OsBundle(o.name));
            }
            let at = RebootAt::parse(o.reboot.as_deref().unwrap_or("now")).map_err(CommandError::Reboot)?;
            Some(OsOrder { name: o.name, reboot: at, stream: o.stream })
        }
    };
    if install.is_empty() && remove.is_empty() && os.is_none() {
        return Err(CommandError::Empty);
    }
    Ok(Plan { install, remove, os })
}

pub struct Fetcher {
    pub cloud: Arc<Cloud>,
    pub apps: Arc<Installer>,
    pub queue: Queue,
    /// `state/`: the pending command and `downloads/`.
    pub state_dir: PathBuf,
    pub poll: Duration,
    pub retry_max: Duration,
    /// Largest package accepted.
    pub max_package: u64,
    /// Operating-system bundles, when this gateway takes them ([ota] os_updates).
    pub os: Option<OsUpdates>,
}

/// How the fetcher hands OS bundles to RAUC.
pub struct OsUpdates {
    pub rauc: Rauc,
    pub reboot_command: Vec<String>,
    /// Largest bundle accepted.
    pub max_bundle: u64,
}

impl Fetcher {
    pub fn start(self, stop: Arc<Stop>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("ota-fetch".into()).spawn(move || self.run(&stop))
    }

    fn pending(&self) -> PathBuf {
        self.state_dir.join("engine_fetch")
    }

    fn downloads(&self) -> PathBuf {
        self.state_dir.join("downloads")
    }

    fn status(&self, text: &str) -> bool {
        log::info!("fetch_status: {}", text.lines().next().unwrap_or(""));
        match self.cloud.write(&[(STATUS, text)]) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("writing fetch_status: {e}");
                false
            }
        }
    }

    fn run(self, stop: &Stop) {
        // A new agent that failed its trial: the launcher left word of it.
        let note = super::selfupdate::rolled_back_file(self.apps.app_store());
        if let Ok(text) = std::fs::read_to_string(&note) {
            if self.status(text.trim()) {
                let _ = std::fs::remove_file(&note);
            }
        }
        if let Ok(text) = std::fs::read_to_string(self.pending()) {
            log::info!("finishing the engine_fetch command a restart interrupted");
            self.carry_out(&text, stop);
        }
        // "0": a command set while the agent was away is seen at once.
        let mut since = Some("0".to_string());
        let mut backoff = Duration::from_secs(1);
        while !stop.stopped() {
            match self.cloud.long_poll(ALIAS, since.as_deref(), self.poll) {
                Ok(Some(p)) => {
                    backoff = Duration::from_secs(1);
                    since = p.modified.or(since);
                    if !p.value.trim().is_empty() {
                        self.pick_up(&p.value, stop);
                    }
                }
                Ok(None) => backoff = Duration::from_secs(1),
                Err(e) => {
                    log::debug!("engine_fetch: {e}");
                    if stop.sleep(jitter(backoff)) {
                        return;
                    }
                    backoff = (backoff * 2).min(self.retry_max);
                }
            }
        }
    }

    fn pick_up(&self, text: &str, stop: &Stop) {
        // Saved before it is cleared in the cloud: a power cut in between loses nothing.
        if let Err(e) = fsio::write_atomic(&self.pending(), text.as_bytes()) {
            log::error!("saving the engine_fetch command: {e}");
            return;
        }
        if let Err(e) = self.cloud.write(&[(ALIAS, "")]) {
            log::warn!("clearing engine_fetch: {e}");
        }
        self.carry_out(text, stop);
    }

    fn carry_out(&self, text: &str, stop: &Stop) {
        let mut restart = false;
        let mut reboot = None;
        match parse(text) {
            Err(e) => {
                self.status(&e.to_string());
            }
            Ok(Plan { install, remove, os }) => {
                for file in &install {
                    if stop.stopped() {
                        return; // the pending file stays: finished at the next start
                    }
                    restart |= self.install(file, stop);
                }
                for name in &remove {
                    match self.apps.remove(name) {
                        Ok(()) => self.status(&format!("removed {name}")),
                        Err(e) => self.status(&format!("remove {name}: {e}")),
                    };
                }
                if let Some(order) = os {
                    reboot = self.install_os(&order, stop);
                }
                let report = crate::telemetry::engine_report(&self.apps, &self.queue, &self.state_dir).to_string();
                if let Err(e) = crate::telemetry::enqueue(&self.queue, "engine_report", &report) {
                    log::warn!("queueing engine_report: {e}");
                }
            }
        }
        if let Err(e) = std::fs::remove_file(self.pending()) {
            log::warn!("removing the finished engine_fetch command: {e}");
        }
        if restart {
            super::selfupdate::request_restart();
        }
        if let (Some(at), Some(os)) = (reboot, &self.os) {
            // The command is done (its file removed): a reboot now does not repeat it. A
            // window is waited for here; the state file keeps it should the agent restart.
            let cmd = os.reboot_command.clone();
            let sup = os.rauc.sup.clone();
            if at == RebootAt::Now {
                super::os::wait_and_reboot(at, &cmd, sup.as_ref(), &|_| true);
            } else {
                let spawned = std::thread::Builder::new().name("os-reboot".into()).spawn(move || {
                    super::os::wait_and_reboot(at, &cmd, sup.as_ref(), &|d| {
                        std::thread::sleep(d);
                        false
                    })
                });
                if let Err(e) = spawned {
                    log::error!("os update: waiting for the reboot window: {e}");
                }
            }
        }
    }

    /// Downloads an OS bundle (or has RAUC stream it) and has RAUC install it; the reboot
    /// policy when it did.
    fn install_os(&self, order: &OsOrder, stop: &Stop) -> Option<RebootAt> {
        let (bundle, at) = (order.name.as_str(), order.reboot);
        let Some(os) = &self.os else {
            self.status(&format!("{bundle}: this gateway takes no OS bundles ([ota] os_updates is off)"));
            return None;
        };
        // RAUC's progress, at most every 10 s (each write costs bytes on the link).
        let mut last = std::time::Instant::now();
        let mut progress = |line: &str| {
            log::info!("rauc: {line}");
            if last.elapsed() >= Duration::from_secs(10) {
                last = std::time::Instant::now();
                self.status(&format!("installing {bundle}: {line}"));
            }
        };
        // A command a cut interrupted runs again at boot: after the judgement of the update
        // it interrupted, which writes the same record.
        if !super::os::wait_boot_judged(Duration::from_secs(300)) {
            log::warn!("os update: the boot check has not judged this boot in 300 s; installing anyway");
        }
        let r = if order.stream {
            self.status(&format!("streaming {bundle}"));
            // The metadata binds name, version, target and size; the bytes RAUC reads are
            // bound by the bundle's own signature and dm-verity, block by block.
            let size = match self.checked_bundle(os, bundle, stop) {
                Ok((size, _)) => size,
                Err(e) => {
                    self.downloaded(bundle, Err(e));
                    return None;
                }
            };
            let relay = match super::stream::Relay::start(self.cloud.clone(), bundle, size) {
                Ok(r) => r,
                Err(e) => {
                    self.status(&format!("{bundle}: streaming: {e}"));
                    return None;
                }
            };
            let r = os.rauc.install(&relay.url(), at, &mut progress);
            let (bytes, requests) = relay.relayed();
            log::info!("os update: RAUC streamed {bytes} of {size} bytes of {bundle} in {requests} requests");
            r
        } else {
            self.status(&format!("downloading {bundle}"));
            let file = self.downloaded(bundle, self.download_bundle(os, bundle, stop))?;
            self.status(&format!("installing {bundle}"));
            let r = os.rauc.install(&file.to_string_lossy(), at, &mut progress);
            let _ = std::fs::remove_file(&file);
            r
        };
        match r {
            Ok(u) => {
                let when = match at {
                    RebootAt::Now => "rebooting into it now".to_string(),
                    RebootAt::Manual => "it runs after the next restart".to_string(),
                    RebootAt::Window { .. } => format!("rebooting into it in the window {at} (UTC)"),
                };
                self.status(&format!(
                    "installed {} {} into slot {} (running slot {}); {when}",
                    u.compatible, u.version, u.to, u.from
                ));
                Some(at)
            }
            Err(e) => {
                self.status(&format!("{bundle}: {e}"));
                None
            }
        }
    }

    /// An OS bundle from the hub's content into `downloads/` (free space checked first,
    /// resumed after a cut). Its release metadata, when the hub has it (required where this
    /// gateway has root keys), is checked first against this board (RAUC's compatible
    /// string) and the running image's version, so a bundle for another board costs no
    /// download; the file is then checked against the signed size and SHA-256. RAUC checks
    /// its own signature and compatible string after that.
    fn download_bundle(&self, os: &OsUpdates, file: &str, stop: &Stop) -> Result<PathBuf, DownloadError> {
        let dir = self.downloads();
        fsio::create_dir_all_durable(&dir).map_err(|e| DownloadError::Io(dir.clone(), e))?;
        let (size, signed) = self.checked_bundle(os, file, stop)?;
        // One command runs at a time: another bundle here is what a cut left of an earlier
        // one, and only takes the space this one needs.
        clear_other_bundles(&dir, file);
        let whole = dir.join(file);
        let path = if std::fs::metadata(&whole).is_ok_and(|m| m.len() == size) {
            // Downloaded whole before a cut (during its install): not fetched again; the
            // checks below and RAUC's own see it as they would a fresh one.
            whole
        } else {
            self.fetch_whole(&dir, file, size, size, stop)?
        };
        if let Some(v) = &signed {
            if let Err(e) = self.apps.check_bundle(&path, v) {
                let _ = std::fs::remove_file(&path);
                return Err(release_refused(e));
            }
        }
        Ok(path)
    }

    /// What is known of an OS bundle before a byte of it is fetched: its size on the hub and
    /// its release metadata, checked (see [`Fetcher::download_bundle`]).
    fn checked_bundle(
        &self,
        os: &OsUpdates,
        file: &str,
        stop: &Stop,
    ) -> Result<(u64, Option<super::release::Verified>), DownloadError> {
        let dir = self.downloads();
        fsio::create_dir_all_durable(&dir).map_err(|e| DownloadError::Io(dir.clone(), e))?;
        let signed = match self.small(&format!("{file}.meta"), stop)? {
            Some(meta) => {
                let keys = self.small("keys.json", stop)?;
                let running = super::os::running_version();
                let compatible = os.rauc.system_compatible();
                self.apps
                    .precheck_bundle(file, &meta, keys.as_deref(), running.as_deref(), compatible.as_deref())
                    .map_err(release_refused)?
            }
            None if self.apps.needs_metadata() => {
                return Err(DownloadError::Refused(super::release::MetaError::Missing.to_string()))
            }
            None => None,
        };
        let size = self.retrying(stop, || self.cloud.content_size(file)).map_err(hub(None))?;
        if let Some(v) = &signed {
            if size != v.release.size {
                return Err(DownloadError::NotSigned { offered: size, signed: v.release.size });
            }
        }
        if size > os.max_bundle {
            return Err(DownloadError::TooBig { what: "bundle", size, max: os.max_bundle });
        }
        Ok((size, signed))
    }

    /// `file` of `size` bytes into `dir`: free space checked first, downloaded to
    /// `FILE.part` (resumed after a cut, never more than `limit`), renamed when whole.
    fn fetch_whole(
        &self,
        dir: &Path,
        file: &str,
        size: u64,
        limit: u64,
        stop: &Stop,
    ) -> Result<PathBuf, DownloadError> {
        let part = dir.join(format!("{file}.part"));
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let free = fsio::space(dir).map(|s| s.available).unwrap_or(0);
        if free < size.saturating_sub(have) {
            return Err(DownloadError::NoSpace { need: size, free });
        }
        let got = self
            .retrying(stop, || match self.cloud.download(file, &part, limit) {
                Ok(n) if n < size => Err(CloudError::Unreachable(format!("download ended at {n} of {size} bytes"))),
                other => other,
            })
            .map_err(hub(None))?;
        if got != size {
            let _ = std::fs::remove_file(&part);
            return Err(DownloadError::Short { got, size });
        }
        let path = dir.join(file);
        std::fs::rename(&part, &path).map_err(|e| DownloadError::Io(path.clone(), e))?;
        Ok(path)
    }

    /// A download's outcome, for packages and OS bundles alike: a full disk is a standing
    /// fault of the OTA part (cleared by the next download that fits); any failure is said
    /// in `fetch_status` as `NAME: reason`.
    fn downloaded(&self, name: &str, r: Result<PathBuf, DownloadError>) -> Option<PathBuf> {
        match r {
            Ok(p) => {
                crate::health::ok(HEALTH_PART);
                Some(p)
            }
            Err(e) => {
                if e.is_no_space() {
                    crate::health::failed(HEALTH_PART, &e);
                }
                self.status(&format!("{name}: {e}"));
                None
            }
        }
    }

    /// Installs one package; true when it was a new agent (restart into it).
    fn install(&self, file: &str, stop: &Stop) -> bool {
        self.status(&format!("downloading {file}"));
        let Some(pkg) = self.downloaded(file, self.download(file, stop)) else { return false };
        self.status(&format!("installing {file}"));
        let result = self.apps.install(&pkg);
        let _ = std::fs::remove_file(&pkg);
        let _ = std::fs::remove_file(super::package::signature_path(&pkg));
        let _ = std::fs::remove_file(super::release::meta_path(&pkg));
        match result {
            Ok(r) => {
                self.status(&format!("installed {} {}\n{}", r.name, r.version, r.output));
                r.new_agent()
            }
            Err(e) => {
                if matches!(e, InstallError::NoSpace { .. })
                    || matches!(&e, InstallError::Io(_, io) if io.raw_os_error() == Some(libc::ENOSPC))
                {
                    crate::health::failed(HEALTH_PART, &e);
                }
                self.status(&format!("{file}: {e}"));
                false
            }
        }
    }

    /// The package and its signature (when the hub has one) in `downloads/`.
    fn download(&self, file: &str, stop: &Stop) -> Result<PathBuf, DownloadError> {
        let dir = self.downloads();
        fsio::create_dir_all_durable(&dir).map_err(|e| DownloadError::Io(dir.clone(), e))?;
        // Release metadata first, when the hub has it (and the keys document, which may be
        // newer than this gateway's): checked before a byte of the package is fetched, and
        // its signed size is all the download may bring.
        let name = PackageName::parse(file).map_err(|e| DownloadError::Refused(e.to_string()))?;
        let meta = self.small(&format!("{file}.meta"), stop)?;
        let signed = match &meta {
            Some(meta) => {
                let keys = self.small("keys.json", stop)?;
                self.apps.precheck(&name, meta, keys.as_deref()).map_err(release_refused)?
            }
            None if self.apps.needs_metadata() => {
                return Err(DownloadError::Refused(super::release::MetaError::Missing.to_string()))
            }
            None => None,
        };
        let size = self.retrying(stop, || self.cloud.content_size(file)).map_err(hub(None))?;
        if let Some(signed) = signed {
            if size != signed {
                return Err(DownloadError::NotSigned { offered: size, signed });
            }
        }
        let limit = signed.unwrap_or(self.max_package);
        if size > self.max_package {
            return Err(DownloadError::TooBig { what: "package", size, max: self.max_package });
        }
        let pkg = self.fetch_whole(&dir, file, size, limit, stop)?;
        let meta_path = super::release::meta_path(&pkg);
        let _ = std::fs::remove_file(&meta_path);
        if let Some(meta) = &meta {
            fsio::write_atomic(&meta_path, meta).map_err(|e| DownloadError::Io(meta_path.clone(), e))?;
        }
        let sig = format!("{file}.sig");
        let sig_path = dir.join(&sig);
        let _ = std::fs::remove_file(&sig_path);
        match self.retrying(stop, || self.cloud.download(&sig, &sig_path, 4096)) {
            Ok(_) => {}
            Err(CloudError::Refused(404, _)) => {
                let _ = std::fs::remove_file(&sig_path); // unsigned: the installer decides
            }
            Err(e) => return Err(hub(Some(format!("the signature {sig}")))(e)),
        }
        Ok(pkg)
    }

    /// A small file of the hub's content (metadata), at most MAX_METADATA_BYTES; `None`
    /// when the hub has none.
    fn small(&self, id: &str, stop: &Stop) -> Result<Option<Vec<u8>>, DownloadError> {
        let tmp = self.downloads().join(format!("{id}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let limit = super::release::MAX_METADATA_BYTES;
        let r = match self.retrying(stop, || self.cloud.download(id, &tmp, limit)) {
            Ok(_) => super::release::read_metadata(&tmp).map(Some).map_err(|e| DownloadError::Io(PathBuf::from(id), e)),
            Err(CloudError::Refused(404, _)) => Ok(None),
            Err(e) => Err(hub(Some(id.to_string()))(e)),
        };
        let _ = std::fs::remove_file(&tmp);
        r
    }

    /// Runs `f` until it succeeds, the hub refuses (no retry: that error is returned as it
    /// is), or the tries run out.
    fn retrying<T>(&self, stop: &Stop, mut f: impl FnMut() -> Result<T, CloudError>) -> Result<T, CloudError> {
        let mut backoff = Duration::from_secs(1);
        let mut last = String::new();
        for _ in 0..DOWNLOAD_TRIES {
            match f() {
                Ok(v) => return Ok(v),
                Err(e @ CloudError::Refused(..)) => return Err(e),
                Err(e) => {
                    log::warn!("download: {e}; trying again");
                    last = e.to_string();
                }
            }
            if stop.sleep(jitter(backoff)) {
                return Err(CloudError::Unreachable("the agent is stopping".into()));
            }
            backoff = (backoff * 2).min(self.retry_max);
        }
        Err(CloudError::Unreachable(format!("gave up after {DOWNLOAD_TRIES} tries: {last}")))
    }
}

/// A package or OS bundle refused by its release metadata, as `fetch_status` says it after
/// its name.
fn release_refused(e: InstallError) -> DownloadError {
    DownloadError::Refused(match e {
        InstallError::Release(what, e) if what == "keys.json" => format!("keys.json: {e}"),
        InstallError::Release(_, e) => e.to_string(),
        e => e.to_string(),
    })
}

/// A failure of the hub's, about `what` (the file itself when None).
fn hub(what: Option<String>) -> impl FnOnce(CloudError) -> DownloadError {
    move |error| DownloadError::Hub { what, error }
}

/// Removes the OS bundles in `dir` (whole or `.part`) other than `keep`'s.
fn clear_other_bundles(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let bundle = name.ends_with(".raucb") || name.ends_with(".raucb.part");
        if bundle && name != keep && name.strip_suffix(".part") != Some(keep) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => log::info!("os update: removed {name}, left by an earlier command"),
                Err(err) => log::warn!("os update: removing {name}: {err}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let p = parse(r#"{"install":[{"name":"sensor.v1.4.2.tar.gz"},{"name":"modbus","version":"2.0"}]}"#).unwrap();
        assert_eq!(p.install, ["sensor.v1.4.2.tar.gz", "modbus.v2.0.tar.gz"]);
        assert!(p.remove.is_empty() && p.os.is_none());
        assert_eq!(parse(r#"{"remove":[{"name":"old"}]}"#).unwrap().remove, ["old"]);
        let p = parse(r#"{"os":{"name":"gw-os.v2.raucb","reboot":"02:00-04:00"}}"#).unwrap();
        let want =
            OsOrder { name: "gw-os.v2.raucb".into(), reboot: RebootAt::Window { start: 120, end: 240 }, stream: false };
        assert_eq!(p.os, Some(want));
        let o = parse(r#"{"os":{"name":"gw-os.v2.raucb","stream":true}}"#).unwrap().os.unwrap();
        assert_eq!((o.reboot, o.stream), (RebootAt::Now, true));
        use CommandError as E;
        let kind = |e: &CommandError| std::mem::discriminant(e);
        for (bad, want) in [
            ("", E::NotACommand(String::new())),
            ("install sensor", E::NotACommand(String::new())),
            (r#"{"install":[{"name":"../x.v1.tar.gz"}]}"#, E::Package(String::new())),
            (r#"{"install":[{"name":"sensor.tar.gz"}]}"#, E::Package(String::new())),
            (r#"{"install":[]}"#, E::Empty),
            (r#"{"upgrade":[{"name":"a.v1.tar.gz"}]}"#, E::NotACommand(String::new())),
            (r#"{"remove":[{"name":"a/b"}]}"#, E::Remove(String::new())),
            (r#"{"os":{"name":"../x.raucb"}}"#, E::OsBundle(String::new())),
            (r#"{"os":{"name":"x.tar.gz"}}"#, E::OsBundle(String::new())),
            (r#"{"os":{"name":"x.raucb","reboot":"later"}}"#, E::Reboot(String::new())),
            (r#"{"os":{"name":"x.raucb","slot":"B"}}"#, E::NotACommand(String::new())),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(kind(&e), kind(&want), "{bad}: {e:?}");
            assert!(e.to_string().starts_with("engine_fetch"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_new_bundle_clears_what_cuts_left_of_others_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["os.v1.raucb", "os.v1.raucb.part", "os.v2.raucb", "os.v2.raucb.part", "sensor.v1.tar.gz"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        clear_other_bundles(dir.path(), "os.v2.raucb");
        let mut left: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["os.v2.raucb", "os.v2.raucb.part", "sensor.v1.tar.gz"]);
    }
}
