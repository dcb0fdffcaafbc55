//! Program definitions in supervisord's language: `[program:NAME]` sections in files of a
//! conf directory, and the app-package form (a `supervisor.conf` whose single
//! `[supervisord]` section becomes `[program:NAME]`). A bad value costs only its program;
//! an unknown key is a warning.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use super::ini;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoRestart {
    Always,
    Never,
    /// Restart only when the exit code is not in `exitcodes`.
    Unexpected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigChange {
    Nothing,
    Signal(Signal),
    Restart,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub name: String,
    pub command: Vec<String>,
    pub directory: Option<PathBuf>,
    pub user: Option<String>,
    pub environment: Vec<(String, String)>,
    pub autostart: bool,
    pub autorestart: AutoRestart,
    pub exitcodes: Vec<i32>,
    pub startsecs: u64,
    pub startretries: u32,
    pub stopsignal: Signal,
    pub stopwaitsecs: u64,
    /// `None`: discarded (`NONE`).
    pub stdout_logfile: Option<PathBuf>,
    pub stdout_logfile_maxbytes: u64,
    pub stdout_logfile_backups: u32,
    pub stderr_logfile: Option<PathBuf>,
    pub stderr_logfile_maxbytes: u64,
    pub stderr_logfile_backups: u32,
    pub redirect_stderr: bool,
    pub priority: i32,
    /// What the app gets when the generic configuration from the cloud changes
    /// (`config_change`, a Gateway Engine key): nothing, a signal, or a restart.
    pub config_change: ConfigChange,
    /// The file it was read from.
    pub source: PathBuf,
}

/// A problem in a program file, named by file, line and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl ProgramError {
    fn at(file: &Path, line: Option<usize>, key: Option<&str>, message: String) -> Self {
        Self { file: file.into(), line, key: key.map(String::from), message }
    }
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ", line {l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ", key {k}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What reading program definitions gave.
#[derive(Debug, Default)]
pub struct Loaded {
    pub programs: Vec<Program>,
    /// Programs (or files) left out.
    pub errors: Vec<ProgramError>,
    /// Unknown keys and other things worth a look.
    pub warnings: Vec<ProgramError>,
}

impl Loaded {
    fn merge(&mut self, other: Loaded) {
        self.programs.extend(other.programs);
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }
}

const KEYS: &[&str] = &[
    "command",
    "directory",
    "user",
    "environment",
    "autostart",
    "autorestart",
    "exitcodes",
    "startsecs",
    "startretries",
    "stopsignal",
    "stopwaitsecs",
    "stdout_logfile",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
    "stderr_logfile",
    "stderr_logfile_maxbytes",
    "stderr_logfile_backups",
    "redirect_stderr",
    "priority",
    "config_change",
];

/// Reads every `*.conf` file in `dir`, in name order.
pub fn load_dir(dir: &Path, log_dir: &Path) -> Loaded {
    let mut out = Loaded::default();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "conf")).collect()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.errors.push(ProgramError {
                file: dir.into(),
                line: None,
                key: None,
                message: format!("cannot list: {e}"),
            });
            return out;
        }
    };
    files.sort();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => out.merge(parse_file(&text, &f, log_dir)),
            Err(e) => {
                out.errors.push(ProgramError { file: f, line: None, key: None, message: format!("cannot read: {e}") })
            }
        }
    }
    // A name defined twice: the first file (in name order) keeps it, and the other file is
    // reported as an error naming both, so neither `gwe check-config` nor the log is silent.
    let mut seen = std::collections::HashMap::new();
    let mut dupes = Vec::new();
    out.programs.retain(|p| match seen.entry(p.name.clone()) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(p.source.clone());
            true
        }
        std::collections::hash_map::Entry::Occupied(first) => {
            dupes.push(ProgramError {
                file: p.source.clone(),
                line: None,
                key: None,
                message: format!(
                    "program {:?} is defined here and in {}; the first (in file name order) is used, \
                     this one is ignored: rename one",
                    p.name,
                    first.get().display()
                ),
            });
            false
        }
    });
    out.errors.extend(dupes);
    out
}

/// Reads the `[program:NAME]` sections of one file.
pub fn parse_file(text: &str, file: &Path, log_dir: &Path) -> Loaded {
    let mut out = Loaded::default();
    for s in sections(text, file, &mut out) {
        match s.name.strip_prefix("program:") {
            Some(name) => out.merge(program(name.trim(), &s, file, log_dir)),
            None => out.warnings.push(ProgramError::at(
                file,
                Some(s.line),
                None,
                format!("section [{}] is not [program:NAME]; ignored", s.name),
            )),
        }
    }
    out
}

/// Reads an app package's `supervisor.conf`: its `[supervisord]` section is program `name`.
pub fn parse_package(text: &str, file: &Path, name: &str, log_dir: &Path) -> Loaded {
    let mut out = Loaded::default();
    let sections = sections(text, file, &mut out);
    let mut main = sections.iter().filter(|s| s.name == "supervisord");
    match (main.next(), main.next()) {
        (Some(s), None) => out.merge(program(name, s, file, log_dir)),
        (None, _) if out.errors.is_empty() => {
            out.errors.push(ProgramError::at(file, None, None, "no [supervisord] section".into()))
        }
        (None, _) => {}
        (Some(_), Some(s)) => {
            out.errors.push(ProgramError::at(file, Some(s.line), None, "more than one [supervisord] section".into()))
        }
    }
    out
}

/// The file's sections; a syntax error is recorded in `out` and gives none.
fn sections(text: &str, file: &Path, out: &mut Loaded) -> Vec<ini::Section> {
    ini::parse(text).unwrap_or_else(|e| {
        out.errors.push(ProgramError::at(file, Some(e.line), None, e.message));
        Vec::new()
    })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !n.starts_with('.')
}

fn program(name: &str, s: &ini::Section, file: &Path, log_dir: &Path) -> Loaded {
    let mut out = Loaded::default();
    let err = |line: usize, key: &str, message: String| ProgramError {
        file: file.into(),
        line: Some(line),
        key: Some(key.into()),
        message,
    };
    if !valid_name(name) {
        out.errors.push(ProgramError {
            file: file.into(),
            line: Some(s.line),
            key: None,
            message: format!("program name {name:?} must be letters, digits, '-', '_' or '.'"),
        });
        return out;
    }
    // Gateway defaults (the original Gateway Engine's): one small rotated log per app.
    let auto_log = |suffix: &str| log_dir.join(format!("{name}{suffix}.log"));
    let mut p = Program {
        name: name.into(),
        command: Vec::new(),
        directory: None,
        user: None,
        environment: Vec::new(),
        autostart: true,
        autorestart: AutoRestart::Unexpected,
        exitcodes: vec![0],
        startsecs: 1,
        startretries: 3,
        stopsignal: Signal::SIGTERM,
        stopwaitsecs: 10,
        stdout_logfile: Some(auto_log("")),
        stdout_logfile_maxbytes: 200 * 1024,
        stdout_logfile_backups: 1,
        stderr_logfile: Some(auto_log(".err")),
        stderr_logfile_maxbytes: 200 * 1024,
        stderr_logfile_backups: 1,
        redirect_stderr: true,
        priority: 999,
        config_change: ConfigChange::Nothing,
        source: file.into(),
    };
    let mut command_line = None;
    for e in &s.entries {
        let v = e.value.as_str();
        let res: Result<(), String> = match e.key.as_str() {
            "command" => {
                command_line = Some(e.line);
                match shlex::split(v) {
                    Some(words) if !words.is_empty() => {
                        p.command = words;
                        Ok(())
                    }
                    _ => Err(format!("cannot split {v:?} into words (unbalanced quotes?)")),
                }
            }
            "directory" => {
                p.directory = Some(v.into());
                Ok(())
            }
            "user" => {
                p.user = Some(v.into());
                Ok(())
            }
            "environment" => parse_env(v).map(|env| p.environment = env),
            "autostart" => parse_bool(v).map(|b| p.autostart = b),
            "autorestart" => match v.to_ascii_lowercase().as_str() {
                "unexpected" => {
                    p.autorestart = AutoRestart::Unexpected;
                    Ok(())
                }
                other => {
                    parse_bool(other).map(|b| p.autorestart = if b { AutoRestart::Always } else { AutoRestart::Never })
                }
            },
            "exitcodes" => v
                .split(',')
                .map(|c| c.trim().parse::<i32>().map_err(|_| format!("{c:?} is not an exit code")))
                .collect::<Result<Vec<_>, _>>()
                .map(|codes| p.exitcodes = codes),
            "startsecs" => parse_num(v).map(|n| p.startsecs = n),
            "startretries" => parse_num(v).map(|n| p.startretries = n),
            "stopsignal" => parse_signal(v).map(|sig| p.stopsignal = sig),
            "stopwaitsecs" => parse_num(v).map(|n| p.stopwaitsecs = n),
            "stdout_logfile" => {
                p.stdout_logfile = log_path(v, || auto_log(""));
                Ok(())
            }
            "stdout_logfile_maxbytes" => parse_size(v).map(|n| p.stdout_logfile_maxbytes = n),
            "stdout_logfile_backups" => parse_num(v).map(|n| p.stdout_logfile_backups = n),
            "stderr_logfile" => {
                p.stderr_logfile = log_path(v, || auto_log(".err"));
                Ok(())
            }
            "stderr_logfile_maxbytes" => parse_size(v).map(|n| p.stderr_logfile_maxbytes = n),
            "stderr_logfile_backups" => parse_num(v).map(|n| p.stderr_logfile_backups = n),
            "redirect_stderr" => parse_bool(v).map(|b| p.redirect_stderr = b),
            "priority" => v.parse().map(|n| p.priority = n).map_err(|_| format!("{v:?} is not a whole number")),
            "config_change" => match v.to_ascii_lowercase().as_str() {
                "none" | "false" => {
                    p.config_change = ConfigChange::Nothing;
                    Ok(())
                }
                "restart" => {
                    p.config_change = ConfigChange::Restart;
                    Ok(())
                }
                _ => parse_signal(v)
                    .map(|sig| p.config_change = ConfigChange::Signal(sig))
                    .map_err(|e| format!("{e} (or restart, none)")),
            },
            other => {
                debug_assert!(!KEYS.contains(&other));
                out.warnings.push(err(e.line, other, "unknown key; ignored".into()));
                Ok(())
            }
        };
        if let Err(message) = res {
            out.errors.push(err(e.line, &e.key, format!("{message}; program {name} is not loaded")));
            return out;
        }
    }
    if command_line.is_none() {
        out.errors.push(ProgramError {
            file: file.into(),
            line: Some(s.line),
            key: Some("command".into()),
            message: format!("program {name} has no command; it is not loaded"),
        });
        return out;
    }
    out.programs.push(p);
    out
}

fn log_path(v: &str, auto: impl Fn() -> PathBuf) -> Option<PathBuf> {
    match v {
        "NONE" => None,
        "AUTO" | "" => Some(auto()),
        path => Some(path.into()),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{v:?} is not true or false")),
    }
}

fn parse_num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{v:?} is not a whole number"))
}

/// `1024`, `200KB`, `50MB`, `1GB` (supervisord's units, powers of 1024).
fn parse_size(v: &str) -> Result<u64, String> {
    let up = v.trim().to_ascii_uppercase();
    let (num, mult) = if let Some(n) = up.strip_suffix("KB") {
        (n, 1u64 << 10)
    } else if let Some(n) = up.strip_suffix("MB") {
        (n, 1 << 20)
    } else if let Some(n) = up.strip_suffix("GB") {
        (n, 1 << 30)
    } else {
        (up.as_str(), 1)
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{v:?} is not a size like 200KB, 50MB or 1048576"))
}

fn parse_signal(v: &str) -> Result<Signal, String> {
    let up = v.trim().to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<Signal>().map_err(|_| format!("{v:?} is not a signal name (TERM, INT, HUP, QUIT, KILL, USR1, USR2)"))
}

/// `KEY="value",KEY2="v2"` (quotes optional, commas inside quotes kept).
fn parse_env(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = v.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let key = key.trim().to_string();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("environment entry {key:?} is not KEY=\"value\""));
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') || chars.peek() == Some(&'\'') {
            let q = chars.next().unwrap_or('"');
            let mut closed = false;
            for c in chars.by_ref() {
                if c == q {
                    closed = true;
                    break;
                }
                val.push(c);
            }
            if !closed {
                return Err(format!("environment value of {key} has no closing quote"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
            val = val.trim().to_string();
        }
        out.push((key, val));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Loaded {
        parse_file(text, Path::new("/etc/gwe/programs.d/x.conf"), Path::new("/var/log/gwe"))
    }

    #[test]
    fn full_program() {
        let l = one(
            "[program:modbus]\ncommand = /usr/bin/python3 -u \"my app.py\" --port 5020\ndirectory=/opt/m\nuser=nobody\n\
             environment=A=\"1,2\",B=x\nautostart=false\nautorestart=true\nexitcodes=0,2\nstartsecs=3\nstartretries=5\n\
             stopsignal=INT\nstopwaitsecs=4\nstdout_logfile=/tmp/m.log\nstdout_logfile_maxbytes=1MB\n\
             stdout_logfile_backups=3\nredirect_stderr=false\nstderr_logfile=NONE\npriority=10\n",
        );
        assert!(l.errors.is_empty() && l.warnings.is_empty(), "{:?} {:?}", l.errors, l.warnings);
        let p = &l.programs[0];
        assert_eq!(p.command, ["/usr/bin/python3", "-u", "my app.py", "--port", "5020"]);
        assert_eq!(p.environment, [("A".to_string(), "1,2".to_string()), ("B".into(), "x".into())]);
        assert_eq!((p.autostart, p.autorestart, p.exitcodes.clone()), (false, AutoRestart::Always, vec![0, 2]));
        assert_eq!((p.startsecs, p.startretries, p.stopsignal, p.stopwaitsecs), (3, 5, Signal::SIGINT, 4));
        assert_eq!((p.stdout_logfile_maxbytes, p.stdout_logfile_backups), (1 << 20, 3));
        assert_eq!((p.redirect_stderr, p.stderr_logfile.clone(), p.priority), (false, None, 10));
    }

    #[test]
    fn package_form_and_its_defaults() {
        let l = parse_package(
            "[supervisord]\ncommand=./run.sh\n",
            Path::new("supervisor.conf"),
            "sensor",
            Path::new("/var/log/gwe"),
        );
        let p = &l.programs[0];
        assert_eq!(p.name, "sensor");
        assert!(p.redirect_stderr);
        assert_eq!(p.stdout_logfile_maxbytes, 200 * 1024);
        assert_eq!(p.stdout_logfile_backups, 1);
        assert_eq!(p.stdout_logfile.as_deref(), Some(Path::new("/var/log/gwe/sensor.log")));
        assert_eq!(p.autorestart, AutoRestart::Unexpected);
    }

    #[test]
    fn a_bad_value_costs_only_its_program() {
        let l = one("[program:good]\ncommand=/bin/true\n\n[program:bad]\ncommand=/bin/false\nstartsecs=soon\n\n[program:also]\ncommand=/bin/true\nfrobnicate=1\n");
        assert_eq!(l.programs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["good", "also"]);
        assert_eq!(l.errors.len(), 1);
        let e = l.errors[0].to_string();
        assert!(
            e.starts_with("/etc/gwe/programs.d/x.conf, line 6, key startsecs: \"soon\" is not a whole number"),
            "{e}"
        );
        assert_eq!(
            l.warnings[0].to_string(),
            "/etc/gwe/programs.d/x.conf, line 10, key frobnicate: unknown key; ignored"
        );
    }

    #[test]
    fn missing_command_and_bad_syntax() {
        let l = one("[program:x]\ndirectory=/\n");
        assert!(l.programs.is_empty());
        assert!(l.errors[0].to_string().contains("key command: program x has no command"));
        let l = one("[program:x]\ncommand=/bin/true\nthis is not ini\n");
        assert_eq!(l.errors[0].line, Some(3));
        let l = one("[program:x]\ncommand=\"unbalanced\n");
        assert!(l.errors[0].message.contains("unbalanced"));
        let l = one("[program:x]\ncommand=/bin/true\nstopsignal=PANIC\n");
        assert!(l.errors[0].message.contains("not a signal"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("200KB"), Ok(204_800));
        assert_eq!(parse_size("50mb"), Ok(50 << 20));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn directory_loading_skips_broken_files_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.conf"), "[program:a]\ncommand=/bin/true\n").unwrap();
        std::fs::write(dir.path().join("b.conf"), "[program:b\ncommand=/bin/true\n").unwrap();
        std::fs::write(dir.path().join("c.conf"), "[program:a]\ncommand=/bin/false\n[program:c]\ncommand=/bin/true\n")
            .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let l = load_dir(dir.path(), Path::new("/var/log/gwe"));
        assert_eq!(l.programs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(l.programs[0].command, ["/bin/true"]);
        assert_eq!(l.errors.len(), 2, "{:?}", l.errors);
    }
}
