//! Staged rollouts from the dashboard: a package the hub hosts, to a group (a model's
//! activated gateways, narrowed by a filter or a saved filter), in stages, at once or at a
//! scheduled time. A preview tells how many gateways the group holds and who is in each
//! stage before anything is sent. The rollouts themselves run in `crate::rollout`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::fleet::{check_query, group};
use super::{bad, changing, json_body, json_response, signed_in, UiError, UiResult};
use crate::http::ClientAddr;
use crate::store::{Role, Rollout, RolloutDevice, RolloutState};
use crate::{err, now_ms, Hub};

/// How far ahead a rollout can be scheduled.
const MAX_SCHEDULE_MS: i64 = 366 * 24 * 3600 * 1000;
/// Members of each stage a preview names.
const PREVIEW_MEMBERS: usize = 20;

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/ui/api/rollouts", get(rollouts).post(new_rollout))
        .route("/ui/api/rollouts/preview", post(preview))
        .route("/ui/api/rollouts/{id}", get(rollout))
        .route("/ui/api/rollouts/{id}/{action}", post(rollout_action))
}

/// A rollout with how many of its gateways are in each state, overall and per stage.
fn rollout_json(r: &Rollout, devs: &[RolloutDevice]) -> Value {
    let mut counts = BTreeMap::new();
    let mut per_stage = vec![BTreeMap::<&str, u64>::new(); r.stages.len()];
    for d in devs {
        *counts.entry(d.state.as_str()).or_insert(0u64) += 1;
        if let Some(s) = usize::try_from(d.stage).ok().and_then(|s| per_stage.get_mut(s)) {
            *s.entry(d.state.as_str()).or_insert(0) += 1;
        }
    }
    let mut v = json!(r);
    v["counts"] = json!(counts);
    v["gateways"] = json!(devs.len());
    v["stage_counts"] = json!(per_stage);
    v
}

async fn rollouts(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> UiResult {
    signed_in(&hub, &headers).await?;
    let mut out = Vec::new();
    for r in hub.store.rollouts().await?.into_iter().rev() {
        if let Some((r, devs)) = hub.store.rollout(r.id).await? {
            out.push(rollout_json(&r, &devs));
        }
    }
    Ok(json_response(&headers, &json!(out)))
}

async fn rollout(State(hub): State<Arc<Hub>>, Path(id): Path<i64>, headers: HeaderMap) -> UiResult {
    signed_in(&hub, &headers).await?;
    let (r, devs) =
        hub.store.rollout(id).await?.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no rollout {id}")))?;
    let mut v = rollout_json(&r, &devs);
    v["devices"] = json!(devs);
    Ok(json_response(&headers, &v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRollout {
    #[serde(default)]
    name: String,
    package: String,
    vendor: String,
    model: String,
    /// Gateways whose serial contains this (the first form of the API; `query` says more).
    #[serde(default)]
    serial_contains: String,
    /// A fleet filter (`tag:north online`); empty: every activated gateway of the model.
    #[serde(default)]
    query: String,
    /// A saved filter's name, whose query is added to `query`.
    #[serde(default)]
    saved_filter: String,
    stages: Vec<i64>,
    max_failure_pct: i64,
    /// When the first stage starts (unix ms); absent: at once.
    #[serde(default)]
    start_at_ms: Option<i64>,
    /// An OS bundle's reboot: `now` (absent), `manual` or a UTC window `HH:MM-HH:MM`.
    #[serde(default)]
    reboot: Option<String>,
    /// An OS bundle streamed by RAUC from the hub, not downloaded first.
    #[serde(default)]
    stream: bool,
}

/// A checked rollout request: the group in rollout order with each gateway's stage.
struct Plan {
    filter: String,
    devices: Vec<(i64, i64)>,
    sns: Vec<String>,
}

async fn plan(hub: &Hub, n: &NewRollout, need_name: bool) -> Result<Plan, UiError> {
    if need_name && (n.name.trim().is_empty() || n.name.len() > 100) {
        return Err(bad("name", "a rollout's name is 1 to 100 characters"));
    }
    if n.package.is_empty() {
        return Err(bad("package", "choose a package"));
    }
    if crate::service::rollouts::content_parts(&n.package).is_none() {
        return Err(bad(
            "package",
            format!("package {:?} is not NAME.vVERSION.tar.gz or an OS bundle NAME.vVERSION.raucb", n.package),
        ));
    }
    if let Some(reboot) = &n.reboot {
        if gwe_wire::os::bundle_parts(&n.package).is_none() {
            return Err(bad("reboot", "a reboot time is for OS bundles (.raucb) only"));
        }
        gwe_wire::os::RebootAt::parse(reboot).map_err(|e| bad("reboot", e))?;
    }
    if n.stream && gwe_wire::os::bundle_parts(&n.package).is_none() {
        return Err(bad("stream", "streaming is for OS bundles (.raucb) only"));
    }
    if hub.store.content_info((&n.vendor, &n.model), &n.package).await?.is_none() {
        return Err(bad("package", format!("the hub has no package {:?} for {}/{}", n.package, n.vendor, n.model)));
    }
    crate::service::rollouts::check_stages(&n.stages).map_err(|e| bad("stages", e))?;
    if !(0..=100).contains(&n.max_failure_pct) {
        return Err(bad("max_failure_pct", "the failure limit is 0 to 100 %"));
    }
    check_query("query", &n.query)?;
    let mut query = n.query.trim().to_string();
    let mut described = Vec::new();
    if !n.saved_filter.is_empty() {
        let saved = hub.store.saved_filters().await?;
        let f = saved
            .iter()
            .find(|f| f.name == n.saved_filter)
            .ok_or_else(|| bad("saved_filter", format!("no saved filter {:?}", n.saved_filter)))?;
        described.push(format!("saved filter {:?} ({})", f.name, f.query));
        query = format!("{query} {}", f.query);
    }
    if !n.query.trim().is_empty() {
        described.push(format!("filter {:?}", n.query.trim()));
    }
    if !n.serial_contains.is_empty() {
        described.push(format!("serial contains {:?}", n.serial_contains));
    }
    let group = group(hub, &n.vendor, &n.model, &query).await?;
    let mut ids: Vec<i64> =
        group.iter().filter(|d| d.sn.contains(&n.serial_contains)).map(|d| d.id).collect::<Vec<_>>();
    if ids.is_empty() {
        return Err(bad("query", format!("no activated gateway of {}/{} matches", n.vendor, n.model)));
    }
    crate::service::rollouts::rollout_order(n.name.trim(), &mut ids);
    let sn_of: BTreeMap<i64, &str> = group.iter().map(|d| (d.id, d.sn.as_str())).collect();
    let sns = ids.iter().map(|id| sn_of.get(id).copied().unwrap_or("").to_string()).collect();
    let stages = crate::service::rollouts::assign_stages(ids.len(), &n.stages);
    let filter = std::iter::once(format!("{}/{}", n.vendor, n.model)).chain(described).collect::<Vec<_>>().join(", ");
    Ok(Plan { filter, devices: ids.into_iter().zip(stages).collect(), sns })
}

/// What a rollout would do, before it is made: the group's size and each stage's members.
async fn preview(State(hub): State<Arc<Hub>>, addr: ClientAddr, headers: HeaderMap, body: Bytes) -> UiResult {
    changing(&hub, &headers, addr, Role::Operator).await?;
    let n: NewRollout = json_body(&body)?;
    let p = plan(&hub, &n, false).await?;
    let stages: Vec<Value> = n
        .stages
        .iter()
        .enumerate()
        .map(|(i, pct)| {
            let members: Vec<&str> = p
                .devices
                .iter()
                .zip(&p.sns)
                .filter(|((_, s), _)| *s == crate::store::count(i))
                .map(|(_, sn)| sn.as_str())
                .collect();
            json!({"pct": pct, "count": members.len(), "members": &members[..members.len().min(PREVIEW_MEMBERS)]})
        })
        .collect();
    Ok(Json(json!({"gateways": p.devices.len(), "filter": p.filter, "stages": stages})).into_response())
}

async fn new_rollout(State(hub): State<Arc<Hub>>, addr: ClientAddr, headers: HeaderMap, body: Bytes) -> UiResult {
    let s = changing(&hub, &headers, addr, Role::Operator).await?;
    let n: NewRollout = json_body(&body)?;
    let now = now_ms();
    let start_ms = match n.start_at_ms {
        None => now,
        Some(t) if t < now - 60_000 => return Err(bad("start_at", "the start is in the past")),
        Some(t) if t > now + MAX_SCHEDULE_MS => return Err(bad("start_at", "the start is over a year away")),
        Some(t) => t.max(now),
    };
    let p = plan(&hub, &n, true).await?;
    let r = Rollout {
        id: 0,
        name: n.name.trim().to_string(),
        package: n.package,
        vendor: n.vendor,
        model: n.model,
        filter: p.filter,
        stages: n.stages,
        max_failure_pct: n.max_failure_pct,
        state: if start_ms > now { RolloutState::Scheduled } else { RolloutState::Running },
        stage: 0,
        accepted_stage: -1,
        reason: String::new(),
        created_ms: now,
        updated_ms: now,
        start_ms,
        reboot: n.reboot.unwrap_or_else(|| "now".into()),
        stream: n.stream,
    };
    let id = hub.store.create_rollout(&r, &p.devices).await?;
    s.audit(
        &hub,
        "rollout.create",
        &format!("rollout {id} {:?}", r.name),
        &format!(
            "{} to {} gateways of {}/{} ({}), stages {:?} %",
            r.package,
            p.devices.len(),
            r.vendor,
            r.model,
            r.state,
            r.stages
        ),
    )
    .await;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "gateways": p.devices.len()}))).into_response())
}

async fn rollout_action(
    State(hub): State<Arc<Hub>>,
    Path((id, action)): Path<(i64, String)>,
    addr: ClientAddr,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let s = changing(&hub, &headers, addr, Role::Operator).await?;
    let (mut r, _) =
        hub.store.rollout(id).await?.ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no rollout {id}")))?;
    let from: &[RolloutState] = match action.as_str() {
        "pause" => {
            r.state = RolloutState::Paused;
            r.reason = format!("paused by {}", s.operator);
            &[RolloutState::Running]
        }
        "resume" => {
            // Resuming accepts the failures of the stage it paused in.
            r.state = RolloutState::Running;
            r.accepted_stage = r.stage;
            r.reason.clear();
            &[RolloutState::Paused]
        }
        "abort" => {
            r.state = RolloutState::Aborted;
            r.reason = format!("aborted by {}", s.operator);
            &[RolloutState::Running, RolloutState::Paused, RolloutState::Scheduled]
        }
        _ => {
            return Err(
                err(StatusCode::NOT_FOUND, format!("no rollout action {action:?} (pause, resume, abort)")).into()
            )
        }
    };
    if !hub.store.update_rollout(&r, from, r.stage, now_ms()).await? {
        return Err(err(StatusCode::CONFLICT, format!("rollout {id} cannot {action} now")).into());
    }
    s.audit(&hub, &format!("rollout.{action}"), &format!("rollout {id} {:?}", r.name), "").await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
