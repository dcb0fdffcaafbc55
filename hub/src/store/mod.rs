//! The hub's storage: one trait, a SQLite implementation (embedded, the default) and a
//! PostgreSQL one (several hubs sharing a server). Both run the same test suite
//! (`tests/store.rs`). Writes are durable when a method returns.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use gwe_wire::edge::EdgePoint;
use serde::Serialize;

use crate::notify::Notifier;

pub mod postgres;
pub mod sqlite;

/// A storage failure, or a request the data refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The row already exists (e.g. whitelisting a device twice).
    Exists(String),
    /// The database failed; the message says how.
    Db(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exists(m) => write!(f, "{m} already exists"),
            Self::Db(m) => write!(f, "database: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A count as the store and the API carry it.
pub fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A forwarder seq or stream id as the databases keep it (a signed 64-bit integer).
pub(crate) fn db_seq(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Db(format!("seq {v} is past 2^63 - 1, the most a database keeps")))
}

/// A seq the database kept (never negative: written by `db_seq`).
pub(crate) fn from_db_seq(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// How a device names itself at activation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct DeviceKey {
    pub vendor: String,
    pub model: String,
    pub sn: String,
}

/// Generates a state enum kept in the store as its lower-case name.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name the store and the API use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// From the store's text; None for a name this hub does not know.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Whether a device may activate.
    DeviceStatus {
        /// Whitelisted (or re-enabled): its next activation gets a token.
        Enabled = "enabled",
        /// Holds a token or a certificate; an operator must re-enable it to activate again.
        Activated = "activated",
        /// Revoked: its token, key and certificates refused; an operator's re-enable lets it
        /// activate or enroll again.
        Revoked = "revoked",
    }
}

/// A device as the operator sees it. The token itself is never stored, only its SHA-256
/// and its first four characters (`token_hint`) so an operator can tell tokens apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub id: i64,
    pub vendor: String,
    pub model: String,
    pub sn: String,
    pub status: DeviceStatus,
    pub token_hint: Option<String>,
    pub created_ms: i64,
    pub last_seen_ms: Option<i64>,
}

/// The outcome of an activation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// The token (whose hash was given) now belongs to the device.
    Activated(i64),
    /// No such device is whitelisted.
    Unknown,
    /// Already activated (an operator must re-enable it) or the identity is ambiguous.
    Conflict,
}

/// The latest value of a dataport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Value {
    pub value: String,
    /// The point's own timestamp, unix seconds.
    pub ts: i64,
    /// When the hub stored it, unix milliseconds (drives long-poll and Last-Modified).
    pub modified_ms: i64,
}

/// One timestamped value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    pub alias: String,
    pub ts: i64,
    pub value: String,
}

/// What the hub knows of a content item (an OTA package, a config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContentInfo {
    pub id: String,
    pub content_type: String,
    pub size: i64,
    pub updated: i64,
    pub meta: String,
}

/// A service in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub id: i64,
    pub definition: String,
    pub system_name: String,
    pub address: String,
    pub port: i64,
    pub service_uri: String,
    pub secure: String,
    pub interfaces: Vec<String>,
    pub version: i64,
    pub metadata: BTreeMap<String, String>,
    pub end_of_validity: Option<String>,
    /// The provider's certificate (Arrowhead's `authenticationInfo`), when it gave one.
    pub authentication_info: Option<String>,
    /// When the entry was first registered, and last registered again (unix ms).
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What the `cmd`, `ctrlpoll` and `ctrlupdate` services keep for one edge (JSON texts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EdgeControl {
    /// Issued and not yet fetched.
    pub pending: Option<String>,
    /// The last command issued, fetched or not.
    pub last_command: Option<String>,
    pub issued_ms: Option<i64>,
    pub state: Option<String>,
    pub state_ms: Option<i64>,
    pub parameters: Option<String>,
    pub parameters_ms: Option<i64>,
}

/// One stored point of an edge batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgePointRow {
    pub batch_id: String,
    pub provider: String,
    pub name: String,
    pub ts: i64,
    pub value: String,
}

/// One stored edge batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeBatchRow {
    pub batch_id: String,
    pub provider: String,
    pub received_ms: i64,
    pub points: i64,
}

/// The least time between two group commits of one hub process, with either database. A
/// commit has a fixed cost (an fsync or WAL flush, round trips or, with SQLite shared by
/// several hubs, reading again the pages another process changed), so under load a hub
/// gathers writes this long; a write after a quiet spell is committed at once. At 10,000
/// gateways PostgreSQL spent 0.85 cores committing without it, 0.22 with it.
pub(crate) const COMMIT_GAP: std::time::Duration = std::time::Duration::from_millis(10);

/// A device's `last_seen_ms` is written at most this often by one hub: most writes then
/// leave its row alone.
pub(crate) const SEEN_EVERY_MS: i64 = 30_000;

/// When this hub last wrote each device's `last_seen_ms`. A write of the row is due once
/// [`SEEN_EVERY_MS`] has passed; until then the statement is not run at all. (Its `WHERE`
/// would change nothing, but finding the row read a page of `devices`, and with SQLite
/// shared by several hubs that page is read from the file again after another hub's
/// commit.) The statement keeps its own condition for the writes of other hubs, and a try
/// that found the row recent enough counts as a write: with a gateway's writes spread over
/// several hubs, its row is at most twice [`SEEN_EVERY_MS`] old.
#[derive(Debug, Default)]
pub(crate) struct SeenTimes(std::collections::HashMap<i64, i64>);

impl SeenTimes {
    pub fn due(&self, dev: i64, now_ms: i64) -> bool {
        self.0.get(&dev).is_none_or(|&t| now_ms - t >= SEEN_EVERY_MS)
    }

    pub fn wrote(&mut self, dev: i64, now_ms: i64) {
        self.0.insert(dev, now_ms);
    }

    /// After a transaction that may have written some of them failed: all are due again.
    pub fn forget(&mut self) {
        self.0.clear();
    }
}

/// The edge services' storage: service registry, commands and states, batches.
#[async_trait]
pub trait EdgeStore: Send + Sync {
    /// Adds a service or replaces the one with the same definition, system, address, port.
    async fn register_service(&self, s: &ServiceRow) -> Result<i64>;
    async fn unregister_service(&self, definition: &str, system: &str, address: &str, port: i64) -> Result<bool>;
    /// Every provider of `definition`, oldest registration first.
    async fn services(&self, definition: &str) -> Result<Vec<ServiceRow>>;
    /// Makes `command` the edge's pending command (only the latest is kept).
    async fn issue_command(&self, system: &str, command: &str, now_ms: i64) -> Result<()>;
    /// Takes the pending command: a second fetch, here or on another hub, gets nothing.
    async fn take_command(&self, system: &str) -> Result<Option<String>>;
    async fn edge_report(&self, system: &str, state: Option<&str>, parameters: Option<&str>, now_ms: i64)
        -> Result<()>;
    async fn edge_control(&self, system: &str) -> Result<Option<EdgeControl>>;
    /// Stores a batch's points, received by `provider` (a hub's system name), unless this
    /// edge's `batch_id` was stored before, through any provider (a batch retried through
    /// another hub of the same database is not stored twice); says whether it was new.
    async fn edge_batch(
        &self,
        system: &str,
        provider: &str,
        batch_id: &str,
        points: &[EdgePoint],
        now_ms: i64,
    ) -> Result<bool>;
    /// The edge's stored points (of one provider, or all) in arrival order, at most `limit`.
    async fn edge_points(&self, system: &str, provider: Option<&str>, limit: i64) -> Result<Vec<EdgePointRow>>;
    /// The edge's batches (of one provider, or all) in arrival order.
    async fn edge_batches(&self, system: &str, provider: Option<&str>) -> Result<Vec<EdgeBatchRow>>;
}

/// The longest a dashboard session lives.
pub const SESSION_MAX_MS: i64 = 12 * 3600 * 1000;

text_enum! {
    /// What a dashboard operator may do. Operators made before roles are admins (they could
    /// do everything).
    Role {
        /// Reads the fleet, rollouts and the audit log; changes nothing.
        Viewer = "viewer",
        /// Also commands gateways, tags them, saves filters and runs rollouts.
        Operator = "operator",
        /// Also decides which gateways belong: whitelists and re-enables them.
        Admin = "admin",
    }
}

/// A dashboard operator. `password_hash` is an Argon2id PHC string, never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub role: Role,
    /// Signs in no more and its tokens are refused, until enabled again.
    pub disabled: bool,
}

/// One entry of the audit log: who changed what, to which gateways or objects, when and
/// from where. Entries are only ever added (`FleetStore::audit_add`); no API changes or
/// removes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Set by the store, rising; ignored when adding.
    pub id: i64,
    pub at_ms: i64,
    /// `operator:NAME` (the dashboard), `token` (the shared operator API token),
    /// `system:NAME` (an Arrowhead system's certificate), `cli` (`gwe-hub operator`).
    pub actor: String,
    /// What was done, `noun.verb`: `device.command`, `rollout.create`, `signin.failed`...
    pub action: String,
    /// The gateways (serials) or the object (rollout, filter, file) it was done to.
    pub targets: String,
    pub detail: String,
    /// The client's address as the hub's socket saw it (empty for the command line).
    pub addr: String,
}

text_enum! {
    /// What an operator's API token may do (within the operator's role).
    Scope {
        /// GET only.
        Read = "read",
        /// Also the changes the operator's role allows.
        Write = "write",
    }
}

/// An operator's own token for the operator API: the store keeps its SHA-256 only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    /// Set by the store; ignored when adding.
    pub id: i64,
    pub operator: String,
    /// What it is for, as its maker named it.
    pub label: String,
    pub scope: Scope,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub revoked: bool,
}

/// A token presented to the operator API, with its operator's role at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenHolder {
    pub token: ApiToken,
    pub role: Role,
    /// The operator is disabled.
    pub disabled: bool,
}

/// A signed-in dashboard session (the cookie holds the token; the store its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub operator: String,
    pub role: Role,
    /// Every state-changing request of the session must echo this (`X-CSRF-Token`).
    pub csrf: String,
    pub expires_ms: i64,
}

/// One gateway on the fleet page: the device and its latest `engine_report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRow {
    pub device: Device,
    pub engine_report: Option<String>,
    pub report_ms: Option<i64>,
    /// The latest `device_info` (the inventory: addresses, OS, kernel).
    pub device_info: Option<String>,
    /// The operator's tags on the device, sorted.
    pub tags: Vec<String>,
}

/// A fleet filter an operator saved under a name (the fleet page's filter language,
/// `docs/dashboard.md`); a rollout may target one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavedFilter {
    pub name: String,
    pub query: String,
    pub operator: String,
    pub created_ms: i64,
}

text_enum! {
    /// Where a rollout stands.
    RolloutState {
        /// Waiting for its start time.
        Scheduled = "scheduled",
        Running = "running",
        /// Stopped by the failure limit or an operator; resumable.
        Paused = "paused",
        /// Ended by an operator: its pending gateways are skipped.
        Aborted = "aborted",
        /// Every stage went through.
        Done = "done",
    }
}

text_enum! {
    /// Where one gateway of a rollout stands.
    TargetState {
        /// Its stage has not come yet.
        Pending = "pending",
        /// Sent its command; waiting for the outcome in `fetch_status`.
        Sent = "sent",
        Installed = "installed",
        Failed = "failed",
        /// The rollout was aborted before its turn.
        Skipped = "skipped",
    }
}

/// A state read back from the store that this hub does not know (written by a newer hub).
pub(crate) fn unknown_state(what: &str, s: &str) -> StoreError {
    StoreError::Db(format!("unknown {what} state {s:?} in the database"))
}

/// A staged OTA rollout: one package or OS bundle to a group of gateways, stage by stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollout {
    pub id: i64,
    pub name: String,
    /// `NAME.vVER.tar.gz` (an app or the agent) or `NAME.vVER.raucb` (an OS bundle), hosted
    /// for `vendor`/`model`.
    pub package: String,
    pub vendor: String,
    pub model: String,
    /// How the group was chosen (shown; the devices are fixed at creation).
    pub filter: String,
    /// Cumulative percentages of the group, e.g. `[1, 10, 100]`.
    pub stages: Vec<i64>,
    /// A stage whose failed share passes this pauses the rollout.
    pub max_failure_pct: i64,
    /// `scheduled` until `start_ms`.
    pub state: RolloutState,
    /// The stage under way (index into `stages`).
    pub stage: i64,
    /// The stage whose failures the operator accepted by resuming (-1: none).
    pub accepted_stage: i64,
    pub reason: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// When the first stage starts (the creation time unless it was scheduled).
    pub start_ms: i64,
    /// When a gateway reboots into an OS bundle it installed: `now`, `manual` or a window
    /// `HH:MM-HH:MM` of the gateway's clock in UTC (`docs/os-updates.md`).
    pub reboot: String,
    /// An OS bundle is streamed by RAUC from the hub rather than downloaded first.
    pub stream: bool,
}

/// One gateway of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutDevice {
    pub device_id: i64,
    pub sn: String,
    pub stage: i64,
    pub state: TargetState,
    pub detail: String,
    pub updated_ms: i64,
}

/// The dashboard's storage: operators, sessions, the fleet at a glance, rollouts.
#[async_trait]
pub trait FleetStore: Send + Sync {
    /// Adds an operator with `role`, or (`replace`) sets the password of an existing one
    /// (its role stays).
    async fn put_operator(&self, name: &str, password_hash: &str, role: Role, replace: bool, now_ms: i64)
        -> Result<()>;
    /// Gives an operator another role and ends its sessions; false if there is no such one.
    async fn set_role(&self, name: &str, role: Role) -> Result<bool>;
    /// Disables an operator (its sessions end) or enables it again; false if there is no such one.
    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool>;
    async fn operator(&self, name: &str) -> Result<Option<Operator>>;
    async fn add_session(&self, token_hash: &[u8; 32], operator_id: i64, csrf: &str, expires_ms: i64) -> Result<()>;
    /// The session, if it exists, has not expired at `now_ms` and its operator is not
    /// disabled. Expired sessions are
    /// deleted by the next sign-in (`add_session`).
    async fn session(&self, token_hash: &[u8; 32], now_ms: i64) -> Result<Option<Session>>;
    async fn drop_session(&self, token_hash: &[u8; 32]) -> Result<()>;
    /// Adds an operator's API token (`t.id` and `t.revoked` are ignored); its id. None when
    /// the operator does not exist.
    async fn add_api_token(&self, t: &ApiToken, token_hash: &[u8; 32]) -> Result<Option<i64>>;
    /// The token with this hash and its operator's role (also when expired or revoked: the
    /// caller says which).
    async fn api_token(&self, token_hash: &[u8; 32]) -> Result<Option<ApiTokenHolder>>;
    /// Every API token (of every operator), by id.
    async fn api_tokens(&self) -> Result<Vec<ApiToken>>;
    /// Revokes a token for good; false if there is no such token.
    async fn revoke_api_token(&self, id: i64) -> Result<bool>;
    /// Appends an entry to the audit log (`e.id` is ignored).
    async fn audit_add(&self, e: &AuditEntry) -> Result<()>;
    /// The audit log, newest first: at most `limit` entries with an id below `before_id`.
    async fn audit(&self, before_id: i64, limit: i64) -> Result<Vec<AuditEntry>>;
    /// Failed sign-ins since `since_ms`: as `actor` (`operator:NAME`), and from `addr`.
    async fn failed_signins(&self, actor: &str, addr: &str, since_ms: i64) -> Result<(i64, i64)>;
    /// Every device with its latest engine_report and device_info and its tags, in id
    /// order: one query for the fleet.
    async fn fleet(&self) -> Result<Vec<FleetRow>>;
    /// Adds the tags `add` to and takes `remove` from each device of `ids` (unknown ids are
    /// passed over); one transaction.
    async fn set_tags(&self, ids: &[i64], add: &[String], remove: &[String]) -> Result<()>;
    /// One device's tags, sorted.
    async fn tags(&self, id: i64) -> Result<Vec<String>>;
    /// Every saved filter, by name.
    async fn saved_filters(&self) -> Result<Vec<SavedFilter>>;
    /// Saves a filter, replacing one of the same name.
    async fn put_saved_filter(&self, f: &SavedFilter) -> Result<()>;
    async fn drop_saved_filter(&self, name: &str) -> Result<bool>;
    /// Makes a rollout (`r.id` is ignored) and its devices, `(device id, stage)`, pending.
    async fn create_rollout(&self, r: &Rollout, devices: &[(i64, i64)]) -> Result<i64>;
    async fn rollouts(&self) -> Result<Vec<Rollout>>;
    async fn rollout(&self, id: i64) -> Result<Option<(Rollout, Vec<RolloutDevice>)>>;
    /// Sets state, stage, accepted stage and reason, if the state is now one of `from` and
    /// the stage still `stage` (what the caller read: of two hubs looking at once, one
    /// moves it); says whether it was.
    async fn update_rollout(&self, r: &Rollout, from: &[RolloutState], stage: i64, now_ms: i64) -> Result<bool>;
    /// Moves a device of a rollout from state `from` to `to`; says whether it was in `from`
    /// (so that of several hubs only one sends a device its command).
    async fn move_rollout_device(
        &self,
        id: i64,
        dev: i64,
        from: TargetState,
        to: TargetState,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool>;
}

text_enum! {
    /// Where a gateway's enrolled key stands (`device_keys.state`).
    KeyState {
        /// Pre-authorised (imported) or approved: the hub issues certificates for it.
        Approved = "approved",
        /// Offered with a batch credential; an operator has not approved it yet.
        Pending = "pending",
        /// Revoked: no certificate for it, its certificates and token refused.
        Revoked = "revoked",
    }
}

/// A gateway's enrolled public key (`device_keys`): the device's own, made on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnrolledKey {
    pub device_id: i64,
    /// DER SubjectPublicKeyInfo; empty for a device revoked before it had a key.
    #[serde(skip)]
    pub spki: Vec<u8>,
    pub state: KeyState,
    /// `import` or `batch:NAME`.
    pub source: String,
    /// The newest certificate the hub issued for it: when it expires.
    pub not_after_ms: Option<i64>,
    pub updated_ms: i64,
}

/// What a batch enrollment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    /// The key is recorded, waiting for an operator's approval (or it was approved already).
    Recorded(EnrolledKey),
    /// The device has another key, or it is revoked: nothing changed.
    Refused(EnrolledKey),
}

/// The gateways' keys and the batch credentials that let unknown gateways ask to enroll.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// Pre-authorises gateways by serial and public key, in one transaction: each is
    /// whitelisted if new and its key is approved (a revoked one stays revoked). Answers how
    /// many keys were new or changed.
    async fn import_keys(&self, rows: &[(DeviceKey, Vec<u8>)], now_ms: i64) -> Result<i64>;
    /// The device and its key, if it is known.
    async fn enrolled_key(&self, key: &DeviceKey) -> Result<Option<(i64, Option<EnrolledKey>)>>;
    async fn enrolled_key_by_id(&self, dev: i64) -> Result<Option<EnrolledKey>>;
    /// A gateway offers its key with a batch credential: whitelisted if new, its key
    /// recorded as pending unless it has one.
    async fn offer_key(&self, key: &DeviceKey, spki: &[u8], source: &str, now_ms: i64) -> Result<Offered>;
    /// An operator approves a pending key; false if there is none.
    async fn approve_key(&self, dev: i64, now_ms: i64) -> Result<bool>;
    /// Revokes a device: its key (recorded empty if it has none), its certificates and its
    /// token stop working on every hub of this database. False if there is no such device.
    async fn revoke_device(&self, dev: i64, now_ms: i64) -> Result<bool>;
    /// Records a certificate issued for the device's key; the device counts as activated.
    async fn key_certified(&self, dev: i64, not_after_ms: i64, now_ms: i64) -> Result<()>;
    /// Every enrolled key (the operator's list).
    async fn enrolled_keys(&self) -> Result<Vec<EnrolledKey>>;
    /// A batch credential (kept as the SHA-256 of its secret); false if the name is taken.
    async fn add_batch(&self, name: &str, secret_hash: &[u8; 32], now_ms: i64) -> Result<bool>;
    /// The name of the batch credential whose secret hashes to `secret_hash`.
    async fn batch_of(&self, secret_hash: &[u8; 32]) -> Result<Option<String>>;
}

#[async_trait]
pub trait Store: EdgeStore + FleetStore + IdentityStore + Send + Sync {
    /// Whitelists a device so it can activate.
    async fn add_device(&self, key: &DeviceKey, now_ms: i64) -> Result<Device>;
    /// Allows a device to activate again; its old token stops working. A revoked device's
    /// key is forgotten: it enrolls again.
    async fn enable_device(&self, id: i64) -> Result<bool>;
    async fn devices(&self) -> Result<Vec<Device>>;
    async fn device(&self, id: i64) -> Result<Option<Device>>;
    /// Whether a gateway has this serial number: a device of any vendor and model, or an
    /// edge that reported its state here.
    async fn serial_known(&self, sn: &str) -> Result<bool>;
    /// The devices (of any vendor and model) with this serial number.
    async fn devices_by_sn(&self, sn: &str) -> Result<Vec<i64>>;
    /// Hands the token whose hash is `token_hash` to the device, if it may activate.
    async fn activate(&self, key: &DeviceKey, token_hash: &[u8; 32], hint: &str) -> Result<Activation>;
    /// Activation by serial alone (the Murano `id=` form); ambiguous serials conflict.
    async fn activate_by_sn(&self, sn: &str, token_hash: &[u8; 32], hint: &str) -> Result<Activation>;
    async fn device_for_token(&self, token_hash: &[u8; 32]) -> Result<Option<i64>>;
    /// The devices whose token was revoked (by an operator's re-enable) within the last
    /// `within_ms`, by the database's clock: lets a hub check the tokens it remembers
    /// without reading every device.
    async fn revoked_devices(&self, within_ms: i64) -> Result<Vec<i64>>;
    /// Sets dataports to values now (the write API); `ts` is unix seconds.
    async fn write(&self, dev: i64, values: &[(String, String)], ts: i64, now_ms: i64) -> Result<()>;
    /// Appends timestamped points; the latest value follows the newest timestamp.
    async fn record(&self, dev: i64, points: &[Point], now_ms: i64) -> Result<()>;
    /// Stores the points of a forwarder batch whose seq is above the highest stored for
    /// `stream`; returns that highest seq afterwards (what the agent may acknowledge).
    async fn ingest(&self, dev: i64, stream: u64, points: &[(u64, Point)], now_ms: i64) -> Result<u64>;
    async fn read(&self, dev: i64, aliases: &[String]) -> Result<Vec<Option<Value>>>;
    async fn latest(&self, dev: i64) -> Result<Vec<(String, Value)>>;
    /// Newest first.
    async fn history(&self, dev: i64, alias: &str, limit: i64) -> Result<Vec<Point>>;
    async fn point_count(&self, dev: i64) -> Result<i64>;
    async fn put_content(&self, key: (&str, &str), info: &ContentInfo, data: &[u8]) -> Result<()>;
    async fn list_content(&self, key: (&str, &str)) -> Result<Vec<ContentInfo>>;
    async fn content_info(&self, key: (&str, &str), id: &str) -> Result<Option<ContentInfo>>;
    /// `len` bytes from `offset` (fewer at the end).
    async fn read_content(&self, key: (&str, &str), id: &str, offset: i64, len: i64) -> Result<Option<Vec<u8>>>;
}

/// Opens the store a URL names: `sqlite:PATH` or `postgres://...` (also `postgresql://`).
pub async fn open(url: &str, notifier: Arc<Notifier>) -> std::result::Result<Arc<dyn Store>, String> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let db = sqlite::SqliteStore::open(std::path::Path::new(path), notifier)
            .map_err(|e| format!("opening SQLite database {path}: {e}"))?;
        Ok(Arc::new(db))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("host=") {
        let db =
            postgres::PgStore::connect(url, notifier).await.map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
        Ok(Arc::new(db))
    } else {
        Err(format!("database URL {url:?} must start with sqlite: or postgres://"))
    }
}
