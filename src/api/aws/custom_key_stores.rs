//! Create/Connect/Disconnect/Describe/Update/DeleteCustomKeyStore. An AWS_CLOUDHSM key
//! store is a pkcs11 keystore in the caller's vault: CloudHsmClusterId is the token
//! label, KeyStorePassword its user PIN, TrustAnchorCertificate kept with it. An
//! EXTERNAL_KEY_STORE is an xks keystore in the caller's vault: XksProxyUriEndpoint and
//! XksProxyUriPath name the proxy, XksProxyAuthenticationCredential is its SigV4
//! credential, and requests to it are signed for the caller's region, as AWS KMS signs.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::{exception, Context};
use super::model::{self, check_len, required};
use super::wire::{decode, AwsError, Exception, Sensitive};
use super::{Caller, Endpoint};
use crate::api::guard::{none, Call};
use crate::domain::{
    validate_name, Action, ConnectionState, Keystore, KeystoreAction, KeystoreConfig, KeystoreType,
    TokenRef,
};
use crate::service::{
    ConfigPatch, CreateKeystore, DisconnectOptions, KeystoreFilter, Scope, Secret, ServiceError,
    UpdateKeystore, XksPatch,
};

fn mgmt(e: ServiceError) -> AwsError {
    exception(e, Context::Management)
}

/// How long ConnectCustomKeyStore waits to see CONNECTING recorded before it answers.
const CONNECT_VISIBLE: Duration = Duration::from_secs(2);

/// The fields of the external key store type, refused on AWS_CLOUDHSM stores.
const XKS_FIELDS: [&str; 4] = [
    "XksProxyUriEndpoint",
    "XksProxyUriPath",
    "XksProxyVpcEndpointServiceName",
    "XksProxyConnectivity",
];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateInput {
    custom_key_store_name: Option<String>,
    cloud_hsm_cluster_id: Option<String>,
    trust_anchor_certificate: Option<String>,
    key_store_password: Option<Sensitive>,
    custom_key_store_type: Option<String>,
    xks_proxy_uri_endpoint: Option<String>,
    xks_proxy_uri_path: Option<String>,
    xks_proxy_vpc_endpoint_service_name: Option<Value>,
    xks_proxy_authentication_credential: Option<XksCredential>,
    xks_proxy_connectivity: Option<String>,
}

/// XksProxyAuthenticationCredential: the secret is write-only, as KeyStorePassword.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XksCredential {
    access_key_id: Option<String>,
    raw_secret_access_key: Option<Sensitive>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IdInput {
    custom_key_store_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInput {
    custom_key_store_id: Option<String>,
    custom_key_store_name: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateInput {
    custom_key_store_id: Option<String>,
    new_custom_key_store_name: Option<String>,
    key_store_password: Option<Sensitive>,
    cloud_hsm_cluster_id: Option<String>,
    xks_proxy_uri_endpoint: Option<String>,
    xks_proxy_uri_path: Option<String>,
    xks_proxy_vpc_endpoint_service_name: Option<Value>,
    xks_proxy_authentication_credential: Option<XksCredential>,
    xks_proxy_connectivity: Option<String>,
}

/// AWS's CustomKeyStoreName rule (1–256), then keyorch's name rule, both naming `field`.
fn store_name(field: &str, name: &str) -> Result<(), AwsError> {
    check_len(field, name, 1, 256)?;
    validate_name(field, name).map_err(|e| AwsError::validation(field, e))
}

/// AWS's KeyStorePassword rule: 7 to 32 characters. The message never holds it.
fn password(p: &Sensitive) -> Result<(), AwsError> {
    use secrecy::ExposeSecret;
    check_len("KeyStorePassword", p.0.expose_secret(), 7, 32)
}

/// The first of the external key store fields that is given, by its AWS name.
fn xks_given(fields: [bool; 5]) -> Option<&'static str> {
    const NAMES: [&str; 5] = [
        XKS_FIELDS[0],
        XKS_FIELDS[1],
        XKS_FIELDS[2],
        "XksProxyAuthenticationCredential",
        XKS_FIELDS[3],
    ];
    fields
        .iter()
        .zip(NAMES)
        .find(|(given, _)| **given)
        .map(|(_, n)| n)
}

/// XksProxyConnectivity: keyorch reaches proxies at their URI endpoint (PUBLIC_ENDPOINT);
/// there is no VPC here to reach an endpoint service through.
fn connectivity(given: &str) -> Result<(), AwsError> {
    match given {
        "PUBLIC_ENDPOINT" => Ok(()),
        "VPC_ENDPOINT_SERVICE" => Err(AwsError::unsupported(
            "XksProxyConnectivity VPC_ENDPOINT_SERVICE is not supported: keyorch reaches XKS proxies at their URI endpoint; use PUBLIC_ENDPOINT",
        )),
        _ => Err(AwsError::validation(
            "XksProxyConnectivity",
            "Member must satisfy enum value set: [VPC_ENDPOINT_SERVICE, PUBLIC_ENDPOINT]",
        )),
    }
}

/// AWS's XksProxyAuthenticationCredential rules (AccessKeyId 20–30, RawSecretAccessKey
/// 43–64 characters; keyorch's character rules follow in the domain). The message never
/// holds the secret.
fn xks_secret(c: XksCredential) -> Result<Secret, AwsError> {
    use secrecy::ExposeSecret;
    let access_key_id = required("AccessKeyId", &c.access_key_id, 20, 30)?.to_string();
    let secret = c
        .raw_secret_access_key
        .ok_or_else(|| AwsError::required("RawSecretAccessKey"))?;
    check_len("RawSecretAccessKey", secret.0.expose_secret(), 43, 64)?;
    Ok(Secret::Xks {
        access_key_id,
        secret_access_key: secret.0,
        client_key_pem: None,
    })
}

/// Whether a keystore is a custom key store of the AWS endpoint's kinds.
fn is_custom_store(ks: &Keystore) -> bool {
    matches!(ks.keystore_type(), KeystoreType::Pkcs11 | KeystoreType::Xks)
}

/// One `CustomKeyStores` entry. Never the password.
fn entry(ks: &Keystore) -> Value {
    let mut e = json!({
        "CustomKeyStoreId": ks.id,
        "CustomKeyStoreName": ks.name,
        "CustomKeyStoreType": "AWS_CLOUDHSM",
        "ConnectionState": model::connection_state(ks.state),
        "CreationDate": model::epoch_seconds(ks.created_at),
    });
    match &ks.config {
        KeystoreConfig::Pkcs11 { token, .. } => {
            let id = match token {
                TokenRef::Label(l) | TokenRef::Serial(l) => l,
            };
            e["CloudHsmClusterId"] = json!(id);
        }
        KeystoreConfig::Xks {
            uri_endpoint,
            uri_path,
            access_key_id,
            ..
        } => {
            e["CustomKeyStoreType"] = json!("EXTERNAL_KEY_STORE");
            e["XksProxyConfiguration"] = json!({
                "Connectivity": "PUBLIC_ENDPOINT",
                "AccessKeyId": access_key_id,
                "UriEndpoint": uri_endpoint,
                "UriPath": uri_path,
            });
        }
        _ => {}
    }
    if let Some(pem) = &ks.trust_anchor_certificate {
        e["TrustAnchorCertificate"] = json!(pem);
    }
    if ks.state == ConnectionState::Failed {
        if let Some(err) = &ks.error {
            e["ConnectionErrorCode"] = json!(model::connection_error_code(err.code));
        }
    }
    e
}

impl Endpoint {
    /// The keystore `id` if it is a custom key store of the caller (a pkcs11 keystore in
    /// its vault); anything else is CustomKeyStoreNotFoundException, as another account's
    /// store is in AWS.
    /// Authorizes `action` on the caller's custom key store `id` (a denial is audited) and
    /// loads it ([`Self::own_store`]).
    async fn authorized_store(
        &self,
        caller: &Caller<'_>,
        id: &str,
        action: Action,
    ) -> Result<(Call, Keystore), AwsError> {
        let call = Call::authorize(
            &self.services,
            caller.principal.clone(),
            action,
            Scope::Keystore(id.to_string()),
        )
        .await
        .map_err(mgmt)?;
        let ks = self.own_store(caller, id).await?;
        Ok((call, ks))
    }

    pub(super) async fn own_store(
        &self,
        caller: &Caller<'_>,
        id: &str,
    ) -> Result<Keystore, AwsError> {
        let not_found = || {
            AwsError::new(
                Exception::CustomKeyStoreNotFound,
                format!("Custom key store {id} is not found"),
            )
        };
        let ks = match self.services.get_keystore(id.to_string()).await {
            Ok(ks) => ks,
            Err(ServiceError::Domain(crate::domain::DomainError::KeystoreNotFound(_))) => {
                return Err(not_found())
            }
            Err(e) => return Err(mgmt(e)),
        };
        let vault = self.caller_vault(caller, false).await?;
        if Some(&ks.vault_id) != vault.as_ref() || !is_custom_store(&ks) {
            return Err(not_found());
        }
        Ok(ks)
    }

    pub(super) async fn create_custom_key_store(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: CreateInput = decode(body)?;
        let name = required("CustomKeyStoreName", &r.custom_key_store_name, 1, 256)?;
        store_name("CustomKeyStoreName", name)?;
        match r.custom_key_store_type.as_deref().unwrap_or("AWS_CLOUDHSM") {
            "AWS_CLOUDHSM" => {}
            "EXTERNAL_KEY_STORE" => {
                let name = name.to_string();
                return self.create_external_key_store(caller, r, name).await;
            }
            _ => {
                return Err(AwsError::validation(
                    "CustomKeyStoreType",
                    "Member must satisfy enum value set: [AWS_CLOUDHSM, EXTERNAL_KEY_STORE]",
                ))
            }
        }
        if let Some(f) = xks_given([
            r.xks_proxy_uri_endpoint.is_some(),
            r.xks_proxy_uri_path.is_some(),
            r.xks_proxy_vpc_endpoint_service_name.is_some(),
            r.xks_proxy_authentication_credential.is_some(),
            r.xks_proxy_connectivity.is_some(),
        ]) {
            return Err(AwsError::validation(
                f,
                "Member applies only to CustomKeyStoreType EXTERNAL_KEY_STORE",
            ));
        }
        let cluster = required("CloudHsmClusterId", &r.cloud_hsm_cluster_id, 19, 24)?;
        let anchor = required(
            "TrustAnchorCertificate",
            &r.trust_anchor_certificate,
            1,
            5000,
        )?;
        crate::domain::validate_trust_anchor("TrustAnchorCertificate", anchor)
            .map_err(|e| AwsError::validation("TrustAnchorCertificate", e))?;
        let pin = r
            .key_store_password
            .ok_or_else(|| AwsError::required("KeyStorePassword"))?;
        password(&pin)?;
        let vault = self
            .caller_vault(caller, true)
            .await?
            .ok_or_else(|| AwsError::internal("the caller's vault is not available"))?;
        let call = Call::authorize(
            &self.services,
            caller.principal.clone(),
            Action::CreateKeystore,
            Scope::Vault(vault.clone()),
        )
        .await
        .map_err(mgmt)?;
        // AWS: one custom key store per cluster in an account (here: per token in a vault).
        let same_token = self
            .services
            .describe_keystores(
                KeystoreFilter {
                    vault_id: Some(vault.clone()),
                    keystore_type: Some(KeystoreType::Pkcs11),
                    ..KeystoreFilter::default()
                },
                crate::domain::Page {
                    size: usize::MAX,
                    after: None,
                },
            )
            .await
            .map_err(mgmt)?
            .items
            .into_iter()
            .find(|k| {
                matches!(&k.config, KeystoreConfig::Pkcs11 { token: TokenRef::Label(l), .. } if l == cluster)
            });
        if let Some(other) = same_token {
            let e = AwsError::new(
                Exception::CloudHsmClusterInUse,
                format!(
                    "CloudHsmClusterId {cluster} is already associated with custom key store {}",
                    other.id
                ),
            );
            let _ = call
                .conclude::<()>(
                    &self.services,
                    Err(ServiceError::Domain(crate::domain::DomainError::invalid(
                        "CloudHsmClusterId",
                        e.message.clone(),
                    ))),
                    none,
                )
                .await;
            return Err(e);
        }
        let req = CreateKeystore {
            vault_id: vault,
            name: name.to_string(),
            description: format!("AWS_CLOUDHSM custom key store (CloudHsmClusterId {cluster})"),
            keystore_type: KeystoreType::Pkcs11,
            config: Some(KeystoreConfig::Pkcs11 {
                module_path: self.pkcs11_module.clone(),
                token: TokenRef::Label(cluster.to_string()),
            }),
            secret: Some(Secret::Pkcs11Pin(pin.0)),
            trust_anchor_certificate: Some(anchor.to_string()),
            connect: false,
        };
        self.create_store(caller, call, req).await
    }

    /// Creates the keystore behind a CreateCustomKeyStore and concludes its audited call.
    async fn create_store(
        &self,
        caller: &Caller<'_>,
        call: Call,
        req: CreateKeystore,
    ) -> Result<Value, AwsError> {
        let created = self.services.create_keystore(req).await;
        if let Err(ServiceError::Domain(crate::domain::DomainError::VaultNotFound(_))) = &created {
            // The vault was deleted since it was resolved: resolve it again next time.
            self.forget_vault(caller);
        }
        let ks = call
            .conclude(&self.services, created, |k: &Keystore| {
                Some((k.id.clone(), k.vault_id.clone()))
            })
            .await
            .map_err(mgmt)?;
        Ok(json!({ "CustomKeyStoreId": ks.id }))
    }

    /// CreateCustomKeyStore of an EXTERNAL_KEY_STORE: an xks keystore (docs/keystores.md
    /// §8), DISCONNECTED, its requests signed for the caller's region.
    async fn create_external_key_store(
        &self,
        caller: &Caller<'_>,
        r: CreateInput,
        name: String,
    ) -> Result<Value, AwsError> {
        for (given, field) in [
            (r.cloud_hsm_cluster_id.is_some(), "CloudHsmClusterId"),
            (
                r.trust_anchor_certificate.is_some(),
                "TrustAnchorCertificate",
            ),
            (r.key_store_password.is_some(), "KeyStorePassword"),
        ] {
            if given {
                return Err(AwsError::validation(
                    field,
                    "Member applies only to CustomKeyStoreType AWS_CLOUDHSM",
                ));
            }
        }
        let uri_endpoint = required("XksProxyUriEndpoint", &r.xks_proxy_uri_endpoint, 10, 128)?;
        let uri_path = required("XksProxyUriPath", &r.xks_proxy_uri_path, 10, 128)?;
        connectivity(required(
            "XksProxyConnectivity",
            &r.xks_proxy_connectivity,
            1,
            64,
        )?)?;
        if r.xks_proxy_vpc_endpoint_service_name.is_some() {
            return Err(AwsError::validation(
                "XksProxyVpcEndpointServiceName",
                "Member applies only to XksProxyConnectivity VPC_ENDPOINT_SERVICE",
            ));
        }
        let secret = xks_secret(
            r.xks_proxy_authentication_credential
                .ok_or_else(|| AwsError::required("XksProxyAuthenticationCredential"))?,
        )?;
        let Secret::Xks { access_key_id, .. } = &secret else {
            return Err(AwsError::internal("an xks credential was expected"));
        };
        let config = KeystoreConfig::Xks {
            uri_endpoint: uri_endpoint.to_string(),
            uri_path: uri_path.to_string(),
            ca_cert_pem: None,
            client_cert_pem: None,
            access_key_id: access_key_id.clone(),
            signing_region: Some(caller.region.clone()),
        };
        let vault = self
            .caller_vault(caller, true)
            .await?
            .ok_or_else(|| AwsError::internal("the caller's vault is not available"))?;
        let call = Call::authorize(
            &self.services,
            caller.principal.clone(),
            Action::CreateKeystore,
            Scope::Vault(vault.clone()),
        )
        .await
        .map_err(mgmt)?;
        let req = CreateKeystore {
            vault_id: vault,
            name,
            description: "EXTERNAL_KEY_STORE custom key store".into(),
            keystore_type: KeystoreType::Xks,
            config: Some(config),
            secret: Some(secret),
            trust_anchor_certificate: None,
            connect: false,
        };
        self.create_store(caller, call, req).await
    }

    pub(super) async fn connect_custom_key_store(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: IdInput = decode(body)?;
        let id = required("CustomKeyStoreId", &r.custom_key_store_id, 1, 64)?.to_string();
        let (call, ks) = self
            .authorized_store(caller, &id, Action::ConnectKeystore)
            .await?;
        // Refusals (FAILED, DISCONNECTING) answer at once; the checks run in the background.
        if let Err(e) = ks.require(KeystoreAction::Connect) {
            let e = call
                .conclude::<()>(&self.services, Err(e.into()), none)
                .await
                .unwrap_err();
            return Err(mgmt(e));
        }
        let services = self.services.clone();
        let target = id.clone();
        tokio::spawn(async move {
            let outcome = services.connect_keystore(target.clone()).await;
            match call.conclude(&services, outcome, none).await {
                Ok(ks) => {
                    tracing::info!(keystore = %target, state = %ks.state, "AWS endpoint: ConnectCustomKeyStore finished")
                }
                Err(e) => {
                    tracing::warn!(keystore = %target, "AWS endpoint: ConnectCustomKeyStore failed: {e}")
                }
            }
        });
        // AWS answers {} with the store already CONNECTING: wait (briefly) until the
        // background connect has recorded that, so a Describe right after sees it.
        if ks.state == ConnectionState::Disconnected {
            let deadline = Instant::now() + CONNECT_VISIBLE;
            while Instant::now() < deadline {
                match self.services.get_keystore(id.clone()).await {
                    Ok(now) if now.state != ks.state => break,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    Err(_) => break,
                }
            }
        }
        Ok(json!({}))
    }

    pub(super) async fn disconnect_custom_key_store(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: IdInput = decode(body)?;
        let id = required("CustomKeyStoreId", &r.custom_key_store_id, 1, 64)?.to_string();
        let (call, _) = self
            .authorized_store(caller, &id, Action::DisconnectKeystore)
            .await?;
        // AWS's disconnect is the emergency switch: it never refuses to strand keys.
        let opts = DisconnectOptions {
            uninstall_keys: false,
            force: true,
        };
        let outcome = self.services.disconnect_keystore(id, opts).await;
        call.conclude(&self.services, outcome, none)
            .await
            .map_err(mgmt)?;
        Ok(json!({}))
    }

    pub(super) async fn describe_custom_key_stores(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: DescribeInput = decode(body)?;
        if let Some(id) = &r.custom_key_store_id {
            check_len("CustomKeyStoreId", id, 1, 64)?;
        }
        if let Some(name) = &r.custom_key_store_name {
            check_len("CustomKeyStoreName", name, 1, 256)?;
        }
        let page = model::page(r.limit, r.marker.as_deref())?;
        match (&r.custom_key_store_id, &r.custom_key_store_name) {
            (Some(_), Some(_)) => Err(AwsError::validation(
                "CustomKeyStoreName",
                "Member cannot be given together with customKeyStoreId: give one or neither",
            )),
            (Some(id), None) => {
                Call::authorize(
                    &self.services,
                    caller.principal.clone(),
                    Action::GetKeystore,
                    Scope::Keystore(id.clone()),
                )
                .await
                .map_err(mgmt)?;
                let ks = self.own_store(caller, id).await?;
                Ok(json!({ "CustomKeyStores": [entry(&ks)], "Truncated": false }))
            }
            (None, name) => {
                let vault = self.caller_vault(caller, false).await?;
                Call::authorize(
                    &self.services,
                    caller.principal.clone(),
                    Action::DescribeKeystores,
                    vault.clone().map_or(Scope::Global, Scope::Vault),
                )
                .await
                .map_err(mgmt)?;
                let Some(vault) = vault else {
                    if let Some(name) = name {
                        return Err(AwsError::new(
                            Exception::CustomKeyStoreNotFound,
                            format!("Custom key store {name} is not found"),
                        ));
                    }
                    return Ok(json!({ "CustomKeyStores": [], "Truncated": false }));
                };
                // Both kinds of custom key store; keystores of other types are left out of
                // the page (which may then hold fewer than Limit entries, as AWS allows).
                let mut listing = self
                    .services
                    .describe_keystores(
                        KeystoreFilter {
                            vault_id: Some(vault),
                            name: name.clone(),
                            keystore_type: None,
                            state: None,
                        },
                        page,
                    )
                    .await
                    .map_err(mgmt)?;
                listing.items.retain(is_custom_store);
                if let Some(name) = name {
                    if listing.items.is_empty() {
                        return Err(AwsError::new(
                            Exception::CustomKeyStoreNotFound,
                            format!("Custom key store {name} is not found"),
                        ));
                    }
                }
                let stores: Vec<Value> = listing.items.iter().map(entry).collect();
                let mut out = json!({
                    "CustomKeyStores": stores,
                    "Truncated": !listing.next_page_token.is_empty(),
                });
                if !listing.next_page_token.is_empty() {
                    out["NextMarker"] = json!(listing.next_page_token);
                }
                Ok(out)
            }
        }
    }

    pub(super) async fn update_custom_key_store(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: UpdateInput = decode(body)?;
        let id = required("CustomKeyStoreId", &r.custom_key_store_id, 1, 64)?.to_string();
        if let Some(n) = &r.new_custom_key_store_name {
            store_name("NewCustomKeyStoreName", n)?;
        }
        if let Some(c) = &r.cloud_hsm_cluster_id {
            check_len("CloudHsmClusterId", c, 19, 24)?;
        }
        if let Some(p) = &r.key_store_password {
            password(p)?;
        }
        let (call, ks) = self
            .authorized_store(caller, &id, Action::UpdateKeystore)
            .await?;
        if ks.keystore_type() == KeystoreType::Xks {
            return self.update_external_key_store(call, id, r).await;
        }
        if let Some(f) = xks_given([
            r.xks_proxy_uri_endpoint.is_some(),
            r.xks_proxy_uri_path.is_some(),
            r.xks_proxy_vpc_endpoint_service_name.is_some(),
            r.xks_proxy_authentication_credential.is_some(),
            r.xks_proxy_connectivity.is_some(),
        ]) {
            return Err(AwsError::validation(
                f,
                "Member applies only to external key stores; this is an AWS_CLOUDHSM key store",
            ));
        }
        // AWS: every property of an AWS CloudHSM key store changes only while DISCONNECTED.
        if ks.state != ConnectionState::Disconnected {
            let e = crate::domain::DomainError::KeystoreState {
                id: id.clone(),
                state: ks.state,
                action: KeystoreAction::UpdateConnectionConfig,
                allowed: vec![ConnectionState::Disconnected],
            };
            let e = call
                .conclude::<()>(&self.services, Err(e.into()), none)
                .await
                .unwrap_err();
            return Err(AwsError::new(
                Exception::CustomKeyStoreInvalidState,
                format!("{e}; UpdateCustomKeyStore needs the custom key store DISCONNECTED"),
            ));
        }
        if let (Some(c), KeystoreConfig::Pkcs11 { token, .. }) =
            (&r.cloud_hsm_cluster_id, &ks.config)
        {
            if token != &TokenRef::Label(c.clone()) {
                return Err(AwsError::new(
                    Exception::CloudHsmClusterNotRelated,
                    format!("CloudHsmClusterId {c} is not the token of custom key store {id}: keyorch locks the token a key store names (its keys live there)"),
                ));
            }
        }
        let update = UpdateKeystore {
            name: r.new_custom_key_store_name.clone(),
            secret: r.key_store_password.map(|p| Secret::Pkcs11Pin(p.0)),
            ..UpdateKeystore::default()
        };
        let outcome = self.services.update_keystore(id, update).await;
        call.conclude(&self.services, outcome, none)
            .await
            .map_err(mgmt)?;
        Ok(json!({}))
    }

    /// UpdateCustomKeyStore of an EXTERNAL_KEY_STORE, by keyorch's rules for xks keystores
    /// (docs/keystores.md §8.1): the name and the credential change in any state (AWS
    /// rotates XksProxyAuthenticationCredential on a connected store too); the URI endpoint
    /// and path until the first successful connect, locked after it (the proxy's identity:
    /// a ValidationException naming the field).
    async fn update_external_key_store(
        &self,
        call: Call,
        id: String,
        r: UpdateInput,
    ) -> Result<Value, AwsError> {
        for (given, field) in [
            (r.cloud_hsm_cluster_id.is_some(), "CloudHsmClusterId"),
            (r.key_store_password.is_some(), "KeyStorePassword"),
        ] {
            if given {
                return Err(AwsError::validation(
                    field,
                    "Member applies only to AWS_CLOUDHSM key stores; this is an external key store",
                ));
            }
        }
        if let Some(e) = &r.xks_proxy_uri_endpoint {
            check_len("XksProxyUriEndpoint", e, 10, 128)?;
        }
        if let Some(p) = &r.xks_proxy_uri_path {
            check_len("XksProxyUriPath", p, 10, 128)?;
        }
        if let Some(c) = &r.xks_proxy_connectivity {
            connectivity(c)?;
        }
        if r.xks_proxy_vpc_endpoint_service_name.is_some() {
            return Err(AwsError::validation(
                "XksProxyVpcEndpointServiceName",
                "Member applies only to XksProxyConnectivity VPC_ENDPOINT_SERVICE",
            ));
        }
        let secret = r
            .xks_proxy_authentication_credential
            .map(xks_secret)
            .transpose()?;
        let xks =
            (r.xks_proxy_uri_endpoint.is_some() || r.xks_proxy_uri_path.is_some()).then(|| {
                XksPatch {
                    uri_endpoint: r.xks_proxy_uri_endpoint.clone(),
                    uri_path: r.xks_proxy_uri_path.clone(),
                    ..XksPatch::default()
                }
            });
        let update = UpdateKeystore {
            name: r.new_custom_key_store_name.clone(),
            config: xks.map(ConfigPatch::Xks).into_iter().collect(),
            secret,
            ..UpdateKeystore::default()
        };
        let outcome = self.services.update_keystore(id, update).await;
        call.conclude(&self.services, outcome, none)
            .await
            .map_err(mgmt)?;
        Ok(json!({}))
    }

    pub(super) async fn delete_custom_key_store(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: IdInput = decode(body)?;
        let id = required("CustomKeyStoreId", &r.custom_key_store_id, 1, 64)?.to_string();
        let (call, _) = self
            .authorized_store(caller, &id, Action::DeleteKeystore)
            .await?;
        let outcome = self.services.delete_keystore(id).await;
        call.conclude(&self.services, outcome, none)
            .await
            .map_err(mgmt)?;
        Ok(json!({}))
    }
}
