//! The audit log: every change an operator, the operator API's token, an Arrowhead system or
//! the command line makes, and every sign-in and failed sign-in (who, what, to which
//! gateways, when, from where), kept in the store (`audit`) and shown on the dashboard.
//! Nothing in the hub's API adds, changes or removes an entry: only the changes themselves
//! write here.

use crate::store::AuditEntry;
use crate::{now_ms, Hub};

/// What one entry keeps of its targets and its detail at most (a bulk action's 50,000
/// serials are counted, not listed).
const MAX_TARGETS: usize = 2048;
const MAX_DETAIL: usize = 1024;

/// Cuts `s` to at most `max` bytes on a character boundary, saying how much was left out.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes more)", &s[..end], s.len() - end)
}

/// `n` targets listed as far as they fit, then counted.
pub fn targets<'a>(all: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = all.len();
    let mut out = String::new();
    for (i, t) in all.enumerate() {
        if out.len() + t.len() + 1 > MAX_TARGETS - 32 {
            out.push_str(&format!(" and {} more", n - i));
            break;
        }
        if i > 0 {
            out.push(' ');
        }
        out.push_str(t);
    }
    out
}

/// An entry made now, its fields bounded.
pub fn entry(actor: &str, action: &str, targets: &str, detail: &str, addr: &str) -> AuditEntry {
    AuditEntry {
        id: 0,
        at_ms: now_ms(),
        actor: bounded(actor, 128),
        action: action.to_string(),
        targets: bounded(targets, MAX_TARGETS),
        detail: bounded(detail, MAX_DETAIL),
        addr: bounded(addr, 64),
    }
}

/// Records a change (and logs it). A store that cannot take the entry is logged as an
/// error naming the change, which has been made already.
pub async fn record(hub: &Hub, actor: &str, action: &str, targets: &str, detail: &str, addr: &str) {
    log::info!("audit: {actor} {action} {targets}{}{detail}", if detail.is_empty() { "" } else { ": " });
    if let Err(err) = hub.store.audit_add(&entry(actor, action, targets, detail, addr)).await {
        log::error!("audit log: {err}: not recorded: {actor} {action} {targets}");
    }
}

/// The audit log as CSV (RFC 4180), oldest entry last as in the log's view.
pub fn csv(entries: &[AuditEntry]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = String::from("id,at_ms,actor,action,targets,detail,addr\r\n");
    for e in entries {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\r\n",
            e.id,
            e.at_ms,
            field(&e.actor),
            field(&e.action),
            field(&e.targets),
            field(&e.detail),
            field(&e.addr)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_targets_are_counted_and_long_details_cut() {
        let sns: Vec<String> = (0..50_000).map(|i| format!("SN{i:05}")).collect();
        let t = targets(sns.iter().map(String::as_str));
        assert!(t.len() <= MAX_TARGETS, "{}", t.len());
        assert!(t.starts_with("SN00000 SN00001 ") && t.ends_with(" more"), "{t}");
        let listed = t.split(' ').take_while(|w| w.starts_with("SN")).count();
        assert!(t.ends_with(&format!(" and {} more", 50_000 - listed)), "{t}");
        assert_eq!(targets(["a", "b"].into_iter()), "a b");
        let d = bounded(&"é".repeat(1000), 11);
        assert!(d.starts_with("ééééé...") && d.ends_with("(1990 bytes more)"), "{d}");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let e = AuditEntry {
            id: 7,
            at_ms: 1,
            actor: "operator:ann".into(),
            action: "device.command".into(),
            targets: "SN-1".into(),
            detail: "edge command \"c1\", config a,b\nnext".into(),
            addr: "127.0.0.1".into(),
        };
        assert_eq!(
            csv(&[e]),
            "id,at_ms,actor,action,targets,detail,addr\r\n\
             7,1,operator:ann,device.command,SN-1,\"edge command \"\"c1\"\", config a,b\nnext\",127.0.0.1\r\n"
        );
    }
}
