//! The agent as a process: apps come back after it is SIGKILLed, exactly once; a broken
//! program file costs only its program; the control socket is root-only.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "pids and test timestamps are small"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gwe::supervisor::procfs;

struct Agent {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Agent {
    fn new(programs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("programs.d")).unwrap();
        for (file, text) in programs {
            std::fs::write(d.join("programs.d").join(file), text).unwrap();
        }
        let cfg = format!(
            "[device]\nserial = \"T1\"\n[paths]\nstate_dir = \"{0}/state\"\nlog_dir = \"{0}/log\"\nrun_dir = \"{0}/run\"\n\
             [ingest]\nlisten = \"127.0.0.1:0\"\n[supervisor]\nprograms_dir = \"{0}/programs.d\"\n",
            d.display()
        );
        std::fs::write(d.join("gwe.toml"), cfg).unwrap();
        Self { dir, child: None }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_gwe"))
            .args(["--config"])
            .arg(self.path().join("gwe.toml"))
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path().join("agent.err")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap(); // SIGKILL, as a crash or the OOM killer would
        c.wait().unwrap();
    }

    /// `gwe --config ... ARGS` (any subcommand).
    fn ctl_raw(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gwe"))
            .arg("--config")
            .arg(self.path().join("gwe.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    /// Waits until the agent answers on its control socket.
    fn wait_running_agent(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        while !self.ctl(&["status"]).status.success() {
            assert!(Instant::now() < until, "the agent did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gwe"))
            .arg("--config")
            .arg(self.path().join("gwe.toml"))
            .arg("ctl")
            .args(args)
            .output()
            .unwrap()
    }

    fn wait_running(&self, name: &str) -> serde_json::Value {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.ctl(&["status", name, "--json"]);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                if v["apps"][0]["state"] == "RUNNING" {
                    return v["apps"][0].clone();
                }
            }
            assert!(Instant::now() < until, "{name} not RUNNING: {}", String::from_utf8_lossy(&out.stdout));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: the agent stops its apps before it exits.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

/// Live processes whose environment carries `GWE_TEST_MARK=mark`: (pid, pgid).
fn marked(mark: &str) -> Vec<(i32, i32)> {
    let needle = format!("GWE_TEST_MARK={mark}");
    procfs::all()
        .filter(|s| s.alive())
        .filter(|s| {
            std::fs::read(format!("/proc/{}/environ", s.pid))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
        })
        .map(|s| (s.pid, s.pgrp))
        .collect()
}

fn wait_count(mark: &str, n: usize) -> Vec<(i32, i32)> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let m = marked(mark);
        if m.len() == n {
            return m;
        }
        assert!(Instant::now() < until, "expected {n} marked processes, found {m:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkilled_agent_comes_back_with_exactly_one_instance_of_each_app() {
    let mark = format!("m{}", std::process::id());
    let prog = format!(
        "[program:forker]\ncommand=sh -c 'sleep 300 & sleep 300 & wait'\nstartsecs=0\nenvironment=GWE_TEST_MARK=\"{mark}\"\n"
    );
    let mut agent = Agent::new(&[("forker.conf", &prog)]);
    agent.start();
    let first = agent.wait_running("forker");
    let old = wait_count(&mark, 3); // sh and its two sleeps
    agent.kill();
    // The main process died with the agent (parent-death signal); its children did not.
    let survivors = wait_count(&mark, 2);
    assert!(survivors.iter().all(|(_, pgid)| *pgid == first["pid"].as_i64().unwrap() as i32));

    agent.start();
    let second = agent.wait_running("forker");
    assert_ne!(first["pid"], second["pid"]);
    let now = wait_count(&mark, 3);
    let new_pgid = second["pid"].as_i64().unwrap() as i32;
    assert!(now.iter().all(|(_, pgid)| *pgid == new_pgid), "only the new instance runs: {now:?}");
    assert!(now.iter().all(|p| !old.contains(p)));
    let err = std::fs::read_to_string(agent.path().join("agent.err")).unwrap();
    assert!(err.contains("ended forker, left running by a previous agent"), "{err}");
}

#[test]
fn a_broken_program_file_leaves_the_others_running() {
    let mut agent = Agent::new(&[
        ("good.conf", "[program:good]\ncommand=sleep 300\nstartsecs=0\n"),
        ("bad.conf", "[program:bad]\ncommand=sleep 300\nautorestart=sometimes\n"),
        ("worse.conf", "this is not ini\n"),
    ]);
    agent.start();
    agent.wait_running("good");
    let all: serde_json::Value = serde_json::from_slice(&agent.ctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(all["apps"].as_array().unwrap().len(), 1);
    let err = std::fs::read_to_string(agent.path().join("agent.err")).unwrap();
    assert!(err.contains("bad.conf, line 3, key autorestart"), "{err}");
    assert!(err.contains("worse.conf, line 1"), "{err}");
}

#[test]
fn check_config_reports_every_program_file_problem() {
    let agent = Agent::new(&[
        ("1-good.conf", "[program:good]\ncommand=sleep 300\n"),
        ("2-twin.conf", "[program:good]\ncommand=sleep 1\n"),
        ("3-bad.conf", "[program:bad]\ncommand=sleep 300\nautorestart=sometimes\n"),
    ]);
    let out = agent.ctl_raw(&["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("3-bad.conf, line 3, key autorestart"), "{text}");
    assert!(
        text.contains("2-twin.conf: program \"good\" is defined here and in ") && text.contains("1-good.conf"),
        "{text}"
    );
    assert!(text.contains("1 program"), "{text}");
    std::fs::remove_file(agent.path().join("programs.d/2-twin.conf")).unwrap();
    std::fs::remove_file(agent.path().join("programs.d/3-bad.conf")).unwrap();
    let out = agent.ctl_raw(&["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_start_the_config_makes_impossible_exits_3_and_names_it() {
    let agent = Agent::new(&[]);
    let cfg = agent.path().join("gwe.toml");
    let ca = agent.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap()
        + &format!("[cloud]\nurl = \"https://127.0.0.1:9\"\nca_file = \"{}\"\n", ca.display());
    std::fs::write(&cfg, text).unwrap();
    let out = agent.ctl_raw(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cloud link:") && err.contains("ca.pem"), "{err}");
}

#[test]
fn queue_stats_into_a_closed_pipe_is_not_a_crash() {
    let mut agent = Agent::new(&[]);
    agent.start();
    let until = Instant::now() + Duration::from_secs(10);
    while !agent.path().join("state/queue").exists() {
        assert!(Instant::now() < until, "no queue");
        std::thread::sleep(Duration::from_millis(50));
    }
    for args in [&["queue", "stats"][..], &["queue", "dump"], &["check-config"]] {
        // `gwe queue stats | head -0`: the reader is gone before the first write.
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let out = Command::new(env!("CARGO_BIN_EXE_gwe"))
            .arg("--config")
            .arg(agent.path().join("gwe.toml"))
            .args(args)
            .stdout(Stdio::from(w))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn sighup_reads_the_program_files_again() {
    let mut agent = Agent::new(&[("a.conf", "[program:a]\ncommand=sleep 300\nstartsecs=0\n")]);
    agent.start();
    agent.wait_running("a");
    std::fs::write(agent.path().join("programs.d/b.conf"), "[program:b]\ncommand=sleep 300\nstartsecs=0\n").unwrap();
    let pid = agent.child.as_ref().unwrap().id() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP).unwrap();
    agent.wait_running("b");
    agent.wait_running("a");
    assert!(agent.child.as_mut().unwrap().try_wait().unwrap().is_none(), "SIGHUP must not stop the agent");
}

#[test]
fn ctl_is_root_only_and_exit_codes_are_clear() {
    let mut agent = Agent::new(&[("a.conf", "[program:a]\ncommand=sleep 300\nstartsecs=0\n")]);
    assert_eq!(agent.ctl(&["status"]).status.code(), Some(4), "no agent: unreachable");
    agent.start();
    agent.wait_running("a");
    let sock: PathBuf = agent.path().join("run/ctl.sock");
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(agent.path().join("run")).unwrap().permissions().mode() & 0o777, 0o700);
    let out = agent.ctl(&["stop", "a"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("STOPPED"));
    let out = agent.ctl(&["start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such app: nope"));
    assert_eq!(agent.ctl(&["start", "a"]).status.code(), Some(0));
}

#[test]
fn the_agent_tells_systemd_it_is_ready_and_pings_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let agent = Agent::new(&[("a.conf", "[program:a]\ncommand=sleep 300\nstartsecs=0\n")]);
    let sock_path = agent.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gwe"))
        .arg("--config")
        .arg(agent.path().join("gwe.toml"))
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000") // systemd's WatchdogSec=0.2: ping every 0.1 s
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut messages = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        match sock.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    child.wait().unwrap();
    assert!(messages.iter().any(|m| m.contains("READY=1")), "{messages:?}");
    let pings = messages.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    // About 30 in 3 s at one per 0.1 s; a stalled loop would send one or none.
    assert!(pings >= 15, "{pings} watchdog pings in 3 s: {messages:?}");
}

/// The sources of an app in `dir/src`: install.sh, run.sh, supervisor.conf.
fn app_source(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("install.sh"), "#!/bin/sh\necho installed\n").unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\nexec sleep 300\n").unwrap();
    std::fs::write(src.join("supervisor.conf"), "[supervisord]\ncommand=./run.sh\nstartsecs=0\n").unwrap();
    for f in ["install.sh", "run.sh"] {
        std::fs::set_permissions(src.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    src
}

#[test]
fn apps_installed_with_gwe_app_install_come_back_after_a_restart() {
    let mut agent = Agent::new(&[]);
    let d = agent.path().to_path_buf();
    let gwe = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_gwe")).args(args).output().unwrap();
    let key = d.join("signing.key");
    let out = gwe(&["pkg", "keygen", key.to_str().unwrap()]);
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let cfg = std::fs::read_to_string(d.join("gwe.toml")).unwrap();
    std::fs::write(d.join("gwe.toml"), format!("{cfg}[ota]\ntrusted_keys = [\"{public}\"]\n")).unwrap();
    // A package as a developer makes one: a directory, tar, then gwe pkg sign.
    let src = app_source(&d);
    let pkg = d.join("meter.v1.2.tar.gz");
    let tar = Command::new("tar").arg("-C").arg(&src).arg("-czf").arg(&pkg).arg(".").status().unwrap();
    assert!(tar.success());
    assert!(gwe(&["pkg", "sign", pkg.to_str().unwrap(), "--key", key.to_str().unwrap()]).status.success());

    agent.start();
    agent.wait_running_agent();
    let out = agent.ctl_raw(&["app", "install", pkg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("current 1.2"));
    let first = agent.wait_running("meter");
    // A new agent (as after a reboot) brings the installed app back from its store.
    let mut c = agent.child.take().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    c.wait().unwrap();
    agent.start();
    let again = agent.wait_running("meter");
    assert_ne!(first["pid"], again["pid"]);
    let list = agent.ctl_raw(&["app", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("meter"), "{}", String::from_utf8_lossy(&list.stdout));

    // Without the hub: a directory (a USB stick, say) with several versions of the app and
    // a stray file; the newest version is installed, by the same checks.
    let usb = d.join("usb");
    std::fs::create_dir(&usb).unwrap();
    for v in ["1.9", "1.10"] {
        let p = usb.join(format!("meter.v{v}.tar.gz"));
        assert!(Command::new("tar").arg("-C").arg(&src).arg("-czf").arg(&p).arg(".").status().unwrap().success());
        assert!(gwe(&["pkg", "sign", p.to_str().unwrap(), "--key", key.to_str().unwrap()]).status.success());
    }
    std::fs::write(usb.join("README.txt"), "not a package").unwrap();
    let out = agent.ctl_raw(&["app", "install", usb.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("meter.v1.10.tar.gz: installed meter 1.10") && text.contains("current 1.10"), "{text}");
    // An unsigned package on the stick is refused like any other, and says so.
    std::fs::copy(usb.join("meter.v1.10.tar.gz"), usb.join("meter.v2.0.tar.gz")).unwrap();
    let out = agent.ctl_raw(&["app", "install", usb.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("meter.v2.0.tar.gz"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = agent.ctl_raw(&["app", "install", empty.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no NAME.vVERSION.tar.gz package"));
}

#[test]
fn an_unreadable_edge_store_leaves_the_agent_running_and_is_reported() {
    let mut a = Agent::new(&[]);
    let cfg = a.path().join("gwe.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[cloud]\nurl = \"http://127.0.0.1:9\"\n");
    std::fs::write(&cfg, text).unwrap();
    // Where the edge store's directory belongs, a file: its state cannot be read.
    std::fs::create_dir_all(a.path().join("state")).unwrap();
    std::fs::write(a.path().join("state/edge"), b"not a directory").unwrap();
    a.start();
    a.wait_running_agent();
    // Faults go to stderr, beside the apps' table.
    let status = String::from_utf8_lossy(&a.ctl(&["status"]).stderr).into_owned();
    assert!(status.contains("fault: edge store"), "the fault is shown: {status}");
    let err = std::fs::read_to_string(a.path().join("agent.err")).unwrap();
    assert!(err.contains("edge paths not started"), "{err}");
}

#[test]
fn gwe_app_install_checks_release_metadata_and_says_why_it_refuses() {
    let mut agent = Agent::new(&[]);
    let d = agent.path().to_path_buf();
    let gwe = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_gwe")).args(args).output().unwrap();
    let path = |name: &str| d.join(name).to_str().unwrap().to_string();
    for k in ["root.key", "release.key"] {
        assert!(gwe(&["pkg", "keygen", &path(k)]).status.success());
    }
    let root_public = std::fs::read_to_string(d.join("root.key.pub")).unwrap().trim().to_string();
    // The firmware ships the root key and the first keys document.
    let out = gwe(&[
        "pkg",
        "keys",
        "--root-key",
        &path("root.key"),
        "--add",
        &path("release.key.pub"),
        "--out",
        &path("keys.json"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = std::fs::read_to_string(d.join("gwe.toml"))
        .unwrap()
        .replace("[device]\n", "[device]\nvendor = \"acme\"\nmodel = \"gw1\"\n");
    let (vendor, model) = ("acme".to_string(), "gw1".to_string());
    std::fs::write(
        d.join("gwe.toml"),
        format!("{cfg}[ota]\nroot_keys = [\"{root_public}\"]\nkeys_file = \"{}\"\n", path("keys.json")),
    )
    .unwrap();
    let src = app_source(&d);
    let pkg = d.join("meter.v1.2.tar.gz");
    assert!(Command::new("tar").arg("-C").arg(&src).arg("-czf").arg(&pkg).arg(".").status().unwrap().success());
    let sign = gwe(&[
        "pkg",
        "sign",
        pkg.to_str().unwrap(),
        "--key",
        &path("release.key"),
        "--vendor",
        &vendor,
        "--model",
        &model,
    ]);
    assert!(sign.status.success(), "{}", String::from_utf8_lossy(&sign.stderr));
    // The attacker's copy: the same package and metadata, renamed as version 9.
    let evil = d.join("usb/meter.v9.tar.gz");
    std::fs::create_dir(d.join("usb")).unwrap();
    std::fs::copy(&pkg, &evil).unwrap();
    std::fs::copy(d.join("meter.v1.2.tar.gz.meta"), d.join("usb/meter.v9.tar.gz.meta")).unwrap();

    agent.start();
    agent.wait_running_agent();
    let out = agent.ctl_raw(&["app", "install", pkg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = agent.wait_running("meter");
    let out = agent.ctl_raw(&["app", "install", evil.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("meter.v9.tar.gz: signed for meter 1.2, offered as meter 9"), "{err}");
    let list = agent.ctl_raw(&["app", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("current 1.2"), "{}", String::from_utf8_lossy(&list.stdout));
    assert_eq!(agent.wait_running("meter")["pid"], first["pid"], "the running version was not touched");
}
