//! The OS-update words both sides use: when a gateway reboots into a bundle it installed
//! (the `reboot` of `engine_fetch`'s `os` item and of a hub rollout), and what the lines
//! the agent writes to `fetch_status` about an OS update say of it (what a hub rollout
//! counts as installed or failed). `docs/os-updates.md` has the whole protocol.

use serde::{Deserialize, Serialize};

/// When the board restarts into a newly installed system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebootAt {
    /// As soon as the install finished.
    #[default]
    Now,
    /// Whenever the board next restarts (by its operator or a power cut).
    Manual,
    /// In a maintenance window, minutes after midnight UTC on the gateway's clock: from
    /// `start` (inclusive) to `end` (exclusive); a window may span midnight.
    Window { start: u16, end: u16 },
}

impl RebootAt {
    /// `now`, `manual`, or a window `HH:MM-HH:MM` (UTC).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("reboot {s:?}: say now, manual, or a window HH:MM-HH:MM (UTC)");
        match s {
            "now" => return Ok(RebootAt::Now),
            "manual" => return Ok(RebootAt::Manual),
            _ => {}
        }
        let hm = |t: &str| -> Option<u16> {
            let (h, m) = t.split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && t.len() == 5).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        match (hm(a), hm(b)) {
            (Some(start), Some(end)) if start != end => Ok(RebootAt::Window { start, end }),
            _ => Err(bad()),
        }
    }

    /// Seconds from `now` (Unix seconds) until a reboot may happen; None for manual.
    pub fn wait_secs(self, now: u64) -> Option<u64> {
        match self {
            RebootAt::Now => Some(0),
            RebootAt::Manual => None,
            RebootAt::Window { start, end } => {
                let minute = ((now % 86_400) / 60) as u16;
                let inside =
                    if start < end { minute >= start && minute < end } else { minute >= start || minute < end };
                if inside {
                    return Some(0);
                }
                let into_day = now % 86_400;
                let start = u64::from(start) * 60;
                Some(if start > into_day { start - into_day } else { 86_400 - into_day + start })
            }
        }
    }
}

impl std::fmt::Display for RebootAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RebootAt::Now => f.write_str("now"),
            RebootAt::Manual => f.write_str("manual"),
            RebootAt::Window { start, end } => {
                write!(f, "{:02}:{:02}-{:02}:{:02}", start / 60, start % 60, end / 60, end % 60)
            }
        }
    }
}

impl Serialize for RebootAt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RebootAt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RebootAt::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `NAME.vVERSION.raucb` -> (NAME, VERSION): how an OS bundle is named on the hub. The
/// version is the one in the bundle's signed manifest; the agent refuses a bundle whose
/// name says another.
pub fn bundle_parts(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".raucb")?;
    let (n, v) = stem.rsplit_once(".v")?;
    (!n.is_empty() && !v.is_empty() && !v.contains(char::is_whitespace)).then_some((n, v))
}

/// The `fetch_status` line of an OS bundle that runs and was marked good.
pub fn marked_good_line(compatible: &str, version: &str, slot: &str) -> String {
    format!("OS {compatible} {version} running in slot {slot} and marked good")
}

/// The `fetch_status` line of an OS update whose new system failed its check after its boot.
pub fn failed_check_line(version: &str, why: &str, back_to: &str) -> String {
    format!("OS update to {version} failed its check ({why}): back to slot {back_to}")
}

/// The `fetch_status` line of an OS update the board came back from.
pub fn rolled_back_line(version: &str, why: &str, running: &str) -> String {
    format!("OS update to {version} rolled back: {why}; running slot {running}")
}

/// The `fetch_status` line of an OS install a restart (a power cut) interrupted: the slot it
/// wrote is not the one to boot, and the command, kept until done, runs again. Nothing final.
pub fn interrupted_line(version: &str, running: &str) -> String {
    format!("OS update to {version} interrupted: its install was cut short by a restart; slot {running} runs as before, and the install starts again")
}

/// What a `fetch_status` says of the OS bundle `bundle` (`NAME.vVERSION.raucb`): it runs
/// and was marked good (`Some(true)`); it was refused, failed its check or rolled back
/// (`Some(false)`); nothing final yet (downloading, installing, waiting for its reboot,
/// or about something else).
pub fn outcome(fetch_status: &str, bundle: &str) -> Option<bool> {
    let first = fetch_status.lines().next().unwrap_or("");
    let (_, version) = bundle_parts(bundle)?;
    if let Some(rest) = first.strip_prefix("OS update to ") {
        let (v, rest) = rest.split_once(' ')?;
        return (v == version && (rest.starts_with("failed its check") || rest.starts_with("rolled back:")))
            .then_some(false);
    }
    if let Some(rest) = first.strip_prefix("OS ") {
        let mut w = rest.split_whitespace();
        let (_compatible, v) = (w.next(), w.next());
        return (v == Some(version) && rest.ends_with(" and marked good")).then_some(true);
    }
    first.strip_prefix(bundle).filter(|r| r.starts_with(':')).map(|_| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reboot_windows_are_minutes_of_the_day_in_utc() {
        assert_eq!(RebootAt::parse("now"), Ok(RebootAt::Now));
        let w = RebootAt::parse("02:00-04:30").unwrap();
        assert_eq!(w, RebootAt::Window { start: 120, end: 270 });
        assert_eq!(w.to_string(), "02:00-04:30");
        let day = 86_400 * 20_000;
        assert_eq!(w.wait_secs(day + 3 * 3600), Some(0));
        assert_eq!(w.wait_secs(day + 3600), Some(3600));
        assert_eq!(w.wait_secs(day + 5 * 3600), Some(21 * 3600));
        // Across midnight.
        let n = RebootAt::parse("23:00-01:00").unwrap();
        assert_eq!(n.wait_secs(day + 30 * 60), Some(0));
        assert_eq!(n.wait_secs(day + 22 * 3600), Some(3600));
        assert_eq!(RebootAt::Manual.wait_secs(day), None);
        for bad in ["", "later", "2:00-04:00", "02:00-02:00", "25:00-01:00", "02:00"] {
            assert!(RebootAt::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_hub_reads_the_agents_lines() {
        let b = "gw-os.v2.raucb";
        assert_eq!(outcome(&marked_good_line("gwe-qemu", "2", "B"), b), Some(true));
        assert_eq!(outcome(&marked_good_line("gwe-qemu", "3", "B"), b), None, "another version");
        assert_eq!(outcome(&failed_check_line("2", "broken is FATAL 20 s after the boot", "A"), b), Some(false));
        assert_eq!(outcome(&rolled_back_line("2", "the new system did not come up", "A"), b), Some(false));
        assert_eq!(outcome(&rolled_back_line("21", "x", "A"), b), None);
        assert_eq!(outcome(&interrupted_line("2", "A"), b), None, "an interrupted install runs again");
        assert_eq!(outcome("gw-os.v2.raucb: Compatible mismatch", b), Some(false));
        assert_eq!(outcome("gw-os.v2.raucbx: Compatible mismatch", b), None);
        assert_eq!(outcome("installed gwe-qemu 2 into slot B (running slot A); rebooting into it now", b), None);
        assert_eq!(outcome("downloading gw-os.v2.raucb", b), None);
        assert_eq!(outcome("installing gw-os.v2.raucb: 40% Copying", b), None);
        assert_eq!(outcome("anything", "not-a-bundle.tar.gz"), None);
        assert_eq!(bundle_parts("my.os.v2026.12.1.raucb"), Some(("my.os", "2026.12.1")));
        assert_eq!(bundle_parts("os.raucb"), None);
    }
}
