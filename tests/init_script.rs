//! The SysV/BusyBox init script drives the real agent: start, status, restart, stop.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn script(dir: &std::path::Path, action: &str) -> Output {
    Command::new("sh")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/init/sysv/gwe"))
        .arg(action)
        .env("DAEMON", env!("CARGO_BIN_EXE_gwe"))
        .env("CONFIG", dir.join("gwe.toml"))
        .env("PIDFILE", dir.join("gwe.pid"))
        .output()
        .unwrap()
}

fn app_state(dir: &std::path::Path) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_gwe"))
        .arg("--config")
        .arg(dir.join("gwe.toml"))
        .args(["ctl", "status", "app", "--json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["apps"][0]["state"].as_str().map(String::from)
}

fn wait_state(dir: &std::path::Path, want: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while app_state(dir).as_deref() != Some(want) {
        assert!(Instant::now() < until, "app never {want}: {:?}", app_state(dir));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn init_script_starts_restarts_and_stops_the_agent_and_its_apps() {
    if Command::new("start-stop-daemon").arg("--version").output().is_err() {
        eprintln!("SKIPPED: start-stop-daemon is not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("programs.d")).unwrap();
    std::fs::write(d.join("programs.d/app.conf"), "[program:app]\ncommand=sleep 300\nstartsecs=0\n").unwrap();
    std::fs::write(
        d.join("gwe.toml"),
        format!(
            "[device]\nserial = \"I1\"\n[paths]\nstate_dir = \"{0}/state\"\nlog_dir = \"{0}/log\"\nrun_dir = \"{0}/run\"\n\
             [ingest]\nlisten = \"127.0.0.1:0\"\n[supervisor]\nprograms_dir = \"{0}/programs.d\"\n",
            d.display()
        ),
    )
    .unwrap();
    assert_eq!(script(d, "status").status.code(), Some(3), "not running yet");
    let out = script(d, "start");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    wait_state(d, "RUNNING");
    assert_eq!(script(d, "status").status.code(), Some(0));
    let pid1 = std::fs::read_to_string(d.join("gwe.pid")).unwrap();
    assert!(script(d, "restart").status.success());
    wait_state(d, "RUNNING");
    assert_ne!(std::fs::read_to_string(d.join("gwe.pid")).unwrap(), pid1, "a new agent");
    let out = script(d, "stop");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(script(d, "status").status.code(), Some(3));
    assert_eq!(app_state(d), None, "agent gone, control socket gone");
    assert_eq!(script(d, "bogus").status.code(), Some(2));
}
