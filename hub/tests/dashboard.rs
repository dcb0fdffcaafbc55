//! The dashboard's server side over real sockets, against SQLite and PostgreSQL: operators
//! made with the command line, sign-in, sessions that survive a hub restart, CSRF and
//! Origin checks, the fleet and gateway JSON, whitelisting and commands from the UI.
//! (The pages themselves are driven in Chromium by `tests/browser.rs`.)

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{json, Value};

use common::{Backend, Client, HubProc, Reply};

const PASSWORD: &str = "a long enough secret";

fn operator(db: &str, verb: &str, name: &str, password: &str) -> (bool, String) {
    operator_with(db, &[verb, name], password)
}

/// `gwe-hub operator ARGS... --db DB` with `password` on stdin.
fn operator_with(db: &str, args: &[&str], password: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gwe-hub"))
        .arg("operator")
        .args(args)
        .args(["--db", db])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A browser's view of the hub: no redirects followed, cookies by hand.
struct Browser {
    url: String,
    agent: ureq::Agent,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Browser {
    fn new(hub: &HubProc) -> Self {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
        Self { url: hub.url.clone(), agent, cookie: None, csrf: None }
    }

    fn get(&self, path: &str) -> Reply {
        let mut rq = self.agent.get(format!("{}{path}", self.url));
        if let Some(c) = &self.cookie {
            rq = rq.header("Cookie", format!("gwe_session={c}"));
        }
        common::reply(rq.call())
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], ctype: &str, body: &str) -> Reply {
        let mut rq = self.agent.post(format!("{}{path}", self.url)).header("Content-Type", ctype);
        if let Some(c) = &self.cookie {
            rq = rq.header("Cookie", format!("gwe_session={c}"));
        }
        for (k, v) in headers {
            rq = rq.header(*k, *v);
        }
        common::reply(rq.send(body))
    }

    /// A state-changing API call as the page makes it: JSON, the CSRF token, our Origin.
    fn act(&self, path: &str, body: &Value) -> Reply {
        let origin = self.url.clone();
        let csrf = self.csrf.clone().unwrap_or_default();
        self.post(path, &[("X-CSRF-Token", &csrf), ("Origin", &origin)], "application/json", &body.to_string())
    }

    fn sign_in(&mut self, name: &str, password: &str) -> Reply {
        let body = format!("name={name}&password={}", password.replace(' ', "+"));
        let r = self.post("/ui/login", &[], "application/x-www-form-urlencoded", &body);
        if r.status == 303 {
            let set = r.headers.get("set-cookie").unwrap().to_str().unwrap().to_string();
            for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
                assert!(set.contains(attr), "the session cookie lacks {attr}: {set}");
            }
            self.cookie = Some(set.split(';').next().unwrap().strip_prefix("gwe_session=").unwrap().to_string());
            let page = self.get("/ui/fleet");
            assert_eq!(page.status, 200);
            let html = page.text();
            let csrf = html.split("name=\"csrf-token\" content=\"").nth(1).unwrap().split('"').next().unwrap();
            self.csrf = Some(csrf.to_string());
        }
        r
    }

    fn json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }
}

/// A hub with an operator `ops`, a client for its APIs, and a browser signed in as `ops`.
fn signed_in(b: Backend) -> (tempfile::TempDir, String, Arc<HubProc>, Client, Browser) {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(b, dir.path());
    assert!(operator(&db, "add", "ops", PASSWORD).0);
    let hub = Arc::new(HubProc::start(&db, dir.path()));
    let c = Client::new(hub.clone());
    let mut br = Browser::new(&hub);
    assert_eq!(br.sign_in("ops", PASSWORD).status, 303);
    (dir, db, hub, c, br)
}

fn sign_in_and_sessions(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(b, dir.path());
    // Operators come from the command line; weak passwords are refused with the rule.
    let (ok, msg) = operator(&db, "add", "ops", "short");
    assert!(!ok && msg.contains("at least 10 characters"), "{msg}");
    let (ok, msg) = operator(&db, "add", "ops", PASSWORD);
    assert!(ok, "{msg}");
    let (ok, msg) = operator(&db, "add", "ops", PASSWORD);
    assert!(!ok && msg.contains("already exists"), "{msg}");

    let hub = HubProc::start(&db, dir.path());
    let mut br = Browser::new(&hub);
    // Signed out: pages send to the sign-in page, the API answers 401.
    let r = br.get("/ui/fleet");
    assert_eq!((r.status.as_u16(), r.headers["location"].to_str().unwrap()), (303, "/ui/login"));
    assert_eq!(br.get("/ui/api/fleet").status, 401);
    let login = br.get("/ui/login");
    assert_eq!(login.status, 200);
    let csp = login.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");

    // Wrong password and unknown operator: the same answer.
    let wrong = br.sign_in("ops", "not the secret");
    let unknown = br.sign_in("nobody", PASSWORD);
    assert_eq!((wrong.status.as_u16(), unknown.status.as_u16()), (401, 401));
    assert!(wrong.text().contains("Wrong name or password") && unknown.text().contains("Wrong name or password"));
    // A login posted from another site is refused.
    let r = br.post(
        "/ui/login",
        &[("Origin", "http://evil.example")],
        "application/x-www-form-urlencoded",
        &format!("name=ops&password={}", PASSWORD.replace(' ', "+")),
    );
    assert_eq!(r.status, 403);

    assert_eq!(br.sign_in("ops", PASSWORD).status, 303);
    let fleet = br.json("/ui/api/fleet");
    assert_eq!(fleet["rows"], json!([]));

    // The session is in the database: a restarted hub still knows it.
    drop(hub);
    let hub = HubProc::start(&db, dir.path());
    br.url = hub.url.clone();
    assert_eq!(br.get("/ui/api/fleet").status, 200, "the session did not survive a restart");

    // Changing the password signs the operator out everywhere.
    let (ok, msg) = operator(&db, "passwd", "ops", "another long secret");
    assert!(ok, "{msg}");
    assert_eq!(br.get("/ui/api/fleet").status, 401);
    assert_eq!(br.sign_in("ops", PASSWORD).status, 401);
    assert_eq!(br.sign_in("ops", "another long secret").status, 303);

    // Signing out ends the session (and needs the CSRF token like any change).
    let r = br.post("/ui/logout", &[], "application/json", "");
    assert_eq!(r.status, 403, "sign-out without the CSRF token: {}", r.text());
    assert_eq!(br.act("/ui/logout", &json!(null)).status, 204);
    assert_eq!(br.get("/ui/api/fleet").status, 401);
}
backends!(sign_in, sign_in_and_sessions);

/// Who changed what: every change through the dashboard, the operator API, the edge's `cmd`
/// service and the command line is in the audit log with who, what, to which gateways and
/// from where; the log pages back, exports as CSV, and nothing in the API writes it. Failed
/// sign-ins lock an account after 5 and an address after 20, and the form says so.
fn audit_log_and_sign_in_throttling(b: Backend) {
    let (_dir, db, hub, c, br) = signed_in(b);
    assert_eq!(br.act("/ui/api/devices", &json!({"vendor": "acme", "model": "gw1", "sn": "SN-A"})).status, 201);
    let id = c.whitelist("acme", "gw1", "SN-B");
    let r = br.act(&format!("/ui/api/devices/{id}/command"), &json!({"kind": "remove", "app": "meter"}));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(br.act("/ui/api/filters", &json!({"name": "eu", "query": "tag:eu"})).status, 201);
    let r = br.act("/ui/api/bulk", &json!({"ids": [id], "action": {"kind": "tag", "add": ["eu"]}}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.op_send("POST", "/edge/cmd/SN-B", "application/json", br#"{"id":"c1","config":{"rate":5}}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(operator(&db, "add", "ann", PASSWORD).0);

    let log = br.json("/ui/api/audit");
    let seen: Vec<(&str, &str, &str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["targets"].as_str().unwrap(),
                e["addr"].as_str().unwrap(),
            )
        })
        .collect();
    let local = "127.0.0.1";
    assert_eq!(
        seen,
        [
            ("cli", "operator.add", "ann", ""),
            ("token", "edge.command", "SN-B", local),
            ("operator:ops", "bulk", "SN-B", local),
            ("operator:ops", "filter.save", "eu", local),
            ("operator:ops", "device.command", "SN-B", local),
            ("token", "device.add", "SN-B", local),
            ("operator:ops", "device.add", "SN-A", local),
            ("operator:ops", "signin", "", local),
            ("cli", "operator.add", "ops", ""),
        ],
        "newest first: {log:#}"
    );
    assert_eq!(log[4]["detail"], "remove meter");
    assert_eq!(log[1]["detail"], "command c1");
    let ids: Vec<i64> = log.as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let now = common::now_ms();
    assert!(log.as_array().unwrap().iter().all(|e| (now - e["at_ms"].as_i64().unwrap()).abs() < 60_000));
    // Paging back, and the operator API's copy.
    assert_eq!(br.json(&format!("/ui/api/audit?before={}&limit=2", ids[1])), json!([log[2], log[3]]));
    let api = c.op_get("/api/v1/audit");
    assert_eq!(serde_json::from_slice::<Value>(&api.body).unwrap(), log);
    // Exported as CSV: a header and a line an entry, fields quoted where they must be.
    let csv = br.get("/ui/api/audit?format=csv");
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    let text = csv.text();
    assert_eq!(text.lines().count(), 1 + seen.len(), "{text}");
    assert!(text.starts_with("id,at_ms,actor,action,targets,detail,addr\r\n"), "{text}");
    assert!(text.contains(",operator:ops,device.command,SN-B,remove meter,127.0.0.1\r\n"), "{text}");
    assert!(
        text.contains(",operator:ops,bulk,SN-B,\"tags +[\"\"eu\"\"] -[] (1 gateways, 0 refused)\",127.0.0.1\r\n"),
        "{text}"
    );
    assert_eq!(br.get("/ui/api/audit?format=xml").status, 400);
    // Nobody writes the log through the API: no method but GET, not even the operator.
    let body = r#"{"actor":"nobody","action":"forged"}"#;
    for path in ["/ui/api/audit", "/api/v1/audit"] {
        assert_eq!(br.act(path, &serde_json::from_str(body).unwrap()).status, 405, "POST {path}");
        assert_eq!(c.op_send("POST", path, "application/json", body.as_bytes()).status, 405, "POST {path}");
        assert_eq!(c.op_send("PUT", path, "application/json", body.as_bytes()).status, 405, "PUT {path}");
    }
    assert_eq!(br.json("/ui/api/audit"), log, "the log changed");
    assert_eq!(Browser::new(&hub).get("/ui/api/audit").status, 401, "signed out");

    // Five wrong passwords lock the account: then even the right one is refused, and said so.
    let mut other = Browser::new(&hub);
    for _ in 0..5 {
        assert_eq!(other.sign_in("ann", "not the password").status, 401);
    }
    let r = other.sign_in("ann", PASSWORD);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("This account is locked: 5 failed sign-ins"), "{}", r.text());
    // Another account from the same address still signs in; twenty failures lock the address.
    assert_eq!(other.sign_in("ops", PASSWORD).status, 303);
    for i in 0..15 {
        assert_eq!(other.sign_in(&format!("guess{i}"), "not the password").status, 401);
    }
    let r = other.sign_in("ops", PASSWORD);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("Sign-ins from your address are locked: 20 failed"), "{}", r.text());
    let log = br.json("/ui/api/audit?limit=100");
    let count = |a: &str| log.as_array().unwrap().iter().filter(|e| e["action"] == a).count();
    assert_eq!((count("signin.failed"), count("signin.locked"), count("signin")), (20, 2, 2), "{log:#}");
    assert_eq!(log[0]["actor"], "operator:ops");
    assert_eq!(log[0]["action"], "signin.locked");
    // The session made before the lock still works: a lock stops sign-ins, not operators.
    assert_eq!(br.get("/ui/api/fleet").status, 200);
}
backends!(audit, audit_log_and_sign_in_throttling);

/// Roles: a viewer reads and changes nothing, an operator acts on gateways and rollouts, an
/// admin also decides which gateways belong. What a role does not allow is refused with the
/// reason, recorded as `denied`, and changes nothing; a new role ends the operator's sessions.
fn operator_roles(b: Backend) {
    let (_dir, db, hub, c, admin) = signed_in(b);
    let (ok, msg) = operator_with(&db, &["add", "vic", "--role", "viewer"], PASSWORD);
    assert!(ok, "{msg}");
    assert!(operator_with(&db, &["add", "olga", "--role", "operator"], PASSWORD).0);
    let (ok, msg) = operator_with(&db, &["add", "root", "--role", "root"], PASSWORD);
    assert!(!ok && msg.contains("--role \"root\": viewer, operator or admin"), "{msg}");
    let id = c.whitelist("acme", "gw1", "SN-1");

    let mut vic = Browser::new(&hub);
    assert_eq!(vic.sign_in("vic", PASSWORD).status, 303);
    let page = vic.get("/ui/fleet").text();
    assert!(page.contains(r#"<body data-role="viewer">"#) && page.contains("(viewer)"), "{page}");
    assert_eq!(vic.get("/ui/api/fleet").status, 200);
    assert_eq!(vic.get("/ui/api/audit").status, 200);
    let r = vic.act(&format!("/ui/api/devices/{id}/command"), &json!({"kind": "remove", "app": "meter"}));
    assert_eq!(r.status, 403);
    assert!(r.text().contains("vic is viewer: this needs the operator role"), "{}", r.text());
    let r = vic.act("/ui/api/devices", &json!({"vendor": "acme", "model": "gw1", "sn": "SN-V"}));
    assert!(r.status == 403 && r.text().contains("needs the admin role"), "{}", r.text());
    assert_eq!(vic.act("/ui/api/filters", &json!({"name": "v", "query": "x"})).status, 403);

    let mut olga = Browser::new(&hub);
    assert_eq!(olga.sign_in("olga", PASSWORD).status, 303);
    let r = olga.act(&format!("/ui/api/devices/{id}/command"), &json!({"kind": "remove", "app": "meter"}));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(olga.act("/ui/api/bulk", &json!({"ids": [id], "action": {"kind": "tag", "add": ["eu"]}})).status, 200);
    let r = olga.act("/ui/api/bulk", &json!({"ids": [id], "action": {"kind": "enable"}}));
    assert!(r.status == 403 && r.text().contains("olga is operator: this needs the admin role"), "{}", r.text());
    assert_eq!(olga.act(&format!("/ui/api/devices/{id}/enable"), &json!({})).status, 403);
    assert_eq!(olga.act("/ui/api/devices", &json!({"vendor": "acme", "model": "gw1", "sn": "SN-O"})).status, 403);
    // The admin (operators made without --role, as before roles) may.
    assert_eq!(admin.act("/ui/api/devices", &json!({"vendor": "acme", "model": "gw1", "sn": "SN-2"})).status, 201);
    assert_eq!(admin.act(&format!("/ui/api/devices/{id}/enable"), &json!({})).status, 204);

    // Nothing the refusals asked for happened; each is in the audit log.
    let sns: Vec<Value> =
        c.op_get("/api/v1/devices").json().as_array().unwrap().iter().map(|d| d["sn"].clone()).collect();
    assert_eq!(sns, [json!("SN-1"), json!("SN-2")]);
    assert_eq!(admin.json("/ui/api/filters"), json!([]));
    let log = admin.json("/ui/api/audit");
    let denied: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "denied")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(
        denied,
        ["operator:olga", "operator:olga", "operator:olga", "operator:vic", "operator:vic", "operator:vic"]
    );

    // A new role takes effect at once: the operator's sessions end.
    let (ok, msg) = operator_with(&db, &["role", "olga", "viewer"], "");
    assert!(ok && msg.contains("olga: viewer (signed out)"), "{msg}");
    assert_eq!(olga.get("/ui/api/fleet").status, 401);
    assert_eq!(olga.sign_in("olga", PASSWORD).status, 303);
    assert_eq!(olga.act("/ui/api/bulk", &json!({"ids": [id], "action": {"kind": "tag", "add": ["x"]}})).status, 403);
    assert!(!operator_with(&db, &["role", "nobody", "admin"], "").0);
    assert!(admin.json("/ui/api/audit")[0]["detail"] == "olga is viewer: this needs the operator role");
    // A viewer signs out like anyone.
    assert_eq!(vic.act("/ui/logout", &json!(null)).status, 204);
}
backends!(roles, operator_roles);

/// `gwe-hub operator token ...` and its stdout (the new token).
fn new_token(db: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gwe-hub"))
        .args(["operator", "token"])
        .args(args)
        .args(["--db", db])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A call of the operator API with `token`.
fn with_token(hub: &HubProc, token: &str, method: &str, path: &str, body: &str) -> Reply {
    let agent = common::agent();
    let url = format!("{}{path}", hub.url);
    let auth = format!("Bearer {token}");
    common::reply(match method {
        "GET" => agent.get(url).header("Authorization", auth).call(),
        "POST" => agent.post(url).header("Authorization", auth).header("Content-Type", "application/json").send(body),
        "PUT" => agent.put(url).header("Authorization", auth).header("Content-Type", "application/json").send(body),
        _ => panic!("{method}"),
    })
}

/// Operators' own API tokens: each within its scope and its operator's role, recorded as
/// that operator; revoked ones stop at once; the shared token keeps working (the migration
/// path); the secret is shown once and never listed.
fn operator_api_tokens(b: Backend) {
    let (_dir, db, hub, c, _br) = signed_in(b);
    assert!(operator_with(&db, &["add", "olga", "--role", "operator"], PASSWORD).0);
    let write = new_token(&db, &["olga", "--scope", "write", "--days", "30", "--label", "ci"]);
    let read = new_token(&db, &["olga"]);
    assert!(write.starts_with("gweo_") && write.len() == 45 && read != write, "{write} {read}");
    let out = Command::new(env!("CARGO_BIN_EXE_gwe-hub"))
        .args(["operator", "token", "nobody", "--db", &db])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no operator nobody"));
    let id = c.whitelist("acme", "gw1", "SN-1");

    let r = with_token(&hub, &write, "GET", "/api/v1/devices", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let path = format!("/api/v1/devices/{id}/dataports/engine_fetch");
    assert_eq!(with_token(&hub, &write, "PUT", &path, r#"{"value":"x"}"#).status, 204);
    let r = with_token(&hub, &write, "POST", "/api/v1/devices", r#"{"vendor":"acme","model":"gw1","sn":"SN-9"}"#);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("olga is operator: this needs the admin role"), "{}", r.text());
    assert_eq!(with_token(&hub, &read, "GET", &format!("/api/v1/devices/{id}"), "").status, 200);
    let r = with_token(&hub, &read, "PUT", &path, r#"{"value":"y"}"#);
    assert!(r.status == 403 && r.text().contains("may only read"), "{}", r.text());
    assert_eq!(
        with_token(&hub, "gweo_0123456789012345678901234567890123456789", "GET", "/api/v1/devices", "").status,
        401
    );

    // Listed without the secret; revoked, it stops at once.
    let list = Command::new(env!("CARGO_BIN_EXE_gwe-hub")).args(["operator", "tokens", "--db", &db]).output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(!list.contains(&write) && !list.contains(&write[5..]) && list.contains(r#""label":"ci""#), "{list}");
    let write_id: Value = serde_json::from_str(list.lines().next().unwrap()).unwrap();
    let write_id = write_id["id"].as_i64().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gwe-hub"))
        .args(["operator", "revoke", &write_id.to_string(), "--db", &db])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = with_token(&hub, &write, "GET", "/api/v1/devices", "");
    assert!(r.status == 401 && r.text().contains("was revoked"), "{}", r.text());
    // The shared token works as before.
    assert_eq!(c.op_get("/api/v1/devices").status, 200);
    // A disabled operator's tokens are refused, and it cannot sign in; enabled, both work.
    let mut olga = Browser::new(&hub);
    assert_eq!(olga.sign_in("olga", PASSWORD).status, 303);
    assert!(operator_with(&db, &["disable", "olga"], "").0);
    assert_eq!(olga.get("/ui/api/fleet").status, 401, "its session ended");
    let r = with_token(&hub, &read, "GET", "/api/v1/devices", "");
    assert!(r.status == 401 && r.text().contains("olga is disabled"), "{}", r.text());
    let r = olga.sign_in("olga", PASSWORD);
    assert!(r.status == 403 && r.text().contains("This account is disabled."), "{}", r.text());
    assert!(operator_with(&db, &["enable", "olga"], "").0);
    assert_eq!(with_token(&hub, &read, "GET", "/api/v1/devices", "").status, 200);
    assert_eq!(olga.sign_in("olga", PASSWORD).status, 303);

    // Who did what: the change as olga's token, each refusal as denied, the CLI's steps.
    let log: Vec<(String, String)> = c
        .op_get("/api/v1/audit")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap().to_string(), e["action"].as_str().unwrap().to_string()))
        .take(14)
        .collect();
    let olga = |t: i64| format!("operator:olga (token {t})");
    let want = [
        ("operator:olga".into(), "signin"),
        ("cli".into(), "operator.enable"),
        ("operator:olga".into(), "signin.disabled"),
        (olga(write_id + 1), "denied"),
        ("cli".into(), "operator.disable"),
        ("operator:olga".into(), "signin"),
        (olga(write_id), "denied"),
        ("cli".into(), "token.revoke"),
        (olga(write_id + 1), "denied"),
        (olga(write_id), "denied"),
        (olga(write_id), "dataport.write"),
        ("token".into(), "device.add"),
        ("cli".into(), "token.add"),
        ("cli".into(), "token.add"),
    ];
    assert_eq!(log, want.map(|(a, b)| (a, b.to_string())));
}
backends!(api_tokens, operator_api_tokens);

fn fleet_and_commands(b: Backend) {
    let (_dir, _db, _hub, c, br) = signed_in(b);

    // Whitelisting from the UI: CSRF token and same origin required.
    let key = json!({"vendor": "acme", "model": "gw1", "sn": "SN-1"});
    let no_csrf = br.post("/ui/api/devices", &[], "application/json", &key.to_string());
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.text());
    let csrf = br.csrf.clone().unwrap();
    let cross = br.post(
        "/ui/api/devices",
        &[("X-CSRF-Token", &csrf), ("Origin", "http://evil.example")],
        "application/json",
        &key.to_string(),
    );
    assert_eq!(cross.status, 403, "{}", cross.text());
    assert_eq!(br.act("/ui/api/devices", &key).status, 201);
    assert_eq!(br.act("/ui/api/devices", &key).status, 409, "whitelisted twice");
    let bad = br.act("/ui/api/devices", &json!({"vendor": "acme", "model": "gw1", "sn": ""}));
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("serial"), "{}", bad.text());
    assert_eq!(br.act("/ui/api/devices", &json!({"vendor": "acme", "model": "gw1", "sn": "SN-2"})).status, 201);

    // The gateway activates and reports; the fleet shows what it runs and its backlog.
    let r = c.activate("acme", "gw1", "SN-1");
    assert_eq!(r.status, 200);
    let token = r.text();
    let report = json!({"apps": [{"sensor": {"status": "RUNNING", "version": "2.1"}}, {"logger": {"status": "FATAL", "version": null}}],
                        "engine_version": "0.3.0", "queue": {"backlog": 17}});
    let body = format!("engine_report={}", urlencode(&report.to_string()));
    assert_eq!(c.dev_post(&token, "/onep:v1/stack/alias", &body).status, 204);
    let devs = fleet_rows(&br.json("/ui/api/fleet"));
    assert_eq!(devs.len(), 2);
    let d = &devs[0];
    assert_eq!(
        (d["sn"].as_str(), d["online"].as_bool(), d["engine_version"].as_str()),
        (Some("SN-1"), Some(true), Some("0.3.0"))
    );
    assert_eq!(d["apps"], json!([["sensor", "2.1", "RUNNING"], ["logger", null, "FATAL"]]));
    assert_eq!(d["backlog"], 17);
    assert_eq!((devs[1]["online"].as_bool(), devs[1]["engine_version"].is_null()), (Some(false), true));
    // The token is never shown, only its first four characters.
    let raw = br.get("/ui/api/fleet").text() + &br.get(&format!("/ui/api/devices/{}", d["id"])).text();
    assert!(!raw.contains(&token), "the device token leaked into the dashboard");
    assert_eq!(d["token_hint"].as_str().map(str::len), Some(4));

    // Commands from the gateway's page.
    let id = d["id"].as_i64().unwrap();
    let cmd = |v: Value| br.act(&format!("/ui/api/devices/{id}/command"), &v);
    let r = cmd(json!({"kind": "install", "package": "sensor.v2.2.tar.gz"}));
    assert_eq!(r.status, 400, "a package the hub does not host: {}", r.text());
    assert!(r.text().contains("no package"), "{}", r.text());
    let up = c.op_send("PUT", "/api/v1/content/acme/gw1/sensor.v2.2.tar.gz", "application/octet-stream", b"pkg");
    assert_eq!(up.status, 201, "{}", up.text());
    assert_eq!(cmd(json!({"kind": "install", "package": "sensor.v2.2.tar.gz"})).status, 202);
    let fetch = c.dev_get(&token, "/onep:v1/stack/alias?engine_fetch", &[]).text();
    assert!(fetch.contains("sensor.v2.2.tar.gz"), "engine_fetch: {fetch}");
    assert_eq!(cmd(json!({"kind": "edge", "command": {"id": "c1", "config": {"rate": 5}}})).status, 202);
    assert_eq!(cmd(json!({"kind": "edge", "command": {"config": {}}})).status, 400, "an edge command needs an id");
    assert_eq!(cmd(json!({"kind": "reboot"})).status, 400, "unknown command kinds are refused");
    let page = br.json(&format!("/ui/api/devices/{id}"));
    assert!(page["control"]["pending"].as_str().unwrap().contains("\"c1\""), "{}", page["control"]);
    assert_eq!(page["packages"], json!(["sensor.v2.2.tar.gz"]));
    assert_eq!(page["series"]["engine_report"].as_array().unwrap().len(), 1);
    assert_eq!(br.get("/ui/api/devices/999").status, 404);

    // Field errors are JSON naming the field; nothing changes.
    let r = cmd(json!({"kind": "install", "package": ""}));
    assert_eq!((r.status.as_u16(), r.json()["field"].as_str()), (400, Some("package")), "{}", r.text());
    let dup = br.act("/ui/api/devices", &json!({"vendor": "acme", "model": "gw1", "sn": "SN-1"}));
    assert_eq!(dup.json()["field"], "sn");

    // Tags on many gateways at once, in one bulk action; odd characters refused.
    let other = devs[1]["id"].as_i64().unwrap();
    let bulk = |v: Value| br.act("/ui/api/bulk", &v);
    let r = bulk(json!({"ids": [id, other], "action": {"kind": "tag", "add": ["north", "eu-west.2"]}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["done"], 2);
    let r = bulk(json!({"ids": [id], "action": {"kind": "tag", "add": ["a b"]}}));
    assert_eq!((r.status.as_u16(), r.json()["field"].as_str()), (400, Some("tags")), "{}", r.text());
    assert_eq!(bulk(json!({"ids": [], "action": {"kind": "enable"}})).status, 400, "an empty selection");
    assert_eq!(bulk(json!({"ids": [id, 999], "action": {"kind": "enable"}})).status, 400, "an unknown gateway");
    assert_eq!(bulk(json!({"ids": [other], "action": {"kind": "tag", "remove": ["eu-west.2"]}})).status, 200);
    let devs = fleet_rows(&br.json("/ui/api/fleet"));
    assert_eq!(devs[0]["tags"], json!(["eu-west.2", "north"]));
    assert_eq!(devs[1]["tags"], json!(["north"]));
    assert!(devs[0]["q"].as_str().unwrap().contains("tag:north"), "{}", devs[0]["q"]);
    assert_eq!(br.json(&format!("/ui/api/devices/{id}"))["tags"], json!(["eu-west.2", "north"]));
    // Bulk install: a gateway whose model has no such package refuses, the others take it.
    let r = bulk(json!({"ids": [id, other], "action": {"kind": "install", "package": "sensor.v2.2.tar.gz"}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["done"], 2);
    let pk = br.json("/ui/api/packages");
    assert_eq!(pk[0]["id"], "sensor.v2.2.tar.gz");
    assert_eq!((pk[0]["name"].as_str(), pk[0]["version"].as_str()), (Some("sensor"), Some("2.2")));

    // Saved filters.
    assert_eq!(br.act("/ui/api/filters", &json!({"name": "eu", "query": "tag:eu-west.2 online"})).status, 201);
    let r = br.act("/ui/api/filters", &json!({"name": "bad", "query": "tag:<x>"}));
    assert_eq!((r.status.as_u16(), r.json()["field"].as_str()), (400, Some("query")));
    assert_eq!(br.act("/ui/api/filters", &json!({"name": "", "query": "x"})).json()["field"], "name");
    let saved = br.json("/ui/api/filters");
    assert_eq!(saved.as_array().unwrap().len(), 1);
    assert_eq!((saved[0]["name"].as_str(), saved[0]["operator"].as_str()), (Some("eu"), Some("ops")));
    assert_eq!(br.act("/ui/api/filters/nope/delete", &json!({})).status, 404);

    // A rollout's group from a saved filter: the preview names it before Start.
    let plan = json!({"name": "r1", "package": "sensor.v2.2.tar.gz", "vendor": "acme", "model": "gw1",
                      "saved_filter": "eu", "stages": [50, 100], "max_failure_pct": 10});
    let p = br.act("/ui/api/rollouts/preview", &plan);
    assert_eq!(p.status, 200, "{}", p.text());
    let p = p.json();
    assert_eq!(p["gateways"], 1, "only SN-1 is tagged eu-west.2 and online: {p}");
    assert_eq!(p["stages"][0]["members"], json!(["SN-1"]));
    let mut bad_stages = plan.clone();
    bad_stages["stages"] = json!([50, 10]);
    assert_eq!(br.act("/ui/api/rollouts/preview", &bad_stages).json()["field"], "stages");
    // Scheduled for later: it waits, and can be aborted before it starts.
    let mut later = plan.clone();
    later["start_at_ms"] = json!(common::now_ms() + 3_600_000);
    let r = br.act("/ui/api/rollouts", &later);
    assert_eq!(r.status, 201, "{}", r.text());
    let rid = r.json()["id"].as_i64().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500)); // one tick of the rollout task
    let r = br.json(&format!("/ui/api/rollouts/{rid}"));
    assert_eq!(r["state"], "scheduled", "{r}");
    assert_eq!(r["counts"]["pending"], 1);
    assert!(r["filter"].as_str().unwrap().contains("saved filter \"eu\""), "{}", r["filter"]);
    assert_eq!(br.act(&format!("/ui/api/rollouts/{rid}/abort"), &json!({})).status, 204);
    let mut past = plan.clone();
    past["start_at_ms"] = json!(1000);
    assert_eq!(br.act("/ui/api/rollouts", &past).json()["field"], "start_at");
    assert_eq!(br.act("/ui/api/filters/eu/delete", &json!({})).status, 204);
    assert_eq!(br.json("/ui/api/filters"), json!([]));
}
backends!(fleet, fleet_and_commands);

/// The fleet's rows (arrays, in the order of `columns`) as objects.
fn fleet_rows(fleet: &Value) -> Vec<Value> {
    let cols: Vec<&str> = fleet["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let rows = fleet["rows"].as_array().unwrap();
    rows.iter()
        .map(|r| {
            Value::Object(cols.iter().zip(r.as_array().unwrap()).map(|(c, v)| (c.to_string(), v.clone())).collect())
        })
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Gateways that answer a rollout's engine_fetch as an agent would, in fetch_status.
struct FakeFleet<'a> {
    c: &'a Client,
    tokens: Vec<(String, String)>,
}

impl FakeFleet<'_> {
    /// Each gateway that holds an engine_fetch for `package` and has not answered yet
    /// answers: installed, or (serial in `fail`) rolled back, until `n` did (a rollout marks
    /// a gateway sent just before it writes the command). Returns the serials that did.
    fn answer(&self, package: &str, fail: &[&str], answered: &mut Vec<String>, n: usize) -> Vec<String> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut now = Vec::new();
        loop {
            self.answer_once(package, fail, answered, &mut now);
            if now.len() >= n || std::time::Instant::now() > until {
                return now;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn answer_once(&self, package: &str, fail: &[&str], answered: &mut Vec<String>, now: &mut Vec<String>) {
        for (sn, token) in &self.tokens {
            if answered.contains(sn) {
                continue;
            }
            let f = self.c.dev_get(token, "/onep:v1/stack/alias?engine_fetch", &[]).text();
            if !f.contains(package) {
                continue;
            }
            let status = if fail.contains(&sn.as_str()) {
                format!("{package}: version 2.2 did not stay up (exited at once); rolled back to 2.1")
            } else {
                "installed sensor 2.2\nok".to_string()
            };
            let r = self.c.dev_post(token, "/onep:v1/stack/alias", &format!("fetch_status={}", urlencode(&status)));
            assert_eq!(r.status, 204);
            answered.push(sn.clone());
            now.push(sn.clone());
        }
    }
}

fn wait_rollout(br: &Browser, id: i64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = br.json(&format!("/ui/api/rollouts/{id}"));
        if f(&r) {
            return r;
        }
        assert!(std::time::Instant::now() < until, "rollout {id}: no {what} in 30 s: {r}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

fn staged_rollouts(b: Backend) {
    let (dir, db, hub, c, mut br) = signed_in(b);
    let mut tokens = Vec::new();
    for i in 0..10 {
        let sn = format!("R{i:02}");
        c.whitelist("acme", "gw1", &sn);
        tokens.push((sn.clone(), c.activate("acme", "gw1", &sn).text()));
    }
    c.whitelist("acme", "gw1", "NOT-ACTIVATED");
    let pkg = "sensor.v2.2.tar.gz";
    assert_eq!(
        c.op_send("PUT", &format!("/api/v1/content/acme/gw1/{pkg}"), "application/octet-stream", b"p").status,
        201
    );
    let fleet = FakeFleet { c: &c, tokens };
    let new = |stages: Value, name: &str| json!({"name": name, "package": pkg, "vendor": "acme", "model": "gw1", "stages": stages, "max_failure_pct": 20});
    let r = br.act("/ui/api/rollouts", &new(json!([50, 10, 100]), "bad"));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("rising"), "{}", r.text());
    let mut missing = new(json!([10, 50, 100]), "x");
    missing["package"] = json!("sensor.v9.tar.gz");
    assert_eq!(br.act("/ui/api/rollouts", &missing).status, 400);

    // Stages 10 %, 50 %, 100 % of the ten activated gateways: 1, then 4, then 5.
    let r = br.act("/ui/api/rollouts", &new(json!([10, 50, 100]), "sensor 2.2"));
    assert_eq!(r.status, 201, "{}", r.text());
    let id = serde_json::from_slice::<Value>(&r.body).unwrap()["id"].as_i64().unwrap();
    let v = wait_rollout(&br, id, "first stage sent", |v| v["counts"]["sent"] == 1);
    assert_eq!((v["gateways"].as_i64(), v["counts"]["pending"].as_i64()), (Some(10), Some(9)));
    let stage_of = |v: &Value, sn: &str| {
        v["devices"].as_array().unwrap().iter().find(|d| d["sn"] == sn).unwrap()["stage"].as_i64().unwrap()
    };
    let mut answered = Vec::new();
    assert_eq!(fleet.answer(pkg, &[], &mut answered, 1).len(), 1, "only the first stage was sent the package");

    // Stage 2: one of its four gateways fails; 1 of 4 is over 20 %: the rollout pauses.
    let v = wait_rollout(&br, id, "second stage sent", |v| v["counts"]["sent"] == 4);
    let second: Vec<String> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["stage"] == 1)
        .map(|d| d["sn"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(second.len(), 4);
    assert_eq!(fleet.answer(pkg, &[&second[0]], &mut answered, 4).len(), 4);
    let v = wait_rollout(&br, id, "a pause", |v| v["state"] == "paused");
    assert!(v["reason"].as_str().unwrap().contains("1 of 4 gateways failed"), "{}", v["reason"]);
    assert_eq!(v["counts"]["pending"], 5, "the third stage was not sent");
    assert!(v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["state"] == "failed" && d["detail"].as_str().unwrap().contains("rolled back")));
    assert_eq!(stage_of(&v, &second[0]), 1);

    // Progress survives a hub restart (and the gateways' tokens with it).
    let tokens = fleet.tokens.clone();
    drop(fleet);
    drop(c);
    let before = v["devices"].clone();
    drop(hub);
    let hub = Arc::new(HubProc::start(&db, dir.path()));
    br.url = hub.url.clone();
    let c = Client::new(hub.clone());
    let fleet = FakeFleet { c: &c, tokens };
    let v = br.json(&format!("/ui/api/rollouts/{id}"));
    assert_eq!((v["state"].as_str(), &v["devices"]), (Some("paused"), &before));

    // Resuming accepts that stage's failure; the last stage goes out and the rollout ends.
    assert_eq!(br.act(&format!("/ui/api/rollouts/{id}/resume"), &json!(null)).status, 204);
    assert_eq!(br.act(&format!("/ui/api/rollouts/{id}/resume"), &json!(null)).status, 409, "already running");
    let v = wait_rollout(&br, id, "third stage sent", |v| v["counts"]["sent"] == 5);
    assert_eq!(v["stage"], 2);
    assert_eq!(fleet.answer(pkg, &[], &mut answered, 5).len(), 5);
    let v = wait_rollout(&br, id, "the end", |v| v["state"] == "done");
    assert_eq!((v["counts"]["installed"].as_i64(), v["counts"]["failed"].as_i64()), (Some(9), Some(1)));

    // Abort: what was not sent is skipped, and an aborted rollout does not resume.
    let r = br.act("/ui/api/rollouts", &new(json!([10, 100]), "to abort"));
    let id2 = serde_json::from_slice::<Value>(&r.body).unwrap()["id"].as_i64().unwrap();
    wait_rollout(&br, id2, "first stage sent", |v| v["counts"]["sent"] == 1);
    assert_eq!(br.act(&format!("/ui/api/rollouts/{id2}/abort"), &json!(null)).status, 204);
    let v = br.json(&format!("/ui/api/rollouts/{id2}"));
    assert_eq!((v["state"].as_str(), v["counts"]["skipped"].as_i64()), (Some("aborted"), Some(9)));
    assert_eq!(br.act(&format!("/ui/api/rollouts/{id2}/resume"), &json!(null)).status, 409);
    assert_eq!(br.json("/ui/api/rollouts").as_array().unwrap().len(), 2);
}
backends!(rollouts, staged_rollouts);

/// An OS bundle goes out in a rollout as packages do: the command is engine_fetch's `os`
/// item with the rollout's reboot window; a gateway counts as installed only when its new
/// system runs and was marked good, and a rollback counts as a failure that pauses the
/// rollout. The fleet shows each gateway's OS image and slot.
fn os_bundle_rollouts(b: Backend) {
    let (_dir, _db, _hub, c, br) = signed_in(b);
    let mut tokens = Vec::new();
    for i in 0..4 {
        let sn = format!("OS{i}");
        c.whitelist("acme", "gw1", &sn);
        tokens.push((sn.clone(), c.activate("acme", "gw1", &sn).text()));
    }
    let bundle = "gw-os.v2.raucb";
    let put =
        |name: &str| c.op_send("PUT", &format!("/api/v1/content/acme/gw1/{name}"), "application/octet-stream", b"b");
    assert_eq!(put(bundle).status, 201);
    assert_eq!(put("sensor.v1.tar.gz").status, 201);
    let kinds: Vec<(String, String)> = br
        .json("/ui/api/packages")
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p["kind"].as_str().unwrap().to_string()))
        .collect();
    assert!(
        kinds.contains(&(bundle.into(), "os".into())) && kinds.contains(&("sensor.v1.tar.gz".into(), "package".into()))
    );

    let new = |package: &str, reboot: Value| {
        json!({"name": "os 2", "package": package, "vendor": "acme", "model": "gw1", "stages": [50, 100],
               "max_failure_pct": 0, "reboot": reboot})
    };
    for (package, reboot, why) in [
        (bundle, json!("25:00-01:00"), "window HH:MM-HH:MM"),
        (bundle, json!("soon"), "window HH:MM-HH:MM"),
        ("sensor.v1.tar.gz", json!("now"), "OS bundles (.raucb) only"),
    ] {
        let r = br.act("/ui/api/rollouts", &new(package, reboot));
        assert_eq!((r.status.as_u16(), r.json()["field"].as_str()), (400, Some("reboot")), "{}", r.text());
        assert!(r.text().contains(why), "{}", r.text());
    }
    let mut streamed = new("sensor.v1.tar.gz", Value::Null);
    streamed["stream"] = json!(true);
    let r = br.act("/ui/api/rollouts", &streamed);
    assert_eq!((r.status.as_u16(), r.json()["field"].as_str()), (400, Some("stream")), "{}", r.text());
    // A bundle streamed by RAUC from the hub, rebooted into in a window.
    let mut streamed = new(bundle, json!("02:00-04:00"));
    streamed["stream"] = json!(true);
    let r = br.act("/ui/api/rollouts", &streamed);
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_i64().unwrap();
    let v = wait_rollout(&br, id, "first stage sent", |v| v["counts"]["sent"] == 2);
    assert_eq!((&v["reboot"], &v["stream"]), (&json!("02:00-04:00"), &json!(true)));
    let first: Vec<&(String, String)> = tokens
        .iter()
        .filter(|(sn, _)| v["devices"].as_array().unwrap().iter().any(|d| d["sn"] == *sn && d["stage"] == 0))
        .collect();
    assert_eq!(first.len(), 2);
    for (_, token) in &first {
        let f = c.dev_get(token, "/onep:v1/stack/alias?engine_fetch", &[]).text();
        let pairs = gwe_wire::form::all_pairs(f.as_bytes()).unwrap();
        let cmd: Value = serde_json::from_str(&pairs[0].1).unwrap();
        assert_eq!(cmd, json!({"os": {"name": bundle, "reboot": "02:00-04:00", "stream": true}}));
    }
    let say = |token: &str, alias: &str, v: &str| {
        assert_eq!(c.dev_post(token, "/onep:v1/stack/alias", &format!("{alias}={}", urlencode(v))).status, 204);
    };
    let os = |slot: &str, version: &str, update: Value| {
        json!({"engine_version": "0.1.0", "apps": [], "os": {"slot": slot, "image": "gwe", "version": version, "update": update}})
            .to_string()
    };
    let (good, bad) = (&first[0].1, &first[1].1);
    // Installed into the other slot and waiting for its window: not yet an outcome.
    say(
        good,
        "fetch_status",
        "installed gwe-board 2 into slot B (running slot A); rebooting into it in the window 02:00-04:00 (UTC)",
    );
    say(good, "engine_report", &os("A", "1", json!({"version": "2", "phase": "rebooting", "from": "A", "to": "B"})));
    std::thread::sleep(std::time::Duration::from_millis(2500)); // one tick of the rollout task
    assert_eq!(
        br.json(&format!("/ui/api/rollouts/{id}"))["counts"]["sent"],
        2,
        "waiting for a reboot is not an outcome"
    );
    let image = |sn: &str| {
        let fleet = br.json("/ui/api/fleet");
        fleet_rows(&fleet).into_iter().find(|r| r["sn"] == sn).unwrap()["os_image"].clone()
    };
    assert_eq!(image(&first[0].0), "1 (slot A), 2 rebooting");
    // The new system runs and was marked good: installed.
    say(good, "fetch_status", "OS gwe-board 2 running in slot B and marked good");
    say(good, "engine_report", &os("B", "2", json!({"version": "2", "phase": "good", "from": "A", "to": "B"})));
    let v = wait_rollout(&br, id, "one installed", |v| v["counts"]["installed"] == 1);
    assert_eq!(v["state"], "running");
    assert_eq!(image(&first[0].0), "2 (slot B)");
    // The other came back to its old slot: a failure, over the limit of 0 %: paused.
    say(bad, "fetch_status", "OS update to 2 rolled back: the new system (2 in slot B) did not come up: the bootloader went back to slot A; running slot A");
    say(bad, "engine_report", &os("A", "1", json!({"version": "2", "phase": "rolled-back", "from": "A", "to": "B"})));
    let v = wait_rollout(&br, id, "a pause", |v| v["state"] == "paused");
    assert!(v["reason"].as_str().unwrap().contains("1 of 2 gateways failed"), "{}", v["reason"]);
    assert_eq!(v["counts"]["pending"], 2, "the second stage was not sent");
    assert_eq!(image(&first[1].0), "1 (slot A), 2 rolled-back");
    // The fleet filter (and so a rollout's group) finds them by OS version, slot and phase.
    for (query, n) in [("slot:b", 1), ("os:1 rolled-back", 1), ("os:2", 1), ("slot:a", 1)] {
        let mut plan = new(bundle, json!("now"));
        plan["query"] = json!(query);
        let p = br.act("/ui/api/rollouts/preview", &plan);
        assert_eq!((query, p.json()["gateways"].as_i64()), (query, Some(n)), "{}", p.text());
    }
}
backends!(os_rollouts, os_bundle_rollouts);

#[test]
fn two_hubs_on_one_postgres_send_each_gateway_its_command_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(Backend::Postgres, dir.path());
    assert!(operator(&db, "add", "ops", PASSWORD).0);
    let a = Arc::new(HubProc::start(&db, dir.path()));
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    std::fs::copy(dir.path().join("operator.token"), b_dir.join("operator.token")).unwrap();
    let b = Arc::new(HubProc::start(&db, &b_dir));
    let c = Client::new(a.clone());
    for i in 0..20 {
        let sn = format!("P{i:02}");
        c.whitelist("acme", "gw1", &sn);
        assert_eq!(c.activate("acme", "gw1", &sn).status, 200);
    }
    let pkg = "sensor.v3.0.tar.gz";
    assert_eq!(
        c.op_send("PUT", &format!("/api/v1/content/acme/gw1/{pkg}"), "application/octet-stream", b"p").status,
        201
    );
    let mut br = Browser::new(&b);
    assert_eq!(br.sign_in("ops", PASSWORD).status, 303);
    let r = br.act(
        "/ui/api/rollouts",
        &json!({"name": "both hubs", "package": pkg, "vendor": "acme", "model": "gw1", "stages": [100], "max_failure_pct": 50}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = serde_json::from_slice::<Value>(&r.body).unwrap()["id"].as_i64().unwrap();
    let v = wait_rollout(&br, id, "every gateway sent", |v| v["counts"]["sent"] == 20);
    // Both hubs ran their rollout task for a few rounds more.
    std::thread::sleep(std::time::Duration::from_secs(5));
    for d in v["devices"].as_array().unwrap() {
        let h = c.op_get(&format!("/api/v1/devices/{}/dataports/engine_fetch/history?limit=10", d["device_id"]));
        let n = serde_json::from_slice::<Vec<Value>>(&h.body).unwrap().len();
        assert_eq!(n, 1, "{} got its engine_fetch {n} times", d["sn"]);
    }
}
