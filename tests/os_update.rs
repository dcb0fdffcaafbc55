//! The OS update steps as the agent runs them: RAUC through the supervisor. The supervisor
//! reaps every child (`waitpid(-1)`), so a RAUC the OS code spawned itself would be taken
//! from under it (ECHILD, seen on the board); through the supervisor every step works. Its
//! own test binary: a supervisor in the unit tests would reap the children of the others.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gwe::ota::os::{self, AfterBoot, Phase, Rauc, RebootAt, Update};
use gwe::supervisor::{Options, Supervisor};

/// A stand-in `rauc` whose answers are RAUC's shapes (its JSON after a message line, as
/// RAUC's messages share the output through the supervisor).
fn fake_rauc(dir: &Path) -> std::path::PathBuf {
    let prog = dir.join("rauc");
    let status = r#"{"compatible":"c1","booted":"A","boot_primary":"rootfs.1","slots":[{"rootfs.0":{"bootname":"A"}},{"rootfs.1":{"bootname":"B"}}]}"#;
    let script = format!(
        "#!/bin/sh\ncase \"$1 $2\" in\n  'status --output-format=json') echo 'rauc-Message: 10:00:00.000: a message' >&2; echo '{status}' ;;\n  'status --detailed') echo '{status}' ;;\n  'info --output-format=json') echo '{{\"compatible\":\"c1\",\"version\":\"2\"}}' ;;\n  'install '*) echo ' 50% Installing'; sleep 3; echo '100% Installing done.' ;;\n  'status mark-good'|'status mark-bad') echo \"$@\" >> {log} ;;\n  *) echo \"unexpected: $*\" >&2; exit 1 ;;\nesac\n",
        log = dir.join("marks").display()
    );
    std::fs::write(&prog, script).unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    prog
}

#[test]
fn in_the_agent_rauc_runs_through_the_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { state_file: dir.path().join("pids"), watchdog: None };
    let (sup, thread) = Supervisor::start(Vec::new(), opts).unwrap();
    let r = Rauc {
        program: fake_rauc(dir.path()),
        state_dir: dir.path().to_path_buf(),
        run_dir: dir.path().to_path_buf(),
        sup: Some(sup.clone()),
    };

    // Progress lines come while RAUC runs (read from its output every 2 s).
    let mut lines = Vec::new();
    let u = r.install("/x.raucb", RebootAt::Now, &mut |l| lines.push(l.to_string())).unwrap();
    assert_eq!((u.from.as_str(), u.to.as_str(), u.version.as_str(), u.phase), ("A", "B", "2", Phase::Rebooting));
    assert_eq!(lines, ["50% Installing", "100% Installing done."]);

    // After the reboot (another boot id), booted into B: the check, then mark good.
    let mut u: Update = r.state().unwrap().unwrap();
    u.boot = "an earlier boot".into();
    std::fs::write(dir.path().join(os::STATE_FILE), serde_json::to_vec(&u).unwrap()).unwrap();
    let AfterBoot::Check(u) = r.after_boot("B").unwrap() else { panic!("no check") };
    assert_eq!(r.mark_good(u).unwrap().phase, Phase::Good);
    assert_eq!(std::fs::read_to_string(dir.path().join("marks")).unwrap(), "status mark-good booted\n");

    os::reboot(&["/bin/true".to_string()], Some(&sup)).unwrap();
    assert!(os::reboot(&["/bin/false".to_string()], Some(&sup)).is_err());
    sup.shutdown();
    thread.join().unwrap();
}
