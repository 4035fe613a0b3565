//! keyorch.v1.VaultService.

use tonic::{Request, Response, Status};

use super::convert;
use super::status::to_status;
use crate::proto::v1::{self as pb, vault_service_server::VaultService};
use crate::service::Services;

pub struct Vaults(pub Services);

#[tonic::async_trait]
impl VaultService for Vaults {
    async fn create_vault(
        &self,
        req: Request<pb::CreateVaultRequest>,
    ) -> Result<Response<pb::Vault>, Status> {
        let r = req.into_inner();
        let v = self
            .0
            .create_vault(r.name, r.description)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::vault(&v)))
    }

    async fn get_vault(
        &self,
        req: Request<pb::GetVaultRequest>,
    ) -> Result<Response<pb::Vault>, Status> {
        let v = self
            .0
            .get_vault(req.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::vault(&v)))
    }

    async fn list_vaults(
        &self,
        req: Request<pb::ListVaultsRequest>,
    ) -> Result<Response<pb::ListVaultsResponse>, Status> {
        let page = convert::page(req.into_inner().page)?;
        let l = self.0.list_vaults(page).await.map_err(to_status)?;
        Ok(Response::new(pb::ListVaultsResponse {
            vaults: l.items.iter().map(convert::vault).collect(),
            next_page_token: l.next_page_token,
        }))
    }

    async fn update_vault(
        &self,
        req: Request<pb::UpdateVaultRequest>,
    ) -> Result<Response<pb::Vault>, Status> {
        let r = req.into_inner();
        let v = self
            .0
            .update_vault(r.id, r.name, r.description)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::vault(&v)))
    }

    async fn delete_vault(
        &self,
        req: Request<pb::DeleteVaultRequest>,
    ) -> Result<Response<pb::DeleteVaultResponse>, Status> {
        self.0
            .delete_vault(req.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteVaultResponse {}))
    }
}
