//! The gate every RPC passes: who calls (identity), may they (policy, per vault), and the
//! audit event for every denial and every mutating call, written before the reply.

use tonic::{Request, Status};

use super::identity;
use super::status::to_status;
use crate::domain::{Action, Principal};
use crate::service::{Scope, ServiceError, Services};

/// An authorised call in progress.
pub struct Call {
    pub principal: Principal,
    action: Action,
    vault_id: Option<String>,
    resource: String,
}

impl Call {
    /// Identifies the caller and checks the policy for `action` on `scope`. A denial is
    /// audited and returned as PERMISSION_DENIED; nothing else happens.
    pub async fn begin<T>(
        svc: &Services,
        req: &Request<T>,
        action: Action,
        scope: Scope,
    ) -> Result<Call, Status> {
        let principal = identity::principal(req)?;
        Call::authorize(svc, principal, action, scope)
            .await
            .map_err(to_status)
    }

    /// Checks the policy for an already identified `principal` (the AWS endpoint's SigV4
    /// callers). A denial is audited and returned as `ServiceError::PermissionDenied`.
    pub async fn authorize(
        svc: &Services,
        principal: Principal,
        action: Action,
        scope: Scope,
    ) -> Result<Call, ServiceError> {
        let resolved = svc.resolve(scope).await?;
        let call = Call {
            principal,
            action,
            vault_id: resolved.vault_id,
            resource: resolved.resource,
        };
        if !svc.permits(&call.principal, call.vault_id.as_deref(), action) {
            call.record(svc, "denied").await?;
            tracing::warn!(principal = %call.principal, action = ?action, vault = ?call.vault_id, "permission denied");
            return Err(ServiceError::denied(
                &call.principal,
                action,
                call.vault_id.as_deref(),
            ));
        }
        Ok(call)
    }

    /// For list calls without a vault filter: identifies the caller; items are then kept
    /// only where [`Call::may_see`] says so.
    pub fn begin_list<T>(req: &Request<T>, action: Action) -> Result<Call, Status> {
        let principal = identity::principal(req)?;
        Ok(Call {
            principal,
            action,
            vault_id: None,
            resource: String::new(),
        })
    }

    pub fn may_see(&self, svc: &Services, vault_id: &str) -> bool {
        svc.permits(&self.principal, Some(vault_id), self.action)
    }

    async fn record(&self, svc: &Services, outcome: &str) -> Result<(), ServiceError> {
        let entry = Services::audit_entry(
            &self.principal,
            self.action,
            &self.resource,
            self.vault_id.as_deref(),
            outcome,
        );
        svc.audit(entry).await.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "audit trail could not be written");
            e
        })
    }

    /// Ends the call: audits a mutating call's outcome (with the resource it created, when
    /// `created` names one), then maps a service error to its status.
    pub async fn finish<T>(
        self,
        svc: &Services,
        result: Result<T, ServiceError>,
        created: impl Fn(&T) -> Option<(String, String)>,
    ) -> Result<T, Status> {
        self.conclude(svc, result, created).await.map_err(to_status)
    }

    /// [`Call::finish`] for callers that map errors themselves (the AWS endpoint). The
    /// audit outcome is the same as for gRPC: `ok` or `error:<gRPC code>`.
    pub async fn conclude<T>(
        mut self,
        svc: &Services,
        result: Result<T, ServiceError>,
        created: impl Fn(&T) -> Option<(String, String)>,
    ) -> Result<T, ServiceError> {
        if self.action.mutates() {
            let outcome = match &result {
                Ok(v) => {
                    if let Some((resource, vault)) = created(v) {
                        self.resource = resource;
                        self.vault_id = Some(vault);
                    }
                    "ok".to_string()
                }
                Err(e) => format!("error:{:?}", super::status::code_of(e)),
            };
            if let Err(e) = self.record(svc, &outcome).await {
                if result.is_ok() {
                    return Err(ServiceError::Internal(format!(
                        "{} was applied but its audit event could not be written: {e}",
                        self.action.name()
                    )));
                }
            }
        }
        result
    }
}

/// For [`Call::finish`] on calls that create nothing.
pub fn none<T>(_: &T) -> Option<(String, String)> {
    None
}
