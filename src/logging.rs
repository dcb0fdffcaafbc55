//! Logging through `log`: to syslog when running as a daemon, to stderr in the foreground.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, r: &Record<'_>) {
        if self.enabled(r.metadata()) {
            // One write per line keeps lines from concurrent threads whole.
            let line = format!("gwe[{}] {}: {}\n", std::process::id(), r.level(), r.args());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stderr,
    Syslog,
}

/// Lines to the system logger through the C library's `syslog(3)`, which reconnects by itself
/// when syslogd restarts.
struct Syslog;

impl Log for Syslog {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, r: &Record<'_>) {
        let priority = match r.level() {
            log::Level::Error => libc::LOG_ERR,
            log::Level::Warn => libc::LOG_WARNING,
            log::Level::Info => libc::LOG_INFO,
            log::Level::Debug | log::Level::Trace => libc::LOG_DEBUG,
        };
        // A NUL inside the message would cut it short: show it instead.
        let line = r.args().to_string().replace('\0', "\\0");
        if let Ok(line) = std::ffi::CString::new(line) {
            // SAFETY: both strings are NUL-terminated and outlive the call; "%s" makes the
            // message data, never a format.
            unsafe { libc::syslog(priority, c"%s".as_ptr(), line.as_ptr()) };
        }
    }

    fn flush(&self) {}
}

/// Whether a system logger listens on `path` (/dev/log: datagram, or stream as some
/// syslogds use).
fn syslog_reachable(path: &str) -> std::io::Result<()> {
    use std::os::unix::net::{UnixDatagram, UnixStream};
    let dgram = UnixDatagram::unbound().and_then(|s| s.connect(path));
    match dgram {
        Ok(()) => Ok(()),
        Err(_) => UnixStream::connect(path).map(drop),
    }
}

/// Installs the global logger. Falls back to stderr when syslog is not reachable (a
/// BusyBox system without syslogd), saying so.
pub fn init(target: Target, level: LevelFilter) {
    log::set_max_level(level);
    if target == Target::Syslog {
        match syslog_reachable("/dev/log") {
            Ok(()) => {
                // SAFETY: the ident is a static NUL-terminated string, as openlog(3) keeps the
                // pointer; LOG_PID adds our pid to each line.
                unsafe { libc::openlog(c"gwe".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
                if log::set_logger(&Syslog).is_ok() {
                    return;
                }
            }
            Err(e) => eprintln!("gwe: syslog unavailable ({e}); logging to stderr"),
        }
    }
    let _ = log::set_logger(&Stderr);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_probe_finds_datagram_and_stream_loggers_only() {
        let dir = tempfile::tempdir().unwrap();
        let dgram = dir.path().join("dgram");
        let _d = std::os::unix::net::UnixDatagram::bind(&dgram).unwrap();
        assert!(syslog_reachable(dgram.to_str().unwrap()).is_ok());
        let stream = dir.path().join("stream");
        let _s = std::os::unix::net::UnixListener::bind(&stream).unwrap();
        assert!(syslog_reachable(stream.to_str().unwrap()).is_ok());
        let missing = dir.path().join("missing");
        assert!(syslog_reachable(missing.to_str().unwrap()).is_err());
        let plain = dir.path().join("file");
        std::fs::write(&plain, "").unwrap();
        assert!(syslog_reachable(plain.to_str().unwrap()).is_err());
    }
}
