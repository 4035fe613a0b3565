//! The audit trail's record and its hash chain: each event's hash covers its fields and
//! the previous event's hash, so altering or deleting an event breaks the chain there.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Millis;

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: u64,
    pub time: Millis,
    /// The caller (e.g. `uid:1000/gid:1000`, `cert:CN=ops`).
    pub principal: String,
    /// The API operation, e.g. `ActivateKey`.
    pub action: String,
    /// The resource acted on (an id, or `vault/name` for a failed create).
    pub resource: String,
    /// The vault the resource belongs to, when known.
    pub vault_id: String,
    /// `ok`, `denied`, or `error:<gRPC code>`.
    pub outcome: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What an event says, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub time: Millis,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub vault_id: String,
    pub outcome: String,
}

fn digest(seq: u64, e: &AuditEntry, prev_hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"keyorch-audit-v1");
    h.update(seq.to_be_bytes());
    h.update(e.time.to_be_bytes());
    for field in [
        &e.principal,
        &e.action,
        &e.resource,
        &e.vault_id,
        &e.outcome,
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.update(prev_hash.as_bytes());
    hex::encode(h.finalize())
}

impl AuditEvent {
    /// Chains `entry` after the event with `prev` (seq, hash), or after genesis.
    pub fn chain(entry: AuditEntry, prev: Option<(u64, &str)>) -> AuditEvent {
        let (seq, prev_hash) = match prev {
            Some((s, h)) => (s + 1, h.to_string()),
            None => (1, GENESIS_HASH.to_string()),
        };
        let hash = digest(seq, &entry, &prev_hash);
        AuditEvent {
            seq,
            time: entry.time,
            principal: entry.principal,
            action: entry.action,
            resource: entry.resource,
            vault_id: entry.vault_id,
            outcome: entry.outcome,
            prev_hash,
            hash,
        }
    }

    fn recomputed(&self) -> String {
        let entry = AuditEntry {
            time: self.time,
            principal: self.principal.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            vault_id: self.vault_id.clone(),
            outcome: self.outcome.clone(),
        };
        digest(self.seq, &entry, &self.prev_hash)
    }
}

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The first event (by sequence number) that does not verify.
    pub seq: u64,
    pub reason: String,
}

/// Verifies events in order: sequence numbers consecutive from 1, each hash recomputes,
/// each `prev_hash` equals the previous hash, and the last event is the recorded `head`
/// (seq, hash) — kept apart from the events so that cutting the tail is detected too.
/// Returns how many verified.
pub fn verify_chain(
    events: impl IntoIterator<Item = AuditEvent>,
    head: Option<(u64, &str)>,
) -> Result<u64, ChainBreak> {
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut count = 0u64;
    for e in events {
        let expected_seq = count + 1;
        if e.seq != expected_seq {
            return Err(ChainBreak {
                seq: expected_seq,
                reason: format!(
                    "event {expected_seq} is missing (next stored event is {})",
                    e.seq
                ),
            });
        }
        if e.prev_hash != prev_hash {
            return Err(ChainBreak {
                seq: e.seq,
                reason: "prev_hash does not match the previous event's hash".into(),
            });
        }
        if e.recomputed() != e.hash {
            return Err(ChainBreak {
                seq: e.seq,
                reason: "contents do not match its hash (altered)".into(),
            });
        }
        prev_hash = e.hash;
        count += 1;
    }
    match head {
        Some((seq, _)) if seq != count => Err(ChainBreak {
            seq: count + 1,
            reason: format!(
                "the recorded head is event {seq}, but the chain ends at event {count}"
            ),
        }),
        Some((_, hash_at_head)) if count > 0 && hash_at_head != prev_hash => Err(ChainBreak {
            seq: count,
            reason: "the last event's hash does not match the recorded head".into(),
        }),
        None if count > 0 => Err(ChainBreak {
            seq: 1,
            reason: "events exist but no head is recorded".into(),
        }),
        _ => Ok(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            time: i as i64,
            principal: format!("uid:{i}"),
            action: "CreateKey".into(),
            resource: format!("key-{i}"),
            vault_id: "vault-1".into(),
            outcome: "ok".into(),
        }
    }

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            let e = AuditEvent::chain(entry(i), prev);
            out.push(e);
        }
        out
    }

    proptest! {
        /// Any single alteration or deletion is detected, at the right event.
        #[test]
        fn tampering_is_located(n in 2u64..30, victim in 0usize..30, delete in any::<bool>()) {
            let mut events = chain(n);
            let last = events.last().map(|e| (e.seq, e.hash.clone())).unwrap();
            let head = Some((last.0, last.1.as_str()));
            prop_assert_eq!(verify_chain(events.clone(), head).unwrap(), n);
            let victim = victim % events.len();
            let seq = events[victim].seq;
            if delete {
                events.remove(victim);
                let brk = verify_chain(events, head).unwrap_err();
                prop_assert_eq!(brk.seq, seq);
            } else {
                events[victim].outcome = "denied".into();
                let brk = verify_chain(events, head).unwrap_err();
                prop_assert_eq!(brk.seq, seq);
            }
        }
    }
}
