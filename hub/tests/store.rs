//! The store conformance suite: every method of `Store`, `FleetStore` and `EdgeStore` runs
//! against SQLite and PostgreSQL with the same assertions, through the trait the hub uses
//! (`gwe_hub::store::open`). Then two stores open one database, as two hubs do, and race for
//! what only one of them may get: a command, a device's activation, a rollout step, a batch.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use gwe_hub::notify::Notifier;
use gwe_hub::store::{
    self, Activation, ApiToken, AuditEntry, ContentInfo, DeviceKey, EdgeControl, Point, Role, Rollout, RolloutState,
    SavedFilter, Scope, ServiceRow, Store, StoreError, TargetState,
};
use gwe_wire::edge::EdgePoint;

use common::Backend;

async fn open(url: &str) -> Arc<dyn Store> {
    store::open(url, Arc::new(Notifier::default())).await.unwrap()
}

fn key(sn: &str) -> DeviceKey {
    DeviceKey { vendor: "acme".into(), model: "gw".into(), sn: sn.into() }
}

fn point(alias: &str, ts: i64, value: &str) -> Point {
    Point { alias: alias.into(), ts, value: value.into() }
}

fn rollout(package: &str) -> Rollout {
    Rollout {
        id: 0,
        name: "r1".into(),
        package: package.into(),
        vendor: "acme".into(),
        model: "gw".into(),
        filter: "model:gw".into(),
        stages: vec![50, 100],
        max_failure_pct: 10,
        state: RolloutState::Running,
        stage: 0,
        accepted_stage: -1,
        reason: String::new(),
        created_ms: 1_000,
        updated_ms: 1_000,
        start_ms: 1_000,
        reboot: "now".into(),
        stream: true,
    }
}

fn service(definition: &str, system: &str, port: i64) -> ServiceRow {
    ServiceRow {
        id: 0,
        definition: definition.into(),
        system_name: system.into(),
        address: "127.0.0.1".into(),
        port,
        service_uri: "/edge/batch".into(),
        secure: "TOKEN".into(),
        interfaces: vec!["HTTP-SECURE-JSON".into()],
        version: 1,
        metadata: BTreeMap::from([("group".to_string(), "a".to_string())]),
        end_of_validity: None,
        authentication_info: None,
        created_ms: 0,
        updated_ms: 0,
    }
}

/// Devices, activation and tokens.
async fn devices(s: &dyn Store) {
    let d = s.add_device(&key("SN-1"), 1_000).await.unwrap();
    assert_eq!((d.sn.as_str(), d.status.as_str(), d.token_hint.as_deref()), ("SN-1", "enabled", None));
    assert!(matches!(s.add_device(&key("SN-1"), 1_001).await, Err(StoreError::Exists(_))), "whitelisted twice");
    let other = s.add_device(&DeviceKey { vendor: "other".into(), ..key("SN-1") }, 1_002).await.unwrap();
    assert_eq!(s.devices_by_sn("SN-1").await.unwrap(), vec![d.id, other.id]);
    assert!(s.serial_known("SN-1").await.unwrap());
    assert!(!s.serial_known("SN-9").await.unwrap());
    assert_eq!(s.devices().await.unwrap().len(), 2);

    let t1 = [1u8; 32];
    assert_eq!(s.activate(&key("SN-9"), &t1, "aaaa").await.unwrap(), Activation::Unknown);
    assert_eq!(s.activate(&key("SN-1"), &t1, "aaaa").await.unwrap(), Activation::Activated(d.id));
    assert_eq!(s.activate(&key("SN-1"), &[2u8; 32], "bbbb").await.unwrap(), Activation::Conflict, "already activated");
    assert_eq!(s.device_for_token(&t1).await.unwrap(), Some(d.id));
    let got = s.device(d.id).await.unwrap().unwrap();
    assert_eq!((got.status.as_str(), got.token_hint.as_deref()), ("activated", Some("aaaa")));
    // By serial alone: two devices share SN-1, so it is ambiguous.
    assert_eq!(s.activate_by_sn("SN-1", &[3u8; 32], "cccc").await.unwrap(), Activation::Conflict);
    let solo = s.add_device(&key("SN-2"), 1_003).await.unwrap();
    assert_eq!(s.activate_by_sn("SN-2", &[4u8; 32], "dddd").await.unwrap(), Activation::Activated(solo.id));

    // Re-enabling revokes the token and lets the device activate again.
    assert!(s.enable_device(d.id).await.unwrap());
    assert!(!s.enable_device(999_999).await.unwrap());
    assert_eq!(s.device_for_token(&t1).await.unwrap(), None, "the old token stops working");
    assert!(s.revoked_devices(60_000).await.unwrap().contains(&d.id));
    let t5 = [5u8; 32];
    assert_eq!(s.activate(&key("SN-1"), &t5, "eeee").await.unwrap(), Activation::Activated(d.id));
    assert_eq!(s.device(999_999).await.unwrap(), None);
}

/// Dataports: writes, timestamped records, batch ingest, reads, history.
async fn data(s: &dyn Store) {
    let d = s.add_device(&key("SN-D"), 1_000).await.unwrap().id;
    s.write(d, &[("temp".into(), "20".into()), ("hum".into(), "40".into())], 100, 2_000).await.unwrap();
    let r = s.read(d, &["temp".into(), "none".into()]).await.unwrap();
    assert_eq!(r[0].as_ref().map(|v| (v.value.as_str(), v.ts)), Some(("20", 100)));
    assert_eq!(r[1], None);

    // The latest value follows the newest timestamp, not the order of arrival.
    s.record(d, &[point("temp", 300, "23"), point("temp", 200, "22")], 3_000).await.unwrap();
    assert_eq!(s.read(d, &["temp".into()]).await.unwrap()[0].as_ref().unwrap().value, "23");
    let h = s.history(d, "temp", 10).await.unwrap();
    assert_eq!(h.iter().map(|p| p.ts).collect::<Vec<_>>(), vec![300, 200, 100], "newest first");
    assert_eq!(s.history(d, "temp", 2).await.unwrap().len(), 2);

    // A forwarder batch: only seqs above the highest stored for its stream count.
    let batch: Vec<(u64, Point)> = (1..=3).map(|i| (i, point("flow", 400 + i as i64, &i.to_string()))).collect();
    assert_eq!(s.ingest(d, 7, &batch, 4_000).await.unwrap(), 3);
    let again: Vec<(u64, Point)> = (2..=5).map(|i| (i, point("flow", 400 + i as i64, &i.to_string()))).collect();
    assert_eq!(s.ingest(d, 7, &again, 4_100).await.unwrap(), 5, "a batch sent again stores only the new seqs");
    assert_eq!(s.history(d, "flow", 100).await.unwrap().len(), 5);
    assert_eq!(s.ingest(d, 8, &batch[..1], 4_200).await.unwrap(), 1, "another stream counts on its own");
    // A seq past what the database keeps (2^63 - 1) is refused, not wrapped to a negative
    // one that would hide every later batch of the stream; nothing of it is stored.
    let huge = [(u64::MAX, point("flow", 999, "x"))];
    assert!(matches!(s.ingest(d, 7, &huge, 4_300).await, Err(StoreError::Db(m)) if m.contains("2^63")));
    assert!(s.ingest(d, u64::MAX, &batch, 4_300).await.is_err(), "a stream id past 2^63 - 1 too");
    assert_eq!(s.history(d, "flow", 100).await.unwrap().len(), 6, "5 of stream 7, 1 of stream 8");
    let latest: BTreeMap<String, String> = s.latest(d).await.unwrap().into_iter().map(|(a, v)| (a, v.value)).collect();
    assert_eq!(latest.get("flow").map(String::as_str), Some("5"));
    assert_eq!(latest.get("hum").map(String::as_str), Some("40"));
    // 2 writes + 2 records + 5 + 1 ingested points.
    assert_eq!(s.point_count(d).await.unwrap(), 10);
    assert!(s.device(d).await.unwrap().unwrap().last_seen_ms.is_some(), "a write marks it seen");
}

/// Content: OTA packages and bundles, read whole or by range.
async fn content(s: &dyn Store) {
    let k = ("acme", "gw");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let info = |id: &str, size: i64| ContentInfo {
        id: id.into(),
        content_type: "application/gzip".into(),
        size,
        updated: 5,
        meta: "m".into(),
    };
    s.put_content(k, &info("app.v1.tar.gz", data.len() as i64), &data).await.unwrap();
    s.put_content(k, &info("os.v2.raucb", 3), b"abc").await.unwrap();
    assert_eq!(s.content_info(k, "app.v1.tar.gz").await.unwrap(), Some(info("app.v1.tar.gz", 10_000)));
    assert_eq!(s.content_info(k, "nope").await.unwrap(), None);
    assert_eq!(s.content_info(("acme", "other"), "app.v1.tar.gz").await.unwrap(), None, "per model");
    let ids: Vec<String> = s.list_content(k).await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"app.v1.tar.gz".to_string()) && ids.contains(&"os.v2.raucb".to_string()));
    assert_eq!(s.read_content(k, "app.v1.tar.gz", 0, 10_000).await.unwrap().unwrap(), data);
    assert_eq!(
        s.read_content(k, "app.v1.tar.gz", 9_990, 100).await.unwrap().unwrap(),
        &data[9_990..],
        "fewer at the end"
    );
    assert_eq!(s.read_content(k, "app.v1.tar.gz", 100, 50).await.unwrap().unwrap(), &data[100..150]);
    assert_eq!(s.read_content(k, "nope", 0, 1).await.unwrap(), None);
    // Replaced whole.
    s.put_content(k, &info("os.v2.raucb", 2), b"xy").await.unwrap();
    assert_eq!(s.read_content(k, "os.v2.raucb", 0, 10).await.unwrap().unwrap(), b"xy");
}

/// Operators, sessions, tags, saved filters, the fleet query.
async fn fleet(s: &dyn Store) {
    s.put_operator("ann", "$argon2id$a", Role::Operator, false, 1_000).await.unwrap();
    assert!(s.put_operator("ann", "$argon2id$b", Role::Admin, false, 1_001).await.is_err(), "added twice");
    s.put_operator("ann", "$argon2id$c", Role::Admin, true, 1_002).await.unwrap();
    let ann = s.operator("ann").await.unwrap().unwrap();
    assert_eq!(
        (ann.password_hash.as_str(), ann.role),
        ("$argon2id$c", Role::Operator),
        "a new password keeps the role"
    );
    assert_eq!(s.operator("bob").await.unwrap(), None);
    assert!(!s.set_role("bob", Role::Admin).await.unwrap(), "no such operator");

    let tok = [9u8; 32];
    s.add_session(&tok, ann.id, "csrf-1", 10_000).await.unwrap();
    let got = s.session(&tok, 5_000).await.unwrap().unwrap();
    assert_eq!((got.operator.as_str(), got.csrf.as_str(), got.expires_ms), ("ann", "csrf-1", 10_000));
    assert_eq!(got.role, Role::Operator);
    // A new role ends the operator's sessions; the next one has it.
    assert!(s.set_role("ann", Role::Viewer).await.unwrap());
    assert_eq!(s.session(&tok, 5_000).await.unwrap(), None, "signed out by the new role");
    assert_eq!(s.operator("ann").await.unwrap().unwrap().role, Role::Viewer);
    s.add_session(&tok, ann.id, "csrf-1", 10_000).await.unwrap();
    assert_eq!(s.session(&tok, 5_000).await.unwrap().unwrap().role, Role::Viewer);
    assert_eq!(s.session(&tok, 10_001).await.unwrap(), None, "expired");
    assert!(s.session(&tok, 5_000).await.unwrap().is_some(), "asked at an earlier time, it is still there");
    // The next sign-in deletes the sessions expired by its time.
    let later = 10_001 + store::SESSION_MAX_MS;
    s.add_session(&[8u8; 32], ann.id, "csrf-2", later).await.unwrap();
    assert_eq!(s.session(&tok, 5_000).await.unwrap(), None, "an expired session is deleted at a sign-in");
    assert!(s.session(&[8u8; 32], later - 1).await.unwrap().is_some());
    s.drop_session(&[8u8; 32]).await.unwrap();
    assert_eq!(s.session(&[8u8; 32], later - 1).await.unwrap(), None, "signed out");

    let a = s.add_device(&key("F-1"), 1_000).await.unwrap().id;
    let b = s.add_device(&key("F-2"), 1_000).await.unwrap().id;
    s.write(a, &[("engine_report".into(), r#"{"engine_version":"1"}"#.into())], 1, 2_000).await.unwrap();
    s.write(a, &[("device_info".into(), r#"{"os":"x"}"#.into())], 1, 2_000).await.unwrap();
    s.set_tags(&[a, b, 999_999], &["north".into(), "pilot".into()], &[]).await.unwrap();
    s.set_tags(&[b], &[], &["pilot".into()]).await.unwrap();
    assert_eq!(s.tags(a).await.unwrap(), vec!["north", "pilot"]);
    assert_eq!(s.tags(b).await.unwrap(), vec!["north"]);
    let rows = s.fleet().await.unwrap();
    let ra = rows.iter().find(|r| r.device.id == a).unwrap();
    assert_eq!(ra.engine_report.as_deref(), Some(r#"{"engine_version":"1"}"#));
    assert_eq!(ra.device_info.as_deref(), Some(r#"{"os":"x"}"#));
    assert!(ra.report_ms.is_some());
    let rb = rows.iter().find(|r| r.device.id == b).unwrap();
    assert_eq!((rb.engine_report.as_deref(), rb.tags.as_slice()), (None, &["north".to_string()][..]));
    assert!(rows.windows(2).all(|w| w[0].device.id < w[1].device.id), "in id order");

    let f = SavedFilter { name: "north".into(), query: "tag:north".into(), operator: "ann".into(), created_ms: 3 };
    s.put_saved_filter(&f).await.unwrap();
    s.put_saved_filter(&SavedFilter { query: "tag:north online".into(), ..f.clone() }).await.unwrap();
    s.put_saved_filter(&SavedFilter { name: "all".into(), ..f.clone() }).await.unwrap();
    let saved = s.saved_filters().await.unwrap();
    assert_eq!(saved.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), vec!["all", "north"], "by name");
    assert_eq!(saved[1].query, "tag:north online", "replaced");
    assert!(s.drop_saved_filter("all").await.unwrap());
    assert!(!s.drop_saved_filter("all").await.unwrap());
}

/// The audit log: appended, read newest first in pages, failed sign-ins counted by account
/// and by address within a window.
async fn audit(s: &dyn Store) {
    let entry = |at_ms: i64, actor: &str, action: &str, addr: &str| AuditEntry {
        id: 999,
        at_ms,
        actor: actor.into(),
        action: action.into(),
        targets: "SN-1 SN-2".into(),
        detail: "d, \"quoted\"".into(),
        addr: addr.into(),
    };
    assert_eq!(s.audit(i64::MAX, 10).await.unwrap(), vec![]);
    s.audit_add(&entry(1_000, "operator:ann", "signin.failed", "10.0.0.1")).await.unwrap();
    s.audit_add(&entry(2_000, "operator:ann", "signin.failed", "10.0.0.2")).await.unwrap();
    s.audit_add(&entry(3_000, "operator:bob", "signin.failed", "10.0.0.1")).await.unwrap();
    s.audit_add(&entry(4_000, "operator:ann", "signin", "10.0.0.1")).await.unwrap();
    s.audit_add(&entry(5_000, "token", "device.add", "10.0.0.1")).await.unwrap();
    let all = s.audit(i64::MAX, 10).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first, ids rising: {all:?}");
    assert_eq!((all[0].at_ms, all[0].actor.as_str(), all[0].action.as_str()), (5_000, "token", "device.add"));
    assert_eq!(all[0], AuditEntry { id: all[0].id, ..entry(5_000, "token", "device.add", "10.0.0.1") }, "kept whole");
    assert_eq!(s.audit(all[1].id, 2).await.unwrap(), all[2..4], "a page before an id");
    assert_eq!(s.audit(all[4].id, 10).await.unwrap(), vec![], "nothing before the first");
    // Failed sign-ins (not successful ones, not other actions) as an account and from an address.
    assert_eq!(s.failed_signins("operator:ann", "10.0.0.1", 0).await.unwrap(), (2, 2));
    assert_eq!(s.failed_signins("operator:ann", "10.0.0.1", 1_500).await.unwrap(), (1, 1), "within the window");
    assert_eq!(s.failed_signins("operator:bob", "10.0.0.9", 0).await.unwrap(), (1, 0));
    assert_eq!(s.failed_signins("operator:eve", "", 0).await.unwrap(), (0, 0));
}

/// Operators' API tokens: kept by hash with their operator's role, listed, revoked.
async fn api_tokens(s: &dyn Store) {
    s.put_operator("tok-olga", "$argon2id$t", Role::Operator, false, 1).await.unwrap();
    let t = ApiToken {
        id: 0,
        operator: "tok-olga".into(),
        label: "ci".into(),
        scope: Scope::Write,
        created_ms: 10,
        expires_ms: 20,
        revoked: true,
    };
    assert_eq!(s.add_api_token(&ApiToken { operator: "nobody".into(), ..t.clone() }, &[1; 32]).await.unwrap(), None);
    let id = s.add_api_token(&t, &[2; 32]).await.unwrap().unwrap();
    let id2 = s.add_api_token(&ApiToken { scope: Scope::Read, ..t.clone() }, &[3; 32]).await.unwrap().unwrap();
    assert!(s.add_api_token(&t, &[2; 32]).await.is_err(), "one hash, one token");
    let h = s.api_token(&[2; 32]).await.unwrap().unwrap();
    assert_eq!(h.token, ApiToken { id, revoked: false, ..t.clone() }, "revoked is not taken from the caller");
    assert_eq!(h.role, Role::Operator);
    assert_eq!(s.api_token(&[9; 32]).await.unwrap(), None);
    s.set_role("tok-olga", Role::Viewer).await.unwrap();
    assert_eq!(s.api_token(&[2; 32]).await.unwrap().unwrap().role, Role::Viewer, "the operator's role now");
    // Disabled: its sessions end, its tokens say so, and enabled again it signs in again.
    let olga = s.operator("tok-olga").await.unwrap().unwrap();
    s.add_session(&[4; 32], olga.id, "c", 100).await.unwrap();
    assert!(s.set_disabled("tok-olga", true).await.unwrap());
    assert!(!s.set_disabled("nobody", true).await.unwrap());
    assert!(s.operator("tok-olga").await.unwrap().unwrap().disabled);
    assert_eq!(s.session(&[4; 32], 50).await.unwrap(), None, "its sessions end");
    s.add_session(&[5; 32], olga.id, "c", 100).await.unwrap();
    assert_eq!(s.session(&[5; 32], 50).await.unwrap(), None, "a disabled operator has no session");
    assert!(s.api_token(&[2; 32]).await.unwrap().unwrap().disabled);
    assert!(s.set_disabled("tok-olga", false).await.unwrap());
    assert!(!s.api_token(&[2; 32]).await.unwrap().unwrap().disabled);
    s.add_session(&[6; 32], olga.id, "c", 100).await.unwrap();
    assert!(s.session(&[6; 32], 50).await.unwrap().is_some(), "enabled again");
    assert!(s.revoke_api_token(id).await.unwrap());
    assert!(!s.revoke_api_token(999_999).await.unwrap());
    assert!(s.api_token(&[2; 32]).await.unwrap().unwrap().token.revoked);
    let all = s.api_tokens().await.unwrap();
    assert_eq!(
        all.iter().map(|t| (t.id, t.revoked, t.scope)).collect::<Vec<_>>(),
        [(id, true, Scope::Write), (id2, false, Scope::Read)]
    );
}

/// Rollouts: creation, listing, state moves that only succeed from the state read.
async fn rollouts(s: &dyn Store) {
    let a = s.add_device(&key("R-1"), 1_000).await.unwrap().id;
    let b = s.add_device(&key("R-2"), 1_000).await.unwrap().id;
    let id = s.create_rollout(&rollout("gw-os.v2.raucb"), &[(a, 0), (b, 1)]).await.unwrap();
    let (r, devs) = s.rollout(id).await.unwrap().unwrap();
    assert_eq!(
        (r.id, r.package.as_str(), r.stages.as_slice(), r.reboot.as_str(), r.stream),
        (id, "gw-os.v2.raucb", &[50, 100][..], "now", true)
    );
    assert_eq!(
        devs.iter().map(|d| (d.device_id, d.stage, d.state.as_str())).collect::<Vec<_>>(),
        vec![(a, 0, "pending"), (b, 1, "pending")]
    );
    assert_eq!(devs[0].sn, "R-1");
    assert_eq!(s.rollouts().await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(s.rollout(id + 1000).await.unwrap(), None);

    assert!(s.move_rollout_device(id, a, TargetState::Pending, TargetState::Sent, "", 2_000).await.unwrap());
    assert!(
        !s.move_rollout_device(id, a, TargetState::Pending, TargetState::Sent, "", 2_001).await.unwrap(),
        "no longer pending"
    );
    assert!(s
        .move_rollout_device(id, a, TargetState::Sent, TargetState::Installed, "installed gw-os 2", 2_002)
        .await
        .unwrap());
    let (_, devs) = s.rollout(id).await.unwrap().unwrap();
    assert_eq!(
        (devs[0].state.as_str(), devs[0].detail.as_str(), devs[0].updated_ms),
        ("installed", "installed gw-os 2", 2_002)
    );

    let mut next = r.clone();
    next.stage = 1;
    assert!(s.update_rollout(&next, &[RolloutState::Running], 0, 3_000).await.unwrap());
    assert!(!s.update_rollout(&next, &[RolloutState::Running], 0, 3_001).await.unwrap(), "the stage read is gone");
    let mut paused = next.clone();
    paused.state = RolloutState::Paused;
    paused.reason = "1 of 1 gateways failed".into();
    assert!(!s.update_rollout(&paused, &[RolloutState::Scheduled], 1, 3_002).await.unwrap(), "not from another state");
    assert!(s.update_rollout(&paused, &[RolloutState::Running, RolloutState::Scheduled], 1, 3_003).await.unwrap());
    let (r, _) = s.rollout(id).await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), r.stage, r.reason.as_str(), r.updated_ms),
        ("paused", 1, "1 of 1 gateways failed", 3_003)
    );
}

/// The edge services: registry, commands, states, batches.
async fn edge(s: &dyn Store) {
    let id = s.register_service(&service("batch", "hub-a", 8080)).await.unwrap();
    let again = s.register_service(&ServiceRow { version: 2, ..service("batch", "hub-a", 8080) }).await.unwrap();
    assert_eq!(id, again, "the same provider registered again replaces its entry");
    s.register_service(&service("batch", "hub-b", 8081)).await.unwrap();
    s.register_service(&service("cmd", "hub-a", 8080)).await.unwrap();
    let found = s.services("batch").await.unwrap();
    assert_eq!(
        found.iter().map(|r| r.system_name.as_str()).collect::<Vec<_>>(),
        vec!["hub-a", "hub-b"],
        "oldest first"
    );
    assert_eq!((found[0].version, found[0].metadata.get("group").map(String::as_str)), (2, Some("a")));
    assert_eq!(found[0].interfaces, vec!["HTTP-SECURE-JSON"]);
    assert!(s.unregister_service("batch", "hub-b", "127.0.0.1", 8081).await.unwrap());
    assert!(!s.unregister_service("batch", "hub-b", "127.0.0.1", 8081).await.unwrap());
    assert_eq!(s.services("batch").await.unwrap().len(), 1);
    assert!(s.services("none").await.unwrap().is_empty());

    assert_eq!(s.edge_control("E-1").await.unwrap(), None);
    s.issue_command("E-1", r#"{"id":"c1"}"#, 1_000).await.unwrap();
    s.issue_command("E-1", r#"{"id":"c2"}"#, 1_001).await.unwrap();
    assert_eq!(s.take_command("E-1").await.unwrap().as_deref(), Some(r#"{"id":"c2"}"#), "only the latest is kept");
    assert_eq!(s.take_command("E-1").await.unwrap(), None, "taken once");
    s.edge_report("E-1", Some(r#"{"applied":"c2"}"#), Some("[]"), 2_000).await.unwrap();
    s.edge_report("E-1", None, None, 2_001).await.unwrap();
    let c = s.edge_control("E-1").await.unwrap().unwrap();
    assert_eq!(
        c,
        EdgeControl {
            pending: None,
            last_command: Some(r#"{"id":"c2"}"#.into()),
            issued_ms: Some(1_001),
            state: Some(r#"{"applied":"c2"}"#.into()),
            state_ms: Some(2_000),
            parameters: Some("[]".into()),
            parameters_ms: Some(2_000),
        },
        "a report without state or parameters keeps the last ones"
    );
    assert!(s.serial_known("E-1").await.unwrap(), "an edge that reported is a known serial");

    let pts =
        |n: usize| (0..n).map(|i| EdgePoint { n: "temp".into(), t: i as i64, v: i.to_string() }).collect::<Vec<_>>();
    assert!(s.edge_batch("E-1", "hub-a", "b1", &pts(3), 3_000).await.unwrap());
    assert!(!s.edge_batch("E-1", "hub-a", "b1", &pts(3), 3_001).await.unwrap(), "a batch id is stored once");
    // The same batch retried through another hub of the same database: stored once.
    assert!(!s.edge_batch("E-1", "hub-b", "b1", &pts(3), 3_002).await.unwrap(), "once per edge, whichever hub");
    assert!(s.edge_batch("E-1", "hub-b", "b2", &pts(2), 3_003).await.unwrap());
    assert_eq!(s.edge_points("E-1", None, 100).await.unwrap().len(), 5);
    let a = s.edge_points("E-1", Some("hub-a"), 2).await.unwrap();
    assert_eq!(a.iter().map(|p| (p.batch_id.as_str(), p.ts)).collect::<Vec<_>>(), vec![("b1", 0), ("b1", 1)]);
    let batches = s.edge_batches("E-1", None).await.unwrap();
    assert_eq!(
        batches.iter().map(|b| (b.provider.as_str(), b.points)).collect::<Vec<_>>(),
        vec![("hub-a", 3), ("hub-b", 2)]
    );
    assert_eq!(s.edge_batches("E-1", Some("hub-b")).await.unwrap()[0].batch_id, "b2");
    assert_eq!(s.edge_batches("E-2", None).await.unwrap(), vec![]);
}

async fn suite(url: String) {
    let s = open(&url).await;
    devices(s.as_ref()).await;
    data(s.as_ref()).await;
    content(s.as_ref()).await;
    fleet(s.as_ref()).await;
    audit(s.as_ref()).await;
    api_tokens(s.as_ref()).await;
    rollouts(s.as_ref()).await;
    edge(s.as_ref()).await;
}

/// Two stores on one database, as two hubs: each contested step goes to exactly one.
async fn two_hubs(url: String) {
    let (h1, h2) = (open(&url).await, open(&url).await);
    for round in 0..20 {
        let sys = format!("E-{round}");
        h1.issue_command(&sys, "{}", 1).await.unwrap();
        let (a, b) = tokio::join!(h1.take_command(&sys), h2.take_command(&sys));
        assert_eq!(a.unwrap().is_some() as u8 + b.unwrap().is_some() as u8, 1, "a command goes to one hub");

        let sn = format!("C-{round}");
        let d = h1.add_device(&key(&sn), 1).await.unwrap().id;
        let (k, t1, t2) = (key(&sn), [1 + round; 32], [100 + round; 32]);
        let (a, b) = tokio::join!(h1.activate(&k, &t1, "aaaa"), h2.activate(&k, &t2, "bbbb"));
        let won = [a.unwrap(), b.unwrap()];
        assert_eq!(won.iter().filter(|w| **w == Activation::Activated(d)).count(), 1, "{won:?}");
        assert!(won.contains(&Activation::Conflict), "{won:?}");

        let one = [EdgePoint { n: "x".into(), t: 1, v: "1".into() }];
        let (a, b) =
            tokio::join!(h1.edge_batch(&sys, "hub-a", "b", &one, 1), h2.edge_batch(&sys, "hub-a", "b", &one, 1));
        assert_eq!(a.unwrap() as u8 + b.unwrap() as u8, 1, "a batch is stored by one hub");
        assert_eq!(h1.edge_points(&sys, None, 10).await.unwrap().len(), 1);

        let id = h1.create_rollout(&rollout("app.v1.tar.gz"), &[(d, 0)]).await.unwrap();
        let (a, b) = tokio::join!(
            h1.move_rollout_device(id, d, TargetState::Pending, TargetState::Sent, "", 2),
            h2.move_rollout_device(id, d, TargetState::Pending, TargetState::Sent, "", 2)
        );
        assert_eq!(a.unwrap() as u8 + b.unwrap() as u8, 1, "a gateway is sent its command by one hub");
        let mut next = rollout("app.v1.tar.gz");
        next.id = id;
        next.stage = 1;
        let (a, b) = tokio::join!(
            h1.update_rollout(&next, &[RolloutState::Running], 0, 3),
            h2.update_rollout(&next, &[RolloutState::Running], 0, 3)
        );
        assert_eq!(a.unwrap() as u8 + b.unwrap() as u8, 1, "a stage advances once");

        // Both ingest the same forwarder batch (a retry that reached the other hub).
        let batch: Vec<(u64, Point)> = (1..=50).map(|i| (i, point("v", i as i64, "x"))).collect();
        let (a, b) = tokio::join!(h1.ingest(d, 1, &batch, 4), h2.ingest(d, 1, &batch, 4));
        assert_eq!((a.unwrap(), b.unwrap()), (50, 50));
        assert_eq!(h2.history(d, "v", 1000).await.unwrap().len(), 50, "each point stored once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    suite(common::db_url(Backend::Sqlite, dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    suite(common::db_url(Backend::Postgres, dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    two_hubs(common::db_url(Backend::Sqlite, dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_one_postgres() {
    let dir = tempfile::tempdir().unwrap();
    two_hubs(common::db_url(Backend::Postgres, dir.path())).await;
}
