//! The agent's configuration: one TOML file (`/etc/gwe/gwe.toml` by default). Every path the
//! agent touches comes from here, so tests and boards point it at their own directories.
//! A broken file gets an error naming the file, the line and the key; never a panic.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::queue::{self, FullPolicy};

pub const DEFAULT_PATH: &str = "/etc/gwe/gwe.toml";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub device: Device,
    pub paths: Paths,
    pub queue: QueueConfig,
    pub ingest: Ingest,
    pub supervisor: SupervisorConfig,
    pub ota: OtaConfig,
    pub cloud: CloudConfig,
    pub edge: EdgeConfig,
    pub log: Log,
}

/// The edge data and control paths (`docs/edge-protocol.md`). They run when the cloud link
/// is configured and `enabled` is true.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    pub enabled: bool,
    /// The orchestrator's base URL; empty: the hub of `cloud.url`.
    pub orchestrator: String,
    /// How often every `ctrlpoll` provider is asked for a command, in ms.
    pub poll_ms: u64,
    /// How often the provider lists are fetched again from the orchestrator.
    pub discovery_secs: u64,
    /// Ask the orchestrator to leave out providers it cannot connect to (Arrowhead's
    /// `pingProviders`). Off where the orchestrating hub cannot reach the addresses the
    /// other hubs advertise to the gateways.
    pub ping_providers: bool,
    /// How often the supported parameters are sent with the state.
    pub parameters_secs: u64,
    /// Queue records kept for the batch providers (and at most half the queue's bytes); when
    /// one falls further behind, the oldest go first.
    pub max_points: u64,
    /// Most points in one batch (a larger backlog goes in several).
    pub max_batch_points: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            orchestrator: String::new(),
            poll_ms: 5000,
            discovery_secs: 60,
            ping_providers: true,
            parameters_secs: 600,
            max_points: 100_000,
            max_batch_points: 5000,
        }
    }
}

/// The link to the hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// `https://host:port` (or `http://` behind a trusted network); empty: no cloud link.
    pub url: String,
    /// PEM bundle of the CAs the hub's certificate must chain to.
    pub ca_file: PathBuf,
    /// Most records in one forwarded batch.
    pub batch_records: usize,
    /// How long the forwarder waits to fill a batch once it has a record, in ms.
    pub linger_ms: u64,
    /// Longest wait between retries while the hub is unreachable.
    pub retry_max_secs: u64,
    /// Timeout of a request (long-polls add their own wait).
    pub timeout_secs: u64,
    /// Seconds between telemetry reports; the `update_interval` dataport overrides it.
    pub report_interval_secs: u64,
    /// Long-poll wait for commands, in ms (at most 300000).
    pub poll_ms: u64,
    /// How the gateway proves who it is: `token` (Exosite's activation, the default) or
    /// `certificate` (its own key, made on the gateway, and a certificate the hub issues;
    /// `docs/identity.md`).
    pub identity: CloudIdentity,
    /// A batch credential (`gwe-hub batch add`) in this file lets a gateway whose key was
    /// not imported ask to enroll; an operator approves it. Empty: none.
    pub batch_file: PathBuf,
    /// Renew the certificate when it has fewer than this many days left.
    pub renew_days: u64,
    /// The TPM that holds the gateway's key: `/dev/tpmrm0`, or `tcp:HOST:PORT` (swtpm's
    /// socket). Empty: the key is a file on the data partition.
    pub tpm: String,
}

/// How the gateway proves who it is to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudIdentity {
    Token,
    Certificate,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
            batch_records: 1000,
            linger_ms: 1000,
            retry_max_secs: 300,
            timeout_secs: 30,
            report_interval_secs: 14_400,
            poll_ms: 300_000,
            identity: CloudIdentity::Token,
            batch_file: PathBuf::new(),
            renew_days: 10,
            tpm: String::new(),
        }
    }
}

/// Over-the-air installs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtaConfig {
    /// The offline root keys (ed25519, 64 hex digits), baked into the firmware. With them,
    /// every package needs release metadata signed by a release key they vouch for
    /// (docs/ota-format.md, "Release metadata").
    pub root_keys: Vec<String>,
    /// The keys document the firmware ships, used until a newer one arrives.
    pub keys_file: Option<PathBuf>,
    /// The RAUC compatible string of this gateway's image: release metadata that names a
    /// compatible string installs only where it is this one.
    pub compatible: Option<String>,
    /// What time metadata expiry is checked against: auto, system or metadata.
    pub clock: crate::ota::release::ClockPolicy,
    /// With root_keys: still accept packages signed the old way (`.sig` by trusted_keys),
    /// with a warning each time.
    pub allow_legacy_signatures: bool,
    /// ed25519 public keys (64 hex digits) whose old-style `.sig` signatures are accepted:
    /// without root_keys (with a warning at start), or with allow_legacy_signatures.
    pub trusted_keys: Vec<String>,
    /// Accept packages without a signature (development only).
    pub allow_unsigned: bool,
    /// install.sh is killed after this long.
    pub install_timeout_secs: u64,
    /// Caps on an unpacked package (tar bombs).
    pub max_unpacked_bytes: u64,
    pub max_entries: u64,
    /// App packages baked into the image, installed at first start.
    pub preinstall_dir: PathBuf,
    /// A new agent must confirm itself healthy within this long, or it is rolled back.
    pub self_update_deadline_secs: u64,
    /// Whole-image updates through RAUC (docs/os-updates.md): after booting a new system,
    /// the agent checks it and marks it good, or bad and reboots into the old one.
    pub os_updates: bool,
    /// The `rauc` program.
    pub rauc: PathBuf,
    /// A new system must pass its check (the agent up, its apps RUNNING, the hub answering
    /// when one is configured) within this long after its boot.
    pub os_check_secs: u64,
    /// How the agent restarts the board (into the new system, or back to the old one).
    pub reboot_command: Vec<String>,
    /// Largest OS bundle the agent downloads.
    pub max_os_bundle_bytes: u64,
}

impl Default for OtaConfig {
    fn default() -> Self {
        Self {
            root_keys: Vec::new(),
            keys_file: None,
            compatible: None,
            clock: Default::default(),
            allow_legacy_signatures: false,
            trusted_keys: Vec::new(),
            allow_unsigned: false,
            install_timeout_secs: 300,
            max_unpacked_bytes: 256 << 20,
            max_entries: 10_000,
            preinstall_dir: "/usr/share/gwe/preinstall".into(),
            self_update_deadline_secs: 300,
            os_updates: false,
            rauc: "rauc".into(),
            os_check_secs: 300,
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            max_os_bundle_bytes: 1 << 30,
        }
    }
}

/// App hosting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// `[program:NAME]` files baked into the image (`*.conf`).
    pub programs_dir: PathBuf,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self { programs_dir: "/etc/gwe/programs.d".into() }
    }
}

/// Who this gateway is. The serial comes from `serial`, else the first line of
/// `serial_file`, else the MAC address of `iface` (upper case, colon separated).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Device {
    pub vendor: String,
    pub model: String,
    pub serial: Option<String>,
    pub serial_file: Option<PathBuf>,
    pub iface: String,
}

impl Default for Device {
    fn default() -> Self {
        Self { vendor: "gwe".into(), model: "gateway".into(), serial: None, serial_file: None, iface: "eth0".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// Persistent state: queue, tokens, counters (`/var/lib/gwe`).
    pub state_dir: PathBuf,
    /// App logs (`/var/log/gwe`).
    pub log_dir: PathBuf,
    /// Runtime files: control socket (`/run/gwe`).
    pub run_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self { state_dir: "/var/lib/gwe".into(), log_dir: "/var/log/gwe".into(), run_dir: "/run/gwe".into() }
    }
}

impl Paths {
    pub fn queue_dir(&self) -> PathBuf {
        self.state_dir.join("queue")
    }

    /// The edge store's state files (provider cursors, batch and control state).
    pub fn edge_dir(&self) -> PathBuf {
        self.state_dir.join("edge")
    }

    /// The generic configuration apps read (`config/apps.json`).
    pub fn app_config(&self) -> PathBuf {
        self.state_dir.join("config").join("apps.json")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.state_dir.join("state")
    }

    /// Installed app versions.
    pub fn apps_dir(&self) -> PathBuf {
        self.state_dir.join("apps")
    }

    /// Pids of running apps, for the next agent after a crash.
    pub fn app_pids(&self) -> PathBuf {
        self.secrets_dir().join("apps.pids")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub max_record: usize,
    pub batch_bytes: usize,
    pub full_policy: FullPolicy,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let o = queue::Options::default();
        Self {
            max_bytes: o.max_bytes,
            segment_bytes: o.segment_bytes,
            max_record: o.max_record,
            batch_bytes: o.batch_bytes,
            full_policy: o.full_policy,
        }
    }
}

impl QueueConfig {
    pub fn options(&self) -> queue::Options {
        queue::Options {
            max_bytes: self.max_bytes,
            segment_bytes: self.segment_bytes,
            max_record: self.max_record,
            batch_bytes: self.batch_bytes,
            full_policy: self.full_policy,
            ..queue::Options::default()
        }
    }
}

/// The local GMQ ingest API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ingest {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Threads answering requests.
    pub threads: usize,
}

impl Default for Ingest {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8090)), max_body: 64 << 10, threads: 4 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// error, warn, info, debug or trace.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// A configuration file that could not be used.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::from_str_at(&text, path)
    }

    /// Parses `text` as if read from `path` (for error messages).
    pub fn from_str_at(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let de = toml::de::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| text.as_bytes()[..s.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1);
            ConfigError {
                path: path.to_path_buf(),
                line,
                key: (key != ".").then_some(key),
                message: inner.message().trim().to_string(),
            }
        })?;
        cfg.validate().map_err(|(key, message)| ConfigError {
            path: path.to_path_buf(),
            line: find_key_line(text, key),
            key: Some(key.to_string()),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.queue.max_bytes < 256 << 10 {
            return Err(("queue.max_bytes", "must be at least 262144 (256 KiB)".into()));
        }
        if self.queue.max_record == 0 || self.queue.max_record > queue::format::MAX_RECORD_CEILING {
            return Err(("queue.max_record", format!("must be 1 to {}", queue::format::MAX_RECORD_CEILING)));
        }
        if self.ingest.threads == 0 || self.ingest.threads > 64 {
            return Err(("ingest.threads", "must be 1 to 64".into()));
        }
        if log_level(&self.log.level).is_none() {
            return Err(("log.level", format!("{:?} is not one of error, warn, info, debug, trace", self.log.level)));
        }
        if self.ota.root_keys.iter().any(|k| crate::ota::package::parse_public_key(k).is_none()) {
            return Err(("ota.root_keys", "each key must be an ed25519 public key in 64 hex digits".into()));
        }
        if self.ota.trusted_keys.iter().any(|k| crate::ota::package::parse_public_key(k).is_none()) {
            return Err(("ota.trusted_keys", "each key must be an ed25519 public key in 64 hex digits".into()));
        }
        let url = &self.cloud.url;
        if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
            return Err(("cloud.url", format!("{url:?} must start with https:// or http://")));
        }
        if self.cloud.batch_records == 0 || self.cloud.batch_records > 100_000 {
            return Err(("cloud.batch_records", "must be 1 to 100000".into()));
        }
        if self.cloud.poll_ms > 300_000 {
            return Err(("cloud.poll_ms", "must be at most 300000 (the device API's limit)".into()));
        }
        if self.cloud.identity == CloudIdentity::Certificate && !url.starts_with("https://") {
            return Err(("cloud.identity", "a certificate identifies the gateway over https:// only".into()));
        }
        if self.cloud.renew_days == 0 || self.cloud.renew_days > 365 {
            return Err(("cloud.renew_days", "must be 1 to 365".into()));
        }
        if self.cloud.report_interval_secs == 0 {
            return Err(("cloud.report_interval_secs", "must be at least 1".into()));
        }
        if self.ota.os_updates && self.ota.reboot_command.first().is_none_or(|p| p.is_empty()) {
            return Err(("ota.reboot_command", "os_updates needs a command that restarts the board".into()));
        }
        if self.ota.os_updates && self.ota.os_check_secs < 10 {
            return Err(("ota.os_check_secs", "must be at least 10 (a new system needs time to come up)".into()));
        }
        if self.device.vendor.is_empty() || self.device.model.is_empty() {
            return Err(("device.vendor", "vendor and model must not be empty".into()));
        }
        Ok(())
    }
}

pub fn log_level(s: &str) -> Option<log::LevelFilter> {
    s.parse().ok()
}

/// Line of the first assignment to the last part of a dotted key, for validation errors.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let (table, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let mut in_table = table.is_empty();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_table = t.trim_matches(|c| c == '[' || c == ']').trim() == table;
        } else if in_table && t.split('=').next().is_some_and(|k| k.trim() == leaf) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str_at(text, Path::new("/etc/gwe/gwe.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.ingest.listen.port(), 8090);
        assert_eq!(c.paths.queue_dir(), Path::new("/var/lib/gwe/queue"));
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        let e = parse("[device]\nvendor = \"a\"\n\n[queue]\nmax_bytes = \"lots\"\n").unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.line, Some(5), "{msg}");
        assert_eq!(e.key.as_deref(), Some("queue.max_bytes"), "{msg}");
        assert!(msg.starts_with("config /etc/gwe/gwe.toml, line 5, key queue.max_bytes: "), "{msg}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[queue]\nmax_bytse = 5\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains("max_bytse"), "{e}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = parse("[ingest]\nlisten = \n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn bad_policy_and_bad_value_are_refused() {
        let e = parse("[queue]\nfull_policy = \"maybe\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("queue.full_policy"), "{e}");
        let e = parse("[log]\nlevel = \"loud\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("log.level")), "{e}");
        let e = parse("[ingest]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ingest.listen"), "{e}");
        let e = parse("[ota]\nos_updates = true\nreboot_command = []\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("ota.reboot_command")), "{e}");
        let e = parse("[ota]\nos_updates = true\nos_check_secs = 1\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ota.os_check_secs"), "{e}");
        let c = parse("[ota]\nos_updates = true\nreboot_command = [\"/sbin/reboot\", \"-f\"]\n").unwrap();
        assert_eq!(c.ota.reboot_command, ["/sbin/reboot", "-f"]);
    }

    #[test]
    fn unreadable_file_is_named() {
        let e = Config::from_file(Path::new("/nonexistent/gwe.toml")).unwrap_err();
        assert!(e.to_string().starts_with("config /nonexistent/gwe.toml: cannot read"), "{e}");
    }
}
