//! Starting one app process: its own session and process group, stdin from /dev/null,
//! stdout/stderr into pipes for the log thread, an unprivileged user if configured, and a
//! parent-death signal so it cannot outlive the agent unsupervised.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::unistd::{pipe2, Pid, User};

use super::program::Program;

pub struct Spawned {
    pub pid: Pid,
    /// Read end of the stdout pipe (also stderr when redirected).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Spawns `p`. The child calls `setsid` (so `pgid == pid`) and asks for SIGKILL when the
/// agent dies; if the agent died before that, it does not run at all.
pub fn spawn(p: &Program) -> io::Result<Spawned> {
    let (program, args) = p.command.split_first().ok_or_else(|| io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).env("SUPERVISOR_PROCESS_NAME", &p.name);
    for (k, v) in &p.environment {
        cmd.env(k, v);
    }
    if let Some(d) = &p.directory {
        cmd.current_dir(d);
    }
    if let Some(u) = &p.user {
        let user = User::from_name(u)
            .map_err(io::Error::from)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such user {u:?}")))?;
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let mut stdout = None;
    let mut stderr = None;
    if p.stdout_logfile.is_some() {
        let (r, w) = pipe()?;
        if p.redirect_stderr {
            cmd.stderr(Stdio::from(w.try_clone()?));
        }
        cmd.stdout(Stdio::from(w));
        stdout = Some(r);
    } else {
        cmd.stdout(Stdio::null());
        if p.redirect_stderr {
            cmd.stderr(Stdio::null());
        }
    }
    if !p.redirect_stderr {
        if p.stderr_logfile.is_some() {
            let (r, w) = pipe()?;
            cmd.stderr(Stdio::from(w));
            stderr = Some(r);
        } else {
            cmd.stderr(Stdio::null());
        }
    }
    let pid = start(cmd)?;
    Ok(Spawned { pid, stdout, stderr })
}

/// Spawns a one-off command (an install script) in `dir`, with stdout and stderr into
/// `output`, in its own session like an app.
pub fn spawn_oneoff(command: &[String], dir: &Path, env: &[(String, String)], output: &Path) -> io::Result<Pid> {
    let (program, args) = command.split_first().ok_or_else(|| io::Error::other("empty command"))?;
    let out = std::fs::File::create(output)?;
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir).stdin(Stdio::null()).stderr(Stdio::from(out.try_clone()?)).stdout(Stdio::from(out));
    for (k, v) in env {
        cmd.env(k, v);
    }
    start(cmd)
}

/// Starts `cmd` in a session of its own with a parent-death signal; the supervisor reaps it.
///
/// Every signal starts at its default action. A signal ignored when exec runs stays ignored
/// in the new program, and a shell cannot even trap it: an agent started under `nohup`, or
/// by an init that ignores SIGHUP, would otherwise pass that on to every app, and an app
/// asking for SIGHUP on a configuration change (`config_change = HUP`) would never get it.
/// (The standard library already empties the signal mask and resets SIGPIPE.)
fn start(mut cmd: Command) -> io::Result<Pid> {
    let parent = nix::unistd::getpid();
    // Real-time signals too; the C library's own (32, 33) refuse the call, which is harmless.
    let last_signal = libc::SIGRTMAX();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (setsid, signal, prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
            for sig in 1..=last_signal {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if nix::unistd::getppid() != parent {
                return Err(io::Error::other("the agent died while starting the process"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // `child` is not waited on here: the supervisor reaps every child itself.
    let pid = Pid::from_raw(raw_pid(child.id()));
    drop(cmd); // closes our copies of the pipes' write ends
    Ok(pid)
}

/// A child's pid as the kernel's calls take it. Linux pids fit an `i32` (`pid_max` is at
/// most 2^22); `std` hands them out as `u32`.
pub fn raw_pid(id: u32) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signals a process ignores, from its `SigIgn` line in /proc.
    fn ignored(status: &str) -> u64 {
        let line = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).expect("a SigIgn line");
        u64::from_str_radix(line.trim(), 16).expect("a hex mask")
    }

    #[test]
    fn an_app_starts_with_signals_at_their_default_even_when_the_agent_ignores_them() {
        // As under nohup. Nothing in this test process sends itself these signals.
        // SAFETY: setting a signal's disposition to SIG_IGN; no handler runs.
        unsafe {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGUSR2, libc::SIG_IGN);
            libc::signal(libc::SIGRTMIN() + 1, libc::SIG_IGN);
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("status");
        let cmd = ["/bin/cat".to_string(), "/proc/self/status".to_string()];
        let pid = spawn_oneoff(&cmd, dir.path(), &[], &out).unwrap();
        nix::sys::wait::waitpid(pid, None).unwrap();
        let mine = ignored(&std::fs::read_to_string("/proc/self/status").unwrap());
        let app = ignored(&std::fs::read_to_string(&out).unwrap());
        let bit = |sig: libc::c_int| 1u64 << (sig - 1);
        assert_ne!(mine & bit(libc::SIGHUP), 0, "the test did not ignore SIGHUP itself");
        let rt = bit(libc::SIGRTMIN() + 1);
        assert_eq!(
            app & (bit(libc::SIGHUP) | bit(libc::SIGUSR2) | rt),
            0,
            "the app inherited ignored signals: {app:#x}"
        );
    }
}
