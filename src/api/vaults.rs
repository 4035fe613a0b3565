//! keyorch.v1.VaultService.

use tonic::{Request, Response, Status};

use super::convert;
use super::guard::{none, Call};
use super::status::to_status;
use crate::domain::{Action, Vault};
use crate::proto::v1::{self as pb, vault_service_server::VaultService};
use crate::service::{Scope, Services};

pub struct Vaults(pub Services);

fn created(v: &Vault) -> Option<(String, String)> {
    Some((v.id.clone(), v.id.clone()))
}

#[tonic::async_trait]
impl VaultService for Vaults {
    async fn create_vault(
        &self,
        req: Request<pb::CreateVaultRequest>,
    ) -> Result<Response<pb::Vault>, Status> {
        let call = Call::begin(&self.0, &req, Action::CreateVault, Scope::Global).await?;
        let r = req.into_inner();
        let v = call
            .finish(
                &self.0,
                self.0.create_vault(r.name, r.description).await,
                created,
            )
            .await?;
        Ok(Response::new(convert::vault(&v)))
    }

    async fn get_vault(
        &self,
        req: Request<pb::GetVaultRequest>,
    ) -> Result<Response<pb::Vault>, Status> {
        let id = req.get_ref().id.clone();
        let call = Call::begin(&self.0, &req, Action::GetVault, Scope::Vault(id.clone())).await?;
        let v = call
            .finish(&self.0, self.0.get_vault(id).await, none)
            .await?;
        Ok(Response::new(convert::vault(&v)))
    }

    async fn list_vaults(
        &self,
        req: Request<pb::ListVaultsRequest>,
    ) -> Result<Response<pb::ListVaultsResponse>, Status> {
        let call = Call::begin_list(&req, Action::ListVaults)?;
        let page = convert::page(req.into_inner().page)?;
        let l = self.0.list_vaults(page).await.map_err(to_status)?;
        Ok(Response::new(pb::ListVaultsResponse {
            vaults: l
                .items
                .iter()
                .filter(|v| call.may_see(&self.0, &v.id))
                .map(convert::vault)
                .collect(),
            next_page_token: l.next_page_token,
        }))
    }

    async fn update_vault(
        &self,
        req: Request<pb::UpdateVaultRequest>,
    ) -> Result<Response<pb::Vault>, Status> {
        let id = req.get_ref().id.clone();
        let call = Call::begin(&self.0, &req, Action::UpdateVault, Scope::Vault(id)).await?;
        let r = req.into_inner();
        let v = call
            .finish(
                &self.0,
                self.0.update_vault(r.id, r.name, r.description).await,
                none,
            )
            .await?;
        Ok(Response::new(convert::vault(&v)))
    }

    async fn delete_vault(
        &self,
        req: Request<pb::DeleteVaultRequest>,
    ) -> Result<Response<pb::DeleteVaultResponse>, Status> {
        let id = req.get_ref().id.clone();
        let call =
            Call::begin(&self.0, &req, Action::DeleteVault, Scope::Vault(id.clone())).await?;
        call.finish(&self.0, self.0.delete_vault(id).await, none)
            .await?;
        Ok(Response::new(pb::DeleteVaultResponse {}))
    }
}
