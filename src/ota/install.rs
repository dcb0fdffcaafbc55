//! Installing, updating, rolling back and removing apps (docs/ota-format.md):
//! verify the signature, check free space, unpack into a new version directory, run its
//! `install.sh` (through the supervisor, with a timeout), switch `current` atomically,
//! restart the app and watch it: if it does not reach RUNNING (it stays up `startsecs`),
//! switch back to the previous version and restart that. A version stays "on trial" until
//! it is seen healthy, so a power cut during the watch is resolved at the next start.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::extract::{ExtractError, Limits};
use super::package::{self, PackageError, PackageName};
use super::release::{self, MetaError};
use super::store::{AppStore, Installed};
use crate::supervisor::program;
use crate::supervisor::{OneOff, OneOffResult, Supervisor};

pub struct Installer {
    store: AppStore,
    sup: Supervisor,
    /// Program definitions baked into the image.
    programs_dir: PathBuf,
    log_dir: PathBuf,
    policy: Policy,
    limits: Limits,
    install_timeout: Duration,
    /// One app operation at a time (an install from the hub and one from `gwe app` must not
    /// interleave on the same directories).
    busy: Mutex<()>,
}

/// What an [`Installer`] works with.
pub struct Setup {
    pub store: AppStore,
    pub sup: Supervisor,
    /// Program definitions baked into the image.
    pub programs_dir: PathBuf,
    pub log_dir: PathBuf,
    pub policy: Policy,
    pub limits: Limits,
    pub install_timeout: Duration,
}

/// How a package is checked before anything is unpacked (docs/ota-format.md).
pub struct Policy {
    /// Release metadata and the keys behind it; `Some` when the config has root keys.
    pub release: Option<release::Trust>,
    /// Keys of old-style `.sig` signatures (`[ota] trusted_keys`).
    pub legacy: Vec<package::PublicKey>,
    /// With root keys: still accept a `.sig` by a legacy key (`[ota] allow_legacy_signatures`).
    pub allow_legacy: bool,
    pub allow_unsigned: bool,
}

impl Policy {
    /// Old-style signatures only (no root keys): each `.sig` by one of `legacy`.
    pub fn legacy(legacy: Vec<package::PublicKey>, allow_unsigned: bool) -> Self {
        Self { release: None, legacy, allow_legacy: true, allow_unsigned }
    }
}

/// The outcome of an install that did not go through, for `fetch_status`.
#[derive(Debug)]
pub enum InstallError {
    Package(PackageError),
    /// The release metadata (or the keys document) refused the package: file, why.
    Release(String, MetaError),
    Extract(ExtractError),
    NoSpace {
        need: u64,
        free: u64,
    },
    /// `install.sh` failed; nothing was switched.
    Script {
        result: String,
        output: String,
    },
    /// The new version did not stay up; the previous one runs again (or none, at a first install).
    RolledBack {
        version: String,
        now: Option<String>,
        why: crate::supervisor::AppError,
    },
    NotInstalled(String),
    /// The package has no `install.sh` (the original Gateway Engine required one).
    NoInstallScript,
    Io(String, io::Error),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Package(e) => write!(f, "{e}"),
            Self::Release(file, e) => write!(f, "{file}: {e}"),
            Self::Extract(e) => write!(f, "{e}"),
            Self::NoSpace { need, free } => {
                write!(f, "not enough free space: {need} bytes needed, {free} free")
            }
            Self::Script { result, output } => {
                write!(f, "install.sh {result}; nothing was changed. Its output:\n{output}")
            }
            Self::RolledBack { version, now, why } => match now {
                Some(v) => write!(f, "version {version} did not stay up ({why}); rolled back to {v}"),
                None => write!(f, "version {version} did not stay up ({why}); removed, nothing to roll back to"),
            },
            Self::NotInstalled(n) => write!(f, "{n} is not installed"),
            Self::NoInstallScript => {
                write!(f, "the package has no install.sh at its top; every package needs one (it may be empty)")
            }
            Self::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for InstallError {}

/// A finished install.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub name: String,
    pub version: String,
    /// The end of install.sh's output.
    pub output: String,
    /// That version was installed already: nothing changed.
    #[serde(skip)]
    pub unchanged: bool,
}

impl Report {
    /// A new agent was switched in: the agent restarts into it for its trial.
    pub fn new_agent(&self) -> bool {
        self.name == super::selfupdate::AGENT && !self.unchanged
    }
}

/// The one version order (docs/ota-format.md, "Version order").
pub use super::release::version_cmp;

/// Uncompressed size a gzip file declares (its last 4 bytes, modulo 4 GiB).
fn gzip_isize(path: &Path) -> io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::End(-4))?;
    let mut b = [0u8; 4];
    f.read_exact(&mut b)?;
    Ok(u64::from(u32::from_le_bytes(b)))
}

fn tail(path: &Path, max: u64) -> String {
    crate::supervisor::logs::tail(path, max).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

impl Installer {
    pub fn new(s: Setup) -> Self {
        let Setup { store, sup, programs_dir, log_dir, policy, limits, install_timeout } = s;
        Installer { store, sup, programs_dir, log_dir, policy, limits, install_timeout, busy: Mutex::new(()) }
    }

    /// The supervisor the apps run under.
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// Every installed app, by name.
    pub fn installed(&self) -> Vec<Installed> {
        self.store.list()
    }

    /// The versions on disk: the agent's own (`ota::selfupdate` keeps them as an app) and,
    /// read-only to everyone but the installer, the apps'.
    pub fn app_store(&self) -> &AppStore {
        &self.store
    }

    /// How packages are checked (the release trust and the time it checks expiry against).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// One app as installed (no versions when it is not).
    pub fn app(&self, name: &str) -> Installed {
        self.store.get(name)
    }

    /// Every program: the image's, and each installed app's `supervisor.conf` (an installed
    /// app runs in its `current` directory; a relative command is taken from there).
    pub fn programs(&self) -> program::Loaded {
        let mut loaded = program::load_dir(&self.programs_dir, &self.log_dir);
        for app in self.store.list() {
            let dir = self.store.current_dir(&app.name);
            let conf = dir.join("supervisor.conf");
            let Ok(text) = std::fs::read_to_string(&conf) else {
                continue;
            };
            let mut l = program::parse_package(&text, &conf, &app.name, &self.log_dir);
            for p in &mut l.programs {
                if p.directory.is_none() {
                    p.directory = Some(dir.clone());
                }
                if let Some(cmd) = p.command.first_mut() {
                    if cmd.contains('/') && !cmd.starts_with('/') {
                        *cmd = dir.join(&cmd).to_string_lossy().into_owned();
                    }
                }
            }
            loaded.programs.retain(|p| p.name != app.name);
            loaded.programs.extend(l.programs);
            loaded.errors.extend(l.errors);
            loaded.warnings.extend(l.warnings);
        }
        loaded
    }

    /// Gives the supervisor the current program table; returns the names it will start.
    pub fn apply(&self) -> Vec<String> {
        let loaded = self.programs();
        for e in &loaded.errors {
            log::error!("{e}");
        }
        for w in &loaded.warnings {
            log::warn!("{w}");
        }
        let autostart = loaded.programs.iter().filter(|p| p.autostart).map(|p| p.name.clone()).collect();
        self.sup.replace(loaded.programs);
        autostart
    }

    /// Restarts `name` on its current version and waits until it is RUNNING.
    fn watch(&self, name: &str) -> Result<(), crate::supervisor::AppError> {
        if !self.apply().iter().any(|n| n == name) {
            return Ok(()); // a one-off app or a library: nothing to watch
        }
        self.sup.restart_app(name).map(|_| ())
    }

    fn one_at_a_time(&self) -> MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The version of `app` running now (the agent's own when it runs from the image).
    pub fn running_version(&self, app: &str) -> Option<String> {
        let current = self.store.get(app).current;
        if app == super::selfupdate::AGENT {
            return Some(current.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()));
        }
        current
    }

    /// Whether a package without release metadata is refused whatever else comes with it:
    /// then a download need not even start.
    pub fn needs_metadata(&self) -> bool {
        self.policy.release.is_some() && !self.policy.allow_legacy && !self.policy.allow_unsigned
    }

    /// Checks release metadata fetched before its package: what [`release::Trust`] checks
    /// before the file exists. Returns the signed size (all a download may bring), or
    /// `None` when this gateway checks old-style signatures only.
    pub fn precheck(&self, name: &PackageName, meta: &[u8], keys: Option<&[u8]>) -> Result<Option<u64>, InstallError> {
        let Some(trust) = &self.policy.release else { return Ok(None) };
        let file = name.file_name();
        if let Some(keys) = keys {
            trust.offer_keys(keys).map_err(|e| InstallError::Release("keys.json".into(), e))?;
        }
        let running = self.running_version(&name.name);
        let v = trust
            .check_release(meta, &name.name, &name.version, running.as_deref())
            .map_err(|e| InstallError::Release(file, e))?;
        Ok(Some(v.release.size))
    }

    /// Checks the release metadata of an OS bundle (`NAME.vVERSION.raucb`) fetched before
    /// it: signed by a release key, not expired, for this name and version, for this
    /// vendor and model, for `compatible` (the running image's; a bundle's metadata must name
    /// one) and not older than `running` (os-release's IMAGE_VERSION). RAUC checks the
    /// bundle's own signature later; this one refuses a bundle for another board before its
    /// bytes are spent. Returns the signed release (its size bounds the download), or `None`
    /// when this gateway has no root keys.
    pub fn precheck_bundle(
        &self,
        file: &str,
        meta: &[u8],
        keys: Option<&[u8]>,
        running: Option<&str>,
        compatible: Option<&str>,
    ) -> Result<Option<release::Verified>, InstallError> {
        let Some(trust) = &self.policy.release else { return Ok(None) };
        if let Some(keys) = keys {
            trust.offer_keys(keys).map_err(|e| InstallError::Release("keys.json".into(), e))?;
        }
        let refused = |e| InstallError::Release(file.to_string(), e);
        let Some((name, version)) = gwe_wire::os::bundle_parts(file) else {
            return Err(refused(MetaError::Mismatch(
                "release metadata is for bundles named NAME.vVERSION.raucb".into(),
            )));
        };
        let compatible = compatible.or(trust.compatible.as_deref());
        let v = trust.check_release_for(meta, name, version, running, compatible).map_err(refused)?;
        if v.release.target.compatible.is_none() {
            return Err(refused(MetaError::Mismatch(
                "the release metadata of an OS bundle names no compatible string (gwe pkg sign --compatible)".into(),
            )));
        }
        Ok(Some(v))
    }

    /// The downloaded OS bundle against the release [`Installer::precheck_bundle`] passed:
    /// its size and SHA-256, before RAUC is given it.
    pub fn check_bundle(&self, path: &Path, v: &release::Verified) -> Result<(), InstallError> {
        let Some(trust) = &self.policy.release else { return Ok(()) };
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let size = std::fs::metadata(path).map_err(|e| InstallError::Io(format!("reading {file}"), e))?.len();
        let digest = package::digest(path).map_err(|e| InstallError::Io(format!("reading {file}"), e))?;
        trust.check_file(v, size, &digest).map_err(|e| InstallError::Release(file, e))
    }

    /// Checks the package before anything is unpacked: its release metadata (`FILE.meta`,
    /// and a newer `keys.json` beside it is taken first), or where the config allows it an
    /// old-style `.sig`, or nothing where unsigned packages are allowed.
    fn check(&self, pkg: &Path, name: &PackageName) -> Result<(), InstallError> {
        let file = name.file_name();
        let Some(trust) = &self.policy.release else {
            package::verify(pkg, &self.policy.legacy, self.policy.allow_unsigned).map_err(InstallError::Package)?;
            log::warn!(
                "{file}: checked the old way (a .sig over its digest only: name, version and target are not signed); set [ota] root_keys and sign release metadata"
            );
            return Ok(());
        };
        let refused = |e| InstallError::Release(file.clone(), e);
        match release::read_metadata(&pkg.with_file_name("keys.json")) {
            Ok(keys) => {
                trust.offer_keys(&keys).map_err(|e| InstallError::Release(format!("keys.json beside {file}"), e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(InstallError::Io(format!("reading keys.json beside {file}"), e)),
        }
        match release::read_metadata(&release::meta_path(pkg)) {
            Ok(meta) => {
                let running = self.running_version(&name.name);
                let v = trust.check_release(&meta, &name.name, &name.version, running.as_deref()).map_err(refused)?;
                let size = std::fs::metadata(pkg).map_err(|e| InstallError::Io(format!("reading {file}"), e))?.len();
                let digest = package::digest(pkg).map_err(|e| InstallError::Io(format!("reading {file}"), e))?;
                trust.check_file(&v, size, &digest).map_err(refused)?;
                log::info!("{file}: release metadata verified (release key {})", &v.key[..16]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Err(refused(MetaError::TooLarge(std::fs::metadata(release::meta_path(pkg)).map_or(0, |m| m.len()))))
            }
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(InstallError::Io(format!("reading {file}.meta"), e)),
            Err(_) if self.policy.allow_legacy && package::signature_path(pkg).exists() => {
                package::verify(pkg, &self.policy.legacy, false).map_err(InstallError::Package)?;
                log::warn!("{file}: accepted by its old-style .sig ([ota] allow_legacy_signatures): its name, version and target are not signed");
                Ok(())
            }
            Err(_) if self.policy.allow_unsigned => {
                log::warn!("{file}: no release metadata; installed unsigned ([ota] allow_unsigned)");
                Ok(())
            }
            Err(_) => Err(refused(MetaError::Missing)),
        }
    }

    /// Installs (or updates to) the package at `pkg`.
    pub fn install(&self, pkg: &Path) -> Result<Report, InstallError> {
        let _one = self.one_at_a_time();
        let file_name = pkg.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = PackageName::parse(&file_name).map_err(InstallError::Package)?;
        if let Err(e) = self.check(pkg, &name) {
            log::warn!("install refused: {e}");
            return Err(e);
        }
        let app = self.store.get(&name.name);
        if app.current.as_deref() == Some(name.version.as_str()) && app.trial.is_none() {
            let output = "already installed".into();
            return Ok(Report { name: name.name, version: name.version, output, unchanged: true });
        }
        let need = gzip_isize(pkg).map_err(|e| InstallError::Io(format!("reading {file_name}"), e))? + (1 << 20);
        let free =
            crate::fsio::space(self.store.root()).map_err(|e| InstallError::Io("free space".into(), e))?.available;
        if free < need {
            return Err(InstallError::NoSpace { need, free });
        }
        let dir = match self.store.stage(pkg, &name, self.limits) {
            Ok(dir) => dir,
            Err(e) => {
                self.store.forget_if_empty(&name.name);
                return Err(InstallError::Extract(e));
            }
        };
        let log = dir.join("install.log");
        if !dir.join("install.sh").is_file() {
            let _ = std::fs::remove_dir_all(&dir);
            self.store.forget_if_empty(&name.name);
            return Err(InstallError::NoInstallScript);
        }
        {
            let job = OneOff {
                command: vec!["/bin/sh".into(), "./install.sh".into()],
                dir: dir.clone(),
                env: vec![("GWE_APP".into(), name.name.clone()), ("GWE_VERSION".into(), name.version.clone())],
                output: log.clone(),
                timeout: self.install_timeout,
            };
            let result = match self.sup.run_once(job) {
                OneOffResult::Exited(0) => None,
                OneOffResult::Exited(c) => Some(format!("exited with {c}")),
                OneOffResult::TimedOut => Some(format!("ran longer than {} s", self.install_timeout.as_secs())),
                OneOffResult::SpawnFailed(e) => Some(format!("could not run: {e}")),
            };
            if let Some(result) = result {
                let output = tail(&log, 4096);
                let _ = std::fs::remove_dir_all(&dir);
                self.store.forget_if_empty(&name.name);
                return Err(InstallError::Script { result, output });
            }
        }
        let output = tail(&log, 4096);
        if name.name == super::selfupdate::AGENT {
            return self.switch_agent(&dir, &name, output);
        }
        self.store.switch(&name.name, &name.version).map_err(|e| InstallError::Io("switching versions".into(), e))?;
        self.settle(&name.name, &name.version)?;
        Ok(Report { name: name.name, version: name.version, output, unchanged: false })
    }

    /// The agent's own package: its binary must run (`gwe --version`); then it is switched
    /// in on trial, and the caller restarts the agent into it (`selfupdate`).
    fn switch_agent(&self, dir: &Path, name: &PackageName, output: String) -> Result<Report, InstallError> {
        let bin = dir.join(super::selfupdate::AGENT);
        let job = OneOff {
            command: vec![bin.to_string_lossy().into_owned(), "--version".into()],
            dir: dir.to_path_buf(),
            env: Vec::new(),
            output: dir.join("version-check.log"),
            timeout: Duration::from_secs(30),
        };
        let result = match self.sup.run_once(job) {
            OneOffResult::Exited(0) => None,
            OneOffResult::Exited(c) => Some(format!("exited with {c}")),
            OneOffResult::TimedOut => Some("ran longer than 30 s".into()),
            OneOffResult::SpawnFailed(e) => Some(format!("could not run: {e}")),
        };
        if let Some(result) = result {
            let _ = std::fs::remove_dir_all(dir);
            self.store.forget_if_empty(&name.name);
            return Err(InstallError::Script { result: format!("(the new agent's `gwe --version`) {result}"), output });
        }
        self.store.switch(&name.name, &name.version).map_err(|e| InstallError::Io("switching versions".into(), e))?;
        super::selfupdate::begin_trial(&self.store).map_err(|e| InstallError::Io("starting the trial".into(), e))?;
        Ok(Report {
            name: name.name.clone(),
            version: name.version.clone(),
            output: format!("{output}agent {} installed; restarting into it for its trial\n", name.version),
            unchanged: false,
        })
    }

    /// Watches a version under trial: confirms it, or rolls back and says why.
    fn settle(&self, name: &str, version: &str) -> Result<(), InstallError> {
        match self.watch(name) {
            Ok(()) => self.store.confirm(name).map_err(|e| InstallError::Io("confirming the version".into(), e)),
            Err(why) => {
                log::error!("app {name} {version}: {why}; rolling back");
                let now = self.store.roll_back(name, true).map_err(|e| InstallError::Io("rolling back".into(), e))?;
                if now.is_some() {
                    if let Err(e) = self.watch(name) {
                        log::error!("app {name}: the previous version does not start either: {e}");
                    }
                } else {
                    self.apply();
                }
                Err(InstallError::RolledBack { version: version.to_string(), now, why })
            }
        }
    }

    /// At start: versions a power cut left on trial are watched now.
    pub fn resume_trials(&self) {
        let _one = self.one_at_a_time();
        for app in self.store.list() {
            if app.name == super::selfupdate::AGENT {
                continue; // the launcher decides about the agent's own trial
            }
            if let Some(v) = app.trial.clone() {
                log::warn!("app {}: version {v} was on trial when the agent stopped; watching it", app.name);
                if let Err(e) = self.settle(&app.name, &v) {
                    log::error!("{e}");
                }
            }
        }
    }

    /// Installs the packages baked into the image (`preinstall_dir`) that are not installed
    /// yet: a factory image's apps, through the normal install path.
    pub fn preinstall(&self, dir: &Path) {
        for (p, r) in self.install_dir(dir, true) {
            match r {
                Ok(r) => log::info!("preinstalled {} {}", r.name, r.version),
                Err(e) => log::error!("preinstalling {}: {e}", p.display()),
            }
        }
    }

    /// `gwe app install DIR` (a local directory, a mounted USB stick): of every app with
    /// packages in `dir`, its highest version (`version_cmp`), through the normal install
    /// path (signature, unpacking, install.sh, trial). `only_new`: pass over apps installed
    /// already (the image's preinstall step: the image's copy is not news).
    pub fn install_dir(&self, dir: &Path, only_new: bool) -> Vec<(PathBuf, Result<Report, InstallError>)> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut newest: std::collections::BTreeMap<String, (String, PathBuf)> = std::collections::BTreeMap::new();
        for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let Some(name) = p.file_name().and_then(|n| PackageName::parse(&n.to_string_lossy()).ok()) else {
                continue;
            };
            let newer = newest.get(&name.name).is_none_or(|(v, _)| version_cmp(&name.version, v).is_gt());
            if newer {
                newest.insert(name.name, (name.version, p));
            }
        }
        newest
            .into_iter()
            .filter(|(app, _)| !only_new || self.store.get(app).current.is_none())
            .map(|(_, (_, p))| {
                let r = self.install(&p);
                (p, r)
            })
            .collect()
    }

    /// `gwe app rollback NAME`: back to the previous version.
    pub fn rollback(&self, name: &str) -> Result<Installed, InstallError> {
        let _one = self.one_at_a_time();
        let app = self.store.get(name);
        if app.current.is_none() || app.previous.is_none() {
            return Err(InstallError::NotInstalled(format!("{name} (with a previous version)")));
        }
        self.store.roll_back(name, false).map_err(|e| InstallError::Io("rolling back".into(), e))?;
        self.watch(name).map_err(|why| InstallError::RolledBack {
            version: app.current.clone().unwrap_or_default(),
            now: app.previous.clone(),
            why,
        })?;
        Ok(self.store.get(name))
    }

    /// `gwe app remove NAME`: stops it and deletes every version.
    pub fn remove(&self, name: &str) -> Result<(), InstallError> {
        let _one = self.one_at_a_time();
        if self.store.get(name).current.is_none() {
            return Err(InstallError::NotInstalled(name.to_string()));
        }
        self.store.remove(name).map_err(|e| InstallError::Io(format!("removing {name}"), e))?;
        self.apply();
        Ok(())
    }
}
