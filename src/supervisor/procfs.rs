//! The few facts the supervisor reads from `/proc/PID/stat`, parsed in one place.

/// A process as `/proc/PID/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// R, S, D, Z, T, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
}

impl Stat {
    pub fn alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// Reads `/proc/PID/stat`; `None` if the process is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// Every process now.
pub fn all() -> impl Iterator<Item = Stat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_child_process() {
        // A child, not this process: under qemu-user the emulator makes up its own
        // /proc/self/stat, while other processes' come from the kernel as on a board.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = crate::supervisor::raw_pid(child.id());
        let st = stat(pid).unwrap();
        assert!(st.alive());
        assert_eq!(st.pid, pid);
        assert_eq!(st.ppid, crate::supervisor::raw_pid(std::process::id()));
        assert_eq!(st.pgrp, nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).unwrap().as_raw());
        assert!(st.start_ticks > 0);
        assert!(all().any(|s| s.pid == pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(stat(pid).is_none_or(|s| !s.alive()));
    }
}
