//! App hosting: supervisord's job inside the agent.
//!
//! One thread owns spawning, the process table and reaping. It sleeps in `poll(2)` on two
//! pipes (SIGCHLD, and commands from other threads) with the nearest timer as timeout
//! (start-up grace, retry backoff, stop deadline, watchdog): it never polls in a loop.
//! INVARIANT: no other code in the agent spawns child processes (the supervisor reaps with
//! `waitpid(-1)`); one-off commands must go through it.
//!
//! States and transitions follow supervisord: STOPPED, STARTING, RUNNING, BACKOFF, STOPPING,
//! EXITED, FATAL. How orphans are prevented: see `leftovers` and `spawn`.

pub mod ini;
pub mod leftovers;
pub mod logs;
pub mod procfs;
pub mod program;
mod spawn;
pub use spawn::raw_pid;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Serialize;

use logs::{LogFile, LogPump};
use program::{AutoRestart, ConfigChange, Program};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Stopped,
    Starting,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "STOPPED",
            Self::Starting => "STARTING",
            Self::Running => "RUNNING",
            Self::Backoff => "BACKOFF",
            Self::Stopping => "STOPPING",
            Self::Exited => "EXITED",
            Self::Fatal => "FATAL",
        }
    }
}

/// What `status` reports for one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppStatus {
    pub name: String,
    pub state: State,
    pub pid: Option<i32>,
    /// Seconds since it started (while it runs).
    pub uptime: u64,
    /// Exit code of the last run (128 + signal number when killed by a signal).
    pub exitstatus: Option<i32>,
    /// Why it is not running, when that is known (spawn error, abnormal exit).
    pub description: String,
    pub log: Option<PathBuf>,
}

/// Why a start, stop or restart of an app was not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppError {
    /// The supervisor's thread is not running (any more).
    NotRunning,
    NoSuchApp(String),
    /// It went to `state` instead of RUNNING, for `why`.
    DidNotStart {
        name: String,
        why: String,
        state: State,
    },
    /// Stopped (by a stop or a removal) while its start was awaited.
    WasStopped(String),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::NotRunning => f.write_str("the supervisor is not running"),
            AppError::NoSuchApp(name) => write!(f, "no such app: {name}"),
            AppError::DidNotStart { name, why, state } => write!(f, "{name} did not start: {why} ({})", state.as_str()),
            AppError::WasStopped(name) => write!(f, "{name} was stopped"),
        }
    }
}

impl std::error::Error for AppError {}

type Answer = Sender<Result<AppStatus, AppError>>;

enum Cmd {
    Status(Sender<Vec<AppStatus>>),
    Start(String, Answer),
    Stop(String, Answer),
    Restart(String, Answer),
    Replace(Vec<Program>, Sender<()>),
    RunOnce(OneOff, Sender<OneOffResult>),
    ConfigChanged(Sender<Vec<String>>),
    Shutdown(Sender<()>),
}

/// A one-off command run by the supervisor (the only spawner): an app's `install.sh`.
#[derive(Debug, Clone)]
pub struct OneOff {
    pub command: Vec<String>,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    /// Receives stdout and stderr.
    pub output: PathBuf,
    /// Killed (with its process group) after this long.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOffResult {
    /// Exit code (128 + signal number when killed by a signal).
    Exited(i32),
    TimedOut,
    SpawnFailed(String),
}

struct Job {
    pid: Pid,
    deadline: Instant,
    timed_out: bool,
    reply: Sender<OneOffResult>,
}

/// Handle to the supervisor thread; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    tx: Sender<Cmd>,
    wake: Arc<UnixStream>,
}

/// Settings that are not per program.
pub struct Options {
    /// Where the pids of running apps are recorded (see `leftovers`).
    pub state_file: PathBuf,
    /// systemd watchdog: ping this often (half of `WatchdogSec`), if set.
    pub watchdog: Option<Duration>,
}

impl Supervisor {
    /// Ends what a previous agent left running, then starts the thread and every program
    /// with `autostart`, in priority order.
    pub fn start(programs: Vec<Program>, opts: Options) -> io::Result<(Self, JoinHandle<()>)> {
        for name in leftovers::kill(&opts.state_file) {
            log::warn!("supervisor: ended {name}, left running by a previous agent");
        }
        // Orphaned grandchildren of apps are re-parented to us and reaped here.
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            log::warn!("supervisor: cannot become a subreaper: {}", io::Error::last_os_error());
        }
        let (sig_w, sig_r) = UnixStream::pair()?;
        sig_r.set_nonblocking(true)?;
        sig_w.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(libc::SIGCHLD, sig_w)?;
        let (wake_w, wake_r) = UnixStream::pair()?;
        wake_r.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel();
        let (pump, _pump_thread) = LogPump::start()?;
        let mut core = Core {
            procs: Vec::new(),
            logs: pump,
            state_file: opts.state_file,
            waiters: Vec::new(),
            shutdown: None,
            watchdog: opts.watchdog.map(|d| (d, Instant::now())),
            jobs: Vec::new(),
        };
        core.replace(programs);
        let h = std::thread::Builder::new().name("supervisor".into()).spawn(move || core.run(rx, sig_r, wake_r))?;
        Ok((Self { tx, wake: Arc::new(wake_w) }, h))
    }

    fn send(&self, c: Cmd) -> bool {
        if self.tx.send(c).is_err() {
            return false;
        }
        let _ = (&*self.wake).write(&[1]);
        true
    }

    fn ask(&self, make: impl FnOnce(Answer) -> Cmd) -> Result<AppStatus, AppError> {
        let (tx, rx) = mpsc::channel();
        if !self.send(make(tx)) {
            return Err(AppError::NotRunning);
        }
        rx.recv().unwrap_or(Err(AppError::NotRunning))
    }

    pub fn status(&self) -> Vec<AppStatus> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Cmd::Status(tx)) {
            return Vec::new();
        }
        rx.recv().unwrap_or_default()
    }

    /// Starts `name`; answers once it is RUNNING, or with why it is not.
    pub fn start_app(&self, name: &str) -> Result<AppStatus, AppError> {
        self.ask(|tx| Cmd::Start(name.into(), tx))
    }

    /// Stops `name`; answers once it is STOPPED.
    pub fn stop_app(&self, name: &str) -> Result<AppStatus, AppError> {
        self.ask(|tx| Cmd::Stop(name.into(), tx))
    }

    pub fn restart_app(&self, name: &str) -> Result<AppStatus, AppError> {
        self.ask(|tx| Cmd::Restart(name.into(), tx))
    }

    /// Sets the program table: new programs start (if autostart), removed ones stop,
    /// changed ones restart.
    pub fn replace(&self, programs: Vec<Program>) {
        let (tx, rx) = mpsc::channel();
        if self.send(Cmd::Replace(programs, tx)) {
            let _ = rx.recv();
        }
    }

    /// Runs a one-off command to its end (or its timeout).
    pub fn run_once(&self, job: OneOff) -> OneOffResult {
        let (tx, rx) = mpsc::channel();
        if !self.send(Cmd::RunOnce(job, tx)) {
            return OneOffResult::SpawnFailed("the supervisor is not running".into());
        }
        rx.recv().unwrap_or_else(|_| OneOffResult::SpawnFailed("the supervisor stopped".into()))
    }

    /// Tells the apps that asked for it (`config_change`) that the generic configuration
    /// changed: each running one gets its signal or is restarted. Answers what was done.
    pub fn config_changed(&self) -> Vec<String> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Cmd::ConfigChanged(tx)) {
            return Vec::new();
        }
        rx.recv().unwrap_or_default()
    }

    /// Stops every app (highest priority number first) and ends the thread.
    pub fn shutdown(&self) {
        let (tx, rx) = mpsc::channel();
        if self.send(Cmd::Shutdown(tx)) {
            let _ = rx.recv();
        }
    }
}

struct Proc {
    p: Program,
    state: State,
    pid: Option<Pid>,
    started: Option<(Instant, SystemTime)>,
    start_ticks: u64,
    retries: u32,
    deadline: Option<Instant>,
    exitstatus: Option<i32>,
    description: String,
    /// Start again once stopped (restart), or forget once stopped (removed).
    after_stop: AfterStop,
    out_log: Option<Arc<Mutex<LogFile>>>,
    err_log: Option<Arc<Mutex<LogFile>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    Nothing,
    Start,
    Remove,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Started,
    Stopped,
}

struct Core {
    procs: Vec<Proc>,
    logs: LogPump,
    state_file: PathBuf,
    waiters: Vec<(String, Want, Answer)>,
    shutdown: Option<Sender<()>>,
    watchdog: Option<(Duration, Instant)>,
    jobs: Vec<Job>,
}

fn exit_code(ws: WaitStatus) -> Option<(Pid, i32)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid, code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid, 128 + sig as i32)),
        _ => None,
    }
}

impl Core {
    fn run(mut self, rx: Receiver<Cmd>, sig: UnixStream, wake: UnixStream) {
        if self.watchdog.is_some() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
        loop {
            let now = Instant::now();
            self.timers(now);
            if let Some(done) = self.shutdown.take() {
                if self.procs.iter().all(|p| p.pid.is_none()) && self.jobs.is_empty() {
                    self.save_pids();
                    self.logs.stop();
                    let _ = done.send(());
                    return;
                }
                self.shutdown = Some(done);
            }
            let timeout = match self.next_deadline() {
                Some(d) => {
                    let ms = d.saturating_duration_since(now).as_millis().min(60_000) as u16;
                    // Round up so a timer is never woken for a fraction of a millisecond early.
                    PollTimeout::from(ms.saturating_add(1))
                }
                None => PollTimeout::NONE,
            };
            let (sig_ready, wake_ready) = {
                let mut fds =
                    [PollFd::new(sig.as_fd(), PollFlags::POLLIN), PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, timeout) {
                    Ok(_) => (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false)),
                    Err(Errno::EINTR) => (true, true),
                    Err(e) => {
                        log::error!("supervisor: poll failed: {e}");
                        (true, true)
                    }
                }
            };
            if sig_ready {
                drain(&sig);
                self.reap();
            }
            if wake_ready {
                drain(&wake);
                while let Ok(c) = rx.try_recv() {
                    self.command(c);
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let procs = self.procs.iter().filter_map(|p| p.deadline);
        let jobs = self.jobs.iter().filter(|j| !j.timed_out).map(|j| j.deadline);
        procs.chain(jobs).chain(self.watchdog.map(|(d, last)| last + d)).min()
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Status(tx) => {
                let _ = tx.send(self.procs.iter().map(status).collect());
            }
            Cmd::Start(name, tx) => {
                if let Some(i) = self.lookup(&name, &tx) {
                    if self.procs[i].state == State::Running {
                        let _ = tx.send(Ok(status(&self.procs[i])));
                    } else {
                        self.waiters.push((name, Want::Started, tx));
                        if matches!(self.procs[i].state, State::Stopping) {
                            self.procs[i].after_stop = AfterStop::Start;
                        } else if !matches!(self.procs[i].state, State::Starting) {
                            self.procs[i].retries = 0;
                            self.spawn(i);
                        }
                        self.notify_waiters(i);
                    }
                }
            }
            Cmd::Stop(name, tx) => {
                if let Some(i) = self.lookup(&name, &tx) {
                    self.waiters.push((name, Want::Stopped, tx));
                    self.procs[i].after_stop = AfterStop::Nothing;
                    self.stop(i);
                    self.notify_waiters(i);
                }
            }
            Cmd::Restart(name, tx) => {
                if let Some(i) = self.lookup(&name, &tx) {
                    self.waiters.push((name, Want::Started, tx));
                    if self.procs[i].pid.is_some() {
                        self.procs[i].after_stop = AfterStop::Start;
                        self.stop(i);
                    } else {
                        self.procs[i].retries = 0;
                        self.spawn(i);
                    }
                    self.notify_waiters(i);
                }
            }
            Cmd::Replace(programs, tx) => {
                self.replace(programs);
                let _ = tx.send(());
            }
            Cmd::RunOnce(job, tx) => match spawn::spawn_oneoff(&job.command, &job.dir, &job.env, &job.output) {
                Ok(pid) => {
                    self.jobs.push(Job { pid, deadline: Instant::now() + job.timeout, timed_out: false, reply: tx });
                }
                Err(e) => {
                    let _ = tx.send(OneOffResult::SpawnFailed(format!("{:?}: {e}", job.command)));
                }
            },
            Cmd::ConfigChanged(tx) => {
                let mut done = Vec::new();
                for i in 0..self.procs.len() {
                    let (Some(pid), State::Running | State::Starting) = (self.procs[i].pid, self.procs[i].state) else {
                        continue;
                    };
                    match self.procs[i].p.config_change {
                        ConfigChange::Nothing => {}
                        ConfigChange::Signal(sig) => match killpg(pid, sig) {
                            Ok(()) => done.push(format!("{}: {sig}", self.procs[i].p.name)),
                            Err(e) => done.push(format!("{}: {sig} failed: {e}", self.procs[i].p.name)),
                        },
                        ConfigChange::Restart => {
                            self.procs[i].after_stop = AfterStop::Start;
                            self.stop(i);
                            done.push(format!("{}: restarted", self.procs[i].p.name));
                        }
                    }
                }
                let _ = tx.send(done);
            }
            Cmd::Shutdown(tx) => {
                for j in &self.jobs {
                    let _ = killpg(j.pid, Signal::SIGKILL);
                }
                let mut order: Vec<usize> = (0..self.procs.len()).collect();
                order.sort_by_key(|&i| std::cmp::Reverse(self.procs[i].p.priority));
                for i in order {
                    self.procs[i].after_stop = AfterStop::Nothing;
                    self.stop(i);
                }
                self.shutdown = Some(tx);
            }
        }
    }

    /// The index of app `name`, or `None` after telling the asker there is no such app.
    fn lookup(&self, name: &str, tx: &Answer) -> Option<usize> {
        let i = self.find(name);
        if i.is_none() {
            let _ = tx.send(Err(AppError::NoSuchApp(name.to_string())));
        }
        i
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.procs.iter().position(|p| p.p.name == name)
    }

    fn replace(&mut self, mut programs: Vec<Program>) {
        programs.sort_by_key(|p| p.priority);
        let wanted: HashMap<String, Program> = programs.iter().map(|p| (p.name.clone(), p.clone())).collect();
        // By name: stopping a program that is not running removes it from the table.
        let names: Vec<String> = self.procs.iter().map(|p| p.p.name.clone()).collect();
        for name in names {
            let Some(i) = self.find(&name) else { continue };
            match wanted.get(&name) {
                None => {
                    self.procs[i].after_stop = AfterStop::Remove;
                    self.stop(i);
                }
                Some(new) if *new != self.procs[i].p => {
                    let p = &mut self.procs[i];
                    p.p = new.clone();
                    p.out_log = None;
                    p.err_log = None;
                    if p.pid.is_some() {
                        p.after_stop = if new.autostart { AfterStop::Start } else { AfterStop::Nothing };
                        self.stop(i);
                    }
                }
                Some(_) => {}
            }
        }
        for p in programs {
            if self.find(&p.name).is_some() {
                continue;
            }
            let autostart = p.autostart;
            self.procs.push(Proc {
                p,
                state: State::Stopped,
                pid: None,
                started: None,
                start_ticks: 0,
                retries: 0,
                deadline: None,
                exitstatus: None,
                description: String::new(),
                after_stop: AfterStop::Nothing,
                out_log: None,
                err_log: None,
            });
            if autostart {
                let i = self.procs.len() - 1;
                self.spawn(i);
            }
        }
        self.procs.sort_by_key(|p| p.p.priority);
    }

    fn set_state(&mut self, i: usize, s: State) {
        let p = &mut self.procs[i];
        if p.state != s {
            log::info!("app {}: {} -> {}", p.p.name, p.state.as_str(), s.as_str());
            p.state = s;
        }
        self.notify_waiters(i);
    }

    fn notify_waiters(&mut self, i: usize) {
        let p = &self.procs[i];
        let st = status(p);
        self.waiters.retain(|(name, want, tx)| {
            if *name != p.p.name {
                return true;
            }
            let answer = match (want, p.state) {
                (Want::Started, State::Running) => Ok(st.clone()),
                (Want::Started, State::Fatal | State::Backoff | State::Exited) => {
                    Err(AppError::DidNotStart { name: name.clone(), why: st.description.clone(), state: p.state })
                }
                (Want::Stopped, State::Stopped | State::Exited | State::Fatal) => Ok(st.clone()),
                (Want::Started, State::Stopped) if p.after_stop != AfterStop::Start => {
                    Err(AppError::WasStopped(name.clone()))
                }
                _ => return true,
            };
            let _ = tx.send(answer);
            false
        });
    }

    fn spawn(&mut self, i: usize) {
        let logs = self.logs.clone();
        let p = &mut self.procs[i];
        p.exitstatus = None;
        match spawn::spawn(&p.p) {
            Ok(s) => {
                let now = Instant::now();
                p.pid = Some(s.pid);
                p.started = Some((now, crate::clock::now()));
                p.start_ticks = procfs::stat(s.pid.as_raw()).map_or(0, |st| st.start_ticks);
                p.description.clear();
                if let (Some(fd), Some(path)) = (s.stdout, &p.p.stdout_logfile) {
                    let l = p.out_log.get_or_insert_with(|| {
                        Arc::new(Mutex::new(LogFile::new(
                            path.clone(),
                            p.p.stdout_logfile_maxbytes,
                            p.p.stdout_logfile_backups,
                        )))
                    });
                    logs.add(fd, l.clone());
                }
                if let (Some(fd), Some(path)) = (s.stderr, &p.p.stderr_logfile) {
                    let l = p.err_log.get_or_insert_with(|| {
                        Arc::new(Mutex::new(LogFile::new(
                            path.clone(),
                            p.p.stderr_logfile_maxbytes,
                            p.p.stderr_logfile_backups,
                        )))
                    });
                    logs.add(fd, l.clone());
                }
                let startsecs = p.p.startsecs;
                if startsecs == 0 {
                    p.deadline = None;
                    p.retries = 0;
                    self.set_state(i, State::Running);
                } else {
                    p.deadline = Some(now + Duration::from_secs(startsecs));
                    self.set_state(i, State::Starting);
                }
                self.save_pids();
            }
            Err(e) => {
                log::error!("app {}: cannot start {:?}: {e}", p.p.name, p.p.command);
                p.description = format!("spawn error: {e}");
                self.backoff(i);
            }
        }
    }

    /// A start failed (spawn error or exit before startsecs): retry later, or give up.
    fn backoff(&mut self, i: usize) {
        let p = &mut self.procs[i];
        p.retries += 1;
        if p.retries > p.p.startretries {
            p.deadline = None;
            log::error!("app {}: gave up after {} attempts: {}", p.p.name, p.retries, p.description);
            self.set_state(i, State::Fatal);
        } else {
            // supervisord's backoff: one second more for each failed attempt.
            p.deadline = Some(Instant::now() + Duration::from_secs(u64::from(p.retries)));
            self.set_state(i, State::Backoff);
        }
    }

    fn stop(&mut self, i: usize) {
        let p = &mut self.procs[i];
        match p.pid {
            Some(pid) => {
                if p.state != State::Stopping {
                    if let Err(e) = killpg(pid, p.p.stopsignal) {
                        log::warn!("app {}: sending {} failed: {e}", p.p.name, p.p.stopsignal);
                    }
                    p.deadline = Some(Instant::now() + Duration::from_secs(p.p.stopwaitsecs));
                    self.set_state(i, State::Stopping);
                }
            }
            None => {
                p.deadline = None;
                if matches!(p.state, State::Backoff | State::Starting) || p.after_stop == AfterStop::Remove {
                    self.set_state(i, State::Stopped);
                } else {
                    self.notify_waiters(i);
                }
                self.after_stop(i);
            }
        }
    }

    fn after_stop(&mut self, i: usize) {
        match std::mem::replace(&mut self.procs[i].after_stop, AfterStop::Nothing) {
            AfterStop::Start => {
                self.procs[i].retries = 0;
                self.spawn(i);
            }
            AfterStop::Remove => {
                self.procs.remove(i);
            }
            AfterStop::Nothing => {}
        }
    }

    fn timers(&mut self, now: Instant) {
        if let Some((every, last)) = self.watchdog {
            if now >= last + every {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                self.watchdog = Some((every, now));
            }
        }
        for j in self.jobs.iter_mut().filter(|j| !j.timed_out && now >= j.deadline) {
            log::warn!("one-off command (pid {}) timed out; killing it", j.pid);
            let _ = killpg(j.pid, Signal::SIGKILL);
            j.timed_out = true;
        }
        for i in 0..self.procs.len() {
            let Some(d) = self.procs[i].deadline else {
                continue;
            };
            if now < d {
                continue;
            }
            self.procs[i].deadline = None;
            match self.procs[i].state {
                State::Starting => {
                    self.procs[i].retries = 0;
                    self.set_state(i, State::Running);
                }
                State::Backoff => self.spawn(i),
                State::Stopping => {
                    if let Some(pid) = self.procs[i].pid {
                        log::warn!(
                            "app {}: still running {} s after stop; killing",
                            self.procs[i].p.name,
                            self.procs[i].p.stopwaitsecs
                        );
                        let _ = killpg(pid, Signal::SIGKILL);
                    }
                }
                _ => {}
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(ws) => {
                    if let Some((pid, code)) = exit_code(ws) {
                        self.exited(pid, code);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    log::error!("supervisor: waitpid failed: {e}");
                    return;
                }
            }
        }
    }

    fn exited(&mut self, pid: Pid, code: i32) {
        if let Some(j) = self.jobs.iter().position(|j| j.pid == pid) {
            let job = self.jobs.swap_remove(j);
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = job.reply.send(if job.timed_out { OneOffResult::TimedOut } else { OneOffResult::Exited(code) });
            return;
        }
        // Not an app's main process: an orphaned descendant we reaped as subreaper.
        let Some(i) = self.procs.iter().position(|p| p.pid == Some(pid)) else {
            return;
        };
        // The main process is gone: end whatever of its group is left, so nothing runs on
        // unsupervised (members are re-parented to us and reaped here).
        let _ = killpg(pid, Signal::SIGKILL);
        let p = &mut self.procs[i];
        p.pid = None;
        p.exitstatus = Some(code);
        p.deadline = None;
        let expected = code < 128 && p.p.exitcodes.contains(&code);
        let state = p.state;
        let name = p.p.name.clone();
        self.save_pids();
        match state {
            State::Stopping => {
                self.set_state(i, State::Stopped);
                self.after_stop(i);
            }
            State::Starting => {
                let p = &mut self.procs[i];
                p.description = format!("exited with {code} before {} s", p.p.startsecs);
                log::warn!("app {name}: {}", p.description);
                self.backoff(i);
            }
            _ => {
                let p = &mut self.procs[i];
                p.description = format!("exited with {code} ({})", if expected { "expected" } else { "unexpected" });
                let restart = match p.p.autorestart {
                    AutoRestart::Always => true,
                    AutoRestart::Unexpected => !expected,
                    AutoRestart::Never => false,
                };
                log::info!("app {name}: {}", p.description);
                self.set_state(i, State::Exited);
                if restart && self.shutdown.is_none() {
                    self.procs[i].retries = 0;
                    self.spawn(i);
                }
            }
        }
    }

    fn save_pids(&self) {
        let apps = self
            .procs
            .iter()
            .filter_map(|p| {
                p.pid.map(|pid| leftovers::Entry {
                    name: p.p.name.clone(),
                    pid: pid.as_raw(),
                    start_ticks: p.start_ticks,
                })
            })
            .collect();
        leftovers::save(&self.state_file, &leftovers::Record { boot_id: leftovers::boot_id(), apps });
    }
}

fn status(p: &Proc) -> AppStatus {
    let uptime = match (p.pid, p.started) {
        (Some(_), Some((t, _))) => t.elapsed().as_secs(),
        _ => 0,
    };
    AppStatus {
        name: p.p.name.clone(),
        state: p.state,
        pid: p.pid.map(Pid::as_raw),
        uptime,
        exitstatus: p.exitstatus,
        description: p.description.clone(),
        log: p.p.stdout_logfile.clone(),
    }
}

fn drain(s: &UnixStream) {
    let mut buf = [0u8; 256];
    while matches!((&*s).read(&mut buf), Ok(n) if n > 0) {}
}
