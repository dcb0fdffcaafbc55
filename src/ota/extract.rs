//! Unpacks a package (`.tar.gz`) into a fresh directory, refusing anything that could escape
//! it or harm the system: absolute paths, `..`, symlinks pointing outside, entries reached
//! through a symlink, hard links to anything but a file already unpacked here, device nodes
//! and FIFOs, duplicate entries, and archives over the size or entry-count caps (tar bombs).
//! Every refusal names the offending entry. Files are written by us (never by following a
//! path the archive controls) and lose setuid/setgid/sticky bits.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use tar::{Archive, EntryType};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes all files may hold together, unpacked.
    pub max_bytes: u64,
    /// Most entries (files, directories, links).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: 256 << 20, max_entries: 10_000 }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub enum ExtractError {
    /// An entry that is not allowed, and why.
    Refused {
        entry: String,
        why: String,
    },
    /// The archive is over a cap.
    TooBig(String),
    /// The gzip or tar data is truncated or corrupt.
    Corrupt(String),
    Io(String, io::Error),
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { entry, why } => write!(f, "refused entry {entry:?}: {why}"),
            Self::TooBig(why) => write!(f, "refused package: {why}"),
            Self::Corrupt(why) => write!(f, "the package is truncated or corrupt: {why}"),
            Self::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for ExtractError {}

fn refuse(entry: &Path, why: impl Into<String>) -> ExtractError {
    ExtractError::Refused { entry: entry.display().to_string(), why: why.into() }
}

/// The entry's path as plain components below the root, or why it is not one.
fn clean_relative(p: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("'..' in the path"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("empty path");
    }
    Ok(out)
}

/// Where a symlink at `link` (relative to the root) pointing to `target` lands, if inside.
fn symlink_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> = link.parent().map(|p| p.iter().collect()).unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Unpacks `archive` into `dest`, which must be an empty directory.
pub fn extract(archive: &Path, dest: &Path, limits: Limits) -> Result<Extracted, ExtractError> {
    let file = fs::File::open(archive).map_err(|e| ExtractError::Io(format!("opening {}", archive.display()), e))?;
    let mut ar = Archive::new(GzDecoder::new(io::BufReader::new(file)));
    let corrupt = |e: io::Error| ExtractError::Corrupt(e.to_string());
    let mut out = Extracted::default();
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for entry in ar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        out.entries += 1;
        if out.entries > limits.max_entries {
            return Err(ExtractError::TooBig(format!("more than {} entries", limits.max_entries)));
        }
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let kind = entry.header().entry_type();
        // `tar -C dir -czf pkg.tar.gz .` starts with an entry for the root itself: skip it.
        if kind == EntryType::Directory && raw.components().all(|c| c == Component::CurDir) {
            continue;
        }
        let rel = clean_relative(&raw).map_err(|why| refuse(&raw, why))?;
        // A PAX sparse file (GNU.sparse.*) looks like a regular file whose data is a map of
        // holes: unpacked as it is, it would be a wrong file, so it is refused.
        if let Some(ext) = entry.pax_extensions().map_err(corrupt)? {
            for e in ext {
                if e.map_err(corrupt)?.key().is_ok_and(|k| k.starts_with("GNU.sparse")) {
                    return Err(refuse(&raw, "sparse file (not supported in packages)"));
                }
            }
        }
        // Nothing may be reached through a symlink of this archive.
        let mut prefix = PathBuf::new();
        for c in rel.parent().into_iter().flat_map(Path::components) {
            prefix.push(c);
            if symlinks.contains(&prefix) {
                return Err(refuse(&raw, format!("goes through the symlink {}", prefix.display())));
            }
        }
        if kind != EntryType::Directory && !seen.insert(rel.clone()) {
            return Err(refuse(&raw, "duplicate entry"));
        }
        let target = dest.join(&rel);
        let io_err = |e: io::Error| ExtractError::Io(format!("unpacking {}", raw.display()), e);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err)?;
        }
        match kind {
            EntryType::Directory => fs::create_dir_all(&target).map_err(io_err)?,
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.header().size().map_err(corrupt)?;
                out.bytes += size;
                if out.bytes > limits.max_bytes {
                    return Err(ExtractError::TooBig(format!("more than {} bytes unpacked", limits.max_bytes)));
                }
                // Keep the permission bits, drop setuid, setgid and sticky.
                let mode = entry.header().mode().map_err(corrupt)? & 0o777;
                let mut f =
                    OpenOptions::new().write(true).create_new(true).mode(mode | 0o600).open(&target).map_err(io_err)?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut f).map_err(corrupt)?;
                if copied != size {
                    return Err(ExtractError::Corrupt(format!("{} ends early", raw.display())));
                }
                f.sync_all().map_err(io_err)?;
                files.insert(rel);
            }
            EntryType::Symlink => {
                let link =
                    entry.link_name().map_err(corrupt)?.ok_or_else(|| refuse(&raw, "symlink without a target"))?;
                if !symlink_inside(&rel, &link) {
                    return Err(refuse(&raw, format!("symlink to {} points outside the package", link.display())));
                }
                std::os::unix::fs::symlink(&link, &target).map_err(io_err)?;
                symlinks.insert(rel);
            }
            EntryType::Link => {
                let link =
                    entry.link_name().map_err(corrupt)?.ok_or_else(|| refuse(&raw, "hard link without a target"))?;
                let to = clean_relative(&link).map_err(|why| refuse(&raw, format!("hard link target: {why}")))?;
                if !files.contains(&to) {
                    return Err(refuse(
                        &raw,
                        format!("hard link to {}, which is not a file of this package", link.display()),
                    ));
                }
                fs::hard_link(dest.join(&to), &target).map_err(io_err)?;
            }
            EntryType::Char | EntryType::Block => return Err(refuse(&raw, "device node")),
            EntryType::Fifo => return Err(refuse(&raw, "FIFO")),
            other => return Err(refuse(&raw, format!("unsupported entry type {other:?}"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use tar::{Builder, Header};

    /// Adds an entry with a raw name (bypassing the builder's own path checks).
    fn raw(b: &mut Builder<Vec<u8>>, name: &str, kind: EntryType, link: Option<&str>, data: &[u8]) {
        let mut h = Header::new_gnu();
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        if let Some(l) = link {
            let lf = &mut h.as_old_mut().linkname;
            lf.fill(0);
            lf[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn archive(dir: &Path, build: impl FnOnce(&mut Builder<Vec<u8>>)) -> PathBuf {
        let mut b = Builder::new(Vec::new());
        build(&mut b);
        let tar = b.into_inner().unwrap();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let path = dir.join("app.v1.tar.gz");
        fs::write(&path, gz.finish().unwrap()).unwrap();
        path
    }

    fn run(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> (tempfile::TempDir, Result<Extracted, ExtractError>) {
        let dir = tempfile::tempdir().unwrap();
        let pkg = archive(dir.path(), build);
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let r = extract(&pkg, &dest, Limits { max_bytes: 1 << 20, max_entries: 100 });
        (dir, r)
    }

    fn refused(build: impl FnOnce(&mut Builder<Vec<u8>>), entry: &str, why: &str) {
        let (dir, r) = run(build);
        match r {
            Err(ExtractError::Refused { entry: e, why: w }) => {
                assert_eq!(e, entry);
                assert!(w.contains(why), "{w:?} should say {why:?}");
            }
            other => panic!("expected a refusal of {entry}, got {other:?}"),
        }
        // Nothing landed outside the destination.
        assert!(!dir.path().join("escaped").exists());
    }

    #[test]
    fn a_normal_package_unpacks() {
        let install: &[u8] = b"#!/bin/sh\necho hi\n";
        let conf: &[u8] = b"[supervisord]\ncommand=./run\n";
        let (dir, r) = run(|b| {
            raw(b, "install.sh", EntryType::Regular, None, install);
            raw(b, "supervisor.conf", EntryType::Regular, None, conf);
            raw(b, "lib/", EntryType::Directory, None, b"");
            raw(b, "lib/data.bin", EntryType::Regular, None, &[7; 1000]);
            raw(b, "current-data", EntryType::Symlink, Some("lib/data.bin"), b"");
            raw(b, "lib/same", EntryType::Link, Some("lib/data.bin"), b"");
        });
        let bytes = (1000 + install.len() + conf.len()) as u64;
        assert_eq!(r.unwrap(), Extracted { entries: 6, bytes });
        let out = dir.path().join("out");
        assert_eq!(fs::read(out.join("current-data")).unwrap(), vec![7; 1000]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(out.join("install.sh")).unwrap().permissions().mode() & 0o7777, 0o755);
    }

    #[test]
    fn archives_made_with_tar_dot_unpack() {
        // What `tar -C dir -czf pkg.tar.gz .` writes.
        let (dir, r) = run(|b| {
            raw(b, "./", EntryType::Directory, None, b"");
            raw(b, "./install.sh", EntryType::Regular, None, b"#!/bin/sh\n");
            raw(b, "./lib/", EntryType::Directory, None, b"");
            raw(b, "./lib/x", EntryType::Regular, None, b"x");
        });
        assert_eq!(r.unwrap().entries, 4);
        assert!(dir.path().join("out/lib/x").exists());
        refused(|b| raw(b, "./", EntryType::Regular, None, b"x"), "./", "empty path");
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        refused(|b| raw(b, "/etc/escaped", EntryType::Regular, None, b"x"), "/etc/escaped", "absolute path");
        refused(|b| raw(b, "../escaped", EntryType::Regular, None, b"x"), "../escaped", "'..'");
        refused(|b| raw(b, "a/../../escaped", EntryType::Regular, None, b"x"), "a/../../escaped", "'..'");
        refused(|b| raw(b, "link", EntryType::Symlink, Some("/etc"), b""), "link", "points outside");
        refused(|b| raw(b, "d/link", EntryType::Symlink, Some("../../x"), b""), "d/link", "points outside");
        refused(
            |b| {
                raw(b, "link", EntryType::Symlink, Some("."), b"");
                raw(b, "link/escaped", EntryType::Regular, None, b"x");
            },
            "link/escaped",
            "through the symlink link",
        );
        refused(|b| raw(b, "hard", EntryType::Link, Some("/etc/passwd"), b""), "hard", "absolute path");
        refused(|b| raw(b, "hard", EntryType::Link, Some("../x"), b""), "hard", "'..'");
        refused(|b| raw(b, "hard", EntryType::Link, Some("nothere"), b""), "hard", "not a file of this package");
        refused(|b| raw(b, "dev/sda", EntryType::Block, None, b""), "dev/sda", "device node");
        refused(|b| raw(b, "tty", EntryType::Char, None, b""), "tty", "device node");
        refused(|b| raw(b, "pipe", EntryType::Fifo, None, b""), "pipe", "FIFO");
        refused(
            |b| {
                raw(b, "install.sh", EntryType::Regular, None, b"a");
                raw(b, "install.sh", EntryType::Regular, None, b"b");
            },
            "install.sh",
            "duplicate",
        );
    }

    #[test]
    fn tar_bombs_and_truncation_are_refused() {
        let (_d, r) = run(|b| {
            for i in 0..101 {
                raw(b, &format!("f{i}"), EntryType::Regular, None, b"");
            }
        });
        assert!(matches!(r, Err(ExtractError::TooBig(ref w)) if w.contains("100 entries")), "{r:?}");
        let (_d, r) = run(|b| {
            raw(b, "big1", EntryType::Regular, None, &vec![0; 600 << 10]);
            raw(b, "big2", EntryType::Regular, None, &vec![0; 600 << 10]);
        });
        assert!(matches!(r, Err(ExtractError::TooBig(ref w)) if w.contains("bytes")), "{r:?}");

        let dir = tempfile::tempdir().unwrap();
        let pkg = archive(dir.path(), |b| raw(b, "install.sh", EntryType::Regular, None, &[b'x'; 5000]));
        let bytes = fs::read(&pkg).unwrap();
        fs::write(&pkg, &bytes[..bytes.len() / 2]).unwrap();
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let e = extract(&pkg, &dest, Limits::default()).unwrap_err();
        assert!(matches!(e, ExtractError::Corrupt(_)), "{e:?}");
        assert!(e.to_string().contains("truncated or corrupt"), "{e}");
    }
}
