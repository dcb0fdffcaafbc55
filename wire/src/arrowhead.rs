//! Arrowhead 4.x service registry and orchestration shapes (the subset the hub serves and
//! the agent uses). Field names are Arrowhead's own (camelCase).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    #[serde(default = "not_secure")]
    pub secure: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub version: i64,
    pub interfaces: Vec<String>,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub id: i64,
    pub interface_name: String,
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
}

/// The query form, used by `query` and as `requestedService` in orchestration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceQuery {
    pub service_definition_requirement: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interface_requirements: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_requirements: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata_requirements: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_requirement: Option<i64>,
    #[serde(default)]
    pub ping_providers: bool,
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

/// `POST /orchestrator/orchestration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrchestrationRequest {
    pub requester_system: System,
    pub requested_service: ServiceQuery,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_providers: Vec<System>,
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
    pub metadata: BTreeMap<String, String>,
    pub interfaces: Vec<Interface>,
    pub version: i64,
    /// Interface name -> token the consumer presents to the provider (`Authorization: Bearer`).
    pub authorization_tokens: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrchestrationResponse {
    pub response: Vec<OrchestrationResult>,
}

/// The interface the hub's edge services speak.
pub const INTERFACE_HTTP_JSON: &str = "HTTP-INSECURE-JSON";
pub const INTERFACE_HTTPS_JSON: &str = "HTTP-SECURE-JSON";
