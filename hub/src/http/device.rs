//! The device API: provisioning, dataport writes / records / reads / long-poll, the
//! forwarder's batches, content download and time. Exosite's forms and status codes
//! (`../shared/REFERENCE-PROTOCOLS.md`, `docs/cloud-protocol.md`).

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use gwe_wire::form::{self, FormError};

use crate::http::ClientAddr;
use crate::server::Peer;
use crate::service::{audit, identity};
use crate::store::{Activation, DeviceKey, DeviceStatus, Point};
use crate::{err, new_token, now_ms, token_hash, ApiError, Hub};

pub use gwe_wire::form::MAX_REQUEST_TIMEOUT_MS;
/// The forwarder's batches (`docs/cloud-protocol.md`).
const BATCH_TYPE: &str = "application/x-gwe-batch";
const MAX_ALIAS: usize = 255;

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/provision/activate", post(activate))
        .route("/gwe/v1/enroll", post(enroll))
        .route("/provision/download", get(download))
        .route("/onep:v1/stack/alias", get(read).post(write))
        .route("/onep:v1/stack/alias/{alias}", post(record_alias))
        .route("/onep:v1/stack/record", post(record))
        .route("/gwe/v1/batch", post(batch))
        .route("/timestamp", get(timestamp))
}

type ApiResult = Result<Response, ApiError>;

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn form(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"));
    r
}

/// A form rule broken: 400, or 415 for a content type.
fn form_err(e: FormError) -> ApiError {
    err(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST), e.to_string())
}

/// The pairs of a form body (`gwe_wire::form`: the agent reads bodies by the same rules);
/// 415 for a body that says it is something else, 400 for a malformed one.
fn form_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Vec<form::Pair<'a>>, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    form::content_type(ct).map_err(form_err)?;
    form::all_pairs(body).map_err(form_err)
}

fn check_alias(a: &str) -> Result<(), ApiError> {
    if a.is_empty() || a.len() > MAX_ALIAS {
        return Err(err(StatusCode::BAD_REQUEST, format!("alias {a:?} must be 1 to {MAX_ALIAS} bytes")));
    }
    Ok(())
}

async fn activate(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let (mut vendor, mut model, mut sn, mut id) = (None, None, None, None);
    for (k, v) in form_body(&headers, &body)? {
        match &*k {
            "vendor" => vendor = Some(v.into_owned()),
            "model" => model = Some(v.into_owned()),
            "sn" => sn = Some(v.into_owned()),
            "id" => id = Some(v.into_owned()),
            _ => {}
        }
    }
    let token = new_token();
    let hash = token_hash(&token);
    let hint = &token[..4];
    let (outcome, who) = match (vendor, model, sn, id) {
        (Some(vendor), Some(model), Some(sn), _) => {
            let who = format!("{vendor}/{model}/{sn}");
            (hub.store.activate(&DeviceKey { vendor, model, sn }, &hash, hint).await?, who)
        }
        (_, _, _, Some(id)) => (hub.store.activate_by_sn(&id, &hash, hint).await?, format!("id {id}")),
        _ => return Err(err(StatusCode::BAD_REQUEST, "activation needs vendor, model and sn (or id)")),
    };
    match outcome {
        Activation::Activated(dev) => {
            hub.forget_tokens(dev);
            log::info!("device {dev} ({who}) activated");
            Ok(text(StatusCode::OK, token))
        }
        Activation::Unknown => Err(err(StatusCode::NOT_FOUND, format!("no device {who} is whitelisted"))),
        Activation::Conflict => {
            Err(err(StatusCode::CONFLICT, format!("device {who} is already activated; an operator must re-enable it")))
        }
    }
}

/// A gateway enrolls its own key, or renews its certificate (`docs/identity.md`): 200 and
/// the certificate (PEM, after a `not-after: MS` line), 202 while an operator has not
/// approved a key offered with a batch credential, 400 for a malformed key or a signature
/// that does not verify, 403/404 refused with the reason.
async fn enroll(
    State(hub): State<Arc<Hub>>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let (mut vendor, mut model, mut sn, mut key, mut sig, mut batch) = (None, None, None, None, None, None);
    for (k, v) in form_body(&headers, &body)? {
        let slot = match &*k {
            "vendor" => &mut vendor,
            "model" => &mut model,
            "sn" => &mut sn,
            "key" => &mut key,
            "sig" => &mut sig,
            "batch" => &mut batch,
            _ => continue,
        };
        *slot = Some(v.into_owned());
    }
    let (Some(vendor), Some(model), Some(sn), Some(key), Some(sig)) = (vendor, model, sn, key, sig) else {
        return Err(err(StatusCode::BAD_REQUEST, "enrollment needs vendor, model, sn, key and sig"));
    };
    let Some(issuer) = hub.issuer.clone() else {
        return Err(err(StatusCode::SERVICE_UNAVAILABLE, "this hub issues no certificates (no --device-ca-key)"));
    };
    let dk = DeviceKey { vendor, model, sn };
    let spki = identity::parse_key(&key).map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))?;
    identity::check_possession(&spki, &dk, &sig).map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))?;
    let who = format!("device:{}", dk.sn);
    let batch = match batch {
        Some(secret) => match hub.store.batch_of(&token_hash(secret.trim())).await? {
            Some(name) => Some(name),
            None => {
                let why = "the batch credential is not known to this hub".to_string();
                audit::record(&hub, &who, "denied", &dk.sn, &why, &addr).await;
                return Err(err(StatusCode::FORBIDDEN, why));
            }
        },
        None => None,
    };
    let fp = identity::fingerprint(&spki);
    match identity::enroll(hub.store.as_ref(), &dk, &spki, batch.as_deref(), now_ms()).await? {
        identity::Enrollment::Approved(dev) => {
            let (pem, not_after) =
                issuer.issue(&dk.sn, &spki, now_ms()).map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
            hub.store.key_certified(dev, not_after, now_ms()).await?;
            let until = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(not_after.unsigned_abs()));
            audit::record(&hub, &who, "device.certificate", &dk.sn, &format!("key {fp}, valid until {until}"), &addr)
                .await;
            Ok(text(StatusCode::OK, pem))
        }
        identity::Enrollment::Pending(_, new) => {
            if new {
                let detail = format!("key {fp} with batch credential {}", batch.unwrap_or_default());
                audit::record(&hub, &who, "device.offer", &dk.sn, &detail, &addr).await;
            }
            Ok(text(StatusCode::ACCEPTED, format!("the key {fp} of {} waits for an operator's approval", dk.sn)))
        }
        identity::Enrollment::Refused(status, why) => {
            audit::record(&hub, &who, "denied", &dk.sn, &why, &addr).await;
            Err(err(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), why))
        }
    }
}

/// Aliases named in a query string (`?a&b`); keys only, values ignored.
fn query_aliases(q: Option<&str>) -> Result<Vec<String>, ApiError> {
    let aliases: Vec<String> =
        form::query_names(q.unwrap_or("")).map_err(form_err)?.into_iter().map(|k| k.into_owned()).collect();
    for a in &aliases {
        check_alias(a)?;
    }
    Ok(aliases)
}

async fn write(
    State(hub): State<Arc<Hub>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> ApiResult {
    let dev = hub.device_of(&headers, peer.as_deref()).await?;
    let read_back = query_aliases(q.as_deref())?;
    let mut values = Vec::new();
    for (k, v) in form_body(&headers, &body)? {
        check_alias(&k)?;
        values.push((k.into_owned(), v.into_owned()));
    }
    if values.is_empty() && read_back.is_empty() {
        return Err(err(StatusCode::BAD_REQUEST, "no alias=value pair in the body"));
    }
    if !values.is_empty() {
        let now = now_ms();
        hub.store.write(dev, &values, now / 1000, now).await?;
    }
    if read_back.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    read_values(&hub, dev, &read_back).await
}

async fn read_values(hub: &Hub, dev: i64, aliases: &[String]) -> ApiResult {
    let values = hub.store.read(dev, aliases).await?;
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (a, v) in aliases.iter().zip(values) {
        if let Some(v) = v {
            out.append_pair(a, &v.value);
            any = true;
        }
    }
    if !any {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(form(StatusCode::OK, out.finish()))
}

/// `If-Modified-Since` as unix milliseconds: a unix timestamp with a fraction (exact), or
/// in whole seconds or an HTTP-date (then anything within that second counts as not
/// modified: Exosite's client re-polls with the whole second of `Last-Modified`, and must
/// not get the same value again).
fn parse_since(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<i64>() {
        return secs.checked_mul(1000).map(|ms| ms + 999);
    }
    if let Ok(secs) = v.parse::<f64>() {
        #[allow(clippy::cast_possible_truncation, reason = "whole milliseconds; `as` saturates out of range")]
        return secs.is_finite().then_some((secs * 1000.0) as i64);
    }
    let t = httpdate::parse_http_date(v).ok()?;
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?.checked_add(999)
}

async fn read(
    State(hub): State<Arc<Hub>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
) -> ApiResult {
    let dev = hub.device_of(&headers, peer.as_deref()).await?;
    let aliases = query_aliases(q.as_deref())?;
    if aliases.is_empty() {
        return Err(err(StatusCode::BAD_REQUEST, "name at least one alias in the query (?a&b)"));
    }
    let Some(timeout) = headers.get("request-timeout") else {
        return read_values(&hub, dev, &aliases).await;
    };
    let timeout = form::request_timeout(timeout.to_str().unwrap_or("(not text)")).map_err(form_err)?;
    if aliases.len() != 1 {
        return Err(err(StatusCode::BAD_REQUEST, "a long-poll names exactly one alias"));
    }
    let since = match headers.get(header::IF_MODIFIED_SINCE) {
        Some(v) => v.to_str().ok().and_then(parse_since).ok_or_else(|| {
            err(StatusCode::BAD_REQUEST, "If-Modified-Since must be a unix timestamp or an HTTP date")
        })?,
        None => now_ms(),
    };
    long_poll(&hub, dev, &aliases[0], since, Duration::from_millis(timeout)).await
}

async fn long_poll(hub: &Hub, dev: i64, alias: &str, since_ms: i64, timeout: Duration) -> ApiResult {
    let deadline = tokio::time::Instant::now() + timeout;
    let watch = hub.notifier.watch(dev, alias);
    let mut woken = false;
    let result = loop {
        let notified = watch.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let v = match hub.store.read(dev, &[alias.to_string()]).await {
            Ok(mut v) => v.pop().flatten(),
            Err(e) => break Err(e.into()),
        };
        if let Some(v) = v.filter(|v| v.modified_ms > since_ms) {
            let mut body = form_urlencoded::Serializer::new(String::new());
            body.append_pair(alias, &v.value);
            let mut r = form(StatusCode::OK, body.finish());
            let at = UNIX_EPOCH + Duration::from_millis(v.modified_ms.max(0).unsigned_abs());
            let h = r.headers_mut();
            h.insert(header::LAST_MODIFIED, HeaderValue::from_str(&httpdate::fmt_http_date(at)).expect("ascii"));
            let exact = format!("{}.{:03}", v.modified_ms / 1000, v.modified_ms % 1000);
            h.insert("x-gwe-modified", HeaderValue::from_str(&exact).expect("ascii"));
            break Ok(r);
        }
        // Woken with nothing new: a revocation wakes every long-poll of its device.
        if woken && hub.store.device(dev).await.ok().flatten().is_some_and(|d| d.status == DeviceStatus::Revoked) {
            break Err(err(StatusCode::UNAUTHORIZED, "this device was revoked"));
        }
        woken = true;
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break Ok(StatusCode::NOT_MODIFIED.into_response());
        }
    };
    hub.notifier.release(dev, alias, watch);
    result
}

/// Points of a record body: `<ts>=<value>` pairs, with `alias=<a>` switching the alias
/// (`/onep:v1/stack/record`); `alias` preset for `/onep:v1/stack/alias/<alias>`.
fn parse_record(headers: &HeaderMap, body: &[u8], mut alias: Option<String>) -> Result<Vec<Point>, ApiError> {
    let fixed = alias.is_some();
    let mut points = Vec::new();
    for (k, v) in form_body(headers, body)? {
        if k == "alias" && !fixed {
            check_alias(&v)?;
            alias = Some(v.into_owned());
            continue;
        }
        let ts = form::timestamp(&k).map_err(form_err)?;
        let alias =
            alias.clone().ok_or_else(|| err(StatusCode::BAD_REQUEST, "alias=<name> must come before the points"))?;
        points.push(Point { alias, ts, value: v.into_owned() });
    }
    if points.is_empty() {
        return Err(err(StatusCode::BAD_REQUEST, "no <ts>=<value> point in the body"));
    }
    Ok(points)
}

async fn record(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> ApiResult {
    let dev = hub.device_of(&headers, peer.as_deref()).await?;
    let points = parse_record(&headers, &body, None)?;
    hub.store.record(dev, &points, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn record_alias(
    State(hub): State<Arc<Hub>>,
    Path(alias): Path<String>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> ApiResult {
    let dev = hub.device_of(&headers, peer.as_deref()).await?;
    check_alias(&alias)?;
    let points = parse_record(&headers, &body, Some(alias))?;
    hub.store.record(dev, &points, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The forwarder's batch (`gwe_wire::batch`), deflated or not. Answers `acked=<seq>`: the
/// highest seq of the stream the hub has stored, which the agent may now delete.
async fn batch(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    body: Bytes,
) -> ApiResult {
    let dev = hub.device_of(&headers, peer.as_deref()).await?;
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)")) {
        None | Some(BATCH_TYPE) => {}
        Some(ct) => {
            return Err(err(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Content-Type {ct} is not {BATCH_TYPE}")))
        }
    }
    let raw = inflate_body(&hub, &headers, &body)?;
    let (stream, records) =
        gwe_wire::batch::read(&raw).map_err(|e| err(StatusCode::BAD_REQUEST, format!("batch: {e}")))?;
    // The database keeps seqs and stream ids as signed 64-bit integers.
    let past = |what: &str, v: u64| err(StatusCode::BAD_REQUEST, format!("batch: {what} {v} is past 2^63 - 1"));
    if i64::try_from(stream).is_err() {
        return Err(past("stream", stream));
    }
    let mut points = Vec::new();
    for r in records {
        let (seq, p) = r.map_err(|e| err(StatusCode::BAD_REQUEST, format!("batch: {e}")))?;
        if i64::try_from(seq).is_err() {
            return Err(past("seq", seq));
        }
        let value = String::from_utf8_lossy(p.value).into_owned();
        points.push((seq, Point { alias: p.alias.to_string(), ts: p.ts, value }));
    }
    let acked = hub.store.ingest(dev, stream, &points, now_ms()).await?;
    Ok(form(StatusCode::OK, format!("acked={acked}")))
}

/// A request body as sent, or inflated for `Content-Encoding: deflate` (zlib), at most
/// `max_batch` bytes.
pub fn inflate_body(hub: &Hub, headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let raw = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None | Some("identity") => body.to_vec(),
        Some("deflate") => {
            let mut out = Vec::with_capacity(body.len() * 4);
            let cap = hub.limits.max_batch as u64;
            flate2::read::ZlibDecoder::new(body)
                .take(cap + 1)
                .read_to_end(&mut out)
                .map_err(|e| err(StatusCode::BAD_REQUEST, format!("body does not inflate: {e}")))?;
            if out.len() as u64 > cap {
                return Err(err(StatusCode::PAYLOAD_TOO_LARGE, format!("body inflates to more than {cap} bytes")));
            }
            out
        }
        Some(other) => {
            return Err(err(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Content-Encoding {other} is not deflate")))
        }
    };
    Ok(raw)
}

async fn timestamp() -> Response {
    text(StatusCode::OK, (now_ms() / 1000).to_string())
}

/// A `Range: bytes=...` against `size`: (offset, len), or None for the whole item.
fn parse_range(v: &str, size: i64) -> Result<Option<(i64, i64)>, ApiError> {
    let bad = || err(StatusCode::RANGE_NOT_SATISFIABLE, format!("Range {v:?} does not fit a {size}-byte item"));
    let spec = v.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(err(StatusCode::RANGE_NOT_SATISFIABLE, "only one range per request"));
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: i64 = n.parse().map_err(|_| bad())?;
            ((size - n).max(0), size - 1)
        }
        (s, "") => (s.parse().map_err(|_| bad())?, size - 1),
        (s, e) => (s.parse().map_err(|_| bad())?, e.parse::<i64>().map_err(|_| bad())?.min(size - 1)),
    };
    if start < 0 || start >= size || end < start {
        return Err(bad());
    }
    Ok(Some((start, end - start + 1)))
}

async fn download(
    State(hub): State<Arc<Hub>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
) -> ApiResult {
    let dev = hub.device_of(&headers, peer.as_deref()).await?;
    let (mut vendor, mut model, mut id, mut info) = (None, None, None, false);
    for (k, v) in form::all_pairs(q.unwrap_or_default().as_bytes()).map_err(form_err)? {
        match &*k {
            "vendor" => vendor = Some(v.into_owned()),
            "model" => model = Some(v.into_owned()),
            "id" => id = Some(v.into_owned()),
            "info" => info = v == "true",
            _ => {}
        }
    }
    // A device reads only the content of its own vendor and model; Murano's form (Exosite's
    // own client) names neither: the token says which.
    let me = hub.store.device(dev).await?.ok_or_else(|| err(StatusCode::UNAUTHORIZED, "device is gone"))?;
    let vendor = vendor.unwrap_or_else(|| me.vendor.clone());
    let model = model.unwrap_or_else(|| me.model.clone());
    if me.vendor != vendor || me.model != model {
        return Err(err(StatusCode::FORBIDDEN, format!("device is not a {vendor}/{model}")));
    }
    let key = (vendor.as_str(), model.as_str());
    let Some(id) = id else {
        let list = hub.store.list_content(key).await?;
        let body: String = list.iter().map(|c| format!("{}\n", c.id)).collect();
        let mut r = text(StatusCode::OK, body);
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
        return Ok(r);
    };
    let ci = hub
        .store
        .content_info(key, &id)
        .await?
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no content {id:?} for {vendor}/{model}")))?;
    if info {
        return Ok(text(StatusCode::OK, format!("{},{},{},{}", ci.content_type, ci.size, ci.updated, ci.meta)));
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => parse_range(r, ci.size)?,
        None => None,
    };
    let (offset, len) = range.unwrap_or((0, ci.size));
    let data = hub
        .store
        .read_content(key, &id, offset, len)
        .await?
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("content {id:?} was removed")))?;
    let status = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let mut r = (status, data).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&ci.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if range.is_some() {
        let cr = format!("bytes {}-{}/{}", offset, offset + len - 1, ci.size);
        h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 10)));
        assert_eq!(parse_range("bytes=-5", 100).unwrap(), Some((95, 5)));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), Some((50, 50)));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=5-1", 100).is_err());
        assert!(parse_range("items=1-2", 100).is_err());
    }

    #[test]
    fn since() {
        assert_eq!(parse_since("1700000000"), Some(1_700_000_000_999), "the whole second");
        assert_eq!(parse_since("1700000000.250"), Some(1_700_000_000_250));
        assert_eq!(parse_since("Tue, 14 Nov 2023 22:13:20 GMT"), Some(1_700_000_000_999));
        assert_eq!(parse_since("yesterday"), None);
    }
}
