//! Gateways' own keys over real TLS, on both stores: pre-authorised import, batch
//! credentials with approval, certificates the hub issues and renews, and revocation that
//! stops a gateway at once on every hub of the database. Bad input: malformed or
//! unpossessed keys, expired certificates, a certificate of a replaced key, a foreign CA.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "test values (counts, times) are small"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio_rustls::rustls;

use common::{reply, Backend, Client, DeviceCa, HubProc, Reply, FORM};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A gateway's key pair as the agent makes it (P-256), its files written to `dir`.
struct Gateway {
    sn: String,
    key: rcgen::KeyPair,
    key_file: PathBuf,
    cert_file: PathBuf,
}

impl Gateway {
    fn new(dir: &Path, sn: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key_file = dir.join(format!("{sn}.key"));
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Self { sn: sn.into(), key, key_file, cert_file: dir.join(format!("{sn}.pem")) }
    }

    fn public(&self) -> String {
        B64.encode(rcgen::PublicKeyData::subject_public_key_info(&self.key))
    }

    fn import_line(&self) -> String {
        format!("acme,gw1,{},{}\n", self.sn, self.public())
    }

    /// `POST /gwe/v1/enroll`, signed with this key; a 200's certificate is saved.
    fn enroll(&self, c: &Client, batch: Option<&str>) -> Reply {
        self.enroll_as(c, &self.sn, &self.key, batch)
    }

    fn enroll_as(&self, c: &Client, sn: &str, signer: &rcgen::KeyPair, batch: Option<&str>) -> Reply {
        let msg = format!("gwe enroll v1\nacme\ngw1\n{sn}");
        let sig = B64.encode(rcgen::SigningKey::sign(signer, msg.as_bytes()).unwrap());
        let mut f = form_urlencoded::Serializer::new(String::new());
        f.append_pair("vendor", "acme").append_pair("model", "gw1").append_pair("sn", sn);
        f.append_pair("key", &self.public()).append_pair("sig", &sig);
        if let Some(b) = batch {
            f.append_pair("batch", b);
        }
        let r =
            reply(c.agent.post(format!("{}/gwe/v1/enroll", c.hub.url)).header("Content-Type", FORM).send(f.finish()));
        if r.status == 200 {
            std::fs::write(&self.cert_file, &r.body).unwrap();
        }
        r
    }

    /// A client showing this gateway's certificate.
    fn client(&self, server_ca: &str) -> ureq::Agent {
        common::with_client_cert(server_ca, &self.cert_file, &self.key_file)
    }
}

fn write(agent: &ureq::Agent, hub: &HubProc, value: &str) -> Result<Reply, String> {
    agent
        .post(format!("{}/onep:v1/stack/alias", hub.url))
        .header("Content-Type", FORM)
        .send(format!("temp={value}"))
        .map(|mut r| {
            let body = r.body_mut().read_to_vec().unwrap_or_default();
            Reply { status: r.status(), headers: r.headers().clone(), body }
        })
        .map_err(|e| e.to_string())
}

/// Writes `temp=9` over TLS showing `chain` with the key in `key_pem`, whatever the chain
/// holds; the answer's text, or why the connection failed.
fn raw_tls_write(
    server_ca: &str,
    port: u16,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key_pem: &str,
) -> Result<String, String> {
    use std::io::{Read, Write};
    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);
    impl rustls::client::ResolvesClientCert for Fixed {
        fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut server_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).unwrap().unwrap();
    let signer = provider.key_provider.load_private_key(key).unwrap();
    let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signer));
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Fixed(certified)));
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let rq =
        "POST /onep:v1/stack/alias HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 6\r\nConnection: close\r\n\r\ntemp=9";
    tls.write_all(rq.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// How a client sees the server refuse its certificate. TLS 1.3 checks a client's
/// certificate after the client's Finished, so the client may be writing its request when
/// the refusal comes: it sees the alert, or the connection closed or reset under it.
fn refused_in_handshake(e: &str) -> bool {
    ["alert", "Alert", "closed", "Broken pipe", "reset", "UnknownIssuer", "xpired"].iter().any(|w| e.contains(w))
}

fn device_id(c: &Client, sn: &str) -> i64 {
    let r = c.op_get("/api/v1/devices");
    r.json().as_array().unwrap().iter().find(|d| d["sn"] == sn).unwrap_or_else(|| panic!("no {sn}"))["id"]
        .as_i64()
        .unwrap()
}

fn audit_actions(c: &Client) -> Vec<String> {
    let r = c.op_get("/api/v1/audit");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let rows = j["entries"].as_array().or_else(|| j.as_array()).cloned().unwrap_or_default();
    rows.iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["actor"].as_str().unwrap_or(""),
                e["action"].as_str().unwrap_or(""),
                e["targets"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// A TLS hub issuing with a fresh device CA (certificates valid 30 days), and a client of
/// its operator API.
struct Setup {
    dir: tempfile::TempDir,
    server: common::TestPki,
    ca: DeviceCa,
    db: String,
    hub: Arc<HubProc>,
    c: Client,
}

fn setup(backend: Backend) -> Setup {
    setup_days(backend, "30")
}

/// [`setup`] with certificates valid `days`.
fn setup_days(backend: Backend, days: &'static str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = common::pki(d, "server");
    let ca = DeviceCa::new(d);
    let db = common::db_url(backend, d);
    let hub = start(&db, d, &server, &ca, days);
    let c = Client { hub: hub.clone(), agent: common::trusting(&server.ca_pem) };
    Setup { dir, server, ca, db, hub, c }
}

fn start(db: &str, dir: &Path, server: &common::TestPki, ca: &DeviceCa, days: &'static str) -> Arc<HubProc> {
    let args = ca.hub_args(days);
    HubProc::start_tls(db, dir, server, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn enrollment(backend: Backend) {
    let Setup { dir, server, ca, hub, c, .. } = setup(backend);
    let d = dir.path();

    // Not known: refused, nothing recorded.
    let a = Gateway::new(d, "SN-A");
    let r = a.enroll(&c, None);
    assert_eq!((r.status.as_u16(), r.text().contains("not known to this hub")), (404, true), "{}", r.text());

    // Pre-authorised in bulk (one import, all or nothing).
    let b = Gateway::new(d, "SN-B");
    let bad = format!("{}acme,gw1,SN-X,AAAA\n", a.import_line());
    let r = c.op_send("POST", "/api/v1/keys", "text/csv", bad.as_bytes());
    assert_eq!(r.status, 400);
    assert!(r.text().contains("line 2 (SN-X): public key: not a DER"), "{}", r.text());
    assert!(c.op_get("/api/v1/keys").json().as_array().unwrap().is_empty(), "a refused import changes nothing");
    let csv = format!("vendor,model,serial,key\n{}{}", a.import_line(), b.import_line());
    let r = c.op_send("POST", "/api/v1/keys", "text/csv", csv.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], 2);

    // The hub issues a certificate for the pre-authorised key only, and only to its holder.
    let intruder = Gateway::new(d, "SN-A-intruder");
    let r = intruder.enroll_as(&c, "SN-A", &intruder.key, None);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("is not the one enrolled for SN-A"), "{}", r.text());
    let r = a.enroll_as(&c, "SN-A", &intruder.key, None);
    assert_eq!(r.status, 400, "signed with another key");
    assert!(r.text().contains("does not verify"), "{}", r.text());
    let r = a.enroll(&c, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let pem = r.text();
    let not_after: i64 = pem.lines().next().unwrap().strip_prefix("not-after: ").unwrap().parse().unwrap();
    let days = (not_after - common::now_ms()) as f64 / 86_400_000.0;
    assert!((29.9..30.1).contains(&days), "valid {days} days");

    // The certificate is the gateway's identity: no token.
    let agent_a = a.client(&server.ca_pem);
    let r = write(&agent_a, &hub, "21.5").unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let dev_a = device_id(&c, "SN-A");
    assert_eq!(c.op_get(&format!("/api/v1/devices/{dev_a}/dataports/temp")).json()["value"], "21.5");
    assert_eq!(c.op_get(&format!("/api/v1/devices/{dev_a}")).json()["status"], "activated");

    // Renewal is enrolling again with the same key: a new certificate, the old one still good.
    std::fs::copy(&a.cert_file, d.join("SN-A-old.pem")).unwrap();
    assert_eq!(a.enroll(&c, None).status, 200);
    assert_ne!(std::fs::read_to_string(&a.cert_file).unwrap(), pem, "a new certificate");
    assert_eq!(write(&a.client(&server.ca_pem), &hub, "21.6").unwrap().status, 204);

    // A certificate of a replaced key (a stolen or old gateway's) is refused once the
    // device's key is replaced, though the CA signed it and its name is right.
    let b_old_cert = d.join("SN-B-old.pem");
    assert_eq!(b.enroll(&c, None).status, 200);
    std::fs::copy(&b.cert_file, &b_old_cert).unwrap();
    let b2 = Gateway::new(d, "SN-B2");
    let csv = format!("acme,gw1,SN-B,{}\n", b2.public());
    assert_eq!(c.op_send("POST", "/api/v1/keys", "text/csv", csv.as_bytes()).json()["changed"], 1);
    let old = common::with_client_cert(&server.ca_pem, &b_old_cert, &b.key_file);
    let r = write(&old, &hub, "1").unwrap();
    assert_eq!(r.status, 401);
    assert!(r.text().contains("is not the key enrolled for SN-B"), "{}", r.text());

    // Expired: the handshake itself refuses it.
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, "SN-A");
    p.not_before = time::OffsetDateTime::now_utc() - Duration::from_secs(86_400 * 40);
    p.not_after = time::OffsetDateTime::now_utc() - Duration::from_secs(86_400 * 10);
    let expired = p.signed_by(&a.key, &rcgen::Issuer::from_params(&ca.params, &ca.key_pair)).unwrap();
    let expired_file = d.join("expired.pem");
    std::fs::write(&expired_file, expired.pem()).unwrap();
    // TLS 1.3 checks a client's certificate after the client's Finished: the client sees
    // the alert, or the connection closed under its request.
    let e = write(&common::with_client_cert(&server.ca_pem, &expired_file, &a.key_file), &hub, "1").unwrap_err();
    assert!(refused_in_handshake(&e), "{e}");

    // Another CA's certificate with SN-A's name is not an identity at all.
    let foreign = common::issue(d, "foreign", &[("foreign-a".into(), "SN-A".into())]);
    let r = write(&common::with_client_cert(&server.ca_pem, &foreign.cert, &foreign.key), &hub, "1");
    match r {
        Ok(r) => panic!("another CA's certificate got an answer: {} {}", r.status, r.text()),
        Err(e) => assert!(refused_in_handshake(&e), "{e}"),
    }

    // A malformed certificate in the handshake: refused there (rustls's own client would
    // not even send it, so this one is made by hand). The same client with A's real
    // certificate gets through, so the refusal is the certificate's.
    let a_pem = std::fs::read_to_string(&a.cert_file).unwrap();
    let a_chain: Vec<_> = rustls_pemfile::certs(&mut a_pem.as_bytes()).map(Result::unwrap).collect();
    let key_pem = a.key.serialize_pem();
    let ok = raw_tls_write(&server.ca_pem, hub.port, a_chain, &key_pem).unwrap();
    assert!(ok.starts_with("HTTP/1.1 204"), "{ok}");
    let garbage = vec![rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01])];
    let e = raw_tls_write(&server.ca_pem, hub.port, garbage, &key_pem).unwrap_err();
    assert!(refused_in_handshake(&e), "{e}");

    // Malformed enrollments: 400 naming the fault.
    for (body, want) in [
        ("vendor=acme&model=gw1&sn=SN-A", "needs vendor, model, sn, key and sig"),
        ("vendor=acme&model=gw1&sn=SN-A&key=%25%25&sig=AA", "not base64"),
        ("vendor=acme&model=gw1&sn=SN-A&key=MAA%3D&sig=AA", "not a DER SubjectPublicKeyInfo"),
    ] {
        let r = reply(c.agent.post(format!("{}/gwe/v1/enroll", hub.url)).header("Content-Type", FORM).send(body));
        assert_eq!(r.status, 400, "{body}");
        assert!(r.text().contains(want), "{body}: {}", r.text());
    }

    // Still working for the good gateway after all that.
    assert_eq!(write(&agent_a, &hub, "22").unwrap().status, 204);
    let log = audit_actions(&c);
    assert!(log.iter().any(|l| l == "device:SN-A device.certificate SN-A"), "{log:?}");
    assert!(log.iter().any(|l| l == "device:SN-A denied SN-A"), "the intruder's attempt: {log:?}");
    assert!(log.iter().any(|l| l.starts_with("token device.import SN-A SN-B")), "{log:?}");
}
backends!(enrollment_by_pre_authorised_key, enrollment);

fn batch_credential(backend: Backend) {
    let Setup { dir, server, db, hub, c, .. } = setup(backend);
    let d = dir.path();
    let out =
        Command::new(env!("CARGO_BIN_EXE_gwe-hub")).args(["batch", "add", "line-7", "--db", &db]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("gweb_") && secret.len() == 45, "{secret}");

    let g = Gateway::new(d, "SN-NEW");
    let r = g.enroll(&c, Some("gweb_0000000000000000000000000000000000000000"));
    assert_eq!(r.status, 403);
    assert!(r.text().contains("batch credential is not known"), "{}", r.text());
    // Offered: waits for an operator, however often it asks.
    for _ in 0..3 {
        let r = g.enroll(&c, Some(&secret));
        assert_eq!(r.status, 202, "{}", r.text());
        assert!(r.text().contains("waits for an operator's approval"), "{}", r.text());
    }
    let log = audit_actions(&c);
    assert_eq!(log.iter().filter(|l| l.contains("device.offer")).count(), 1, "recorded once: {log:?}");
    // Another key for the same serial with the same credential does not replace it.
    let rogue = Gateway::new(d, "SN-NEW-rogue");
    let r = rogue.enroll_as(&c, "SN-NEW", &rogue.key, Some(&secret));
    assert_eq!(r.status, 403);
    assert!(r.text().contains("is not the one offered for SN-NEW"), "{}", r.text());

    let dev = device_id(&c, "SN-NEW");
    let keys = c.op_get("/api/v1/keys").json();
    assert_eq!(keys[0]["state"], "pending");
    assert_eq!(keys[0]["source"], "batch:line-7");
    let r = c.op_send("POST", &format!("/api/v1/devices/{dev}/approve"), FORM, b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(c.op_send("POST", &format!("/api/v1/devices/{dev}/approve"), FORM, b"").status, 409);
    assert_eq!(g.enroll(&c, Some(&secret)).status, 200);
    assert_eq!(write(&g.client(&server.ca_pem), &hub, "5").unwrap().status, 204);
}
backends!(enrollment_by_batch_credential_and_approval, batch_credential);

/// Revocation: the next request of the gateway is refused, on this hub and (PostgreSQL)
/// on another hub of the database that knew it a moment ago; its long-poll ends; its
/// token, re-enrollment and re-activation are refused too.
fn revocation(backend: Backend) {
    let Setup { dir, server, ca, db, hub, c } = setup(backend);
    let d = dir.path();
    let g = Gateway::new(d, "SN-R");
    assert_eq!(c.op_send("POST", "/api/v1/keys", "text/csv", g.import_line().as_bytes()).status, 200);
    assert_eq!(g.enroll(&c, None).status, 200);
    let agent = g.client(&server.ca_pem);
    assert_eq!(write(&agent, &hub, "1").unwrap().status, 204);
    let other = match backend {
        Backend::Postgres => {
            let d2 = d.join("second");
            std::fs::create_dir_all(&d2).unwrap();
            let h2 = start(&db, &d2, &server, &ca, "30");
            assert_eq!(write(&agent, &h2, "2").unwrap().status, 204, "known on the second hub too");
            Some(h2)
        }
        Backend::Sqlite => None,
    };
    // A long-poll waiting when the revocation comes.
    let poll = {
        let (agent, url) = (agent.clone(), hub.url.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = agent.get(format!("{url}/onep:v1/stack/alias?cmd")).header("Request-Timeout", "20000").call();
            (reply(r), t.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300)); // the long-poll parks
    let dev = device_id(&c, "SN-R");
    let revoked_at = Instant::now();
    assert_eq!(c.op_send("POST", &format!("/api/v1/devices/{dev}/revoke"), FORM, b"").status, 204);
    let r = write(&agent, &hub, "3").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("SN-R is revoked"), "{}", r.text());
    if let Some(h2) = &other {
        // The NOTIFY reaches the other hub when the revocation commits.
        let r = loop {
            let r = write(&agent, h2, "4").unwrap();
            if r.status == 401 || revoked_at.elapsed() > Duration::from_secs(5) {
                break r;
            }
        };
        let took = revoked_at.elapsed();
        assert_eq!(r.status, 401, "{}", r.text());
        eprintln!("revocation reached the second hub in {} ms", took.as_millis());
        assert!(took < Duration::from_secs(2), "took {took:?}: not at once (the sweep is 15 s)");
    }
    let (r, took) = poll.join().unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(took < Duration::from_secs(5), "the long-poll ended at the revocation, after {took:?}");
    let r = g.enroll(&c, None);
    assert_eq!((r.status.as_u16(), r.text().contains("SN-R is revoked")), (403, true), "{}", r.text());
    assert_eq!(c.activate("acme", "gw1", "SN-R").status, 409, "no token either");
    let keys = c.op_get("/api/v1/keys").json();
    assert_eq!(keys[0]["state"], "revoked");
    // An admin's re-enable lets it enroll again (its key imported anew).
    assert_eq!(c.op_send("POST", &format!("/api/v1/devices/{dev}/enable"), FORM, b"").status, 204);
    assert_eq!(c.op_send("POST", "/api/v1/keys", "text/csv", g.import_line().as_bytes()).status, 200);
    assert_eq!(g.enroll(&c, None).status, 200);
    assert_eq!(write(&g.client(&server.ca_pem), &hub, "5").unwrap().status, 204);
}
backends!(revocation_stops_a_gateway_at_once, revocation);

/// 10,000 gateways pre-authorised in one import: its time, on each store.
fn bulk_import(backend: Backend) {
    let Setup { dir, c, .. } = setup(backend);
    let d = dir.path();
    // One real key shared by every line keeps the test fast; the hub checks each line.
    let k = Gateway::new(d, "template").public();
    let mut csv = String::from("vendor,model,serial,key\n");
    for i in 0..10_000 {
        csv.push_str(&format!("acme,gw1,BULK-{i:05},{k}\n"));
    }
    let t = Instant::now();
    let r = c.op_send("POST", "/api/v1/keys", "text/csv", csv.as_bytes());
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], 10_000);
    eprintln!("{backend:?}: 10,000 keys ({} bytes) imported in {} ms", csv.len(), took.as_millis());
    assert_eq!(c.op_get("/api/v1/devices").json().as_array().unwrap().len(), 10_000);
    // The same file again changes nothing.
    assert_eq!(c.op_send("POST", "/api/v1/keys", "text/csv", csv.as_bytes()).json()["changed"], 0);
}
backends!(ten_thousand_keys_in_one_import, bulk_import);

/// The real agent with `identity = "certificate"`: `gwe identity` gives the line the hub
/// imports, the agent enrolls at its start, forwards over mutual TLS with no token, renews
/// its certificate before it expires, stops at a revocation without losing what it queued,
/// and comes back when an operator lets it.
#[test]
fn the_agent_enrolls_its_own_key_renews_and_is_revoked() {
    use common::agent::{values, wait_for_or, Agent};
    // Certificates valid 1 day, renewed 2 days ahead: the agent renews at every chance (at
    // most once a second, its retry cap here), which shows renewal without waiting days.
    let Setup { dir, server, hub, c, .. } = setup_days(Backend::Sqlite, "1");
    let d = dir.path();
    let agent_dir = d.join("agent");
    let cloud = format!("ca_file = \"{}\"\nidentity = \"certificate\"\nrenew_days = 2\n", server.ca_file.display());

    // The factory step: the gateway makes its key and prints the import line.
    std::fs::create_dir_all(&agent_dir).unwrap();
    let cfg = format!(
        "[device]\nvendor = \"acme\"\nmodel = \"gw1\"\nserial = \"MTLS1\"\n[paths]\nstate_dir = \"{}/state\"\n",
        agent_dir.display()
    );
    std::fs::write(d.join("factory.toml"), cfg).unwrap();
    let line = identity_line(&d.join("factory.toml"));
    assert!(line.starts_with("acme,gw1,MTLS1,MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"), "{line}");
    let key_file = agent_dir.join("state/state/device_key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the private key is root's only");
    assert_eq!(c.op_send("POST", "/api/v1/keys", "text/csv", line.as_bytes()).status, 200);

    // A saved certificate of another key (a restored backup, a swapped flash): rustls would
    // refuse the pair and ureq panic on it; the agent sets it aside and enrolls.
    let stray = common::issue(d, "stray", &[("stray".into(), "MTLS1".into())]);
    let stray_pem = format!("not-after: 9999999999999\n{}", std::fs::read_to_string(&stray.cert).unwrap());
    std::fs::write(agent_dir.join("state/state/device_cert.pem"), stray_pem).unwrap();
    let agent = Agent::start_as(&agent_dir, &hub.url, "MTLS1", &cloud, "");
    let dev = device_id(&c, "MTLS1");
    agent.record(&common::agent(), "temp", &[(1_700_000_000, "20.5".into())]);
    let err =
        || format!("\nagent stderr:\n{}", std::fs::read_to_string(agent_dir.join("agent.err")).unwrap_or_default());
    wait_for_or("the point over mutual TLS", 30, || values(&c, dev, "temp") == ["20.5"], err);
    assert!(!agent_dir.join("state/state/cloud_token").exists(), "no token: the certificate is the identity");
    assert!(err().contains("enrolling again"), "the stray certificate was set aside: {}", err());
    let cert_file = agent_dir.join("state/state/device_cert.pem");
    let first = std::fs::read_to_string(&cert_file).unwrap();
    assert!(first.starts_with("not-after: ") && first.contains("BEGIN CERTIFICATE"), "{first}");
    assert_eq!(std::fs::read(&key_file).unwrap().len(), 138, "the same PKCS#8 key, kept");

    // Renewal: a request inside renew_days renews (at most once a second here), a new
    // certificate replaces the old, and the agent goes on forwarding with it.
    let mut ts = 1_700_000_001;
    wait_for_or(
        "a renewed certificate",
        30,
        || {
            ts += 1;
            agent.record(&common::agent(), "temp", &[(ts, "20.6".into())]);
            std::fs::read_to_string(&cert_file).unwrap_or_default() != first
        },
        err,
    );
    let sent = (ts - 1_700_000_000) as usize; // 20.5, then 1_700_000_002 ..= ts
    wait_for_or("every point, with the renewed certificate", 30, || values(&c, dev, "temp").len() == sent, err);
    let renewals = audit_actions(&c).iter().filter(|l| l.contains("device.certificate MTLS1")).count();
    assert!(renewals >= 2, "{renewals} certificates issued");

    // Revoked: nothing more gets through, and nothing queued is lost.
    assert_eq!(c.op_send("POST", &format!("/api/v1/devices/{dev}/revoke"), FORM, b"").status, 204);
    agent.record(&common::agent(), "temp", &[(ts + 1, "20.7".into())]);
    wait_for_or(
        "the agent to say it is revoked",
        30,
        || std::fs::read_to_string(agent_dir.join("agent.err")).unwrap_or_default().contains("MTLS1 is revoked"),
        err,
    );
    assert_eq!(values(&c, dev, "temp").len(), sent, "refused after the revocation");
    // An admin lets it back (re-enable, its key imported again): the queued point arrives.
    assert_eq!(c.op_send("POST", &format!("/api/v1/devices/{dev}/enable"), FORM, b"").status, 204);
    assert_eq!(c.op_send("POST", "/api/v1/keys", "text/csv", line.as_bytes()).status, 200);
    wait_for_or("the queued point after re-enrollment", 30, || values(&c, dev, "temp").len() == sent + 1, err);
    drop(agent);
}

/// The agent with its key in a TPM (swtpm, as an emulated board's TPM would be): `gwe
/// identity` reads the public key from the TPM, the agent enrolls, and every TLS handshake
/// is signed inside the TPM. No key file is ever written.
#[test]
fn the_agent_keeps_its_key_in_a_tpm() {
    use common::agent::{values, wait_for_or, Agent};
    let Setup { dir, server, hub, c, .. } = setup(Backend::Sqlite);
    let d = dir.path();
    let state = d.join("tpm");
    std::fs::create_dir_all(&state).unwrap();
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (server_port, ctrl_port) = (port(), port());
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _swtpm = Killed(
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args(["--server", &format!("type=tcp,port={server_port},bindaddr=127.0.0.1")])
            .args(["--ctrl", &format!("type=tcp,port={ctrl_port},bindaddr=127.0.0.1")])
            .spawn()
            .expect("swtpm (Debian's package swtpm; scripts/setup.sh installs it)"),
    );
    let tpm = format!("tcp:127.0.0.1:{server_port}");
    common::agent::wait_for("swtpm to listen", 10, || std::net::TcpStream::connect(("127.0.0.1", server_port)).is_ok());
    let agent_dir = d.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let cfg = format!(
        "[device]\nvendor = \"acme\"\nmodel = \"gw1\"\nserial = \"TPM1\"\n[paths]\nstate_dir = \"{}/state\"\n\
         [cloud]\ntpm = \"{tpm}\"\n",
        agent_dir.display()
    );
    std::fs::write(d.join("factory.toml"), cfg).unwrap();
    let line = identity_line(&d.join("factory.toml"));
    assert!(line.starts_with("acme,gw1,TPM1,MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"), "{line}");
    assert_eq!(identity_line(&d.join("factory.toml")), line, "the TPM gives the same key again");
    assert_eq!(c.op_send("POST", "/api/v1/keys", "text/csv", line.as_bytes()).status, 200);

    let cloud = format!("ca_file = \"{}\"\nidentity = \"certificate\"\ntpm = \"{tpm}\"\n", server.ca_file.display());
    let agent = Agent::start_as(&agent_dir, &hub.url, "TPM1", &cloud, "");
    let dev = device_id(&c, "TPM1");
    agent.record(&common::agent(), "temp", &[(1_700_000_000, "19.5".into())]);
    let err =
        || format!("\nagent stderr:\n{}", std::fs::read_to_string(agent_dir.join("agent.err")).unwrap_or_default());
    wait_for_or("the point over mutual TLS, signed in the TPM", 30, || values(&c, dev, "temp") == ["19.5"], err);
    assert!(!agent_dir.join("state/state/device_key").exists(), "no key file: the key is in the TPM");
    assert!(agent_dir.join("state/state/device_cert.pem").exists());
    drop(agent);
}

/// `gwe identity` with the config `cfg`: its line.
fn identity_line(cfg: &Path) -> String {
    let out = Command::new(common::agent::agent_bin())
        .args(["--config", cfg.to_str().unwrap(), "identity"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
