//! keyorch.v1.KeyService.

use std::collections::BTreeMap;
use std::future::Future;

use tonic::{Request, Response, Status};

use super::convert::{self, optional_enum, required_enum};
use super::guard::{none, Call};
use super::status::to_status;
use crate::domain::{Action, Key, KeySpec};
use crate::proto::v1::{self as pb, key_service_server::KeyService};
use crate::service::{CreateKey, KeyFilter, Scope, ServiceError, Services, UpdateKey};

pub struct Keys(pub Services);

fn reply(k: Key) -> Result<Response<pb::Key>, Status> {
    Ok(Response::new(convert::key(&k)))
}

impl Keys {
    /// A call on one existing key: authorise, run, audit, reply.
    async fn on_key<T>(
        &self,
        req: &Request<T>,
        action: Action,
        id: &str,
        run: impl Future<Output = Result<Key, ServiceError>>,
    ) -> Result<Response<pb::Key>, Status> {
        let call = Call::begin(&self.0, req, action, Scope::Key(id.to_string())).await?;
        reply(call.finish(&self.0, run.await, none).await?)
    }
}

#[tonic::async_trait]
impl KeyService for Keys {
    async fn create_key(
        &self,
        req: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let vault = req.get_ref().vault_id.clone();
        let call = Call::begin(&self.0, &req, Action::CreateKey, Scope::Vault(vault)).await?;
        let r = req.into_inner();
        let family = convert::family(required_enum::<pb::KeyAlgorithm>("algorithm", r.algorithm)?);
        let spec = KeySpec::from_parts(family, r.key_size_bits).map_err(|e| to_status(e.into()))?;
        let result = self
            .0
            .create_key(CreateKey {
                vault_id: r.vault_id,
                name: r.name,
                description: r.description,
                spec,
                targets: r.target_keystore_ids,
                activate: r.activate,
                tags: r.tags.into_iter().collect::<BTreeMap<_, _>>(),
                external_key_id: (!r.external_key_id.is_empty()).then_some(r.external_key_id),
            })
            .await;
        let created = |k: &Key| Some((k.id.clone(), k.vault_id.clone()));
        reply(call.finish(&self.0, result, created).await?)
    }

    async fn get_key(&self, req: Request<pb::GetKeyRequest>) -> Result<Response<pb::Key>, Status> {
        let id = req.get_ref().id.clone();
        self.on_key(&req, Action::GetKey, &id, self.0.get_key(id.clone()))
            .await
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let vault = req.get_ref().vault_id.clone();
        let call = if vault.is_empty() {
            Call::begin_list(&req, Action::ListKeys)?
        } else {
            Call::begin(&self.0, &req, Action::ListKeys, Scope::Vault(vault)).await?
        };
        let r = req.into_inner();
        let filter = KeyFilter {
            vault_id: Some(r.vault_id).filter(|v| !v.is_empty()),
            state: optional_enum::<pb::KeyState>("state", r.state)?.map(convert::key_state),
            family: optional_enum::<pb::KeyAlgorithm>("algorithm", r.algorithm)?
                .map(convert::family),
            keystore_id: Some(r.keystore_id).filter(|v| !v.is_empty()),
            name: Some(r.name).filter(|v| !v.is_empty()),
        };
        let page = convert::page(r.page)?;
        let l = self.0.list_keys(filter, page).await.map_err(to_status)?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: l
                .items
                .iter()
                .filter(|k| call.may_see(&self.0, &k.vault_id))
                .map(convert::key)
                .collect(),
            next_page_token: l.next_page_token,
        }))
    }

    async fn update_key(
        &self,
        req: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let r = req.get_ref().clone();
        let update = UpdateKey {
            name: r.name,
            description: r.description,
            tags: r.tags.into_iter().collect(),
            replace_tags: r.replace_tags,
        };
        self.on_key(
            &req,
            Action::UpdateKey,
            &r.id,
            self.0.update_key(r.id.clone(), update),
        )
        .await
    }

    async fn activate_key(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let id = req.get_ref().id.clone();
        self.on_key(
            &req,
            Action::ActivateKey,
            &id,
            self.0.activate_key(id.clone()),
        )
        .await
    }

    async fn deactivate_key(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let id = req.get_ref().id.clone();
        self.on_key(
            &req,
            Action::DeactivateKey,
            &id,
            self.0.deactivate_key(id.clone()),
        )
        .await
    }

    async fn destroy_key(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let id = req.get_ref().id.clone();
        self.on_key(
            &req,
            Action::DestroyKey,
            &id,
            self.0.destroy_key(id.clone()),
        )
        .await
    }

    async fn delete_key(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        let id = req.get_ref().id.clone();
        let call = Call::begin(&self.0, &req, Action::DeleteKey, Scope::Key(id.clone())).await?;
        call.finish(&self.0, self.0.delete_key(id).await, none)
            .await?;
        Ok(Response::new(pb::DeleteKeyResponse {}))
    }

    async fn mark_compromised(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let id = req.get_ref().id.clone();
        self.on_key(
            &req,
            Action::MarkCompromised,
            &id,
            self.0.mark_compromised(id.clone()),
        )
        .await
    }

    async fn install_key(
        &self,
        req: Request<pb::InstallKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let r = req.get_ref().clone();
        self.on_key(
            &req,
            Action::InstallKey,
            &r.id,
            self.0.install_key(r.id.clone(), r.keystore_id),
        )
        .await
    }

    async fn get_key_status_in_keystores(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::KeyStatusResponse>, Status> {
        let id = req.get_ref().id.clone();
        let call = Call::begin(
            &self.0,
            &req,
            Action::GetKeyStatusInKeystores,
            Scope::Key(id.clone()),
        )
        .await?;
        let statuses = call
            .finish(&self.0, self.0.key_status(id.clone()).await, none)
            .await?;
        Ok(Response::new(convert::key_status(&id, &statuses)))
    }

    async fn sync_key(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::KeyStatusResponse>, Status> {
        let id = req.get_ref().id.clone();
        let call = Call::begin(&self.0, &req, Action::SyncKey, Scope::Key(id.clone())).await?;
        let statuses = call
            .finish(&self.0, self.0.sync_key(id.clone()).await, none)
            .await?;
        Ok(Response::new(convert::key_status(&id, &statuses)))
    }

    async fn uninstall_key(
        &self,
        req: Request<pb::InstallKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let r = req.get_ref().clone();
        self.on_key(
            &req,
            Action::UninstallKey,
            &r.id,
            self.0.uninstall_key(r.id.clone(), r.keystore_id),
        )
        .await
    }
}
