//! keyorch.v1.KeystoreService.

use tonic::{Request, Response, Status};

use super::convert::{self, optional_enum, required_enum};
use super::status::{invalid, to_status};
use crate::domain::KeystoreType;
use crate::proto::v1::{self as pb, keystore_service_server::KeystoreService};
use crate::service::{CreateKeystore, DisconnectOptions, KeystoreFilter, Services};

pub struct Keystores(pub Services);

fn create_request(r: pb::CreateKeystoreRequest) -> Result<CreateKeystore, Status> {
    let t: pb::KeystoreType = required_enum("type", r.r#type)?;
    let keystore_type = convert::keystore_type(t);
    match (&r.config, keystore_type) {
        (Some(pb::create_keystore_request::Config::Internal(_)) | None, KeystoreType::Internal) => {
        }
        (None, _) => {}
        (Some(_), other) => {
            return Err(invalid("config", format!("does not match type {other}")));
        }
    }
    Ok(CreateKeystore {
        vault_id: r.vault_id,
        name: r.name,
        description: r.description,
        keystore_type,
        connect: r.connect,
    })
}

#[tonic::async_trait]
impl KeystoreService for Keystores {
    async fn create_keystore(
        &self,
        req: Request<pb::CreateKeystoreRequest>,
    ) -> Result<Response<pb::Keystore>, Status> {
        let r = create_request(req.into_inner())?;
        let k = self.0.create_keystore(r).await.map_err(to_status)?;
        Ok(Response::new(convert::keystore(&k)))
    }

    async fn get_keystore(
        &self,
        req: Request<pb::GetKeystoreRequest>,
    ) -> Result<Response<pb::Keystore>, Status> {
        let k = self
            .0
            .get_keystore(req.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::keystore(&k)))
    }

    async fn describe_keystores(
        &self,
        req: Request<pb::DescribeKeystoresRequest>,
    ) -> Result<Response<pb::DescribeKeystoresResponse>, Status> {
        let r = req.into_inner();
        let filter = KeystoreFilter {
            vault_id: Some(r.vault_id).filter(|v| !v.is_empty()),
            name: Some(r.name).filter(|v| !v.is_empty()),
            keystore_type: optional_enum::<pb::KeystoreType>("type", r.r#type)?
                .map(convert::keystore_type),
            state: optional_enum::<pb::ConnectionState>("connection_state", r.connection_state)?
                .map(convert::connection_state),
        };
        let page = convert::page(r.page)?;
        let l = self
            .0
            .describe_keystores(filter, page)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DescribeKeystoresResponse {
            keystores: l.items.iter().map(convert::keystore).collect(),
            next_page_token: l.next_page_token,
        }))
    }

    async fn update_keystore(
        &self,
        req: Request<pb::UpdateKeystoreRequest>,
    ) -> Result<Response<pb::Keystore>, Status> {
        let r = req.into_inner();
        let k = self
            .0
            .update_keystore(r.id, r.name, r.description)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::keystore(&k)))
    }

    async fn delete_keystore(
        &self,
        req: Request<pb::DeleteKeystoreRequest>,
    ) -> Result<Response<pb::DeleteKeystoreResponse>, Status> {
        self.0
            .delete_keystore(req.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteKeystoreResponse {}))
    }

    async fn connect_keystore(
        &self,
        req: Request<pb::ConnectKeystoreRequest>,
    ) -> Result<Response<pb::Keystore>, Status> {
        let k = self
            .0
            .connect_keystore(req.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::keystore(&k)))
    }

    async fn disconnect_keystore(
        &self,
        req: Request<pb::DisconnectKeystoreRequest>,
    ) -> Result<Response<pb::Keystore>, Status> {
        let r = req.into_inner();
        let opts = DisconnectOptions {
            uninstall_keys: r.uninstall_keys,
            force: r.force,
        };
        let k = self
            .0
            .disconnect_keystore(r.id, opts)
            .await
            .map_err(to_status)?;
        Ok(Response::new(convert::keystore(&k)))
    }

    async fn test_keystore_connection(
        &self,
        req: Request<pb::TestKeystoreConnectionRequest>,
    ) -> Result<Response<pb::TestKeystoreConnectionResponse>, Status> {
        use pb::test_keystore_connection_request::Subject;
        let outcome = match req.into_inner().subject {
            Some(Subject::Id(id)) => self.0.test_keystore(id).await,
            Some(Subject::Candidate(c)) => self.0.test_keystore_candidate(create_request(c)?).await,
            None => return Err(invalid("subject", "give either id or candidate")),
        }
        .map_err(to_status)?;
        Ok(Response::new(match outcome.result {
            Ok(()) => pb::TestKeystoreConnectionResponse {
                ok: true,
                error_code: 0,
                message: String::new(),
            },
            Err(e) => pb::TestKeystoreConnectionResponse {
                ok: false,
                error_code: convert::error_code_pb(e.code) as i32,
                message: e.message,
            },
        }))
    }
}
