//! Crash campaign for installs: the agent is SIGKILLed at a random moment while it installs
//! an update (unpacking, install.sh, the switch, the watch), then started again. Every time,
//! exactly one whole version must be active and running, and nothing half-made left behind.
//! Cycles: GWE_OTA_CRASH_CYCLES (CI 20; `scripts/crash-campaign.sh ota --cycles 1000` by hand).

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "pids and file modes are small"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gwe::supervisor::procfs;
use rand::Rng;

fn gwe(cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gwe")).arg("--config").arg(cfg).args(args).output().unwrap()
}

fn start(cfg: &Path, err: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gwe"))
        .arg("--config")
        .arg(cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(err).unwrap())
        .spawn()
        .unwrap()
}

/// Builds sensor.vV.tar.gz whose files all name version V, with its release metadata
/// (signed to allow a downgrade: the campaign cycles back to version 1).
fn make_package(dir: &Path, key: &Path, v: u32, mark: &str) -> PathBuf {
    let src = dir.join(format!("src{v}"));
    std::fs::create_dir_all(src.join("data")).unwrap();
    std::fs::write(src.join("VERSION"), format!("{v}\n")).unwrap();
    std::fs::write(src.join("install.sh"), format!("#!/bin/sh\nsleep 0.1\necho {v} > installed-by-script\n")).unwrap();
    std::fs::write(src.join("run.sh"), format!("#!/bin/sh\nexec sleep 1000{v}\n")).unwrap();
    std::fs::write(
        src.join("supervisor.conf"),
        format!("[supervisord]\ncommand=./run.sh\nstartsecs=1\nenvironment=GWE_TEST_MARK=\"{mark}\"\n"),
    )
    .unwrap();
    // Some bulk, so unpacking takes a moment too.
    for i in 0..20 {
        std::fs::write(src.join("data").join(format!("blob{i}")), vec![v as u8; 64 << 10]).unwrap();
    }
    for f in ["install.sh", "run.sh"] {
        std::fs::set_permissions(src.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let pkg = dir.join(format!("sensor.v{v}.tar.gz"));
    assert!(Command::new("tar").arg("-C").arg(&src).arg("-czf").arg(&pkg).arg(".").status().unwrap().success());
    let out = Command::new(env!("CARGO_BIN_EXE_gwe"))
        .args(["pkg", "sign", pkg.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .args(["--vendor", "acme", "--model", "gw1", "--allow-downgrade"])
        .output()
        .unwrap();
    assert!(out.status.success());
    pkg
}

/// Live processes of the app: (pid, the version it runs, from its `sleep 1000V` argument).
fn app_processes(mark: &str) -> Vec<(i32, String)> {
    let needle = format!("GWE_TEST_MARK={mark}");
    procfs::all()
        .filter(|s| s.alive())
        .filter_map(|s| {
            let env = std::fs::read(format!("/proc/{}/environ", s.pid)).ok()?;
            if !env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
                return None;
            }
            let cmd = std::fs::read(format!("/proc/{}/cmdline", s.pid)).ok()?;
            let args: Vec<String> = cmd.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let v = args.get(1)?.strip_prefix("1000")?.to_string();
            (args[0] == "sleep").then_some((s.pid, v))
        })
        .collect()
}

#[test]
fn every_sigkill_during_an_install_leaves_one_whole_version_running() {
    let cycles: u32 = std::env::var("GWE_OTA_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mark = format!("ota{}", std::process::id());
    let key = d.join("k");
    let root = d.join("root");
    let keys = d.join("keys.json");
    let no_cfg = Path::new("/nonexistent");
    gwe(no_cfg, &["pkg", "keygen", key.to_str().unwrap()]);
    let public = String::from_utf8(gwe(no_cfg, &["pkg", "keygen", root.to_str().unwrap()]).stdout).unwrap();
    let pubkey = format!("{}.pub", key.display());
    let made = gwe(
        no_cfg,
        &["pkg", "keys", "--root-key", root.to_str().unwrap(), "--add", &pubkey, "--out", keys.to_str().unwrap()],
    );
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    std::fs::create_dir_all(d.join("programs.d")).unwrap();
    let cfg = d.join("gwe.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nserial = \"C1\"\nvendor = \"acme\"\nmodel = \"gw1\"\n[paths]\nstate_dir = \"{0}/state\"\nlog_dir = \"{0}/log\"\nrun_dir = \"{0}/run\"\n\
             [ingest]\nlisten = \"127.0.0.1:0\"\n[supervisor]\nprograms_dir = \"{0}/programs.d\"\n\
             [ota]\nroot_keys = [\"{1}\"]\nkeys_file = \"{0}/keys.json\"\n",
            d.display(),
            public.trim()
        ),
    )
    .unwrap();
    let pkgs: Vec<PathBuf> = (1..=4).map(|v| make_package(d, &key, v, &mark)).collect();
    let err = d.join("agent.err");
    let apps = d.join("state/apps/sensor");
    let mut rng = rand::thread_rng();
    let mut agent = start(&cfg, &err);
    let wait_up = || {
        let until = Instant::now() + Duration::from_secs(20);
        while !gwe(&cfg, &["ctl", "status"]).status.success() {
            assert!(
                Instant::now() < until,
                "the agent did not come up: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_up();
    assert!(gwe(&cfg, &["app", "install", pkgs[0].to_str().unwrap()]).status.success());
    let started = Instant::now();
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for cycle in 0..cycles {
        let target = &pkgs[(cycle as usize + 1) % pkgs.len()];
        let installer = {
            let (cfg, target) = (cfg.clone(), target.clone());
            std::thread::spawn(move || gwe(&cfg, &["app", "install", target.to_str().unwrap()]))
        };
        // Cut anywhere from before unpacking to well into the health watch (startsecs = 1);
        // half the cuts in the first 300 ms, where unpacking, install.sh and the switch are.
        let cut = if rng.gen_bool(0.5) { rng.gen_range(0..300) } else { rng.gen_range(0..1600) };
        std::thread::sleep(Duration::from_millis(cut));
        agent.kill().unwrap();
        agent.wait().unwrap();
        let _ = installer.join();

        agent = start(&cfg, &err);
        wait_up();
        // The agent settles any trial at start; then exactly one whole version runs.
        let until = Instant::now() + Duration::from_secs(20);
        let (current, procs) = loop {
            let current = std::fs::read_link(apps.join("current")).ok().map(|p| p.to_string_lossy().into_owned());
            let procs = app_processes(&mark);
            let settled = !apps.join("trial").exists() && procs.len() == 1;
            if settled || Instant::now() > until {
                break (current, procs);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let current = current.unwrap_or_else(|| panic!("cycle {cycle} (cut at {cut} ms): no current version"));
        assert!(!apps.join("trial").exists(), "cycle {cycle}: trial never settled");
        assert_eq!(procs.len(), 1, "cycle {cycle} (cut at {cut} ms): running {procs:?}");
        assert_eq!(procs[0].1, current, "cycle {cycle}: the running process is not the current version");
        // The current version is whole: every file there, each naming the version.
        let vdir = apps.join(&current);
        assert_eq!(std::fs::read_to_string(vdir.join("VERSION")).unwrap().trim(), current, "cycle {cycle}");
        assert_eq!(std::fs::read_to_string(vdir.join("installed-by-script")).unwrap().trim(), current, "cycle {cycle}");
        for i in 0..20 {
            let blob = std::fs::read(vdir.join("data").join(format!("blob{i}"))).unwrap();
            assert!(
                blob.len() == 64 << 10 && blob.iter().all(|&b| u32::from(b) == current.parse::<u32>().unwrap()),
                "cycle {cycle}: blob{i}"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(&apps)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".staging"))
            .collect();
        assert!(leftovers.is_empty(), "cycle {cycle}: {leftovers:?}");
        let wanted = target.file_name().unwrap().to_string_lossy().into_owned();
        let outcome = if wanted == format!("sensor.v{current}.tar.gz") { "new version" } else { "old version" };
        *outcomes.entry(outcome.into()).or_default() += 1;
        println!("cycle {cycle:4}: cut at {cut:4} ms installing {wanted}: {outcome} {current} active and running");
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = agent.wait();
    println!(
        "ota crash campaign: {cycles} SIGKILLs during installs, each time exactly one whole version running ({outcomes:?}), {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
