//! Captures apps' stdout/stderr: one thread polls every pipe and appends what it reads to the
//! app's log file, rotating by size with N backups. Memory is one fixed read buffer for all
//! pipes; nothing is kept per line. Rotation happens at a line boundary when the chunk has
//! one, so a line is never split across files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A log file with its rotation rule. Shared by the pipes that write to it.
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    backups: u32,
}

impl LogFile {
    pub fn new(path: PathBuf, max_bytes: u64, backups: u32) -> Self {
        Self { path, file: None, size: 0, max_bytes, backups }
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        // Just set above when it was None.
        self.file.as_mut().ok_or_else(|| io::Error::other("log file not open"))
    }

    /// Appends `chunk`, rotating whenever the file would pass `max_bytes`. Files end at a
    /// line boundary; only a single line longer than `max_bytes` is cut.
    pub fn write(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        self.open()?;
        if self.max_bytes == 0 {
            return self.append(chunk);
        }
        while !chunk.is_empty() {
            let room = usize::try_from(self.max_bytes.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if chunk.len() <= room {
                return self.append(chunk);
            }
            let whole_lines = chunk[..room].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let cut = if whole_lines == 0 && self.size == 0 { room.max(1) } else { whole_lines };
            self.append(&chunk[..cut])?;
            chunk = &chunk[cut..];
            self.rotate()?;
        }
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.open()?.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// NAME.log -> NAME.log.1 -> ... -> NAME.log.N (the oldest is dropped).
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.backups == 0 {
            fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            for i in (1..self.backups).rev() {
                fs::rename(backup(&self.path, i), backup(&self.path, i + 1)).or_else(ignore_missing)?;
            }
            fs::rename(&self.path, backup(&self.path, 1)).or_else(ignore_missing)?;
        }
        self.size = 0;
        Ok(())
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// `path.N`.
pub fn backup(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The last `max` bytes of a log file (starting at a line when it can).
pub fn tail(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
    f.read_to_end(&mut buf)?;
    if start > 0 {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            buf.drain(..=i);
        }
    }
    Ok(buf)
}

enum Msg {
    Add(OwnedFd, Arc<Mutex<LogFile>>),
    Stop,
}

/// Handle to the log thread.
#[derive(Clone)]
pub struct LogPump {
    tx: Sender<Msg>,
    wake: Arc<UnixStream>,
}

const READ_BUF: usize = 64 << 10;

impl LogPump {
    pub fn start() -> io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel();
        let h = std::thread::Builder::new().name("logs".into()).spawn(move || run(rx, wake_rx))?;
        Ok((Self { tx, wake: Arc::new(wake_tx) }, h))
    }

    /// Copies everything read from `fd` into `log` until the write ends are all closed.
    pub fn add(&self, fd: OwnedFd, log: Arc<Mutex<LogFile>>) {
        if self.tx.send(Msg::Add(fd, log)).is_ok() {
            let _ = (&*self.wake).write(&[1]);
        }
    }

    /// Stops after draining what the pipes hold now.
    pub fn stop(&self) {
        if self.tx.send(Msg::Stop).is_ok() {
            let _ = (&*self.wake).write(&[1]);
        }
    }
}

fn run(rx: Receiver<Msg>, wake: UnixStream) {
    let mut sources: Vec<(OwnedFd, Arc<Mutex<LogFile>>)> = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut stopping = false;
    loop {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(sources.len() + 1);
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
            for (fd, _) in &sources {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
            let timeout = if stopping { PollTimeout::ZERO } else { PollTimeout::NONE };
            match poll(&mut fds, timeout) {
                Ok(_) => fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("log capture: poll failed: {e}");
                    return;
                }
            }
        };
        if ready[0] {
            let mut drain = [0u8; 64];
            while matches!(io::Read::read(&mut &wake, &mut drain), Ok(n) if n > 0) {}
            while let Ok(m) = rx.try_recv() {
                match m {
                    Msg::Add(fd, log) => {
                        let _ = nix::fcntl::fcntl(
                            fd.as_raw_fd(),
                            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                        );
                        sources.push((fd, log));
                    }
                    Msg::Stop => stopping = true,
                }
            }
        }
        let mut closed = Vec::new();
        let mut any = false;
        for (i, (fd, log)) in sources.iter().enumerate() {
            if !ready.get(i + 1).copied().unwrap_or(false) {
                continue;
            }
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => closed.push(i),
                Ok(n) => {
                    any = true;
                    let mut l = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Err(e) = l.write(&buf[..n]) {
                        log::warn!("log capture: writing {}: {e}", l.path.display());
                    }
                }
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            sources.swap_remove(i);
        }
        if stopping && !any {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_n_backups_and_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app.log");
        let mut l = LogFile::new(p.clone(), 100, 2);
        for i in 0..20 {
            l.write(format!("line {i:03} of the app\n").as_bytes()).unwrap();
        }
        // One big chunk, as a read of a busy pipe returns.
        let big: String = (20..30).map(|i| format!("line {i:03} of the app\n")).collect();
        l.write(big.as_bytes()).unwrap();
        assert!(p.exists() && backup(&p, 1).exists() && backup(&p, 2).exists());
        assert!(!backup(&p, 3).exists());
        for f in [p.clone(), backup(&p, 1), backup(&p, 2)] {
            let text = fs::read_to_string(&f).unwrap();
            assert!(text.len() <= 100, "{} is {} bytes", f.display(), text.len());
            assert!(text.ends_with('\n') && text.lines().all(|l| l.starts_with("line ") && l.len() == 19), "{text:?}");
        }
        let last = fs::read_to_string(&p).unwrap();
        assert!(last.ends_with("line 029 of the app\n"));
    }

    #[test]
    fn tail_starts_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        fs::write(&p, "one\ntwo\nthree\n").unwrap();
        assert_eq!(tail(&p, 8).unwrap(), b"three\n");
        assert_eq!(tail(&p, 100).unwrap(), b"one\ntwo\nthree\n");
    }
}
