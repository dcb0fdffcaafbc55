//! Installed app versions on the data partition:
//!
//! ```text
//! apps/NAME/VERSION/        a whole unpacked version (renamed into place when complete)
//! apps/NAME/current -> VER  the active version (symlink, replaced atomically)
//! apps/NAME/previous -> VER the version to roll back to
//! apps/NAME/.staging-VER/   being unpacked; removed at start
//! apps/NAME/trial           VER under trial: installed but not yet seen healthy
//! ```
//! A power cut at any point leaves `current` naming a whole version (or no `current` for a
//! first install): versions are complete before they get their name, and links are
//! replaced by rename with the directory fsynced.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::extract::{self, ExtractError, Limits};
use super::package::PackageName;
use crate::fsio;

pub struct AppStore {
    root: PathBuf,
}

/// What is installed for one app.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Installed {
    pub name: String,
    pub current: Option<String>,
    pub previous: Option<String>,
    pub trial: Option<String>,
}

fn read_link_name(p: &Path) -> Option<String> {
    fs::read_link(p).ok()?.to_str().map(String::from)
}

/// Points `dir/name` at `target` atomically and durably.
fn set_link(dir: &Path, name: &str, target: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}{}", fsio::TEMP_SUFFIX));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, dir.join(name))?;
    fsio::sync_dir(dir)
}

fn remove_link(dir: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => fsio::sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Fsyncs every directory under `dir` (files were synced as they were written).
fn sync_tree(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            sync_tree(&e.path())?;
        }
    }
    fsio::sync_dir(dir)
}

impl AppStore {
    /// Opens `root`, removing what an interrupted install or removal left behind.
    pub fn open(root: &Path) -> io::Result<Self> {
        fsio::create_dir_all_durable(root)?;
        let store = Self { root: root.to_path_buf() };
        for e in fs::read_dir(root)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".removed-") {
                fs::remove_dir_all(e.path())?;
                continue;
            }
            if !e.file_type()?.is_dir() {
                continue;
            }
            for v in fs::read_dir(e.path())? {
                let v = v?;
                let vname = v.file_name().to_string_lossy().into_owned();
                if vname.starts_with(".staging-") {
                    fs::remove_dir_all(v.path())?;
                } else if vname.ends_with(fsio::TEMP_SUFFIX) {
                    fs::remove_file(v.path())?;
                }
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn app_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The active version's directory, through the `current` link (so it follows switches).
    pub fn current_dir(&self, name: &str) -> PathBuf {
        self.app_dir(name).join("current")
    }

    pub fn get(&self, name: &str) -> Installed {
        let d = self.app_dir(name);
        Installed {
            name: name.to_string(),
            current: read_link_name(&d.join("current")),
            previous: read_link_name(&d.join("previous")),
            trial: fs::read_to_string(d.join("trial")).ok().map(|s| s.trim().to_string()),
        }
    }

    /// Every app with an active version, by name.
    pub fn list(&self) -> Vec<Installed> {
        let mut names: Vec<String> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names.into_iter().map(|n| self.get(&n)).filter(|i| i.current.is_some()).collect()
    }

    /// Unpacks `pkg` as a new version of its app; returns the version's directory. The
    /// version gets its name only once it is whole and synced.
    pub fn stage(&self, pkg: &Path, name: &PackageName, limits: Limits) -> Result<PathBuf, ExtractError> {
        let io_err = |what: &str| {
            let what = what.to_string();
            move |e| ExtractError::Io(what, e)
        };
        let app = self.app_dir(&name.name);
        fsio::create_dir_all_durable(&app).map_err(io_err("creating the app directory"))?;
        let staging = app.join(format!(".staging-{}", name.version));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir(&staging).map_err(io_err("creating the staging directory"))?;
        let result = extract::extract(pkg, &staging, limits).and_then(|_| {
            sync_tree(&staging).map_err(io_err("syncing the unpacked files"))?;
            let dest = app.join(&name.version);
            if dest.exists() {
                // Not current (the caller checked): an older copy of this version.
                fs::remove_dir_all(&dest).map_err(io_err("replacing an old copy of the version"))?;
            }
            fs::rename(&staging, &dest).map_err(io_err("naming the version"))?;
            fsio::sync_dir(&app).map_err(io_err("syncing the app directory"))?;
            Ok(dest)
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    /// After a refused first install: the app's directory holds no version that was ever
    /// made current, so it goes (a refused install leaves nothing behind).
    pub fn forget_if_empty(&self, name: &str) {
        let d = self.app_dir(name);
        let has_version = fs::read_dir(&d)
            .is_ok_and(|mut rd| rd.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with(".staging-"))));
        if !has_version && fs::remove_dir_all(&d).is_ok() {
            let _ = fsio::sync_dir(&self.root);
        }
    }

    /// Makes `version` current, the old current previous, and marks it under trial.
    pub fn switch(&self, name: &str, version: &str) -> io::Result<()> {
        let d = self.app_dir(name);
        fsio::write_atomic(&d.join("trial"), version.as_bytes())?;
        if let Some(old) = read_link_name(&d.join("current")) {
            if old != version {
                set_link(&d, "previous", &old)?;
            }
        }
        set_link(&d, "current", version)
    }

    /// The version under trial proved healthy: drop the mark and versions no longer needed.
    pub fn confirm(&self, name: &str) -> io::Result<()> {
        let d = self.app_dir(name);
        remove_link(&d, "trial")?;
        let keep = [read_link_name(&d.join("current")), read_link_name(&d.join("previous"))];
        for e in fs::read_dir(&d)? {
            let e = e?;
            let n = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_dir() && !n.starts_with('.') && !keep.iter().any(|k| k.as_deref() == Some(&n)) {
                fs::remove_dir_all(e.path())?;
            }
        }
        fsio::sync_dir(&d)
    }

    /// Makes `previous` current again. With `discard`, the version it replaces failed its
    /// trial: it is deleted rather than kept as `previous`. Returns the version now current,
    /// or `None` when there was nothing to go back to (the app is then not active at all).
    pub fn roll_back(&self, name: &str, discard: bool) -> io::Result<Option<String>> {
        let d = self.app_dir(name);
        let cur = read_link_name(&d.join("current"));
        let prev = read_link_name(&d.join("previous"));
        let now = match prev {
            Some(p) => {
                set_link(&d, "current", &p)?;
                match (&cur, discard) {
                    (Some(c), false) => set_link(&d, "previous", c)?,
                    _ => remove_link(&d, "previous")?,
                }
                Some(p)
            }
            None => {
                remove_link(&d, "current")?;
                None
            }
        };
        remove_link(&d, "trial")?;
        if discard {
            if let Some(c) = cur.filter(|c| Some(c) != now.as_ref()) {
                std::fs::remove_dir_all(d.join(c))?;
                fsio::sync_dir(&d)?;
            }
        }
        Ok(now)
    }

    /// Removes an app and all its versions (atomically: one rename, then the deletion).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let d = self.app_dir(name);
        let gone = self.root.join(format!(".removed-{name}"));
        let _ = fs::remove_dir_all(&gone);
        fs::rename(&d, &gone)?;
        fsio::sync_dir(&self.root)?;
        fs::remove_dir_all(&gone)
    }
}
/// What `gwe check` found in the app store, one line each: errors are states an install or
/// removal must never leave behind; notes what a power cut may leave and the next start
/// clears.
#[derive(Debug, Default)]
pub struct LayoutCheck {
    pub errors: Vec<String>,
    pub notes: Vec<String>,
    pub checked: Vec<String>,
}

/// A read-only look at the app store under `root` (for `gwe check`): every app's versions,
/// its `current` and `previous` links, a trial, and what interrupted installs left.
pub fn check_layout(root: &Path) -> LayoutCheck {
    let mut r = LayoutCheck::default();
    let Ok(entries) = fs::read_dir(root) else {
        r.checked.push("apps: none installed".into());
        return r;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if name.starts_with(".removed-") {
            r.notes.push(format!("apps: {name}: an interrupted removal, cleared at the next start"));
            continue;
        }
        let dir = root.join(&name);
        let mut versions = Vec::new();
        for e in fs::read_dir(&dir).into_iter().flatten().filter_map(|e| e.ok()) {
            let v = e.file_name().to_string_lossy().into_owned();
            if v.starts_with(".staging-") || v.ends_with(fsio::TEMP_SUFFIX) {
                r.notes.push(format!("apps: {name}/{v}: left by an interrupted install, cleared at the next start"));
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                versions.push(v);
            }
        }
        for link in ["current", "previous"] {
            let p = dir.join(link);
            match fs::read_link(&p) {
                Ok(target) => {
                    let t = target.to_string_lossy();
                    if t.contains('/') || !dir.join(&target).is_dir() {
                        r.errors.push(format!("apps: {name}/{link} -> {t} is not a version directory"));
                    } else if link == "current" {
                        r.checked.push(format!("apps: {name} {t}"));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => r.errors.push(format!("apps: {name}/{link}: {e}")),
            }
        }
        if let Ok(t) = fs::read_to_string(dir.join("trial")) {
            let t = t.trim();
            if t.is_empty() || !versions.iter().any(|v| v == t) {
                r.errors.push(format!("apps: {name}/trial names '{t}', which is not installed"));
            } else {
                r.notes.push(format!("apps: {name} {t} is on trial"));
            }
        }
    }
    r
}
