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
fn start(mut cmd: Command) -> io::Result<Pid> {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (setsid, prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
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
    let pid = Pid::from_raw(child.id() as i32);
    drop(cmd); // closes our copies of the pipes' write ends
    Ok(pid)
}
