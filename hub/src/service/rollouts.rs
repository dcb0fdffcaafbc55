//! Staged OTA rollouts. A rollout sends one package (an app or the agent) or one OS bundle
//! to a group of gateways, chosen when it is made, stage by stage: each stage is a cumulative share of the group (for example 1 %,
//! 10 %, 100 %). A hub task looks every 2 s: it reads what each gateway it sent the
//! package to says in `fetch_status`, pauses the rollout when the failed share of the stage
//! under way passes the limit, sends the stage's gateways their `engine_fetch`, and moves
//! on when the stage is done. Everything lives in the store, so progress survives a hub
//! restart, and with several hubs on one PostgreSQL each gateway is sent its command once
//! (a device moves from `pending` to `sent` in one conditional update).

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::store::{Rollout, RolloutDevice, RolloutState, TargetState};
use crate::{now_ms, Hub};

pub const TICK: Duration = Duration::from_secs(2);

/// `NAME.vVER.tar.gz` -> (NAME, VER).
pub fn package_parts(package: &str) -> Option<(&str, &str)> {
    let stem = package.strip_suffix(".tar.gz")?;
    let (name, ver) = stem.rsplit_once(".v")?;
    (!name.is_empty() && !ver.is_empty()).then_some((name, ver))
}

/// What a rollout can carry: a package `NAME.vVER.tar.gz` or an OS bundle `NAME.vVER.raucb`.
pub fn content_parts(name: &str) -> Option<(&str, &str)> {
    package_parts(name).or_else(|| gwe_wire::os::bundle_parts(name))
}

/// The `engine_fetch` command a rollout sends each gateway.
pub fn command(r: &Rollout) -> String {
    if gwe_wire::os::bundle_parts(&r.package).is_some() {
        if r.stream {
            serde_json::json!({"os": {"name": r.package, "reboot": r.reboot, "stream": true}}).to_string()
        } else {
            serde_json::json!({"os": {"name": r.package, "reboot": r.reboot}}).to_string()
        }
    } else {
        serde_json::json!({"install": [{"name": r.package}]}).to_string()
    }
}

/// Checks a rollout's stages: cumulative percentages, rising, ending at 100.
pub fn check_stages(stages: &[i64]) -> Result<(), String> {
    if stages.is_empty() || stages.len() > 10 {
        return Err("a rollout has 1 to 10 stages".into());
    }
    if stages.windows(2).any(|w| w[0] >= w[1]) || stages[0] < 1 || *stages.last().unwrap_or(&0) != 100 {
        return Err(format!("stages {stages:?}: rising percentages of the group, the last one 100"));
    }
    Ok(())
}

/// The stage of each of `n` devices (in rollout order): the first stage whose share covers it.
pub fn assign_stages(n: usize, stages: &[i64]) -> Vec<i64> {
    let upto: Vec<usize> = stages
        .iter()
        .map(|p| usize::try_from(((crate::store::count(n) * p + 99) / 100).max(1)).unwrap_or(usize::MAX))
        .collect();
    (0..n).map(|i| crate::store::count(upto.iter().position(|&u| i < u).unwrap_or(stages.len() - 1))).collect()
}

/// The order gateways go in: fixed per rollout name, spread over the fleet (not by id, so
/// the first stage is not always the oldest gateways).
pub fn rollout_order(name: &str, ids: &mut [i64]) {
    ids.sort_by_cached_key(|id| Sha256::digest(format!("{name}/{id}").as_bytes()));
}

/// What a gateway's `fetch_status` says of the package: installed (`Some(true)`), failed
/// (`Some(false)`), or nothing yet (downloading, installing, about something else). An OS
/// bundle is installed once its new system runs and was marked good; its rollback (the
/// check failed, or the new system never came up) is a failure.
pub fn outcome(fetch_status: &str, package: &str) -> Option<bool> {
    if gwe_wire::os::bundle_parts(package).is_some() {
        return gwe_wire::os::outcome(fetch_status, package);
    }
    let first = fetch_status.lines().next().unwrap_or("");
    let (name, ver) = package_parts(package)?;
    if let Some(rest) = first.strip_prefix("installed ") {
        let mut w = rest.split_whitespace();
        return (w.next() == Some(name) && w.next() == Some(ver)).then_some(true);
    }
    first.strip_prefix(package).filter(|r| r.starts_with(':')).map(|_| false)
}

/// Runs the rollouts for as long as the hub runs.
pub fn spawn(hub: Arc<Hub>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = tick(&hub).await {
                log::warn!("rollouts: {e}");
            }
        }
    });
}

/// One look at every running rollout; a scheduled one whose time has come starts.
pub async fn tick(hub: &Hub) -> Result<(), crate::store::StoreError> {
    let now = now_ms();
    for mut r in hub.store.rollouts().await? {
        if r.state == RolloutState::Scheduled && r.start_ms <= now {
            r.state = RolloutState::Running;
            if !hub.store.update_rollout(&r, &[RolloutState::Scheduled], r.stage, now).await? {
                continue; // another hub started it, or an operator aborted it
            }
            log::info!("rollout {}: its scheduled start has come", r.name);
        }
        if r.state == RolloutState::Running {
            step(hub, r.id).await?;
        }
    }
    Ok(())
}

async fn step(hub: &Hub, id: i64) -> Result<(), crate::store::StoreError> {
    let Some((mut r, mut devs)) = hub.store.rollout(id).await? else { return Ok(()) };
    let now = now_ms();
    // What the gateways said since they were sent the package.
    for d in devs.iter_mut().filter(|d| d.state == TargetState::Sent) {
        let Some(Some(v)) = hub.store.read(d.device_id, &["fetch_status".to_string()]).await?.pop() else {
            continue;
        };
        if v.modified_ms < d.updated_ms {
            continue;
        }
        if let Some(ok) = outcome(&v.value, &r.package) {
            let to = if ok { TargetState::Installed } else { TargetState::Failed };
            let detail = v.value.lines().next().unwrap_or("").chars().take(300).collect::<String>();
            if hub.store.move_rollout_device(id, d.device_id, TargetState::Sent, to, &detail, now).await? {
                log::info!("rollout {}: {} {to}: {detail}", r.name, d.sn);
                d.state = to;
            }
        }
    }
    let stage: Vec<&RolloutDevice> = devs.iter().filter(|d| d.stage == r.stage).collect();
    let failed = crate::store::count(stage.iter().filter(|d| d.state == TargetState::Failed).count());
    let total = crate::store::count(stage.len());
    if r.accepted_stage != r.stage && total > 0 && failed * 100 > r.max_failure_pct * total {
        r.state = RolloutState::Paused;
        r.reason = format!(
            "stage {} ({} %): {failed} of {total} gateways failed, over the limit of {} %",
            r.stage + 1,
            usize::try_from(r.stage).ok().and_then(|s| r.stages.get(s)).copied().unwrap_or(100),
            r.max_failure_pct
        );
        if hub.store.update_rollout(&r, &[RolloutState::Running], r.stage, now).await? {
            log::warn!("rollout {} paused: {}", r.name, r.reason);
        }
        return Ok(());
    }
    let command = command(&r);
    for d in stage.iter().filter(|d| d.state == TargetState::Pending) {
        if hub.store.move_rollout_device(id, d.device_id, TargetState::Pending, TargetState::Sent, "sent", now).await? {
            hub.store.write(d.device_id, &[("engine_fetch".into(), command.clone())], now / 1000, now).await?;
        }
    }
    if stage.iter().all(|d| d.state == TargetState::Installed || d.state == TargetState::Failed) {
        next_stage(hub, r, now).await?;
    }
    Ok(())
}

async fn next_stage(hub: &Hub, mut r: Rollout, now: i64) -> Result<(), crate::store::StoreError> {
    let was = r.stage;
    if usize::try_from(r.stage).is_ok_and(|s| s + 1 < r.stages.len()) {
        r.stage += 1;
        r.reason.clear();
        log::info!("rollout {}: stage {} of {}", r.name, r.stage + 1, r.stages.len());
    } else {
        r.state = RolloutState::Done;
        log::info!("rollout {}: done", r.name);
    }
    hub.store.update_rollout(&r, &[RolloutState::Running], was, now).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_cover_the_group_cumulatively() {
        assert_eq!(assign_stages(10, &[10, 50, 100]), vec![0, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
        // 1 % of 20 rounds up to one gateway: a first stage is never empty.
        assert_eq!(assign_stages(20, &[1, 100]).iter().filter(|&&s| s == 0).count(), 1);
        assert_eq!(assign_stages(3, &[100]), vec![0, 0, 0]);
        assert!(check_stages(&[1, 10, 100]).is_ok());
        assert!(check_stages(&[10, 5, 100]).is_err());
        assert!(check_stages(&[10, 50]).is_err());
        assert!(check_stages(&[]).is_err());
    }

    #[test]
    fn fetch_status_says_installed_failed_or_nothing_yet() {
        let p = "sensor.v2.2.tar.gz";
        assert_eq!(outcome("installed sensor 2.2\nok", p), Some(true));
        assert_eq!(outcome("installed sensor 2.1\nok", p), None, "another version");
        assert_eq!(outcome("installed other 2.2", p), None);
        assert_eq!(
            outcome("sensor.v2.2.tar.gz: version 2.2 did not stay up (exited); rolled back to 2.1", p),
            Some(false)
        );
        assert_eq!(outcome("sensor.v2.2.tar.gz: not enough free space", p), Some(false));
        assert_eq!(outcome("downloading sensor.v2.2.tar.gz", p), None);
        assert_eq!(outcome("installing sensor.v2.2.tar.gz", p), None);
        assert_eq!(outcome("sensor.v2.21.tar.gz: bad signature", p), None);
        assert_eq!(package_parts("my.app.v1.0.3.tar.gz"), Some(("my.app", "1.0.3")));
        assert_eq!(package_parts("nover.tar.gz"), None);
    }

    #[test]
    fn an_os_bundle_is_installed_when_marked_good_and_failed_when_rolled_back() {
        let b = "gw-os.v2.raucb";
        assert_eq!(outcome("installed gwe-board 2 into slot B (running slot A); rebooting into it now", b), None);
        assert_eq!(outcome("OS gwe-board 2 running in slot B and marked good", b), Some(true));
        assert_eq!(outcome("OS update to 2 rolled back: the new system (2 in slot B) did not come up", b), Some(false));
        assert_eq!(outcome("gw-os.v2.raucb: Compatible mismatch", b), Some(false));
        assert_eq!(content_parts(b), Some(("gw-os", "2")));
        let mut r = Rollout {
            id: 1,
            name: "os".into(),
            package: b.into(),
            vendor: "v".into(),
            model: "m".into(),
            filter: String::new(),
            stages: vec![100],
            max_failure_pct: 0,
            state: RolloutState::Running,
            stage: 0,
            accepted_stage: -1,
            reason: String::new(),
            created_ms: 0,
            updated_ms: 0,
            start_ms: 0,
            reboot: "02:00-04:00".into(),
            stream: false,
        };
        assert_eq!(command(&r), r#"{"os":{"name":"gw-os.v2.raucb","reboot":"02:00-04:00"}}"#);
        r.stream = true;
        assert_eq!(command(&r), r#"{"os":{"name":"gw-os.v2.raucb","reboot":"02:00-04:00","stream":true}}"#);
        r.package = "sensor.v2.tar.gz".into();
        assert_eq!(command(&r), r#"{"install":[{"name":"sensor.v2.tar.gz"}]}"#);
    }

    #[test]
    fn the_order_is_spread_and_fixed_per_rollout() {
        let mut a: Vec<i64> = (1..=100).collect();
        let mut b = a.clone();
        rollout_order("r1", &mut a);
        rollout_order("r1", &mut b);
        assert_eq!(a, b);
        assert_ne!(a, (1..=100).collect::<Vec<_>>());
        let mut c: Vec<i64> = (1..=100).collect();
        rollout_order("r2", &mut c);
        assert_ne!(a, c);
    }
}
