//! What the fleet page shows of each gateway: its `engine_report` (agent version, apps,
//! queue backlog, faults, OS image) and `device_info` (OS, kernel, architecture,
//! addresses), read from their text without building the rest, and each row's search text.
//!
//! The filter language is one rule, used by the fleet page (in the browser, over the search
//! text each row carries) and by rollouts (here): whitespace-separated terms that must all
//! match; `tag:NAME` matches a tag exactly, any other term is a case-insensitive part of the
//! row's search text.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::store::{Device, FleetRow};

/// A device is online when the hub heard from it this recently.
pub const ONLINE_MS: i64 = 5 * 60 * 1000;

/// What the fleet page reads of an `engine_report` (borrowed from its text; the rest of
/// the report is skipped, not built).
#[derive(Deserialize, Default)]
struct Report<'a> {
    #[serde(borrow, default)]
    engine_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    apps: Vec<BTreeMap<Cow<'a, str>, AppReport<'a>>>,
    #[serde(default)]
    queue: Option<QueueReport>,
    #[serde(default)]
    faults: Vec<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    os: Option<OsReport<'a>>,
}

/// The operating system's slots, from agents with OS updates (`docs/os-updates.md`).
#[derive(Deserialize)]
struct OsReport<'a> {
    #[serde(borrow, default)]
    slot: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    update: Option<OsUpdate<'a>>,
    /// The slot not booted: what it holds and the bootloader's word on it.
    #[serde(borrow, default)]
    other: Option<OtherSlot<'a>>,
}

#[derive(Deserialize)]
struct OtherSlot<'a> {
    #[serde(borrow, default)]
    version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    boot_status: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OsUpdate<'a> {
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    phase: Cow<'a, str>,
}

/// The OS image column: the version the gateway runs and its slot, and an update under way
/// or one that came back (`2 (slot B)`, `2 (slot B), 3 rebooting`, `2 (slot A), 3 rolled-back`).
fn os_cell(os: Option<OsReport<'_>>) -> Option<OsCell> {
    use std::fmt::Write;
    let os = os?;
    if os.slot.is_none() && os.version.is_none() {
        return None;
    }
    let version = os.version.as_deref().unwrap_or("?");
    // `os:2`, `slot:b` and an update's version and phase (`rolled-back`) are what a filter names.
    let (mut image, mut words) = (version.to_string(), format!("os:{version}"));
    if let Some(slot) = &os.slot {
        let _ = write!(image, " (slot {slot})");
        let _ = write!(words, " slot:{slot}");
    }
    if let Some(u) = os.update.filter(|u| u.phase != "good") {
        let _ = write!(image, ", {} {}", u.version, u.phase);
        let _ = write!(words, " {} {}", u.version, u.phase);
    }
    // What the gateway would fall back to: `fallback:1`, and `fallback:bad` for a gateway
    // whose other slot the bootloader would not take (no way back should this one fail).
    if let Some(o) = os.other {
        if let Some(v) = &o.version {
            let _ = write!(words, " fallback:{v}");
        }
        if let Some(b) = &o.boot_status {
            let _ = write!(words, " fallback:{b}");
        }
    }
    Some(OsCell { image, words })
}

/// The OS image column's text, and the words the fleet filter finds it by.
pub struct OsCell {
    image: String,
    words: String,
}

#[derive(Deserialize)]
struct AppReport<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    version: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct QueueReport {
    backlog: Option<u64>,
}

/// An app on the fleet page: name, version, state.
pub type AppCell<'a> = (Cow<'a, str>, Option<Cow<'a, str>>, Option<Cow<'a, str>>);

/// What the fleet page shows of an `engine_report`: agent version, apps, queue backlog,
/// faults standing, OS image. Anything unreadable shows as unknown.
pub struct Summary<'a> {
    version: Option<Cow<'a, str>>,
    apps: Vec<AppCell<'a>>,
    backlog: Option<u64>,
    faults: usize,
    os_image: Option<OsCell>,
}

pub fn report_summary(report: Option<&str>) -> Summary<'_> {
    let r: Report = report.and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
    Summary {
        version: r.engine_version,
        apps: r.apps.into_iter().flatten().map(|(name, a)| (name, a.version, a.status)).collect(),
        backlog: r.queue.and_then(|q| q.backlog),
        faults: r.faults.len(),
        os_image: os_cell(r.os),
    }
}

/// What the inventory columns read of a `device_info`.
#[derive(Deserialize, Default)]
struct Info<'a> {
    #[serde(borrow, default)]
    os: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uname: Option<Uname<'a>>,
    #[serde(borrow, default)]
    ipaddrs: BTreeMap<Cow<'a, str>, Vec<Cow<'a, str>>>,
}

#[derive(Deserialize, Default)]
struct Uname<'a> {
    #[serde(borrow, default)]
    sysname: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    release: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    machine: Option<Cow<'a, str>>,
}

/// The inventory: OS (its name and version, or the kernel's name from older agents),
/// kernel release, architecture, and the addresses of every interface but loopback.
pub fn info_summary(info: Option<&str>) -> [Option<String>; 4] {
    let i: Info = info.and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
    let u = i.uname.unwrap_or_default();
    let addrs: Vec<&str> = i
        .ipaddrs
        .iter()
        .filter(|(iface, _)| iface.as_ref() != "lo")
        .flat_map(|(_, a)| a.iter().map(AsRef::as_ref))
        .filter(|a| !a.starts_with("fe80:"))
        .collect();
    [
        i.os.or(u.sysname).map(Cow::into_owned),
        u.release.map(Cow::into_owned),
        u.machine.map(Cow::into_owned),
        (!addrs.is_empty()).then(|| addrs.join(" ")),
    ]
}

/// The fleet page's columns, in the order of each row's array. `q` is the row's search
/// text (lower case), which the page's filter reads.
pub const FLEET_COLUMNS: [&str; 19] = [
    "id",
    "vendor",
    "model",
    "sn",
    "status",
    "token_hint",
    "last_seen_ms",
    "online",
    "engine_version",
    "apps",
    "backlog",
    "faults",
    "tags",
    "os",
    "kernel",
    "arch",
    "addresses",
    "os_image",
    "q",
];

#[derive(serde::Serialize)]
pub struct FleetCells<'a>(
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<i64>,
    bool,
    Option<Cow<'a, str>>,
    Vec<AppCell<'a>>,
    Option<u64>,
    usize,
    &'a [String],
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

impl FleetCells<'_> {
    /// The row's search text (lower case), which a filter reads.
    pub fn search_text(&self) -> &str {
        &self.18
    }
}

pub fn online(d: &Device, now: i64) -> bool {
    d.last_seen_ms.is_some_and(|t| now - t < ONLINE_MS)
}

pub fn cells(r: &FleetRow, now: i64) -> FleetCells<'_> {
    let d = &r.device;
    let Summary { version, apps, backlog, faults, os_image } = report_summary(r.engine_report.as_deref());
    let [os, kernel, arch, addresses] = info_summary(r.device_info.as_deref());
    let on = online(d, now);
    let mut q = String::with_capacity(160);
    for part in [d.sn.as_str(), &d.model, &d.vendor, d.status.as_str()] {
        q.push_str(part);
        q.push(' ');
    }
    q.push_str(if on { "online " } else { "offline " });
    if faults > 0 {
        q.push_str("faults ");
    }
    for part in [version.as_deref(), os.as_deref(), kernel.as_deref(), arch.as_deref(), addresses.as_deref()]
        .into_iter()
        .flatten()
    {
        q.push_str(part);
        q.push(' ');
    }
    if let Some(os) = &os_image {
        q.push_str(&os.words);
        q.push(' ');
    }
    for (name, version, state) in &apps {
        q.push_str(name);
        if let Some(v) = version {
            q.push('@');
            q.push_str(v);
        }
        q.push(' ');
        q.push_str(state.as_deref().unwrap_or("?"));
        q.push(' ');
    }
    for t in &r.tags {
        q.push_str("tag:");
        q.push_str(t);
        q.push(' ');
    }
    let q = q.trim_end().to_lowercase();
    FleetCells(
        d.id,
        &d.vendor,
        &d.model,
        &d.sn,
        d.status.as_str(),
        d.token_hint.as_deref(),
        d.last_seen_ms,
        on,
        version,
        apps,
        backlog,
        faults,
        &r.tags,
        os,
        kernel,
        arch,
        addresses,
        os_image.map(|o| o.image),
        q,
    )
}

/// Whether a row's search text (`q` of the fleet API, lower case) passes a filter.
pub fn matches(text: &str, query: &str) -> bool {
    query.split_whitespace().all(|term| {
        let term = term.to_lowercase();
        if term.starts_with("tag:") {
            text.split(' ').any(|w| w == term)
        } else {
            text.contains(&term)
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_inventory_reads_what_it_can_of_device_info() {
        let i = r#"{"os":"Debian GNU/Linux 12 (bookworm)","uname":{"sysname":"Linux","release":"6.1.0-47-arm64",
                    "machine":"aarch64"},"ipaddrs":{"lo":["127.0.0.1","::1"],"eth0":["10.0.2.15","fe80::1"]}}"#;
        let [os, kernel, arch, addrs] = info_summary(Some(i));
        assert_eq!(os.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!((kernel.as_deref(), arch.as_deref()), (Some("6.1.0-47-arm64"), Some("aarch64")));
        assert_eq!(addrs.as_deref(), Some("10.0.2.15"), "no loopback, no link-local");
        // An older agent: no os field, the kernel's name stands in.
        let [os, ..] = info_summary(Some(r#"{"uname":{"sysname":"Linux"}}"#));
        assert_eq!(os.as_deref(), Some("Linux"));
        assert_eq!(info_summary(Some("[broken")), [None, None, None, None]);
    }

    #[test]
    fn the_filter_matches_parts_and_whole_tags() {
        let text = "sn001 gw1 acme activated online 0.3.0 sensor@2.1 running tag:north tag:eu-west";
        assert!(matches(text, "SN001 online"));
        assert!(matches(text, "tag:north"));
        assert!(matches(text, "TAG:EU-WEST sensor@2"));
        assert!(!matches(text, "tag:eu"), "a tag matches whole");
        assert!(!matches(text, "offline"));
        assert!(matches(text, "  "));
    }

    #[test]
    fn the_fleet_row_reads_what_it_can_of_a_report() {
        let r = r#"{"apps":[{"w1":{"status":"RUNNING","version":"1.2"}},{"x":{"status":"FATAL","version":null}}],
                   "engine_version":"0.1.0","queue":{"backlog":42},"faults":[{"part":"queue"}]}"#;
        let s = report_summary(Some(r));
        assert_eq!(s.version.as_deref(), Some("0.1.0"));
        assert_eq!(json!(s.apps), json!([["w1", "1.2", "RUNNING"], ["x", null, "FATAL"]]));
        assert_eq!((s.backlog, s.faults, s.os_image.is_none()), (Some(42), 1, true));
        let s = report_summary(Some("not json"));
        assert_eq!((s.version, s.apps.len(), s.backlog, s.faults), (None, 0, None, 0));
        assert_eq!(report_summary(None).version, None);
        // Escaped strings are unescaped (owned), plain ones borrowed.
        let v = report_summary(Some(r#"{"engine_version":"0.1\u0041"}"#)).version;
        assert_eq!(v.as_deref(), Some("0.1A"));
    }

    #[test]
    fn the_os_image_column_says_version_slot_and_an_update_not_yet_good() {
        let os = |j: &str| report_summary(Some(format!(r#"{{"os":{j}}}"#).leak())).os_image.map(|o| o.image);
        assert_eq!(os(r#"{"slot":"B","image":"gwe","version":"2","update":null}"#).as_deref(), Some("2 (slot B)"));
        assert_eq!(
            os(r#"{"slot":"B","version":"2","update":{"version":"2","phase":"good","from":"A","to":"B"}}"#).as_deref(),
            Some("2 (slot B)")
        );
        assert_eq!(
            os(r#"{"slot":"A","version":"1","update":{"version":"2","phase":"rebooting"}}"#).as_deref(),
            Some("1 (slot A), 2 rebooting")
        );
        assert_eq!(
            os(r#"{"slot":"B","version":"2","update":{"version":"3","phase":"rolled-back"}}"#).as_deref(),
            Some("2 (slot B), 3 rolled-back")
        );
        assert_eq!(os(r#"{"slot":null,"version":null,"update":null}"#), None, "a system without slots");
        let words = report_summary(Some(
            r#"{"os":{"slot":"B","version":"2","other":{"slot":"A","version":"1","boot_status":"bad"}}}"#,
        ))
        .os_image
        .map(|o| o.words);
        assert_eq!(words.as_deref(), Some("os:2 slot:B fallback:1 fallback:bad"));
        assert_eq!(os("7"), None, "unreadable");
    }
}
