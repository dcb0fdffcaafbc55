//! The edge data and control paths: the JSON shapes an edge (the agent) and the hub's
//! `batch`, `ctrlpoll`, `ctrlupdate` and `cmd` services exchange, and the command schema
//! both sides check against (`docs/edge-protocol.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Service definitions as registered in the service registry.
pub const SERVICE_BATCH: &str = "batch";
pub const SERVICE_CTRLPOLL: &str = "ctrlpoll";
pub const SERVICE_CTRLUPDATE: &str = "ctrlupdate";
pub const SERVICE_CMD: &str = "cmd";

/// Batch configuration keys naming a group start with this; other keys name a provider.
pub const GROUP_PREFIX: &str = "group:";

pub const MIN_INTERVAL_MS: u64 = 100;
pub const MAX_INTERVAL_MS: u64 = 86_400_000;
pub const MAX_PATTERNS: usize = 32;
pub const MAX_PATTERN: usize = 128;
pub const MAX_KEY: usize = 64;
pub const MAX_BATCH_KEYS: usize = 64;
/// Largest generic configuration object, serialized.
pub const MAX_CONFIG_BYTES: usize = 64 << 10;

/// What a provider receives: the points whose name matches one of `filter`'s glob patterns
/// (`*`, `?`, `[...]`), every `interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    pub interval_ms: u64,
    pub filter: Vec<String>,
}

/// A command for one edge. `batch` sets (or, with `null`, removes) batch configurations by
/// provider name or `group:NAME`; `config` replaces the generic configuration object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub batch: BTreeMap<String, Option<BatchConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

impl Command {
    /// Parses and checks a command against its schema; the error names the problem.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let c: Self = serde_json::from_slice(body).map_err(|e| format!("command: {e}"))?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > MAX_KEY {
            return Err(format!("id must be 1 to {MAX_KEY} characters"));
        }
        if self.batch.is_empty() && self.config.is_none() {
            return Err("the command sets nothing (no batch, no config)".into());
        }
        if self.batch.len() > MAX_BATCH_KEYS {
            return Err(format!("at most {MAX_BATCH_KEYS} batch configurations"));
        }
        for (key, cfg) in &self.batch {
            let name = key.strip_prefix(GROUP_PREFIX).unwrap_or(key);
            if name.is_empty() || key.len() > MAX_KEY || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!(
                    "batch key {key:?} must be a provider name or group:NAME, 1 to {MAX_KEY} characters without spaces"
                ));
            }
            if let Some(cfg) = cfg {
                cfg.validate().map_err(|e| format!("batch {key}: {e}"))?;
            }
        }
        if let Some(cfg) = &self.config {
            if !cfg.is_object() {
                return Err("config must be a JSON object".into());
            }
            let len = serde_json::to_vec(cfg).map(|v| v.len()).unwrap_or(usize::MAX);
            if len > MAX_CONFIG_BYTES {
                return Err(format!("config is {len} bytes, over the limit of {MAX_CONFIG_BYTES}"));
            }
        }
        Ok(())
    }
}

impl BatchConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            return Err(format!("interval_ms {} is outside {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS}", self.interval_ms));
        }
        if self.filter.is_empty() || self.filter.len() > MAX_PATTERNS {
            return Err(format!("filter must hold 1 to {MAX_PATTERNS} patterns"));
        }
        for p in &self.filter {
            if p.is_empty() || p.len() > MAX_PATTERN || p.chars().any(char::is_control) {
                return Err(format!("filter pattern {p:?} must be 1 to {MAX_PATTERN} printable characters"));
            }
            if p.matches('[').count() != p.matches(']').count() {
                return Err(format!("filter pattern {p:?} has an unclosed [...]"));
            }
        }
        Ok(())
    }
}

/// How the edge answered a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id (empty when the command could not even be parsed).
    pub id: String,
    /// `applied` or `rejected`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Edge time, unix ms.
    pub at_ms: i64,
}

/// An edge's state as read back from its store after a command (parseGet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeState {
    pub system: String,
    pub batch: BTreeMap<String, BatchConfig>,
    pub config: Value,
    /// Counts the changes of `config`.
    pub config_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<CommandResult>,
    /// The outcomes of the edge's recent commands, oldest first (a hub finds its command's
    /// by id even when another hub's command came after it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<CommandResult>,
}

/// The body of a `ctrlupdate` report: the state, the supported parameters, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtrlUpdate {
    pub system: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<EdgeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// One data point of a batch: name, unix time in seconds, value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgePoint {
    pub n: String,
    pub t: i64,
    pub v: String,
}

/// A batch for one provider. `batch_id` is unique per edge and provider; a provider stores
/// a batch id once, whatever number of times it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub batch_id: String,
    pub system: String,
    pub points: Vec<EdgePoint>,
}

/// The provider's answer to a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    pub batch_id: String,
    /// Points stored by this request (0 for a batch already stored).
    pub stored: u64,
    pub duplicate: bool,
}

/// The parameters an edge supports, as it reports them.
pub fn parameters() -> Value {
    serde_json::json!({
        "batch": {
            "key": format!("provider name or {GROUP_PREFIX}NAME, at most {MAX_KEY} characters; null removes"),
            "interval_ms": {"type": "integer", "min": MIN_INTERVAL_MS, "max": MAX_INTERVAL_MS},
            "filter": {"type": "array of glob patterns", "min": 1, "max": MAX_PATTERNS, "maxLength": MAX_PATTERN}
        },
        "config": {"type": "object", "maxBytes": MAX_CONFIG_BYTES}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_keeps_every_digit_through_the_edges_store() {
        // Found by fuzzing (fuzz/fuzz_targets/edge_command.rs): without serde_json's
        // correctly rounded float parsing a long number changed in its last digit when the
        // edge read back the command it had stored.
        let raw = format!(r#"{{"id":"c1","config":{{"rate":5{}}}}}"#, "4".repeat(121));
        let c = Command::parse(raw.as_bytes()).unwrap();
        let again = Command::parse(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn schema_accepts_good_and_names_bad() {
        let ok =
            br#"{"id":"c1","batch":{"hub-a":{"interval_ms":1000,"filter":["temp*"]},"group:g":null},"config":{"a":1}}"#;
        let c = Command::parse(ok).unwrap();
        assert_eq!(c.batch.len(), 2);
        let cases: &[(&[u8], &str)] = &[
            (br#"{"id":"c","batch":{"x":{"interval_ms":5,"filter":["a"]}}}"#, "interval_ms 5"),
            (br#"{"id":"c","batch":{"x":{"interval_ms":500,"filter":[]}}}"#, "1 to 32 patterns"),
            (br#"{"id":"c","batch":{"x":{"interval_ms":500,"filter":["a["]}}}"#, "unclosed"),
            (br#"{"id":"c","config":[1]}"#, "config must be a JSON object"),
            (br#"{"id":"c","colour":"red"}"#, "unknown field `colour`"),
            (br#"{"id":"c"}"#, "sets nothing"),
            (br#"{"id":"","config":{}}"#, "id must be"),
            (br#"{"id":"c","batch":{"group:":{"interval_ms":500,"filter":["a"]}}}"#, "group:NAME"),
            (b"not json", "command:"),
        ];
        for (body, want) in cases {
            let e = Command::parse(body).unwrap_err();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }
}
