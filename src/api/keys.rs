//! keyorch.v1.KeyService.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};

use super::convert::{self, optional_enum, required_enum};
use super::status::to_status;
use crate::domain::KeySpec;
use crate::proto::v1::{self as pb, key_service_server::KeyService};
use crate::service::{CreateKey, KeyFilter, Services, UpdateKey};

pub struct Keys(pub Services);

fn reply(k: crate::domain::Key) -> Result<Response<pb::Key>, Status> {
    Ok(Response::new(convert::key(&k)))
}

#[tonic::async_trait]
impl KeyService for Keys {
    async fn create_key(
        &self,
        req: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let r = req.into_inner();
        let family = convert::family(required_enum::<pb::KeyAlgorithm>("algorithm", r.algorithm)?);
        let spec = KeySpec::from_parts(family, r.key_size_bits).map_err(|e| to_status(e.into()))?;
        let k = self
            .0
            .create_key(CreateKey {
                vault_id: r.vault_id,
                name: r.name,
                description: r.description,
                spec,
                targets: r.target_keystore_ids,
                activate: r.activate,
                tags: r.tags.into_iter().collect::<BTreeMap<_, _>>(),
            })
            .await
            .map_err(to_status)?;
        reply(k)
    }

    async fn get_key(&self, req: Request<pb::GetKeyRequest>) -> Result<Response<pb::Key>, Status> {
        reply(
            self.0
                .get_key(req.into_inner().id)
                .await
                .map_err(to_status)?,
        )
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
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
            keys: l.items.iter().map(convert::key).collect(),
            next_page_token: l.next_page_token,
        }))
    }

    async fn update_key(
        &self,
        req: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let r = req.into_inner();
        let update = UpdateKey {
            name: r.name,
            description: r.description,
            tags: r.tags.into_iter().collect(),
            replace_tags: r.replace_tags,
        };
        reply(self.0.update_key(r.id, update).await.map_err(to_status)?)
    }

    async fn activate_key(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        reply(
            self.0
                .activate_key(req.into_inner().id)
                .await
                .map_err(to_status)?,
        )
    }

    async fn deactivate_key(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        reply(
            self.0
                .deactivate_key(req.into_inner().id)
                .await
                .map_err(to_status)?,
        )
    }

    async fn destroy_key(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        reply(
            self.0
                .destroy_key(req.into_inner().id)
                .await
                .map_err(to_status)?,
        )
    }

    async fn delete_key(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        self.0
            .delete_key(req.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteKeyResponse {}))
    }

    async fn mark_compromised(
        &self,
        req: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        reply(
            self.0
                .mark_compromised(req.into_inner().id)
                .await
                .map_err(to_status)?,
        )
    }

    async fn install_key(
        &self,
        req: Request<pb::InstallKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let r = req.into_inner();
        reply(
            self.0
                .install_key(r.id, r.keystore_id)
                .await
                .map_err(to_status)?,
        )
    }

    async fn uninstall_key(
        &self,
        req: Request<pb::InstallKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let r = req.into_inner();
        reply(
            self.0
                .uninstall_key(r.id, r.keystore_id)
                .await
                .map_err(to_status)?,
        )
    }
}
