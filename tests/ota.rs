//! Installing apps from signed packages with real processes: install, upgrade, a failing
//! install.sh, a crash-looping update rolled back, hostile and unsigned packages refused
//! while the running version keeps running, rollback by hand, removal, and a trial left
//! by a power cut resolved at the next start.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gwe::ota::extract::Limits;
use gwe::ota::install::{InstallError, Installer, Policy, Setup};
use gwe::ota::package;
use gwe::ota::store::AppStore;
use gwe::supervisor::{AppStatus, Options, State, Supervisor};

/// One supervisor per process at a time (it reaps with waitpid(-1)).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Rig {
    dir: tempfile::TempDir,
    key: package::SigningKey,
    inst: Installer,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.inst.supervisor().shutdown();
    }
}

fn rig() -> Rig {
    rig_with_apps(None)
}

/// A rig whose app store lives in `apps` (another filesystem) when given.
fn rig_with_apps(apps: Option<&std::path::Path>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let apps = apps.map_or_else(|| dir.path().join("apps"), |p| p.to_path_buf());
    let key = package::generate_key().unwrap();
    std::fs::create_dir_all(dir.path().join("programs.d")).unwrap();
    let (sup, _) =
        Supervisor::start(Vec::new(), Options { state_file: dir.path().join("pids"), watchdog: None }).unwrap();
    let inst = Installer::new(Setup {
        store: AppStore::open(&apps).unwrap(),
        sup,
        programs_dir: dir.path().join("programs.d"),
        log_dir: dir.path().join("log"),
        policy: Policy::legacy(vec![key.public_key()], false),
        limits: Limits::default(),
        install_timeout: Duration::from_secs(10),
    });
    Rig { dir, key, inst }
}

/// Builds NAME.vVERSION.tar.gz from (path, mode, content) entries; signs it if asked.
fn package(rig: &Rig, name: &str, version: &str, files: &[(&str, u32, &str)], sign: bool) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let out = rig.dir.path().join("incoming");
    std::fs::create_dir_all(&out).unwrap();
    let p = out.join(format!("{name}.v{version}.tar.gz"));
    std::fs::write(&p, gz.finish().unwrap()).unwrap();
    if sign {
        package::sign(&p, &rig.key).unwrap();
    }
    p
}

fn app(rig: &Rig, name: &str, version: &str, run: &str, install: &str) -> PathBuf {
    let conf = "[supervisord]\ncommand=./run.sh\nstartsecs=1\nstartretries=1\n";
    let files = [("install.sh", 0o755, install), ("run.sh", 0o755, run), ("supervisor.conf", 0o644, conf)];
    package(rig, name, version, &files, true)
}

fn good(rig: &Rig, version: &str) -> PathBuf {
    app(
        rig,
        "sensor",
        version,
        &format!("#!/bin/sh\necho running {version}\nexec sleep 300\n"),
        "#!/bin/sh\necho installing $GWE_APP $GWE_VERSION\n",
    )
}

fn status(rig: &Rig) -> Option<AppStatus> {
    rig.inst.supervisor().status().into_iter().find(|a| a.name == "sensor")
}

fn running_pid(rig: &Rig) -> i32 {
    let a = status(rig).expect("sensor is known");
    assert_eq!(a.state, State::Running, "{a:?}");
    a.pid.unwrap()
}

fn current(rig: &Rig) -> (Option<String>, Option<String>) {
    let i = rig.inst.app("sensor");
    (i.current, i.previous)
}

#[test]
fn install_upgrade_refuse_roll_back_and_remove() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rig = rig();

    let r = rig.inst.install(&good(&rig, "1.0")).unwrap();
    assert_eq!(r.output, "installing sensor 1.0\n");
    let pid1 = running_pid(&rig);
    assert_eq!(current(&rig), (Some("1.0".into()), None));

    rig.inst.install(&good(&rig, "2.0")).unwrap();
    let pid2 = running_pid(&rig);
    assert_ne!(pid1, pid2, "the app was restarted on the new version");
    assert_eq!(current(&rig), (Some("2.0".into()), Some("1.0".into())));
    let log = std::fs::read_to_string(rig.dir.path().join("log/sensor.log")).unwrap();
    assert!(log.ends_with("running 2.0\n"), "{log}");

    // install.sh fails: nothing changes, the running version keeps running.
    let bad = app(
        &rig,
        "sensor",
        "3.0",
        "#!/bin/sh\nexec sleep 300\n",
        "#!/bin/sh\necho cannot find the modem >&2\nexit 4\n",
    );
    let e = rig.inst.install(&bad).unwrap_err();
    assert!(matches!(e, InstallError::Script { .. }), "{e}");
    assert!(e.to_string().contains("exited with 4") && e.to_string().contains("cannot find the modem"), "{e}");
    assert_eq!(running_pid(&rig), pid2);
    assert_eq!(current(&rig), (Some("2.0".into()), Some("1.0".into())));
    assert!(!rig.dir.path().join("apps/sensor/3.0").exists());

    // The update crash-loops: rolled back, the old version runs again.
    let crashing = app(&rig, "sensor", "4.0", "#!/bin/sh\necho broken build\nexit 1\n", "#!/bin/sh\n");
    let e = rig.inst.install(&crashing).unwrap_err();
    match &e {
        InstallError::RolledBack { version, now, .. } => {
            assert_eq!((version.as_str(), now.as_deref()), ("4.0", Some("2.0")))
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("rolled back to 2.0"), "{e}");
    running_pid(&rig);
    assert_eq!(current(&rig).0.as_deref(), Some("2.0"));
    assert!(!rig.dir.path().join("apps/sensor/4.0").exists(), "the failed version is discarded");

    // Hostile and unsigned packages are refused; the app keeps running untouched.
    let before = running_pid(&rig);
    let hostile = package(&rig, "sensor", "5.0", &[("install.sh", 0o755, "#!/bin/sh\n")], false);
    let e = rig.inst.install(&hostile).unwrap_err();
    assert!(e.to_string().contains("not signed"), "{e}");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..12].copy_from_slice(b"../../escape");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    let evil = rig.dir.path().join("incoming/sensor.v6.0.tar.gz");
    std::fs::write(&evil, gz.finish().unwrap()).unwrap();
    package::sign(&evil, &rig.key).unwrap();
    let e = rig.inst.install(&evil).unwrap_err();
    assert!(e.to_string().contains("refused entry \"../../escape\""), "{e}");
    assert!(!rig.dir.path().join("escape").exists());
    assert_eq!(running_pid(&rig), before);

    // Rollback by hand, then removal.
    rig.inst.install(&good(&rig, "7.0")).unwrap();
    assert_eq!(current(&rig), (Some("7.0".into()), Some("2.0".into())));
    let i = rig.inst.rollback("sensor").unwrap();
    assert_eq!((i.current.as_deref(), i.previous.as_deref()), (Some("2.0"), Some("7.0")));
    running_pid(&rig);
    rig.inst.remove("sensor").unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while status(&rig).is_some() {
        assert!(Instant::now() < until, "sensor still known: {:?}", status(&rig));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!rig.dir.path().join("apps/sensor").exists());
    assert!(matches!(rig.inst.remove("sensor"), Err(InstallError::NotInstalled(_))));
}

#[test]
fn a_refused_first_install_leaves_nothing_behind() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rig = rig();
    let apps = rig.dir.path().join("apps");
    // No install.sh: the original required one, and so does gwe.
    let p = package(&rig, "noscript", "1.0", &[("run.sh", 0o755, "#!/bin/sh\nsleep 60\n")], true);
    let e = rig.inst.install(&p).unwrap_err();
    assert!(e.to_string().contains("no install.sh"), "{e}");
    assert!(!apps.join("noscript").exists(), "a refused install left apps/noscript behind");
    // install.sh fails.
    let p = package(&rig, "failing", "1.0", &[("install.sh", 0o755, "#!/bin/sh\nexit 3\n")], true);
    assert!(rig.inst.install(&p).unwrap_err().to_string().contains("exited with 3"));
    assert!(!apps.join("failing").exists(), "a failed install.sh left apps/failing behind");
    // A PAX sparse file: a map of holes, not the file; refused, not unpacked as 512 bytes.
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("GNU.sparse.major", &b"1"[..]),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"data.bin"),
        ("GNU.sparse.realsize", b"1048576"),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(512);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "GNUSparseFile.0/data.bin", &[b'1'; 512][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(10);
    h.set_mode(0o755);
    b.append_data(&mut h, "install.sh", &b"#!/bin/sh\n"[..]).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    let sparse = rig.dir.path().join("incoming/sparse.v1.0.tar.gz");
    std::fs::write(&sparse, gz.finish().unwrap()).unwrap();
    package::sign(&sparse, &rig.key).unwrap();
    let e = rig.inst.install(&sparse).unwrap_err();
    assert!(e.to_string().contains("sparse file"), "{e}");
    assert!(!apps.join("sparse").exists());
    let left: Vec<_> = std::fs::read_dir(&apps).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| n.to_string_lossy().starts_with('.')), "apps/ holds {left:?}");
}

#[test]
fn a_trial_interrupted_by_a_power_cut_is_resolved_at_start() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rig = rig();
    rig.inst.install(&good(&rig, "1.0")).unwrap();
    // As if the power went while 2.0 was being watched: 2.0 current and on trial. It crashes.
    let broken = app(&rig, "sensor", "2.0", "#!/bin/sh\nexit 1\n", "#!/bin/sh\n");
    let name = package::PackageName::parse("sensor.v2.0.tar.gz").unwrap();
    rig.inst.app_store().stage(&broken, &name, Limits::default()).unwrap();
    rig.inst.app_store().switch("sensor", "2.0").unwrap();
    assert_eq!(rig.inst.app("sensor").trial.as_deref(), Some("2.0"));
    rig.inst.resume_trials();
    assert_eq!(current(&rig).0.as_deref(), Some("1.0"));
    assert_eq!(rig.inst.app("sensor").trial, None);
    running_pid(&rig);
}

#[test]
fn concurrent_installs_take_turns() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let rig = std::sync::Arc::new(rig());
    let pkgs: Vec<PathBuf> = (1..=4).map(|v| good(&rig, &format!("{v}.0"))).collect();
    let threads: Vec<_> = pkgs
        .into_iter()
        .map(|p| {
            let rig = rig.clone();
            std::thread::spawn(move || rig.inst.install(&p).map(|r| r.version))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    // Whichever came last is current, whole and running; nothing half-made is left.
    let (cur, prev) = current(&rig);
    let cur = cur.unwrap();
    assert!(prev.is_some());
    running_pid(&rig);
    let entries: Vec<String> = std::fs::read_dir(rig.dir.path().join("apps/sensor"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(entries.iter().all(|e| !e.starts_with(".staging")), "{entries:?}");
    assert!(entries.contains(&cur));
}

#[test]
fn a_full_disk_is_refused_before_unpacking() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(fs) = common::Tmpfs::mount("2m") else {
        return;
    };
    let rig = rig_with_apps(Some(fs.path()));
    rig.inst.install(&good(&rig, "1.0")).unwrap();
    let pid = running_pid(&rig);
    // 4 MiB of zeros packs into a few KiB; unpacked it cannot fit in 2 MiB.
    let zeros = "0".repeat(4 << 20);
    let run = "#!/bin/sh\nexec sleep 300\n";
    let conf = "[supervisord]\ncommand=./run.sh\nstartsecs=1\n";
    let files = [
        ("install.sh", 0o755, "#!/bin/sh\n"),
        ("run.sh", 0o755, run),
        ("supervisor.conf", 0o644, conf),
        ("big.bin", 0o644, &zeros[..]),
    ];
    let big = package(&rig, "sensor", "2.0", &files, true);
    assert!(std::fs::metadata(&big).unwrap().len() < 64 << 10);
    match rig.inst.install(&big) {
        Err(InstallError::NoSpace { need, free }) => assert!(need > free && need >= 4 << 20, "{need} {free}"),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert_eq!(current(&rig), (Some("1.0".into()), None));
    assert_eq!(running_pid(&rig), pid, "the running version was not touched");
    let left: Vec<_> = std::fs::read_dir(fs.path().join("sensor")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().contains("2.0")), "nothing unpacked: {left:?}");
}
