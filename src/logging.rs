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

/// Installs the global logger. Falls back to stderr when syslog is not reachable (a
/// BusyBox system without syslogd), saying so.
pub fn init(target: Target, level: LevelFilter) {
    log::set_max_level(level);
    if target == Target::Syslog {
        let fmt = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "gwe".into(),
            pid: std::process::id(),
        };
        match syslog::unix(fmt) {
            Ok(logger) => {
                if log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger))).is_ok() {
                    return;
                }
            }
            Err(e) => eprintln!("gwe: syslog unavailable ({e}); logging to stderr"),
        }
    }
    let _ = log::set_logger(&Stderr);
}
