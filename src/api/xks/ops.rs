//! The four XKS operations: GetHealthStatus, GetKeyMetadata, Encrypt and Decrypt, each
//! decoding its JSON body (base64 fields, the required requestMetadata) and answering in
//! the spec's shape.

use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::wire::{exception, XksError, XksException};
use super::{Endpoint, Proxy, ServedKey, HEALTH_CACHE};
use crate::api::aws::wire::{blob, decode as decode_json};
use crate::api::guard::Call;
use crate::domain::xks::{valid_external_key_id, XksUsage};
use crate::domain::{Action, KeySpec, KeyState, Principal};
use crate::secret::SecretBytes;
use crate::service::{Scope, ServiceError, XksCiphertext, XksKey};

/// requestMetadata: what every call must carry (which fields depend on the operation).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RequestMetadata {
    aws_principal_arn: Option<String>,
    kms_key_arn: Option<String>,
    kms_operation: Option<String>,
    kms_request_id: Option<String>,
}

/// The metadata's required fields, in the order the spec lists them.
#[derive(Clone, Copy)]
enum Needs {
    Health,
    Metadata,
    Crypto,
}

fn check_metadata(m: Option<&RequestMetadata>, needs: Needs) -> Result<&str, XksError> {
    let m = m.ok_or_else(|| XksError::required("requestMetadata"))?;
    let present = |v: &Option<String>, name: &str| match v {
        Some(s) if !s.is_empty() => Ok(()),
        _ => Err(XksError::required(&format!("requestMetadata.{name}"))),
    };
    if !matches!(needs, Needs::Health) {
        present(&m.aws_principal_arn, "awsPrincipalArn")?;
    }
    if matches!(needs, Needs::Crypto) {
        present(&m.kms_key_arn, "kmsKeyArn")?;
    }
    present(&m.kms_operation, "kmsOperation")?;
    present(&m.kms_request_id, "kmsRequestId")?;
    Ok(m.kms_request_id.as_deref().unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataOnly {
    request_metadata: Option<RequestMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptInput {
    request_metadata: Option<RequestMetadata>,
    #[serde(default, deserialize_with = "blob::optional")]
    plaintext: Option<Zeroizing<Vec<u8>>>,
    encryption_algorithm: Option<String>,
    #[serde(default, deserialize_with = "blob::optional")]
    additional_authenticated_data: Option<Zeroizing<Vec<u8>>>,
    ciphertext_data_integrity_value_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecryptInput {
    request_metadata: Option<RequestMetadata>,
    #[serde(default, deserialize_with = "blob::optional")]
    ciphertext: Option<Zeroizing<Vec<u8>>>,
    #[serde(default, deserialize_with = "blob::optional")]
    ciphertext_metadata: Option<Zeroizing<Vec<u8>>>,
    encryption_algorithm: Option<String>,
    #[serde(default, deserialize_with = "blob::optional")]
    additional_authenticated_data: Option<Zeroizing<Vec<u8>>>,
    #[serde(default, deserialize_with = "blob::optional")]
    authentication_tag: Option<Zeroizing<Vec<u8>>>,
    #[serde(default, deserialize_with = "blob::optional")]
    initialization_vector: Option<Zeroizing<Vec<u8>>>,
}

/// A JSON body, its errors as ValidationException naming the field (never a value).
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, XksError> {
    decode_json(body).map_err(|e| XksError::validation(e.message))
}

fn aes_gcm(alg: Option<&str>) -> Result<(), XksError> {
    match alg {
        None => Err(XksError::required("encryptionAlgorithm")),
        Some("AES_GCM") => Ok(()),
        Some(other) => Err(XksError::validation(format!(
            "encryptionAlgorithm must be AES_GCM, not {other:?}"
        ))),
    }
}

fn to_json(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap_or_default()
}

impl Proxy {
    /// GetHealthStatus: deep (an AES-GCM round trip in the HSM with a test key), cached
    /// for [`HEALTH_CACHE`].
    pub(super) async fn health(&self, body: &[u8]) -> Result<Vec<u8>, XksError> {
        let r: MetadataOnly = decode(body)?;
        let request_id = check_metadata(r.request_metadata.as_ref(), Needs::Health)?;
        tracing::debug!(kms_request_id = request_id, "XKS GetHealthStatus");
        let cached = *self.health.lock().unwrap_or_else(|p| p.into_inner());
        let healthy = match cached {
            Some((at, ok)) if at.elapsed() < HEALTH_CACHE => ok,
            _ => {
                let ok = match self.services.hsm_self_test().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!("XKS health: the HSM self-test failed: {e}");
                        false
                    }
                };
                *self.health.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
                ok
            }
        };
        let token = self.services.hsm_identity();
        Ok(to_json(json!({
            "xksProxyFleetSize": 1,
            "xksProxyVendor": "keyorch",
            "xksProxyModel": format!("keyorchd {}", env!("CARGO_PKG_VERSION")),
            "ekmVendor": token.manufacturer,
            "ekmFleetDetails": [{
                "id": token.serial,
                "model": format!("{} (token {})", token.model, token.label),
                "healthStatus": if healthy { "ACTIVE" } else { "UNAVAILABLE" },
            }],
        })))
    }

    /// The keyorch key an externalKeyId names, and the usages it offers.
    fn served(endpoint: &Endpoint, external: &str) -> Result<ServedKey, XksError> {
        if !valid_external_key_id(external) {
            return Err(XksError::validation(
                "externalKeyId must be 1 to 128 of A-Z a-z 0-9 - . _",
            ));
        }
        Ok(endpoint
            .settings
            .keys
            .get(external)
            .cloned()
            .unwrap_or_else(|| ServedKey {
                key_id: external.to_string(),
                usage: XksUsage::BOTH,
            }))
    }

    /// The caller's permission for `action` on the key (a denial is audited).
    async fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        key_id: &str,
    ) -> Result<(), XksError> {
        Call::authorize(
            &self.services,
            principal.clone(),
            action,
            Scope::Key(key_id.to_string()),
        )
        .await
        .map(drop)
        .map_err(exception)
    }

    /// InvalidKeyUsageException for a name configured without the usage.
    fn usage_refused(external: &str, what: &str) -> XksError {
        XksError::new(
            XksException::InvalidKeyUsage,
            format!("externalKeyId {external} is configured without {what} usage"),
        )
    }

    /// The endpoint's vault id (its name resolved once), or None when it serves any vault.
    async fn vault_id(&self, endpoint: &Endpoint) -> Result<Option<String>, XksError> {
        let Some(wanted) = &endpoint.settings.vault else {
            return Ok(None);
        };
        if let Some(id) = endpoint
            .vault_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(Some(id));
        }
        match self.services.find_vault(wanted.clone()).await {
            Ok(Some(v)) => {
                *endpoint.vault_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.id.clone());
                Ok(Some(v.id))
            }
            // No such vault yet: nothing is in it. An id no key has keeps every key out.
            Ok(None) => Ok(Some(format!("vault-missing:{wanted}"))),
            Err(e) => Err(exception(e)),
        }
    }

    /// GetKeyMetadata.
    pub(super) async fn metadata(
        &self,
        endpoint: &Endpoint,
        principal: &Principal,
        external: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, XksError> {
        let r: MetadataOnly = decode(body)?;
        let request_id = check_metadata(r.request_metadata.as_ref(), Needs::Metadata)?;
        tracing::debug!(
            kms_request_id = request_id,
            key = external,
            "XKS GetKeyMetadata"
        );
        let served = Self::served(endpoint, external)?;
        let id = served.key_id.clone();
        let vault = self.vault_id(endpoint).await?;
        Call::authorize(
            &self.services,
            principal.clone(),
            Action::GetKey,
            Scope::Key(id.clone()),
        )
        .await
        .map_err(exception)?;
        let key = self.services.get_key(id.clone()).await.map_err(exception)?;
        if vault.is_some_and(|v| v != key.vault_id) {
            return Err(exception(ServiceError::Domain(
                crate::domain::DomainError::KeyNotFound(id),
            )));
        }
        // The spec knows AES_256 only; other keys are named as the AWS endpoint names
        // them and offer no usage, so KMS refuses to create an XKS key on them. Neither
        // do keyorch's references to external keys (the proxy serves its HSM's keys only).
        let (spec, usage): (&str, Vec<&str>) = match key.spec {
            KeySpec::Aes256 if key.is_external() => ("AES_256", Vec::new()),
            KeySpec::Aes256 => ("AES_256", served.usage.names()),
            other => (crate::api::aws::model::key_spec(other).0, Vec::new()),
        };
        let status = if key.state == KeyState::Active {
            "ENABLED"
        } else {
            "DISABLED"
        };
        Ok(to_json(json!({
            "keySpec": spec,
            "keyUsage": usage,
            "keyStatus": status,
        })))
    }

    /// Encrypt.
    pub(super) async fn encrypt(
        &self,
        endpoint: &Endpoint,
        principal: &Principal,
        external: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, XksError> {
        let r: EncryptInput = decode(body)?;
        let request_id = check_metadata(r.request_metadata.as_ref(), Needs::Crypto)?;
        tracing::debug!(kms_request_id = request_id, key = external, "XKS Encrypt");
        aes_gcm(r.encryption_algorithm.as_deref())?;
        let cdiv = match r.ciphertext_data_integrity_value_algorithm.as_deref() {
            None => false,
            Some("SHA_256") => true,
            Some(other) => {
                return Err(XksError::validation(format!(
                    "ciphertextDataIntegrityValueAlgorithm must be SHA_256, not {other:?}"
                )))
            }
        };
        let plaintext = r.plaintext.ok_or_else(|| XksError::required("plaintext"))?;
        let aad = r
            .additional_authenticated_data
            .map(|a| a.to_vec())
            .unwrap_or_default();
        let served = Self::served(endpoint, external)?;
        if !served.usage.allows_encrypt(cdiv) {
            // A caller who may not encrypt at all hears that first (and it is audited).
            self.authorize(principal, Action::Encrypt, &served.key_id)
                .await?;
            return Err(Self::usage_refused(
                external,
                if served.usage.encrypt {
                    "DECRYPT (a ciphertextDataIntegrityValue needs the proxy to decrypt its output)"
                } else {
                    "ENCRYPT"
                },
            ));
        }
        let id = served.key_id;
        let vault_id = self.vault_id(endpoint).await?;
        let sealed = self
            .services
            .xks_encrypt(
                principal,
                XksKey {
                    key_id: id,
                    vault_id,
                    aad,
                    metadata: Vec::new(),
                },
                SecretBytes::new(plaintext.to_vec()),
                cdiv,
            )
            .await
            .map_err(exception)?;
        let mut answer = json!({
            "ciphertext": STANDARD.encode(&sealed.ciphertext),
            "initializationVector": STANDARD.encode(&sealed.iv),
            "authenticationTag": STANDARD.encode(&sealed.tag),
        });
        if let Some(v) = sealed.cdiv {
            answer["ciphertextDataIntegrityValue"] = STANDARD.encode(v).into();
        }
        Ok(to_json(answer))
    }

    /// Decrypt.
    pub(super) async fn decrypt(
        &self,
        endpoint: &Endpoint,
        principal: &Principal,
        external: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, XksError> {
        let r: DecryptInput = decode(body)?;
        let request_id = check_metadata(r.request_metadata.as_ref(), Needs::Crypto)?;
        tracing::debug!(kms_request_id = request_id, key = external, "XKS Decrypt");
        aes_gcm(r.encryption_algorithm.as_deref())?;
        let ciphertext = r
            .ciphertext
            .ok_or_else(|| XksError::required("ciphertext"))?;
        let iv = r
            .initialization_vector
            .ok_or_else(|| XksError::required("initializationVector"))?;
        let tag = r
            .authentication_tag
            .ok_or_else(|| XksError::required("authenticationTag"))?;
        let served = Self::served(endpoint, external)?;
        if !served.usage.decrypt {
            self.authorize(principal, Action::Decrypt, &served.key_id)
                .await?;
            return Err(Self::usage_refused(external, "DECRYPT"));
        }
        let id = served.key_id;
        let vault_id = self.vault_id(endpoint).await?;
        let plaintext = self
            .services
            .xks_decrypt(
                principal,
                XksKey {
                    key_id: id,
                    vault_id,
                    aad: r
                        .additional_authenticated_data
                        .map(|a| a.to_vec())
                        .unwrap_or_default(),
                    metadata: r
                        .ciphertext_metadata
                        .map(|m| m.to_vec())
                        .unwrap_or_default(),
                },
                XksCiphertext {
                    ciphertext: ciphertext.to_vec(),
                    iv: iv.to_vec(),
                    tag: tag.to_vec(),
                },
            )
            .await
            .map_err(exception)?;
        let encoded = Zeroizing::new(STANDARD.encode(&plaintext[..]));
        Ok(to_json(json!({ "plaintext": encoded.as_str() })))
    }
}
