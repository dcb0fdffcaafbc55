//! `gwe check`: a read-only look at everything the agent keeps on the data partition, for an
//! operator after a power cut and for the power-cut campaign. Safe while the agent runs: it
//! opens files for reading only and changes nothing.
//!
//! Errors are states the agent's own writes must never leave behind, whatever instant the
//! power went: a queue record that is there but damaged, an active app version that is not
//! a whole directory, a state file (the edge store's too) that does not parse. Notes are
//! what a power cut may legitimately leave (a half-written record nobody was told was
//! stored, a temp file from a replacement that never got its name) and the agent clears at
//! its next start.

use std::fs;
use std::path::Path;

use crate::config::Config;
use crate::fsio::TEMP_SUFFIX;

#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<String>,
    pub notes: Vec<String>,
    /// What was looked at, one line each.
    pub checked: Vec<String>,
}

impl Report {
    fn error(&mut self, s: String) {
        self.errors.push(s);
    }
}

pub fn check(cfg: &Config) -> Report {
    let mut r = Report::default();
    queue(cfg, &mut r);
    apps(&cfg.paths.apps_dir(), &mut r);
    state_files(cfg, &mut r);
    r
}

fn queue(cfg: &Config, r: &mut Report) {
    let dir = cfg.paths.queue_dir();
    if !dir.exists() {
        r.checked.push("queue: none yet".into());
        return;
    }
    match crate::queue::inspect(&dir, cfg.queue.max_record, |_, _| {}) {
        Ok(i) => {
            let last = i.segments.last().map(|s| s.0);
            for p in i.problems {
                // A record cut short at the very end of the newest segment is a write the
                // power cut interrupted before it was acknowledged.
                let tail = last == Some(p.segment) && matches!(p.kind, crate::queue::ProblemKind::Torn { .. });
                if tail {
                    r.notes.push(format!("queue: {p} (an unacknowledged write cut short)"));
                } else {
                    r.error(format!("queue: {p}"));
                }
            }
            if i.counters.lost_records > 0 {
                r.error(format!("queue: {} records were lost to corruption", i.counters.lost_records));
            }
            r.checked.push(format!(
                "queue: {} segments, {} records, seq {}..{}",
                i.segments.len(),
                i.records,
                i.first_seq.unwrap_or(0),
                i.last_seq.unwrap_or(0)
            ));
        }
        Err(e) => r.error(format!("queue: reading {}: {e}", dir.display())),
    }
}

/// Each app's `current` (and `previous`) must name a whole version directory.
/// The installed apps, as the app store (`ota::store`, which owns their layout) finds them.
fn apps(root: &Path, r: &mut Report) {
    let found = crate::ota::store::check_layout(root);
    r.errors.extend(found.errors);
    r.notes.extend(found.notes);
    r.checked.extend(found.checked);
}

/// The small files the agent replaces whole: each must be there entirely or not at all.
fn state_files(cfg: &Config, r: &mut Report) {
    let mut n = 0;
    for dir in [
        cfg.paths.secrets_dir(),
        cfg.paths.app_config().parent().map(Path::to_path_buf).unwrap_or_default(),
        cfg.paths.edge_dir(),
        cfg.paths.state_dir.join("ota"),
    ] {
        for e in fs::read_dir(&dir).into_iter().flatten().filter_map(|e| e.ok()) {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if name.ends_with(TEMP_SUFFIX) {
                r.notes
                    .push(format!("{}: a replacement the power cut interrupted; the old file stands", path.display()));
                continue;
            }
            n += 1;
            match fs::read(&path) {
                Ok(b) if b.is_empty() => r.error(format!("{}: empty", path.display())),
                Ok(b) if name.ends_with(".json") => {
                    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&b) {
                        r.error(format!("{}: not JSON: {e}", path.display()));
                    }
                }
                Ok(b) if b.contains(&0) => r.error(format!("{}: has NUL bytes (a torn write)", path.display())),
                Ok(_) => {}
                Err(e) => r.error(format!("{}: {e}", path.display())),
            }
        }
    }
    r.checked.push(format!("state files: {n}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> Config {
        let text = format!("[paths]\nstate_dir = \"{}\"\n", dir.display());
        let p = dir.join("gwe.toml");
        fs::write(&p, text).unwrap();
        Config::from_file(&p).unwrap()
    }

    #[test]
    fn a_clean_state_has_no_errors_and_damage_is_named() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path());
        {
            let q = crate::queue::Queue::open(&c.paths.queue_dir(), c.queue.options()).unwrap();
            q.append(b"x").unwrap();
        }
        let app = c.paths.apps_dir().join("sensor");
        fs::create_dir_all(app.join("1.0")).unwrap();
        std::os::unix::fs::symlink("1.0", app.join("current")).unwrap();
        fs::create_dir_all(c.paths.secrets_dir()).unwrap();
        fs::write(c.paths.secrets_dir().join("cloud_token"), "abc").unwrap();
        fs::create_dir_all(c.paths.app_config().parent().unwrap()).unwrap();
        fs::write(c.paths.app_config(), "{}").unwrap();
        let r = check(&c);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.checked.iter().any(|l| l == "apps: sensor 1.0"), "{:?}", r.checked);

        // A dangling current link, a torn JSON file, a trial naming nothing, a NUL-filled token.
        fs::remove_file(app.join("current")).unwrap();
        std::os::unix::fs::symlink("2.0", app.join("current")).unwrap();
        fs::write(c.paths.app_config(), "{\"a\":").unwrap();
        fs::write(app.join("trial"), "3.0").unwrap();
        fs::write(c.paths.secrets_dir().join("cloud_token"), [0u8; 8]).unwrap();
        // A temp file is only a note.
        fs::write(c.paths.secrets_dir().join(format!("x{TEMP_SUFFIX}")), "half").unwrap();
        let r = check(&c);
        let all = r.errors.join("\n");
        assert_eq!(r.errors.len(), 4, "{all}");
        assert!(all.contains("current -> 2.0 is not a version directory"), "{all}");
        assert!(all.contains("apps.json: not JSON"), "{all}");
        assert!(all.contains("trial names '3.0'"), "{all}");
        assert!(all.contains("NUL bytes"), "{all}");
        assert!(r.notes.iter().any(|n| n.contains("the old file stands")), "{:?}", r.notes);
    }
}
