//! Power-safe file replacement. Every file the agent persists goes through here.
//!
//! `write_atomic` writes a temp file in the target's directory, fsyncs it, renames it over
//! the target and fsyncs the directory. A power cut at any point leaves the old content or
//! the new one under the target's name, never a mix: the rename is atomic within a
//! filesystem, and both the data (first fsync) and the name (directory fsync) are on the
//! media before we return.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Suffix of temp files; a crash can leave one behind, `clean_temp` removes them.
pub const TEMP_SUFFIX: &str = ".gwe-tmp";

/// Replaces `path` with `data` atomically and durably, with file mode `mode`.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    match &result {
        Ok(()) => crate::health::ok(&path.to_string_lossy()),
        Err(e) => {
            crate::health::failed(&path.to_string_lossy(), e);
            // Best effort: the temp file is garbage whether or not this succeeds.
            let _ = fs::remove_file(&tmp);
        }
    }
    result
}

/// Replaces `path` with `data` atomically and durably (mode 0644).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, data, 0o644)
}

/// Makes a directory entry change (create, rename, unlink) in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its parents, and makes the new entries durable.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent_dir(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reserves `len` bytes for `file` and sets its length to at least `len` (new space reads as
/// zeros). Appending into reserved space does not change the file's size, so `fdatasync`
/// has no size to journal: each sync is cheaper and writes less metadata to flash.
/// Filesystems without `fallocate` answer `Unsupported`; callers go on without it.
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    #[cfg(target_env = "musl")]
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    #[cfg(not(target_env = "musl"))]
    // SAFETY: fallocate64 on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::fallocate64(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Err(io::Error::new(io::ErrorKind::Unsupported, e)),
            _ => Err(e),
        }
    }
}

/// A filesystem's size, what is free and what an unprivileged writer may still use, in bytes
/// (statvfs(3)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    pub free: u64,
    pub available: u64,
}

/// The space of the filesystem holding `path`: the one place the agent reads statvfs.
// statvfs fields are 32-bit on armv7: the casts are not no-ops there.
#[allow(clippy::unnecessary_cast)]
pub fn space(path: &Path) -> io::Result<Space> {
    let st = nix::sys::statvfs::statvfs(path)?;
    let frag = st.fragment_size() as u64;
    Ok(Space {
        total: st.blocks() as u64 * frag,
        free: st.blocks_free() as u64 * frag,
        available: st.blocks_available() as u64 * frag,
    })
}

/// Removes temp files a crash left in `dir`.
pub fn clean_temp(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name: OsString = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(TEMP_SUFFIX);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new content").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new content");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn mode_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        write_atomic_mode(&p, b"secret", 0o600).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn stale_temp_files_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("ack{TEMP_SUFFIX}")), b"torn").unwrap();
        fs::write(dir.path().join("keep"), b"x").unwrap();
        assert_eq!(clean_temp(dir.path()).unwrap(), 1);
        assert!(dir.path().join("keep").exists());
    }

    #[test]
    fn preallocation_sets_the_length_and_reads_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let f =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.path().join("p")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"head", 0).unwrap();
        preallocate(&f, 8192).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 8192);
        let bytes = fs::read(dir.path().join("p")).unwrap();
        assert_eq!(&bytes[..4], b"head");
        assert!(bytes[4..].iter().all(|&b| b == 0));
    }

    #[test]
    fn durable_dirs_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all_durable(&deep).unwrap();
    }
}
