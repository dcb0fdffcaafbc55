//! The control socket (`/run/gwe/ctl.sock`, mode 0600 in a 0700 directory: root only) and
//! the `gwe ctl` client. One request line, one JSON answer, then the connection closes.
//!
//! Requests: `status`, `start NAME`, `stop NAME`, `restart NAME`, `tail NAME [BYTES]`,
//! `app list`, `app install PATH`, `app remove NAME`, `app rollback NAME`.
//! Answers: `{"ok":true,"apps":[...]}`, `{"ok":true,"log":"..."}`, `{"ok":true,"installed":[...]}`
//! or `{"ok":false,"error":"..."}`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fsio;
use crate::ota::install::{InstallError, Installer};
use crate::supervisor::{logs, AppStatus};

pub const SOCKET_NAME: &str = "ctl.sock";
/// Longest request line accepted.
const MAX_REQUEST: u64 = 512;

/// Listens on `run_dir/ctl.sock` and answers on a thread of its own.
pub fn serve(run_dir: &Path, apps: Arc<Installer>) -> io::Result<PathBuf> {
    fsio::create_dir_all_durable(run_dir)?;
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700))?;
    let path = run_dir.join(SOCKET_NAME);
    // A socket left by a killed agent; the queue lock already ensured we are the only agent.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new().name("ctl".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let apps = apps.clone();
            // Start, stop and installs wait for the app to settle; other clients need not wait.
            let _ = std::thread::Builder::new().name("ctl-conn".into()).spawn(move || handle(conn, &apps));
        }
    })?;
    Ok(path)
}

fn handle(conn: UnixStream, apps: &Installer) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let answer = match BufReader::new((&conn).take(MAX_REQUEST)).read_line(&mut line) {
        Ok(_) => answer(line.trim(), apps),
        Err(e) => json!({"ok": false, "error": format!("reading the request: {e}")}),
    };
    let _ = (&conn).write_all(format!("{answer}\n").as_bytes());
    if answer["restart"] == true {
        crate::ota::selfupdate::request_restart();
    }
}

fn answer(req: &str, apps: &Installer) -> Value {
    let sup = apps.supervisor();
    if let Some(rest) = req.strip_prefix("app ") {
        return app_answer(rest.trim(), apps);
    }
    let words: Vec<&str> = req.split_whitespace().collect();
    let one = |r: Result<AppStatus, crate::supervisor::AppError>| match r {
        Ok(a) => json!({"ok": true, "apps": [a]}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    };
    match words.as_slice() {
        ["status"] => json!({"ok": true, "apps": sup.status(), "faults": crate::health::list()}),
        ["status", name] => match sup.status().into_iter().find(|a| a.name == *name) {
            Some(a) => json!({"ok": true, "apps": [a]}),
            None => json!({"ok": false, "error": format!("no such app: {name}")}),
        },
        ["start", name] => one(sup.start_app(name)),
        ["stop", name] => one(sup.stop_app(name)),
        ["restart", name] => one(sup.restart_app(name)),
        ["tail", name, rest @ ..] => {
            let bytes = rest.first().and_then(|b| b.parse().ok()).unwrap_or(1600u64);
            match sup.status().into_iter().find(|a| a.name == *name) {
                None => json!({"ok": false, "error": format!("no such app: {name}")}),
                Some(AppStatus { log: None, .. }) => {
                    json!({"ok": false, "error": format!("{name} has no log file")})
                }
                Some(AppStatus { log: Some(p), .. }) => match logs::tail(&p, bytes) {
                    Ok(b) => json!({"ok": true, "log": String::from_utf8_lossy(&b)}),
                    Err(e) => {
                        json!({"ok": false, "error": format!("reading {}: {e}", p.display())})
                    }
                },
            }
        }
        _ => {
            json!({"ok": false, "error": format!("unknown request {req:?}; use status, start, stop, restart or tail")})
        }
    }
}

/// `app ...` requests: installed versions, installs, removal, rollback.
fn app_answer(req: &str, apps: &Installer) -> Value {
    let failed = |e: InstallError| json!({"ok": false, "error": e.to_string()});
    match req.split_once(' ').unwrap_or((req, "")) {
        ("list", "") => json!({"ok": true, "installed": apps.installed()}),
        // A directory (a USB stick, say): the newest package of each app in it.
        ("install", path) if Path::new(path).is_dir() => {
            let results = apps.install_dir(Path::new(path), false);
            if results.is_empty() {
                return json!({"ok": false, "error": format!("{path} holds no NAME.vVERSION.tar.gz package")});
            }
            let ok = results.iter().all(|(_, r)| r.is_ok());
            let restart = results.iter().any(|(_, r)| r.as_ref().is_ok_and(|r| r.new_agent()));
            let mut output = String::new();
            let mut installed = Vec::new();
            let mut failures = Vec::new();
            for (p, r) in &results {
                let file = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                match r {
                    Ok(r) => {
                        output.push_str(&format!("{file}: installed {} {}\n", r.name, r.version));
                        installed.push(apps.app(&r.name));
                    }
                    Err(e) => failures.push(format!("{file}: {e}")),
                }
            }
            json!({"ok": ok, "report": {"output": output}, "installed": installed, "restart": restart,
                   "error": failures.join("; ")})
        }
        // The path is the rest of the line, so it may hold spaces.
        ("install", path) if !path.is_empty() => match apps.install(Path::new(path)) {
            Ok(r) => {
                let restart = r.new_agent();
                json!({"ok": true, "report": r, "installed": [apps.app(&r.name)], "restart": restart})
            }
            Err(e) => failed(e),
        },
        ("remove", name) if !name.is_empty() => match apps.remove(name) {
            Ok(()) => json!({"ok": true, "installed": []}),
            Err(e) => failed(e),
        },
        ("rollback", name) if !name.is_empty() => match apps.rollback(name) {
            Ok(i) => json!({"ok": true, "installed": [i]}),
            Err(e) => failed(e),
        },
        _ => {
            json!({"ok": false, "error": format!("unknown request \"app {req}\"; use app list, install PATH, remove NAME or rollback NAME")})
        }
    }
}

/// How `gwe ctl` ended, for its exit status.
pub enum Outcome {
    Ok,
    /// The agent answered with an error (unknown app, app failed to start, ...).
    Refused,
    /// The agent could not be reached.
    Unreachable,
}

/// `gwe ctl ...`: sends `request`, prints the answer for a person (or as JSON).
pub fn client(run_dir: &Path, request: &str, json_out: bool) -> Outcome {
    let path = run_dir.join(SOCKET_NAME);
    let reply = (|| -> io::Result<Value> {
        let mut s = UnixStream::connect(&path)?;
        s.write_all(format!("{request}\n").as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        serde_json::from_str(&text).map_err(io::Error::other)
    })();
    let v = match reply {
        Ok(v) => v,
        Err(e) => {
            eprintln!("gwe ctl: cannot reach the agent at {}: {e}", path.display());
            return Outcome::Unreachable;
        }
    };
    if json_out {
        println!("{v}");
    } else if let Some(log) = v.get("log").and_then(Value::as_str) {
        print!("{log}");
    } else if let Some(list) = v.get("installed").and_then(Value::as_array) {
        if let Some(out) = v["report"]["output"].as_str() {
            print!("{out}");
        }
        for a in list {
            let field = |k: &str| a[k].as_str().unwrap_or("-").to_string();
            println!("{:<24} current {:<12} previous {}", field("name"), field("current"), field("previous"));
        }
    } else if let Some(apps) = v.get("apps").and_then(Value::as_array) {
        for a in apps {
            println!("{}", status_line(a));
        }
        // Faults go to stderr: stdout keeps supervisorctl's format for scripts.
        for f in v.get("faults").and_then(Value::as_array).into_iter().flatten() {
            let s = |k: &str| f[k].as_str().unwrap_or("?").to_string();
            eprintln!("gwe ctl: fault: {} cannot write: {} ({} failed writes)", s("part"), s("error"), f["count"]);
        }
    }
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        Outcome::Ok
    } else {
        if !json_out {
            eprintln!("gwe ctl: {}", v.get("error").and_then(Value::as_str).unwrap_or("failed"));
        }
        Outcome::Refused
    }
}

/// `name  RUNNING  pid 42, uptime 0:01:05` as supervisorctl prints it.
fn status_line(a: &Value) -> String {
    let name = a["name"].as_str().unwrap_or("?");
    let state = a["state"].as_str().unwrap_or("?");
    let detail = match (a["pid"].as_i64(), a["uptime"].as_u64()) {
        (Some(pid), Some(up)) => format!("pid {pid}, uptime {}:{:02}:{:02}", up / 3600, up / 60 % 60, up % 60),
        _ => a["description"].as_str().unwrap_or("").to_string(),
    };
    format!("{name:<24} {state:<10} {detail}")
}
