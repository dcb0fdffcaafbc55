//! Arrowhead 4.x service registry and orchestration shapes (the subset the hub serves and
//! the agent uses), as the Arrowhead core systems' DTOs (`arrowhead-f/core-java-spring`)
//! have them: field names in camelCase, every entity of an answer with its `id`,
//! `createdAt` and `updatedAt`, and errors as [`ErrorMessage`]. Requests are read leniently
//! (a `null` in a list of requirements is no requirement), answers are written whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// A list of strings in which `null`s (what Arrowhead's Python client sends for "none")
/// are left out.
fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<Option<String>>>::deserialize(d)?.unwrap_or_default().into_iter().flatten().collect())
}

/// A map that may be `null`.
fn map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

/// Arrowhead's error answer (`ErrorMessageDTO`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMessage {
    pub error_message: String,
    pub error_code: u16,
    /// `INVALID_PARAMETER`, `AUTH`, `DATA_NOT_FOUND`, `UNAVAILABLE`, `ARROWHEAD`.
    pub exception_type: String,
    /// The path the request was made to.
    pub origin: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct System {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub system_name: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// `POST /serviceregistry/register`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub service_definition: String,
    pub provider_system: System,
    pub service_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_validity: Option<String>,
    #[serde(default = "not_secure", deserialize_with = "secure_or_default")]
    pub secure: String,
    #[serde(default, deserialize_with = "map")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default = "one", deserialize_with = "version_or_one")]
    pub version: i64,
    #[serde(deserialize_with = "strings")]
    pub interfaces: Vec<String>,
}

/// `secure` absent, `null` or empty: `NOT_SECURE`.
fn secure_or_default<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()).unwrap_or_else(not_secure))
}

fn version_or_one<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or(1))
}

fn not_secure() -> String {
    "NOT_SECURE".into()
}

fn one() -> i64 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDefinition {
    pub id: i64,
    pub service_definition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub id: i64,
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A registry entry, as `register` and `query` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryEntry {
    pub id: i64,
    pub service_definition: ServiceDefinition,
    pub provider: System,
    pub service_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_validity: Option<String>,
    pub secure: String,
    pub metadata: BTreeMap<String, String>,
    pub version: i64,
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// The query form, used by `query` and as `requestedService` in orchestration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceQuery {
    pub service_definition_requirement: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "strings")]
    pub interface_requirements: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "strings")]
    pub security_requirements: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "map")]
    pub metadata_requirements: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_requirement: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version_requirement: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version_requirement: Option<i64>,
    #[serde(default, deserialize_with = "bool_or_false")]
    pub ping_providers: bool,
}

fn bool_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// A preferred provider: a system, or (Arrowhead's `PreferredProviderDataDTO`) one inside
/// `providerSystem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Preferred {
    Wrapped {
        #[serde(rename = "providerSystem")]
        provider_system: System,
    },
    System(System),
}

impl Preferred {
    pub fn system(&self) -> &System {
        match self {
            Self::Wrapped { provider_system } => provider_system,
            Self::System(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResponse {
    pub service_query_data: Vec<RegistryEntry>,
    pub unfiltered_hits: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrchestrationFlags {
    #[serde(default)]
    pub matchmaking: bool,
    #[serde(default)]
    pub metadata_search: bool,
    #[serde(default)]
    pub only_preferred: bool,
    #[serde(default)]
    pub ping_providers: bool,
    #[serde(default)]
    pub override_store: bool,
    #[serde(default)]
    pub enable_inter_cloud: bool,
    #[serde(default)]
    pub trigger_inter_cloud: bool,
}

fn preferred<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Preferred>, D::Error> {
    Ok(Option::<Vec<Preferred>>::deserialize(d)?.unwrap_or_default())
}

/// `POST /orchestrator/orchestration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrchestrationRequest {
    pub requester_system: System,
    pub requested_service: ServiceQuery,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "preferred")]
    pub preferred_providers: Vec<Preferred>,
    #[serde(default)]
    pub orchestration_flags: OrchestrationFlags,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrchestrationResult {
    pub provider: System,
    pub service: ServiceDefinition,
    pub service_uri: String,
    pub secure: String,
    #[serde(default, deserialize_with = "map")]
    pub metadata: BTreeMap<String, String>,
    pub interfaces: Vec<Interface>,
    pub version: i64,
    /// Interface name -> token the consumer presents to the provider (`Authorization: Bearer`).
    #[serde(default, deserialize_with = "map")]
    pub authorization_tokens: BTreeMap<String, String>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrchestrationResponse {
    pub response: Vec<OrchestrationResult>,
}

/// The interface the hub's edge services speak.
pub const INTERFACE_HTTP_JSON: &str = "HTTP-INSECURE-JSON";
pub const INTERFACE_HTTPS_JSON: &str = "HTTP-SECURE-JSON";
