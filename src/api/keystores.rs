//! keyorch.v1.KeystoreService.

use tonic::{Request, Response, Status};

use super::convert::{self, optional_enum, required_enum};
use super::guard::{none, Call};
use super::status::{invalid, to_status};
use secrecy::SecretString;

use crate::domain::{Action, Keystore, KeystoreConfig};
use crate::proto::v1::{self as pb, keystore_service_server::KeystoreService};
use crate::service::{
    ConfigPatch, CreateKeystore, DisconnectOptions, KeystoreFilter, Scope, Secret, Services,
    UpdateKeystore,
};

pub struct Keystores(pub Services);

fn created(k: &Keystore) -> Option<(String, String)> {
    Some((k.id.clone(), k.vault_id.clone()))
}

pub(crate) fn create_request(r: pb::CreateKeystoreRequest) -> Result<CreateKeystore, Status> {
    use pb::create_keystore_request::{Config, Credentials};
    let t: pb::KeystoreType = required_enum("type", r.r#type)?;
    let keystore_type = convert::keystore_type(t);
    let config = match &r.config {
        None => None,
        Some(Config::Internal(_)) => Some(KeystoreConfig::Internal),
        Some(Config::Pkcs11(c)) => Some(convert::pkcs11_config(c)?),
        Some(Config::AwsKms(c)) => Some(convert::aws_kms_config(c)?),
        Some(Config::Xks(c)) => {
            let key_id = match &r.credentials {
                Some(Credentials::XksCredentials(k)) => Some(k.access_key_id.as_str()),
                _ => None,
            };
            Some(convert::xks_config(c, key_id)?)
        }
        Some(Config::IbmKms(c)) => Some(convert::ibm_kms_config(c, keystore_type)),
        Some(Config::AzureKeyVault(c)) => Some(convert::azure_key_vault_config(c)?),
        Some(Config::GoogleCloudKms(c)) => {
            let key_json = match &r.credentials {
                Some(Credentials::GoogleCloudKmsCredentials(k)) => {
                    Some(k.service_account_key_json.as_str())
                }
                _ => None,
            };
            Some(convert::google_cloud_kms_config(c, key_json)?)
        }
    };
    let secret = match r.credentials {
        None => None,
        Some(Credentials::Pkcs11Credentials(c)) => {
            Some(Secret::Pkcs11Pin(SecretString::from(c.pin)))
        }
        Some(Credentials::AwsKmsCredentials(c)) => Some(Secret::AwsSecretAccessKey(
            SecretString::from(c.secret_access_key),
        )),
        Some(Credentials::XksCredentials(c)) => Some(xks_secret(c)),
        Some(Credentials::IbmKmsCredentials(c)) => {
            Some(Secret::IbmApiKey(SecretString::from(c.api_key)))
        }
        Some(Credentials::AzureKeyVaultCredentials(c)) => Some(Secret::AzureClientSecret(
            SecretString::from(c.client_secret),
        )),
        Some(Credentials::GoogleCloudKmsCredentials(c)) => Some(Secret::GoogleServiceAccountKey(
            SecretString::from(c.service_account_key_json),
        )),
    };
    Ok(CreateKeystore {
        vault_id: r.vault_id,
        name: r.name,
        description: r.description,
        keystore_type,
        config,
        secret,
        trust_anchor_certificate: None,
        connect: r.connect,
    })
}

/// The secret of xks credentials (the access key id travels with it into the
/// configuration). The message is taken apart, so no copy of the secret stays in it.
fn xks_secret(c: pb::XksCredentials) -> Secret {
    let pb::XksCredentials {
        access_key_id,
        secret_access_key,
        client_key_pem,
    } = c;
    Secret::Xks {
        access_key_id,
        secret_access_key: SecretString::from(secret_access_key),
        client_key_pem: Some(client_key_pem)
            .filter(|k| !k.is_empty())
            .map(SecretString::from),
    }
}

fn update_request(r: pb::UpdateKeystoreRequest) -> Result<UpdateKeystore, Status> {
    let aws_kms = match (&r.aws_kms, r.aws_kms_clear_endpoint_url) {
        (None, false) => None,
        (Some(c), clear) => Some(convert::aws_kms_patch(c, clear)),
        (None, true) => Some(convert::aws_kms_patch(&Default::default(), true)),
    };
    let xks = match (&r.xks, r.xks_clear_ca_cert, r.xks_clear_client_cert) {
        (None, false, false) => None,
        (c, ca, cc) => Some(convert::xks_patch(
            c.as_ref().unwrap_or(&Default::default()),
            ca,
            cc,
        )?),
    };
    let ibm_kms = match (&r.ibm_kms, r.ibm_kms_clear_ca_cert) {
        (None, false) => None,
        (c, clear) => Some(convert::ibm_kms_patch(
            c.as_ref().unwrap_or(&Default::default()),
            clear,
        )?),
    };
    let azure = match (
        &r.azure_key_vault,
        r.azure_key_vault_clear_ca_cert,
        r.azure_key_vault_clear_endpoints,
    ) {
        (None, false, false) => None,
        (c, ca, endpoints) => Some(convert::azure_key_vault_patch(
            c.as_ref().unwrap_or(&Default::default()),
            ca,
            endpoints,
        )?),
    };
    let google = match (&r.google_cloud_kms, r.google_cloud_kms_clear_endpoint) {
        (None, false) => None,
        (c, clear) => Some(convert::google_cloud_kms_patch(
            c.as_ref().unwrap_or(&Default::default()),
            clear,
        )?),
    };
    let secrets = [
        r.pkcs11_credentials
            .map(|c| Secret::Pkcs11Pin(SecretString::from(c.pin))),
        r.aws_kms_credentials
            .map(|c| Secret::AwsSecretAccessKey(SecretString::from(c.secret_access_key))),
        r.xks_credentials.map(xks_secret),
        r.ibm_kms_credentials
            .map(|c| Secret::IbmApiKey(SecretString::from(c.api_key))),
        r.azure_key_vault_credentials
            .map(|c| Secret::AzureClientSecret(SecretString::from(c.client_secret))),
        r.google_cloud_kms_credentials.map(|c| {
            Secret::GoogleServiceAccountKey(SecretString::from(c.service_account_key_json))
        }),
    ];
    let mut given = secrets.into_iter().flatten();
    let secret = given.next();
    if given.next().is_some() {
        return Err(invalid(
            "credentials",
            "give the credentials of the keystore's type only (one of pkcs11_credentials, aws_kms_credentials, xks_credentials, ibm_kms_credentials, azure_key_vault_credentials, google_cloud_kms_credentials)",
        ));
    }
    Ok(UpdateKeystore {
        name: r.name,
        description: r.description,
        config: [
            r.pkcs11
                .as_ref()
                .map(convert::pkcs11_patch)
                .transpose()?
                .map(ConfigPatch::Pkcs11),
            aws_kms.map(ConfigPatch::AwsKms),
            xks.map(ConfigPatch::Xks),
            ibm_kms.map(ConfigPatch::IbmKms),
            azure.map(ConfigPatch::AzureKeyVault),
            google.map(ConfigPatch::GoogleCloudKms),
        ]
        .into_iter()
        .flatten()
        .collect(),
        secret,
    })
}

#[tonic::async_trait]
impl KeystoreService for Keystores {
    async fn create_keystore(
        &self,
        req: Request<pb::CreateKeystoreRequest>,
    ) -> Result<Response<pb::Keystore>, Status> {
        let vault = req.get_ref().vault_id.clone();
        let call = Call::begin(&self.0, &req, Action::CreateKeystore, Scope::Vault(vault)).await?;
        let r = create_request(req.into_inner())?;
        let k = call
            .finish(&self.0, self.0.create_keystore(r).await, created)
            .await?;
        Ok(Response::new(convert::keystore(&k)))
    }

    async fn get_keystore(
        &self,
        req: Request<pb::GetKeystoreRequest>,
    ) -> Result<Response<pb::Keystore>, Status> {
        let id = req.get_ref().id.clone();
        let call = Call::begin(
            &self.0,
            &req,
            Action::GetKeystore,
            Scope::Keystore(id.clone()),
        )
        .await?;
        let k = call
            .finish(&self.0, self.0.get_keystore(id).await, none)
            .await?;
        Ok(Response::new(convert::keystore(&k)))
    }

    async fn describe_keystores(
        &self,
        req: Request<pb::DescribeKeystoresRequest>,
    ) -> Result<Response<pb::DescribeKeystoresResponse>, Status> {
        let vault = req.get_ref().vault_id.clone();
        let call = if vault.is_empty() {
            Call::begin_list(&req, Action::DescribeKeystores)?
        } else {
            Call::begin(
                &self.0,
                &req,
                Action::DescribeKeystores,
                Scope::Vault(vault),
            )
            .await?
        };
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
            keystores: l
                .items
                .iter()
                .filter(|k| call.may_see(&self.0, &k.vault_id))
                .map(convert::keystore)
                .collect(),
            next_page_token: l.next_page_token,
        }))
    }

    async fn update_keystore(
        &self,
        req: Request<pb::UpdateKeystoreRequest>,
    ) -> Result<Response<pb::Keystore>, Status> {
        let id = req.get_ref().id.clone();
        let call = Call::begin(&self.0, &req, Action::UpdateKeystore, Scope::Keystore(id)).await?;
        let r = req.into_inner();
        let id = r.id.clone();
        let update = update_request(r)?;
        let k = call
            .finish(&self.0, self.0.update_keystore(id, update).await, none)
            .await?;
        Ok(Response::new(convert::keystore(&k)))
    }

    async fn delete_keystore(
        &self,
        req: Request<pb::DeleteKeystoreRequest>,
    ) -> Result<Response<pb::DeleteKeystoreResponse>, Status> {
        let id = req.get_ref().id.clone();
        let call = Call::begin(
            &self.0,
            &req,
            Action::DeleteKeystore,
            Scope::Keystore(id.clone()),
        )
        .await?;
        call.finish(&self.0, self.0.delete_keystore(id).await, none)
            .await?;
        Ok(Response::new(pb::DeleteKeystoreResponse {}))
    }

    async fn connect_keystore(
        &self,
        req: Request<pb::ConnectKeystoreRequest>,
    ) -> Result<Response<pb::Keystore>, Status> {
        let id = req.get_ref().id.clone();
        let call = Call::begin(
            &self.0,
            &req,
            Action::ConnectKeystore,
            Scope::Keystore(id.clone()),
        )
        .await?;
        let k = call
            .finish(&self.0, self.0.connect_keystore(id).await, none)
            .await?;
        Ok(Response::new(convert::keystore(&k)))
    }

    async fn disconnect_keystore(
        &self,
        req: Request<pb::DisconnectKeystoreRequest>,
    ) -> Result<Response<pb::Keystore>, Status> {
        let id = req.get_ref().id.clone();
        let call = Call::begin(
            &self.0,
            &req,
            Action::DisconnectKeystore,
            Scope::Keystore(id),
        )
        .await?;
        let r = req.into_inner();
        let opts = DisconnectOptions {
            uninstall_keys: r.uninstall_keys,
            force: r.force,
        };
        let k = call
            .finish(&self.0, self.0.disconnect_keystore(r.id, opts).await, none)
            .await?;
        Ok(Response::new(convert::keystore(&k)))
    }

    async fn test_keystore_connection(
        &self,
        req: Request<pb::TestKeystoreConnectionRequest>,
    ) -> Result<Response<pb::TestKeystoreConnectionResponse>, Status> {
        use pb::test_keystore_connection_request::Subject;
        let scope = match &req.get_ref().subject {
            Some(Subject::Id(id)) => Scope::Keystore(id.clone()),
            Some(Subject::Candidate(c)) => Scope::Vault(c.vault_id.clone()),
            None => return Err(invalid("subject", "give either id or candidate")),
        };
        let call = Call::begin(&self.0, &req, Action::TestKeystoreConnection, scope).await?;
        let outcome = match req.into_inner().subject {
            Some(Subject::Id(id)) => self.0.test_keystore(id).await,
            Some(Subject::Candidate(c)) => self.0.test_keystore_candidate(create_request(c)?).await,
            None => return Err(invalid("subject", "give either id or candidate")),
        };
        let outcome = call.finish(&self.0, outcome, none).await?;
        let denied_permissions = outcome.denied_permissions;
        Ok(Response::new(match outcome.result {
            Ok(()) => pb::TestKeystoreConnectionResponse {
                ok: true,
                error_code: 0,
                message: String::new(),
                denied_permissions,
            },
            Err(e) => pb::TestKeystoreConnectionResponse {
                ok: false,
                error_code: convert::error_code_pb(e.code) as i32,
                message: e.message,
                denied_permissions,
            },
        }))
    }
}
