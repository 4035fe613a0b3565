//! keyorch.v1.AuditService: read and verify the hash-chained audit trail.

use tonic::{Request, Response, Status};

use super::convert;
use super::guard::Call;
use super::status::to_status;
use crate::domain::{Action, AuditEvent};
use crate::proto::v1::{self as pb, audit_service_server::AuditService};
use crate::service::{EventFilter, Scope, Services};

pub struct Audit(pub Services);

fn event(e: &AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        seq: e.seq,
        time: convert::ts(e.time),
        principal: e.principal.clone(),
        action: e.action.clone(),
        resource: e.resource.clone(),
        vault_id: e.vault_id.clone(),
        outcome: e.outcome.clone(),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    }
}

fn millis(t: Option<prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

fn nonempty(s: String) -> Option<String> {
    Some(s).filter(|v| !v.is_empty())
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let vault = req.get_ref().vault_id.clone();
        let call = if vault.is_empty() {
            Call::begin_list(&req, Action::ListEvents)?
        } else {
            Call::begin(&self.0, &req, Action::ListEvents, Scope::Vault(vault)).await?
        };
        let r = req.into_inner();
        let filter = EventFilter {
            principal: nonempty(r.principal),
            action: nonempty(r.action),
            resource: nonempty(r.resource),
            vault_id: nonempty(r.vault_id),
            outcome: nonempty(r.outcome),
            since: millis(r.since),
            until: millis(r.until),
        };
        let page = convert::page(r.page)?;
        let l = self.0.list_events(filter, page).await.map_err(to_status)?;
        // Auditors on "*" see everything; per-vault auditors see their vault's events.
        let all = self.0.permits(&call.principal, None, Action::ListEvents);
        Ok(Response::new(pb::ListEventsResponse {
            events: l
                .items
                .iter()
                .filter(|e| all || (!e.vault_id.is_empty() && call.may_see(&self.0, &e.vault_id)))
                .map(event)
                .collect(),
            next_page_token: l.next_page_token,
        }))
    }

    async fn verify_chain(
        &self,
        req: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let _call = Call::begin(&self.0, &req, Action::VerifyChain, Scope::Global).await?;
        let outcome = self.0.verify_audit_chain().await.map_err(to_status)?;
        Ok(Response::new(match outcome {
            Ok(n) => pb::VerifyChainResponse {
                ok: true,
                events_verified: n,
                first_bad_seq: 0,
                message: String::new(),
            },
            Err(b) => pb::VerifyChainResponse {
                ok: false,
                events_verified: b.seq.saturating_sub(1),
                first_bad_seq: b.seq,
                message: format!("event {}: {}", b.seq, b.reason),
            },
        }))
    }
}
