//! The audit trail and authorization: who may do what (the policy), and one hash-chained
//! event per mutating call and per denial, appended durably before the caller is answered.

use super::{now, Inner, Listing, ServiceError, Services};
use crate::domain::{
    verify_chain, Action, AuditEntry, AuditEvent, ChainBreak, Key, Keystore, Page, Principal,
};
use crate::store::{Batch, Table};

const HEAD_META: &str = "audit_head";

/// What a call acts on, to find its vault.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Not one vault's (ListVaults, CreateVault, unscoped lists).
    Global,
    Vault(String),
    Keystore(String),
    Key(String),
}

/// The vault a call falls in, and the resource it names.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub vault_id: Option<String>,
    pub resource: String,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub principal: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub vault_id: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl EventFilter {
    fn keeps(&self, e: &AuditEvent) -> bool {
        self.principal.as_ref().is_none_or(|p| &e.principal == p)
            && self.action.as_ref().is_none_or(|a| &e.action == a)
            && self.resource.as_ref().is_none_or(|r| &e.resource == r)
            && self.vault_id.as_ref().is_none_or(|v| &e.vault_id == v)
            && self.outcome.as_ref().is_none_or(|o| &e.outcome == o)
            && self.since.is_none_or(|s| e.time >= s)
            && self.until.is_none_or(|u| e.time < u)
    }
}

fn seq_id(seq: u64) -> String {
    format!("{seq:020}")
}

fn parse_head(raw: &[u8]) -> Option<(u64, String)> {
    let text = std::str::from_utf8(raw).ok()?;
    let (seq, hash) = text.split_once(':')?;
    Some((seq.parse().ok()?, hash.to_string()))
}

impl Inner {
    fn audit_head(&self) -> Result<Option<(u64, String)>, ServiceError> {
        Ok(self.store.meta(HEAD_META)?.as_deref().and_then(parse_head))
    }

    pub(super) fn append_audit(&self, entry: AuditEntry) -> Result<AuditEvent, ServiceError> {
        let _a = self.audit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let head = self.audit_head()?;
        let event = AuditEvent::chain(entry, head.as_ref().map(|(s, h)| (*s, h.as_str())));
        let mut b = Batch::new();
        b.put(Table::Audit, &seq_id(event.seq), &event)?;
        b.set_meta(
            HEAD_META,
            format!("{}:{}", event.seq, event.hash).as_bytes(),
        );
        // Audit writes do not invalidate cached reads: use the store directly.
        self.store.commit(b)?;
        Ok(event)
    }
}

impl Services {
    /// Finds the vault of the resource a call names (None when global or unknown).
    pub async fn resolve(&self, scope: Scope) -> Result<Resolved, ServiceError> {
        self.blocking(move |inner| {
            Ok(match scope {
                Scope::Global => Resolved {
                    vault_id: None,
                    resource: String::new(),
                },
                Scope::Vault(id) => {
                    let exists = inner
                        .store
                        .get::<crate::domain::Vault>(Table::Vaults, &id)?
                        .is_some();
                    Resolved {
                        vault_id: exists.then(|| id.clone()),
                        resource: id,
                    }
                }
                Scope::Keystore(id) => Resolved {
                    vault_id: inner
                        .store
                        .get::<Keystore>(Table::Keystores, &id)?
                        .map(|k| k.vault_id),
                    resource: id,
                },
                Scope::Key(id) => Resolved {
                    vault_id: inner
                        .store
                        .get::<Key>(Table::Keys, &id)?
                        .map(|k| k.vault_id),
                    resource: id,
                },
            })
        })
        .await
    }

    /// Whether the policy lets `principal` do `action` in `vault_id`.
    pub fn permits(&self, principal: &Principal, vault_id: Option<&str>, action: Action) -> bool {
        self.inner
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .permits(principal, vault_id, action)
    }

    /// Appends one event to the chain, durably.
    pub async fn audit(&self, entry: AuditEntry) -> Result<AuditEvent, ServiceError> {
        self.blocking(move |inner| inner.append_audit(entry)).await
    }

    /// An entry stamped now.
    pub fn audit_entry(
        principal: &Principal,
        action: Action,
        resource: &str,
        vault_id: Option<&str>,
        outcome: &str,
    ) -> AuditEntry {
        AuditEntry {
            time: now(),
            principal: principal.to_string(),
            action: action.name(),
            resource: resource.to_string(),
            vault_id: vault_id.unwrap_or_default().to_string(),
            outcome: outcome.to_string(),
        }
    }

    pub async fn list_events(
        &self,
        filter: EventFilter,
        page: Page,
    ) -> Result<Listing<AuditEvent>, ServiceError> {
        self.blocking(move |inner| {
            let after = page.after.clone();
            let (items, more) = inner.store.list(
                Table::Audit,
                after.as_deref(),
                page.size,
                |e: &AuditEvent| filter.keeps(e),
            )?;
            let next_page_token = match (more, items.last()) {
                (true, Some(last)) => Page::token_after(&seq_id(last.seq)),
                _ => String::new(),
            };
            Ok(Listing {
                items,
                next_page_token,
            })
        })
        .await
    }

    /// Verifies the whole chain against its recorded head.
    pub async fn verify_audit_chain(&self) -> Result<Result<u64, ChainBreak>, ServiceError> {
        self.blocking(|inner| {
            let _a = inner.audit_lock.lock().unwrap_or_else(|p| p.into_inner());
            let head = inner.audit_head()?;
            let events: Vec<AuditEvent> = inner.store.all(Table::Audit)?;
            Ok(verify_chain(
                events,
                head.as_ref().map(|(s, h)| (*s, h.as_str())),
            ))
        })
        .await
    }
}
