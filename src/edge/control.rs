//! The control path: provider discovery, commands from `ctrlpoll`, state to `ctrlupdate`,
//! and the apps' generic configuration file.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gwe_wire::arrowhead::{
    OrchestrationFlags, OrchestrationRequest, OrchestrationResponse, ServiceQuery, System, INTERFACE_HTTPS_JSON,
    INTERFACE_HTTP_JSON,
};
use gwe_wire::edge::{self, Command, CtrlUpdate};

use super::store::ControlStore;
use super::{Provider, Shared};
use crate::cloud::Cloud;
use crate::fsio;
use crate::supervisor::Supervisor;

pub struct Control {
    pub db: ControlStore,
    pub cloud: Arc<Cloud>,
    pub sup: Supervisor,
    pub shared: Arc<Shared>,
    pub orchestrator: String,
    pub app_config: PathBuf,
    pub poll: Duration,
    pub discovery: Duration,
    pub parameters: Duration,
    /// `[edge] ping_providers`.
    pub ping: bool,
    /// The points apps write: the parameters this edge offers.
    pub catalog: Arc<crate::catalog::Catalog>,
}

fn now_ms() -> i64 {
    crate::clock::unix_ms()
}

/// The provider list the orchestrator gives for `service`.
fn providers(resp: &[u8]) -> Result<Vec<Provider>, String> {
    let r: OrchestrationResponse = serde_json::from_slice(resp).map_err(|e| format!("orchestration answer: {e}"))?;
    Ok(r.response
        .into_iter()
        .filter_map(|o| {
            let secure = o.interfaces.iter().any(|i| i.interface_name == INTERFACE_HTTPS_JSON);
            let plain = o.interfaces.iter().any(|i| i.interface_name == INTERFACE_HTTP_JSON);
            if !secure && !plain {
                return None;
            }
            let iface = if secure { INTERFACE_HTTPS_JSON } else { INTERFACE_HTTP_JSON };
            let token = o
                .authorization_tokens
                .get(iface)
                .or_else(|| o.authorization_tokens.values().next())
                .cloned()
                .unwrap_or_default();
            let host = if o.provider.address.contains(':') {
                format!("[{}]", o.provider.address)
            } else {
                o.provider.address.clone()
            };
            let scheme = if secure { "https" } else { "http" };
            Some(Provider {
                key: format!("{}@{}:{}", o.provider.system_name, o.provider.address, o.provider.port),
                name: o.provider.system_name,
                url: format!("{scheme}://{host}:{}/{}", o.provider.port, o.service_uri.trim_start_matches('/')),
                token,
                group: o.metadata.get("group").cloned(),
            })
        })
        .collect())
}

impl Control {
    fn base(&self) -> &str {
        if self.orchestrator.is_empty() {
            self.cloud.base()
        } else {
            &self.orchestrator
        }
    }

    pub fn run(mut self) {
        let sh = self.shared.clone();
        if let Err(e) = self.sync_app_config(false) {
            log::error!("edge: {e}");
        }
        let mut report = true;
        if let Some(raw) = self.db.state().inbox.clone() {
            log::info!("edge: finishing a command fetched before the restart");
            self.handle(&raw);
        }
        let mut next_discovery = Instant::now();
        let mut next_parameters = Instant::now();
        while !sh.stopped() {
            if sh.stale.load(Ordering::Relaxed) || Instant::now() >= next_discovery {
                match self.discover() {
                    Ok(changed) => {
                        sh.stale.store(false, Ordering::Relaxed);
                        next_discovery = Instant::now() + self.discovery;
                        report |= changed;
                    }
                    Err(e) => {
                        log::warn!("edge: service discovery: {e}");
                        next_discovery = Instant::now() + (self.poll * 2).min(self.discovery);
                        sh.stale.store(false, Ordering::Relaxed);
                    }
                }
            }
            let polls = sh.dir.lock().unwrap_or_else(|e| e.into_inner()).ctrlpoll.clone();
            for p in &polls {
                match self.cloud.provider_call("ctrlpoll", &p.url, &p.token, None) {
                    Ok((200, body)) => {
                        let raw = String::from_utf8_lossy(&body).into_owned();
                        self.handle(&raw);
                        // Each command's outcome is reported before the next command is
                        // taken: two commands of one cycle (from two hubs) must not share
                        // one report, or the first one's result reaches no hub.
                        if let Err(e) = self.report(false) {
                            log::debug!("edge: reporting the state: {e}");
                            report = true;
                        }
                    }
                    Ok((204, _)) => {}
                    Ok((401, _)) => sh.stale.store(true, Ordering::Relaxed),
                    Ok((s, body)) => {
                        log::warn!("edge: ctrlpoll {}: {s}: {}", p.name, String::from_utf8_lossy(&body).trim())
                    }
                    Err(e) => log::debug!("edge: ctrlpoll {}: {e}", p.name),
                }
            }
            // Every `parameters_secs`, and soon after an app wrote a point of a new name.
            let with_parameters = self.catalog.take_changed() || Instant::now() >= next_parameters;
            if report || with_parameters {
                match self.report(with_parameters) {
                    Ok(()) => {
                        report = false;
                        if with_parameters {
                            next_parameters = Instant::now() + self.parameters;
                        }
                    }
                    Err(e) => {
                        log::debug!("edge: reporting the state: {e}");
                        if with_parameters {
                            next_parameters = Instant::now(); // the new points: next cycle
                        }
                    }
                }
            }
            if sh.stop.sleep(self.poll) {
                return;
            }
        }
    }

    /// Asks the orchestrator for the providers of the three services; answers whether a
    /// list changed.
    fn discover(&self) -> Result<bool, String> {
        let mut lists = Vec::new();
        for svc in [edge::SERVICE_BATCH, edge::SERVICE_CTRLPOLL, edge::SERVICE_CTRLUPDATE] {
            let rq = OrchestrationRequest {
                requester_system: System { system_name: self.shared.system.clone(), ..System::default() },
                requested_service: ServiceQuery {
                    service_definition_requirement: svc.into(),
                    interface_requirements: vec![INTERFACE_HTTP_JSON.into(), INTERFACE_HTTPS_JSON.into()],
                    ..ServiceQuery::default()
                },
                // A provider that is down is left out (the orchestrator tries to connect),
                // so a live one of the same name takes over its batches at the next
                // discovery instead of the dead one being retried for ever.
                orchestration_flags: OrchestrationFlags {
                    override_store: true,
                    ping_providers: self.ping,
                    ..OrchestrationFlags::default()
                },
                ..OrchestrationRequest::default()
            };
            let body = serde_json::to_vec(&rq).map_err(|e| e.to_string())?;
            let resp = self.cloud.orchestrate(self.base(), &body).map_err(|e| e.to_string())?;
            lists.push(providers(&resp)?);
        }
        let ctrlupdate = lists.pop().unwrap_or_default();
        let ctrlpoll = lists.pop().unwrap_or_default();
        let batch = lists.pop().unwrap_or_default();
        let mut dir = self.shared.dir.lock().unwrap_or_else(|e| e.into_inner());
        let names = |v: &[Provider]| v.iter().map(|p| (p.name.clone(), p.url.clone())).collect::<Vec<_>>();
        let changed = names(&dir.batch) != names(&batch)
            || names(&dir.ctrlpoll) != names(&ctrlpoll)
            || names(&dir.ctrlupdate) != names(&ctrlupdate);
        if changed {
            log::info!(
                "edge: providers: batch {:?}, ctrlpoll {:?}, ctrlupdate {:?}",
                batch.iter().map(|p| &p.name).collect::<Vec<_>>(),
                ctrlpoll.iter().map(|p| &p.name).collect::<Vec<_>>(),
                ctrlupdate.iter().map(|p| &p.name).collect::<Vec<_>>()
            );
        }
        dir.batch = batch;
        dir.ctrlpoll = ctrlpoll;
        dir.ctrlupdate = ctrlupdate;
        drop(dir);
        // Tokens were renewed even when the lists are the same.
        self.shared.bell.ring();
        Ok(changed)
    }

    /// A fetched command: kept, checked, applied (or rejected) in one file replacement.
    fn handle(&mut self, raw: &str) {
        if let Err(e) = self.db.save_inbox(raw) {
            log::error!("edge: keeping a fetched command: {e}");
        }
        let parsed = Command::parse(raw.as_bytes()).map_err(|reason| {
            let id = serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(String::from))
                .unwrap_or_default();
            (id, reason)
        });
        match &parsed {
            Ok(c) => log::info!("edge: applying command {}", c.id),
            Err((id, reason)) => log::warn!("edge: command {id:?} rejected: {reason}"),
        }
        match self.db.apply(parsed, now_ms()) {
            Ok(config_changed) => {
                *self.shared.configs.lock().unwrap_or_else(|e| e.into_inner()) = self.db.state().batch.clone();
                self.shared.bell.ring();
                if config_changed {
                    if let Err(e) = self.sync_app_config(true) {
                        log::error!("edge: {e}");
                    }
                }
            }
            Err(e) => log::error!("edge: applying a command: {e}"),
        }
    }

    /// Writes the generic configuration for the apps when the file differs from the
    /// store, and tells the apps that asked (always after a command changed it).
    fn sync_app_config(&self, changed: bool) -> Result<(), String> {
        let Some(cfg) = &self.db.state().config else {
            // None received yet: no file, so apps can tell "not configured" from "empty".
            return Ok(());
        };
        let mut text = serde_json::to_vec_pretty(cfg).map_err(|e| e.to_string())?;
        text.push(b'\n');
        let on_disk = std::fs::read(&self.app_config).ok();
        if on_disk.as_deref() == Some(&text[..]) && !changed {
            return Ok(());
        }
        if on_disk.as_deref() != Some(&text[..]) {
            if let Some(dir) = self.app_config.parent() {
                fsio::create_dir_all_durable(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            fsio::write_atomic_mode(&self.app_config, &text, 0o644)
                .map_err(|e| format!("writing {}: {e}", self.app_config.display()))?;
            log::info!("edge: generic configuration written to {}", self.app_config.display());
        }
        for done in self.sup.config_changed() {
            log::info!("edge: configuration changed: {done}");
        }
        Ok(())
    }

    /// Sends the state read back from the store (and the parameters) to every
    /// `ctrlupdate` provider.
    fn report(&self, with_parameters: bool) -> Result<(), String> {
        let state = self.db.edge_state(&self.shared.system);
        let u = CtrlUpdate {
            system: self.shared.system.clone(),
            state: Some(state),
            parameters: with_parameters.then(|| {
                let mut p = edge::parameters();
                p["points"] = self.catalog.points();
                p
            }),
        };
        let body = serde_json::to_vec(&u).map_err(|e| e.to_string())?;
        let updates = self.shared.dir.lock().unwrap_or_else(|e| e.into_inner()).ctrlupdate.clone();
        if updates.is_empty() {
            return Err("no ctrlupdate provider known yet".into());
        }
        let mut failed = None;
        for p in &updates {
            match self.cloud.provider_call("ctrlupdate", &p.url, &p.token, Some((&body, false))) {
                Ok((204 | 200, _)) => {}
                Ok((401, _)) => {
                    self.shared.stale.store(true, Ordering::Relaxed);
                    failed = Some(format!("{}: token refused", p.name));
                }
                Ok((s, b)) => failed = Some(format!("{}: {s}: {}", p.name, String::from_utf8_lossy(&b).trim())),
                Err(e) => failed = Some(format!("{}: {e}", p.name)),
            }
        }
        failed.map_or(Ok(()), Err)
    }
}
