//! The supervisor over real processes: crash loops, stop escalation, process groups, log
//! rotation and bursts, program table changes.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "pids are small"
)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gwe::supervisor::program::{parse_file, Program};
use gwe::supervisor::{leftovers, procfs, AppStatus, Options, State, Supervisor};

/// One supervisor per process at a time: it reaps with waitpid(-1) (see the module's
/// INVARIANT), so tests in this binary take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Fixture {
    dir: tempfile::TempDir,
    sup: Supervisor,
    thread: Option<std::thread::JoinHandle<()>>,
    _turn: MutexGuard<'static, ()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.sup.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn programs(dir: &Path, conf: &str) -> Vec<Program> {
    let l = parse_file(conf, &dir.join("test.conf"), &dir.join("log"));
    assert!(l.errors.is_empty(), "{:?}", l.errors);
    l.programs
}

fn start(conf: &str) -> Fixture {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let conf = conf.replace("$DIR", dir.path().to_str().unwrap());
    let progs = programs(dir.path(), &conf);
    let (sup, thread) =
        Supervisor::start(progs, Options { state_file: dir.path().join("pids"), watchdog: None }).unwrap();
    Fixture { dir, sup, thread: Some(thread), _turn: turn }
}

fn app(sup: &Supervisor, name: &str) -> AppStatus {
    sup.status().into_iter().find(|a| a.name == name).unwrap()
}

/// Waits for a condition on an app's status, failing after `secs`.
fn wait_for(sup: &Supervisor, name: &str, secs: u64, what: &str, f: impl Fn(&AppStatus) -> bool) -> AppStatus {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let a = app(sup, name);
        if f(&a) {
            return a;
        }
        assert!(Instant::now() < until, "{name}: waited {secs} s for {what}; last {a:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Live (non-zombie) processes in process group `pgid`.
fn group(pgid: i32) -> Vec<i32> {
    procfs::all().filter(|s| s.pgrp == pgid && s.alive()).map(|s| s.pid).collect()
}

#[test]
fn crash_loop_backs_off_then_is_fatal() {
    let f = start("[program:crasher]\ncommand=sh -c 'echo dying; exit 3'\nstartsecs=1\nstartretries=2\n");
    let t0 = Instant::now();
    let seen_backoff = std::cell::Cell::new(false);
    let a = wait_for(&f.sup, "crasher", 15, "FATAL", |a| {
        seen_backoff.set(seen_backoff.get() || a.state == State::Backoff);
        a.state == State::Fatal
    });
    assert!(seen_backoff.get(), "BACKOFF comes before FATAL");
    // Backoff waits 1 s then 2 s between the 3 attempts.
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(a.exitstatus, Some(3));
    assert!(a.description.contains("exited with 3"), "{}", a.description);
    let log = std::fs::read_to_string(f.dir.path().join("log/crasher.log")).unwrap();
    assert_eq!(log.matches("dying").count(), 3, "three attempts: {log:?}");
    // A manual start tries again (and fails again, clearly).
    let err = f.sup.start_app("crasher").unwrap_err();
    assert!(matches!(&err, gwe::supervisor::AppError::DidNotStart { name, .. } if name == "crasher"), "{err:?}");
    assert!(err.to_string().contains("crasher did not start"), "{err}");
}

#[test]
fn spawn_error_is_reported() {
    let f = start("[program:ghost]\ncommand=/nonexistent/app\nstartretries=0\n");
    let a = wait_for(&f.sup, "ghost", 5, "FATAL", |a| a.state == State::Fatal);
    assert!(a.description.contains("spawn error"), "{}", a.description);
}

#[test]
fn an_app_ignoring_sigterm_is_killed_after_stopwaitsecs() {
    let f = start("[program:stubborn]\ncommand=sh -c 'trap \"\" TERM; touch $DIR/trapped; while :; do sleep 0.1; done'\nstartsecs=0\nstopwaitsecs=1\n");
    let a = wait_for(&f.sup, "stubborn", 5, "RUNNING", |a| a.state == State::Running && a.pid.is_some());
    let pid = a.pid.unwrap();
    // SIGTERM is ignored from the moment the app says so (the file), not after a guessed delay.
    let until = Instant::now() + Duration::from_secs(5);
    while !f.dir.path().join("trapped").exists() {
        assert!(Instant::now() < until, "the app never set its trap");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = Instant::now();
    let stopped = f.sup.stop_app("stubborn").unwrap();
    let took = t0.elapsed();
    assert_eq!(stopped.state, State::Stopped);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    assert_eq!(stopped.exitstatus, Some(128 + 9), "ended by SIGKILL");
    assert!(group(pid).is_empty(), "group {pid} still has {:?}", group(pid));
}

#[test]
fn stopping_a_forking_app_stops_its_whole_group() {
    let f = start("[program:forker]\ncommand=sh -c 'sleep 300 & sleep 300 & sleep 300 & wait'\nstartsecs=0\n");
    let a = wait_for(&f.sup, "forker", 5, "RUNNING", |a| a.state == State::Running);
    let pid = a.pid.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while group(pid).len() < 4 {
        assert!(Instant::now() < until, "children did not appear: {:?}", group(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    f.sup.stop_app("forker").unwrap();
    assert!(group(pid).is_empty(), "left behind: {:?}", group(pid));
    // Every process of the group was reaped by us (subreaper): no zombie children remain.
    let until = Instant::now() + Duration::from_secs(2);
    while !zombie_children().is_empty() {
        assert!(Instant::now() < until, "zombies: {:?}", zombie_children());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Zombie processes whose parent is this (test) process.
fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    procfs::all().filter(|s| s.ppid == me && !s.alive()).map(|s| s.pid).collect()
}

#[test]
fn an_exited_main_process_takes_its_group_along() {
    let f = start("[program:leaver]\ncommand=sh -c 'sleep 300 & echo started; sleep 0.5; exit 0'\nstartsecs=0\nautorestart=false\n");
    let a = wait_for(&f.sup, "leaver", 5, "RUNNING", |a| a.state == State::Running);
    let pid = a.pid.unwrap();
    wait_for(&f.sup, "leaver", 5, "EXITED", |a| a.state == State::Exited);
    let until = Instant::now() + Duration::from_secs(2);
    while !group(pid).is_empty() {
        assert!(Instant::now() < until, "orphan left running: {:?}", group(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn logs_rotate_at_the_configured_size_with_n_backups() {
    let f = start(
        "[program:chatty]\ncommand=sh -c 'i=0; while [ $i -lt 3000 ]; do echo \"line $i of the chatty app\"; i=$((i+1)); done; echo done; sleep 300'\n\
         startsecs=0\nstdout_logfile_maxbytes=8KB\nstdout_logfile_backups=2\n",
    );
    let log = f.dir.path().join("log/chatty.log");
    let until = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("done") {
        assert!(Instant::now() < until, "app output never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    let files: Vec<PathBuf> =
        vec![log.clone(), PathBuf::from(format!("{}.1", log.display())), PathBuf::from(format!("{}.2", log.display()))];
    assert!(!PathBuf::from(format!("{}.3", log.display())).exists(), "only 2 backups are kept");
    let mut lines = Vec::new();
    for p in files.iter().rev() {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.len() <= 8 * 1024, "{} has {} bytes", p.display(), text.len());
        lines.extend(text.lines().map(String::from));
    }
    // Whole lines, none missing inside what is kept, ending with the last one.
    assert_eq!(lines.last().unwrap(), "done");
    let nums: Vec<u32> = lines
        .iter()
        .filter(|l| l.starts_with("line "))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(*nums.last().unwrap(), 2999);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "a line was lost");
    assert!(lines.iter().all(|l| l == "done" || (l.starts_with("line ") && l.ends_with(" of the chatty app"))));
}

#[test]
fn a_burst_from_many_writers_loses_and_mixes_no_line() {
    let f = start(
        "[program:burst]\ncommand=sh -c 'for w in 1 2 3 4; do (i=0; while [ $i -lt 2000 ]; do echo \"writer $w line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; i=$((i+1)); done) & done; wait; echo finished; sleep 300'\n\
         startsecs=0\nstdout_logfile_maxbytes=0\n",
    );
    let log = f.dir.path().join("log/burst.log");
    let until = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("finished") {
        assert!(Instant::now() < until, "burst never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let mut per_writer = [0u32; 5];
    for l in text.lines().filter(|l| *l != "finished") {
        let f: Vec<&str> = l.split(' ').collect();
        assert!(f.len() == 5 && f[0] == "writer" && f[4].len() == 32, "mixed line: {l:?}");
        let w: usize = f[1].parse().unwrap();
        assert_eq!(f[3].parse::<u32>().unwrap(), per_writer[w], "writer {w} lost a line");
        per_writer[w] += 1;
    }
    assert_eq!(&per_writer[1..], &[2000; 4]);
}

#[test]
fn program_table_changes_start_stop_and_restart() {
    let f = start("[program:a]\ncommand=sleep 300\nstartsecs=0\n[program:b]\ncommand=sleep 301\nstartsecs=0\n");
    let a1 = wait_for(&f.sup, "a", 5, "RUNNING", |a| a.state == State::Running).pid.unwrap();
    wait_for(&f.sup, "b", 5, "RUNNING", |a| a.state == State::Running);
    let dir = f.dir.path();
    f.sup.replace(programs(
        dir,
        "[program:a]\ncommand=sleep 302\nstartsecs=0\n[program:c]\ncommand=sleep 303\nstartsecs=0\n",
    ));
    let a2 = wait_for(&f.sup, "a", 5, "restarted", |a| a.state == State::Running && a.pid != Some(a1)).pid.unwrap();
    assert_ne!(a1, a2);
    wait_for(&f.sup, "c", 5, "RUNNING", |a| a.state == State::Running);
    let until = Instant::now() + Duration::from_secs(5);
    while f.sup.status().iter().any(|a| a.name == "b") {
        assert!(Instant::now() < until, "b was not removed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Restart gives a new process; stop and start by hand work.
    let r = f.sup.restart_app("c").unwrap();
    assert_eq!(r.state, State::Running);
    assert_eq!(f.sup.stop_app("c").unwrap().state, State::Stopped);
    assert_eq!(f.sup.start_app("c").unwrap().state, State::Running);
    assert_eq!(f.sup.start_app("nope").unwrap_err(), gwe::supervisor::AppError::NoSuchApp("nope".into()));
}

#[test]
fn running_apps_are_recorded_for_the_next_agent() {
    let f = start("[program:rec]\ncommand=sleep 300\nstartsecs=0\n");
    let pid = wait_for(&f.sup, "rec", 5, "RUNNING", |a| a.state == State::Running).pid.unwrap();
    let rec: leftovers::Record = serde_json::from_slice(&std::fs::read(f.dir.path().join("pids")).unwrap()).unwrap();
    assert_eq!(rec.apps.len(), 1);
    assert_eq!((rec.apps[0].name.as_str(), rec.apps[0].pid), ("rec", pid));
    assert_eq!(Some(rec.apps[0].start_ticks), procfs::stat(pid).map(|s| s.start_ticks));
}

#[test]
fn apps_run_as_the_user_in_their_config() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: switching users needs root");
        return;
    }
    let f = start("[program:unpriv]\ncommand=sh -c 'id -u; id -g; sleep 300'\nuser=nobody\nstartsecs=0\n");
    wait_for(&f.sup, "unpriv", 5, "RUNNING", |a| a.state == State::Running);
    let log = f.dir.path().join("log/unpriv.log");
    let until = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&log).unwrap_or_default().lines().count() < 2 {
        assert!(Instant::now() < until, "no output");
        std::thread::sleep(Duration::from_millis(20));
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let ids: Vec<u32> = std::fs::read_to_string(&log).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids, vec![nobody.uid.as_raw(), nobody.gid.as_raw()]);
    let f2 = start_after(f, "[program:who]\ncommand=sleep 1\nuser=no-such-user-here\nstartretries=0\n");
    let a = wait_for(&f2.sup, "who", 5, "FATAL", |a| a.state == State::Fatal);
    assert!(a.description.contains("no such user"), "{}", a.description);
}

/// Ends one fixture before starting the next (one supervisor per process at a time).
fn start_after(prev: Fixture, conf: &str) -> Fixture {
    drop(prev);
    start(conf)
}

#[test]
fn one_off_commands_run_to_their_end_or_their_timeout() {
    use gwe::supervisor::{OneOff, OneOffResult};
    let f = start("");
    let dir = f.dir.path();
    let job = |cmd: &str, timeout: u64| OneOff {
        command: vec!["sh".into(), "-c".into(), cmd.into()],
        dir: dir.to_path_buf(),
        env: vec![("GREETING".into(), "hello".into())],
        output: dir.join("out.log"),
        timeout: Duration::from_secs(timeout),
    };
    assert_eq!(f.sup.run_once(job("echo $GREETING from $(pwd); echo oops >&2; exit 3", 10)), OneOffResult::Exited(3));
    let out = std::fs::read_to_string(dir.join("out.log")).unwrap();
    assert_eq!(out, format!("hello from {}\noops\n", dir.display()));
    let t0 = Instant::now();
    assert_eq!(f.sup.run_once(job("sleep 300 & sleep 300", 1)), OneOffResult::TimedOut);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let mut missing = job("true", 1);
    missing.command = vec!["/nonexistent/install.sh".into()];
    assert!(matches!(f.sup.run_once(missing), OneOffResult::SpawnFailed(_)));
    // The timed-out script's background child was killed with it: nothing of it is left.
    let until = Instant::now() + Duration::from_secs(2);
    while procfs::all().any(|s| s.ppid == std::process::id() as i32 && s.alive()) {
        assert!(Instant::now() < until, "a one-off child survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}
