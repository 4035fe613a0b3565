//! `keyorch audit ...`: list the audit trail's events and verify its hash chain.

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{self, timestamp, timestamp_json, OutputFormat, Table};
use super::paging::{self, PageArgs};
use super::{CliError, Context, Outcome};
use crate::proto::v1::{AuditEvent, ListEventsRequest, VerifyChainRequest};

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum AuditCommand {
    /// List audit events, oldest first.
    List {
        /// Only events of this vault.
        #[arg(long)]
        vault: Option<String>,
        /// Only this action (e.g. ActivateKey).
        #[arg(long)]
        action: Option<String>,
        /// Only this principal (e.g. uid:1000/gid:1000).
        #[arg(long)]
        principal: Option<String>,
        /// Only this resource id.
        #[arg(long)]
        resource: Option<String>,
        /// Only this outcome: ok, denied, or error:<code>.
        #[arg(long)]
        outcome: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Verify the hash chain; exit 0 when intact, 1 when broken (naming the first bad event).
    Verify,
}

fn to_json(e: &AuditEvent) -> Value {
    json!({
        "seq": e.seq,
        "time": timestamp_json(&e.time),
        "principal": e.principal,
        "action": e.action,
        "resource": e.resource,
        "vault_id": e.vault_id,
        "outcome": e.outcome,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    })
}

fn table(events: &[AuditEvent]) -> Table {
    let mut t = Table::new(vec![
        "SEQ",
        "TIME",
        "PRINCIPAL",
        "ACTION",
        "RESOURCE",
        "OUTCOME",
    ]);
    for e in events {
        t.push(vec![
            e.seq.to_string(),
            timestamp(&e.time).unwrap_or_default(),
            e.principal.clone(),
            e.action.clone(),
            e.resource.clone(),
            e.outcome.clone(),
        ]);
    }
    t
}

pub async fn run(cmd: AuditCommand, ctx: &Context) -> Result<Outcome, CliError> {
    let client = ctx.clients().await?.audit;
    match cmd {
        AuditCommand::List {
            vault,
            action,
            principal,
            resource,
            outcome,
            page,
        } => {
            let (events, next) = paging::fetch(&page, |page| {
                let mut client = client.clone();
                let req = ListEventsRequest {
                    vault_id: vault.clone().unwrap_or_default(),
                    action: action.clone().unwrap_or_default(),
                    principal: principal.clone().unwrap_or_default(),
                    resource: resource.clone().unwrap_or_default(),
                    outcome: outcome.clone().unwrap_or_default(),
                    page: Some(page),
                    ..ListEventsRequest::default()
                };
                async move {
                    let r = client.list_events(req).await?.into_inner();
                    Ok((r.events, r.next_page_token))
                }
            })
            .await?;
            output::print(&match ctx.output {
                OutputFormat::Table => output::list_text(table(&events), &next),
                OutputFormat::Json => output::render_json(&json!({
                    "events": events.iter().map(to_json).collect::<Vec<_>>(),
                    "next_page_token": next,
                })),
            })?;
            Ok(Outcome::Success)
        }
        AuditCommand::Verify => {
            let r = client
                .clone()
                .verify_chain(VerifyChainRequest {})
                .await?
                .into_inner();
            output::print(&match ctx.output {
                OutputFormat::Table if r.ok => {
                    format!("ok: {} events verified\n", r.events_verified)
                }
                OutputFormat::Table => {
                    format!("broken at event {}: {}\n", r.first_bad_seq, r.message)
                }
                OutputFormat::Json => output::render_json(&json!({
                    "ok": r.ok,
                    "events_verified": r.events_verified,
                    "first_bad_seq": r.first_bad_seq,
                    "message": r.message,
                })),
            })?;
            Ok(if r.ok {
                Outcome::Success
            } else {
                Outcome::Negative
            })
        }
    }
}
