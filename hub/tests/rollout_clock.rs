//! A rollout scheduled an hour ahead, driven by the rollout task's own step
//! (`service::rollouts::tick`) with the hub's clock moved forward instead of waiting: it
//! waits until its time, then starts and sends its first stage. Its own test binary: moving
//! the clock moves it for the whole process.

use std::sync::Arc;

use gwe_hub::notify::Notifier;
use gwe_hub::service::rollouts::tick;
use gwe_hub::store::{self, DeviceKey, Rollout, RolloutState, TargetState};
use gwe_hub::{clock, Hub, Limits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_rollout_starts_when_its_time_comes_on_the_hub_s_clock() {
    let dir = tempfile::tempdir().unwrap();
    let notifier = Arc::new(Notifier::default());
    let db = store::open(&format!("sqlite:{}", dir.path().join("hub.db").display()), notifier.clone()).await.unwrap();
    let hub = Hub::new(db.clone(), notifier, Limits::default(), None);
    let key = DeviceKey { vendor: "acme".into(), model: "gw".into(), sn: "S1".into() };
    let dev = db.add_device(&key, clock::now_ms()).await.unwrap().id;
    let now = clock::now_ms();
    let r = Rollout {
        id: 0,
        name: "at night".into(),
        package: "app.v2.tar.gz".into(),
        vendor: "acme".into(),
        model: "gw".into(),
        filter: String::new(),
        stages: vec![100],
        max_failure_pct: 0,
        state: RolloutState::Scheduled,
        stage: 0,
        accepted_stage: -1,
        reason: String::new(),
        created_ms: now,
        updated_ms: now,
        start_ms: now + 3_600_000,
        reboot: "now".into(),
        stream: false,
    };
    let id = db.create_rollout(&r, &[(dev, 0)]).await.unwrap();

    tick(&hub).await.unwrap();
    let (r, devs) = db.rollout(id).await.unwrap().unwrap();
    assert_eq!((r.state, devs[0].state), (RolloutState::Scheduled, TargetState::Pending), "an hour early");
    assert_eq!(db.read(dev, &["engine_fetch".into()]).await.unwrap()[0], None, "nothing sent");

    clock::advance_for_tests(3_600_001);
    tick(&hub).await.unwrap();
    let (r, devs) = db.rollout(id).await.unwrap().unwrap();
    assert_eq!((r.state, devs[0].state), (RolloutState::Running, TargetState::Sent), "its time came");
    let cmd = db.read(dev, &["engine_fetch".into()]).await.unwrap()[0].clone().unwrap();
    assert!(cmd.value.contains("app.v2.tar.gz"), "{}", cmd.value);
    assert!(cmd.modified_ms >= now + 3_600_000, "stamped by the hub's clock: {}", cmd.modified_ms);
}
