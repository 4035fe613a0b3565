//! CreateKey (in a custom key store), DescribeKey, ListKeys, Encrypt, Decrypt,
//! GenerateDataKey and ScheduleKeyDeletion on keyorch's managed keys.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::errors::{exception, Context};
use super::model::{self, check_len};
use super::wire::{blob, decode, AwsError, Exception};
use super::{Caller, Endpoint};
use crate::api::guard::{none, Call};
use crate::domain::{Action, Key, KeySpec, KeyState, KeystoreConfig, TokenRef};
use crate::service::{CreateKey, KeyFilter, Scope, ServiceError};

fn mgmt(e: ServiceError) -> AwsError {
    exception(e, Context::Management)
}

fn crypto(e: ServiceError) -> AwsError {
    exception(e, Context::Crypto)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyInput {
    description: Option<String>,
    key_usage: Option<String>,
    key_spec: Option<String>,
    customer_master_key_spec: Option<String>,
    origin: Option<String>,
    custom_key_store_id: Option<String>,
    policy: Option<String>,
    tags: Option<Vec<TagInput>>,
    multi_region: Option<bool>,
    xks_key_id: Option<String>,
    #[allow(dead_code)]
    bypass_policy_lockout_safety_check: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagInput {
    tag_key: Option<String>,
    tag_value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdInput {
    key_id: Option<String>,
    #[allow(dead_code)]
    grant_tokens: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListKeysInput {
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptInput {
    key_id: Option<String>,
    #[serde(default, deserialize_with = "blob::optional")]
    plaintext: Option<Zeroizing<Vec<u8>>>,
    encryption_context: Option<BTreeMap<String, String>>,
    encryption_algorithm: Option<String>,
    grant_tokens: Option<Vec<String>>,
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptInput {
    key_id: Option<String>,
    #[serde(default, deserialize_with = "blob::optional")]
    ciphertext_blob: Option<Zeroizing<Vec<u8>>>,
    encryption_context: Option<BTreeMap<String, String>>,
    encryption_algorithm: Option<String>,
    grant_tokens: Option<Vec<String>>,
    recipient: Option<Value>,
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyInput {
    key_id: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    number_of_bytes: Option<i64>,
    key_spec: Option<String>,
    grant_tokens: Option<Vec<String>>,
    recipient: Option<Value>,
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduleInput {
    key_id: Option<String>,
    pending_window_in_days: Option<i64>,
}

const KEY_SPECS: &str = "[SYMMETRIC_DEFAULT, RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, ECC_SECG_P256K1, HMAC_224, HMAC_256, HMAC_384, HMAC_512, SM2, ML_DSA_44, ML_DSA_65, ML_DSA_87]";

/// GrantTokens: 0–10 of 1–8192 characters. keyorch has no grants: they are checked and
/// otherwise have no effect (authority comes from the vault roles alone).
fn grant_tokens(tokens: &Option<Vec<String>>) -> Result<(), AwsError> {
    if let Some(t) = tokens {
        if t.len() > 10 {
            return Err(AwsError::validation(
                "GrantTokens",
                "Member must have length less than or equal to 10",
            ));
        }
        for g in t {
            check_len("GrantTokens", g, 1, 8192)?;
        }
    }
    Ok(())
}

fn no_dry_run(dry_run: Option<bool>) -> Result<(), AwsError> {
    if dry_run == Some(true) {
        return Err(AwsError::unsupported(
            "DryRun is not supported by keyorch's AWS endpoint",
        ));
    }
    Ok(())
}

/// EncryptionContext: at most 64 pairs; keys 1–128 (AWS's limit on the whole context is
/// enforced by keyorch's AAD limit of 8 KiB).
fn context(c: &Option<BTreeMap<String, String>>) -> Result<Vec<u8>, AwsError> {
    let Some(c) = c else { return Ok(Vec::new()) };
    for k in c.keys() {
        check_len("EncryptionContext", k, 1, 2048)?;
    }
    let aad = model::context_aad(c);
    if aad.len() > crate::domain::MAX_AAD {
        return Err(AwsError::validation(
            "EncryptionContext",
            format!(
                "Member must encode to at most {} bytes",
                crate::domain::MAX_AAD
            ),
        ));
    }
    Ok(aad)
}

fn symmetric_default(field: &str, alg: &Option<String>) -> Result<(), AwsError> {
    match alg.as_deref() {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some("RSAES_OAEP_SHA_1" | "RSAES_OAEP_SHA_256" | "SM2PKE") => Err(AwsError::new(
            Exception::InvalidKeyUsage,
            format!("{field} must be SYMMETRIC_DEFAULT: keyorch's AWS endpoint encrypts with symmetric keys only"),
        )),
        Some(_) => Err(AwsError::validation(
            field,
            "Member must satisfy enum value set: [SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]",
        )),
    }
}

impl Endpoint {
    /// The key `given` names, if it is in the caller's vault (another vault's key is
    /// NotFoundException, as another account's key is in AWS).
    async fn own_key_id(
        &self,
        caller: &Caller<'_>,
        field: &str,
        given: &str,
    ) -> Result<String, AwsError> {
        let id = model::key_id(field, given)?;
        let resolved = self
            .services
            .resolve(Scope::Key(id.clone()))
            .await
            .map_err(mgmt)?;
        let vault = self.caller_vault(caller, false).await?;
        match resolved.vault_id {
            Some(v) if Some(&v) == vault.as_ref() => Ok(id),
            _ => Err(AwsError::new(
                Exception::NotFound,
                format!(
                    "Key '{}' does not exist",
                    model::key_arn(&caller.region, vault.as_deref().unwrap_or(""), &id)
                ),
            )),
        }
    }

    /// KeyMetadata of a key as a reader sees it.
    async fn metadata(&self, caller: &Caller<'_>, key: &Key) -> Value {
        let (spec, usage) = model::key_spec(key.spec);
        let mut m = json!({
            "AWSAccountId": model::account_id(&key.vault_id),
            "KeyId": key.id,
            "Arn": model::key_arn(&caller.region, &key.vault_id, &key.id),
            "CreationDate": model::epoch_seconds(key.created_at),
            "Enabled": key.state == KeyState::Active,
            "Description": key.description,
            "KeyUsage": usage,
            "KeyState": model::key_state(key),
            "KeyManager": "CUSTOMER",
            "KeySpec": spec,
            "CustomerMasterKeySpec": spec,
            "MultiRegion": false,
            "Origin": "AWS_KMS",
        });
        match key.spec {
            KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256 => {
                m["EncryptionAlgorithms"] = json!(["SYMMETRIC_DEFAULT"]);
            }
            KeySpec::HmacSha256 => m["MacAlgorithms"] = json!(["HMAC_SHA_256"]),
            _ => {}
        }
        if let Some(t) = key.destroyed_at {
            m["DeletionDate"] = json!(model::epoch_seconds(t));
        }
        if let Some((store, external_key_id)) = key.external_ref() {
            m["Origin"] = json!("EXTERNAL_KEY_STORE");
            m["CustomKeyStoreId"] = json!(store);
            m["XksKeyConfiguration"] = json!({ "Id": external_key_id });
            return m;
        }
        // The first pkcs11 target is the key's custom key store (AWS_CLOUDHSM origin).
        for t in &key.targets {
            if let Ok(ks) = self.services.get_keystore(t.clone()).await {
                if let KeystoreConfig::Pkcs11 { token, .. } = &ks.config {
                    let (TokenRef::Label(c) | TokenRef::Serial(c)) = token;
                    m["Origin"] = json!("AWS_CLOUDHSM");
                    m["CustomKeyStoreId"] = json!(ks.id);
                    m["CloudHsmClusterId"] = json!(c);
                    break;
                }
            }
        }
        m
    }

    pub(super) async fn create_key(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: CreateKeyInput = decode(body)?;
        let description = r.description.clone().unwrap_or_default();
        check_len("Description", &description, 0, 8192)?;
        if description.chars().count() > crate::domain::MAX_DESCRIPTION {
            return Err(AwsError::validation(
                "Description",
                format!(
                    "Member must have length less than or equal to {} (keyorch's limit on descriptions)",
                    crate::domain::MAX_DESCRIPTION
                ),
            ));
        }
        match r.key_usage.as_deref() {
            None | Some("ENCRYPT_DECRYPT") => {}
            Some("SIGN_VERIFY" | "GENERATE_VERIFY_MAC" | "KEY_AGREEMENT") => {
                return Err(AwsError::validation(
                    "KeyUsage",
                    "Member must be ENCRYPT_DECRYPT for a key in an AWS CloudHSM key store",
                ))
            }
            Some(_) => {
                return Err(AwsError::validation(
                    "KeyUsage",
                    "Member must satisfy enum value set: [SIGN_VERIFY, ENCRYPT_DECRYPT, GENERATE_VERIFY_MAC, KEY_AGREEMENT]",
                ))
            }
        }
        for (field, spec) in [
            ("KeySpec", &r.key_spec),
            ("CustomerMasterKeySpec", &r.customer_master_key_spec),
        ] {
            match spec.as_deref() {
                None | Some("SYMMETRIC_DEFAULT") => {}
                Some(s) if KEY_SPECS.contains(&format!("{s},")) || KEY_SPECS.contains(&format!("{s}]")) => {
                    return Err(AwsError::unsupported(format!(
                        "{field} {s} is not supported: keys in an AWS CloudHSM key store are SYMMETRIC_DEFAULT (AES-256)"
                    )))
                }
                Some(_) => {
                    return Err(AwsError::validation(
                        field,
                        format!("Member must satisfy enum value set: {KEY_SPECS}"),
                    ))
                }
            }
        }
        if r.policy.is_some() {
            return Err(AwsError::unsupported(
                "key policies are not supported: keyorch authorizes with its vault roles ([[access.grant]]); leave Policy out",
            ));
        }
        if r.multi_region == Some(true) {
            return Err(AwsError::unsupported("multi-Region keys are not supported"));
        }
        if let Some(x) = &r.xks_key_id {
            check_len("XksKeyId", x, 1, 128)?;
            if r.origin.as_deref() != Some("EXTERNAL_KEY_STORE") {
                return Err(AwsError::validation(
                    "XksKeyId",
                    "Member applies only to Origin EXTERNAL_KEY_STORE",
                ));
            }
        }
        let store = match (r.origin.as_deref(), r.custom_key_store_id.as_deref()) {
            (Some("AWS_CLOUDHSM" | "EXTERNAL_KEY_STORE"), Some(id)) => id.to_string(),
            (Some("AWS_CLOUDHSM" | "EXTERNAL_KEY_STORE"), None) => {
                return Err(AwsError::required("CustomKeyStoreId"))
            }
            (None | Some("AWS_KMS" | "EXTERNAL"), Some(_)) => {
                return Err(AwsError::validation(
                    "Origin",
                    "Member must be AWS_CLOUDHSM or EXTERNAL_KEY_STORE when CustomKeyStoreId is given",
                ))
            }
            (Some("EXTERNAL"), None) => {
                return Err(AwsError::unsupported(
                    "Origin EXTERNAL (imported key material) is not supported: keyorch generates every key in its HSM",
                ))
            }
            (None | Some("AWS_KMS"), None) => {
                return Err(AwsError::unsupported(
                    "keyorch's AWS endpoint creates keys in custom key stores only: give CustomKeyStoreId and Origin AWS_CLOUDHSM",
                ))
            }
            (Some(_), _) => {
                return Err(AwsError::validation(
                    "Origin",
                    "Member must satisfy enum value set: [AWS_CLOUDHSM, EXTERNAL, AWS_KMS, EXTERNAL_KEY_STORE]",
                ))
            }
        };
        check_len("CustomKeyStoreId", &store, 1, 64)?;
        let mut tags = BTreeMap::new();
        for t in r.tags.unwrap_or_default() {
            let k = t.tag_key.ok_or_else(|| AwsError::required("TagKey"))?;
            let v = t.tag_value.ok_or_else(|| AwsError::required("TagValue"))?;
            check_len("TagKey", &k, 1, 128)?;
            check_len("TagValue", &v, 0, 256)?;
            tags.insert(k, v);
        }
        let call = Call::authorize(
            &self.services,
            caller.principal.clone(),
            Action::CreateKey,
            Scope::Keystore(store.clone()),
        )
        .await
        .map_err(mgmt)?;
        let ks = self.own_store(caller, &store).await?;
        // The origin names the store's kind, as in AWS.
        let external = r.origin.as_deref() == Some("EXTERNAL_KEY_STORE");
        if external != (ks.keystore_type() == crate::domain::KeystoreType::Xks) {
            return Err(AwsError::validation(
                "Origin",
                format!(
                    "custom key store {} is {}: its keys have Origin {}",
                    ks.id,
                    if external {
                        "an AWS_CLOUDHSM key store"
                    } else {
                        "an EXTERNAL_KEY_STORE"
                    },
                    if external {
                        "AWS_CLOUDHSM"
                    } else {
                        "EXTERNAL_KEY_STORE"
                    },
                ),
            ));
        }
        if external && r.xks_key_id.is_none() {
            return Err(AwsError::required("XksKeyId"));
        }
        let req = CreateKey {
            vault_id: ks.vault_id.clone(),
            name: format!("aws-{}", uuid::Uuid::new_v4().simple()),
            description,
            spec: KeySpec::Aes256,
            targets: vec![ks.id.clone()],
            activate: true,
            tags,
            external_key_id: r.xks_key_id.clone(),
        };
        let outcome = self.services.create_key(req).await;
        let key = call
            .conclude(&self.services, outcome, |k: &Key| {
                Some((k.id.clone(), k.vault_id.clone()))
            })
            .await
            .map_err(mgmt)?;
        Ok(json!({ "KeyMetadata": self.metadata(caller, &key).await }))
    }

    pub(super) async fn describe_key(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: KeyIdInput = decode(body)?;
        grant_tokens(&r.grant_tokens)?;
        let given = r.key_id.ok_or_else(|| AwsError::required("KeyId"))?;
        let id = model::key_id("KeyId", &given)?;
        Call::authorize(
            &self.services,
            caller.principal.clone(),
            Action::GetKey,
            Scope::Key(id.clone()),
        )
        .await
        .map_err(mgmt)?;
        let id = self.own_key_id(caller, "KeyId", &given).await?;
        let key = self.services.get_key(id).await.map_err(mgmt)?;
        Ok(json!({ "KeyMetadata": self.metadata(caller, &key).await }))
    }

    pub(super) async fn list_keys(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: ListKeysInput = decode(body)?;
        let page = model::page(r.limit, r.marker.as_deref())?;
        let vault = self.caller_vault(caller, false).await?;
        Call::authorize(
            &self.services,
            caller.principal.clone(),
            Action::ListKeys,
            vault.clone().map_or(Scope::Global, Scope::Vault),
        )
        .await
        .map_err(mgmt)?;
        let Some(vault) = vault else {
            return Ok(json!({ "Keys": [], "Truncated": false }));
        };
        let listing = self
            .services
            .list_keys(
                KeyFilter {
                    vault_id: Some(vault.clone()),
                    ..KeyFilter::default()
                },
                page,
            )
            .await
            .map_err(mgmt)?;
        let keys: Vec<Value> = listing
            .items
            .iter()
            .map(|k| {
                json!({
                    "KeyId": k.id,
                    "KeyArn": model::key_arn(&caller.region, &vault, &k.id),
                })
            })
            .collect();
        let mut out = json!({ "Keys": keys, "Truncated": !listing.next_page_token.is_empty() });
        if !listing.next_page_token.is_empty() {
            out["NextMarker"] = json!(listing.next_page_token);
        }
        Ok(out)
    }

    pub(super) async fn encrypt(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: EncryptInput = decode(body)?;
        no_dry_run(r.dry_run)?;
        grant_tokens(&r.grant_tokens)?;
        symmetric_default("EncryptionAlgorithm", &r.encryption_algorithm)?;
        let given = r.key_id.ok_or_else(|| AwsError::required("KeyId"))?;
        let plaintext = r.plaintext.ok_or_else(|| AwsError::required("Plaintext"))?;
        if plaintext.is_empty() || plaintext.len() > 4096 {
            return Err(AwsError::validation(
                "Plaintext",
                "Member must have length between 1 and 4096 bytes",
            ));
        }
        let aad = context(&r.encryption_context)?;
        let id = self.own_key_id(caller, "KeyId", &given).await?;
        let ct = self
            .services
            .encrypt(&caller.principal, id.clone(), plaintext.to_vec(), aad)
            .await
            .map_err(crypto)?;
        let vault = self.caller_vault(caller, false).await?.unwrap_or_default();
        Ok(json!({
            "CiphertextBlob": blob::encode(&model::seal_blob(&id, &ct)),
            "KeyId": model::key_arn(&caller.region, &vault, &id),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }))
    }

    pub(super) async fn decrypt(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: DecryptInput = decode(body)?;
        no_dry_run(r.dry_run)?;
        grant_tokens(&r.grant_tokens)?;
        symmetric_default("EncryptionAlgorithm", &r.encryption_algorithm)?;
        if r.recipient.is_some() {
            return Err(AwsError::unsupported(
                "Recipient (Nitro Enclaves attestation) is not supported",
            ));
        }
        let blob_bytes = r
            .ciphertext_blob
            .ok_or_else(|| AwsError::required("CiphertextBlob"))?;
        if blob_bytes.is_empty() || blob_bytes.len() > 6144 {
            return Err(AwsError::validation(
                "CiphertextBlob",
                "Member must have length between 1 and 6144 bytes",
            ));
        }
        let aad = context(&r.encryption_context)?;
        let (inside, ct) = model::open_blob(&blob_bytes)?;
        if let Some(given) = &r.key_id {
            let named = model::key_id("KeyId", given)?;
            if named != inside {
                return Err(AwsError::new(
                    Exception::IncorrectKey,
                    "The key ID in the request does not identify a KMS key that can perform this operation: the ciphertext was made with another key",
                ));
            }
        }
        let id = match self.own_key_id(caller, "KeyId", &inside).await {
            Ok(id) => id,
            // A blob naming a key that is not the caller's cannot be decrypted here.
            Err(e) if e.exception == Exception::NotFound => {
                return Err(AwsError::new(
                    Exception::InvalidCiphertext,
                    "the ciphertext refers to a key that does not exist or is not yours",
                ))
            }
            Err(e) => return Err(e),
        };
        let plaintext = self
            .services
            .decrypt(&caller.principal, id.clone(), ct.to_vec(), aad)
            .await
            .map_err(crypto)?;
        let vault = self.caller_vault(caller, false).await?.unwrap_or_default();
        Ok(json!({
            "KeyId": model::key_arn(&caller.region, &vault, &id),
            "Plaintext": blob::encode(&plaintext),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }))
    }

    pub(super) async fn generate_data_key(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: DataKeyInput = decode(body)?;
        no_dry_run(r.dry_run)?;
        grant_tokens(&r.grant_tokens)?;
        if r.recipient.is_some() {
            return Err(AwsError::unsupported(
                "Recipient (Nitro Enclaves attestation) is not supported",
            ));
        }
        let given = r.key_id.ok_or_else(|| AwsError::required("KeyId"))?;
        let bytes = match (r.key_spec.as_deref(), r.number_of_bytes) {
            (Some(_), Some(_)) => {
                return Err(AwsError::validation(
                    "NumberOfBytes",
                    "Member cannot be given together with keySpec: give one of them",
                ))
            }
            (None, None) => {
                return Err(AwsError::validation(
                    "KeySpec",
                    "Member must be given, or numberOfBytes",
                ))
            }
            (Some("AES_256"), None) => 32,
            (Some("AES_128"), None) => 16,
            (Some(_), None) => {
                return Err(AwsError::validation(
                    "KeySpec",
                    "Member must satisfy enum value set: [AES_256, AES_128]",
                ))
            }
            (None, Some(n)) if !(1..=1024).contains(&n) => {
                return Err(AwsError::validation(
                    "NumberOfBytes",
                    "Member must have value between 1 and 1024",
                ))
            }
            (None, Some(n @ (16 | 32))) => n as u32,
            (None, Some(n)) => {
                return Err(AwsError::unsupported(format!(
                    "NumberOfBytes {n} is not supported: keyorch makes 16- or 32-byte data keys (AES_128, AES_256)"
                )))
            }
        };
        let aad = context(&r.encryption_context)?;
        let id = self.own_key_id(caller, "KeyId", &given).await?;
        let dk = self
            .services
            .generate_data_key(&caller.principal, id.clone(), bytes, aad)
            .await
            .map_err(crypto)?;
        let vault = self.caller_vault(caller, false).await?.unwrap_or_default();
        Ok(json!({
            "CiphertextBlob": blob::encode(&model::seal_blob(&id, &dk.ciphertext)),
            "Plaintext": blob::encode(&dk.plaintext),
            "KeyId": model::key_arn(&caller.region, &vault, &id),
        }))
    }

    /// keyorch has no waiting period: the key is deactivated (when ACTIVE) and its
    /// material destroyed at once; the record stays, as AWS's PendingDeletion.
    pub(super) async fn schedule_key_deletion(
        &self,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, AwsError> {
        let r: ScheduleInput = decode(body)?;
        let given = r.key_id.ok_or_else(|| AwsError::required("KeyId"))?;
        let days = r.pending_window_in_days.unwrap_or(30);
        if !(1..=365).contains(&days) {
            return Err(AwsError::validation(
                "PendingWindowInDays",
                "Member must have value between 1 and 365",
            ));
        }
        if !(7..=30).contains(&days) {
            return Err(AwsError::validation(
                "PendingWindowInDays",
                "Member must be between 7 and 30, inclusive",
            ));
        }
        let id = model::key_id("KeyId", &given)?;
        Call::authorize(
            &self.services,
            caller.principal.clone(),
            Action::GetKey,
            Scope::Key(id.clone()),
        )
        .await
        .map_err(mgmt)?;
        let id = self.own_key_id(caller, "KeyId", &given).await?;
        let key = self.services.get_key(id.clone()).await.map_err(mgmt)?;
        if key.state.is_destroyed() {
            return Err(AwsError::new(
                Exception::KmsInvalidState,
                format!("{} is pending deletion (keyorch: {})", key.id, key.state),
            ));
        }
        if key.state == KeyState::Active {
            let call = Call::authorize(
                &self.services,
                caller.principal.clone(),
                Action::DeactivateKey,
                Scope::Key(id.clone()),
            )
            .await
            .map_err(mgmt)?;
            let outcome = self.services.deactivate_key(id.clone()).await;
            call.conclude(&self.services, outcome, none)
                .await
                .map_err(mgmt)?;
        }
        let call = Call::authorize(
            &self.services,
            caller.principal.clone(),
            Action::DestroyKey,
            Scope::Key(id.clone()),
        )
        .await
        .map_err(mgmt)?;
        let outcome = self.services.destroy_key(id.clone()).await;
        let key = call
            .conclude(&self.services, outcome, none)
            .await
            .map_err(mgmt)?;
        Ok(json!({
            "KeyId": model::key_arn(&caller.region, &key.vault_id, &key.id),
            "DeletionDate": model::epoch_seconds(key.destroyed_at.unwrap_or(key.updated_at)),
            "KeyState": "PendingDeletion",
            "PendingWindowInDays": days,
        }))
    }
}
