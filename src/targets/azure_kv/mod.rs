//! Azure Key Vault keystores (`azure_key_vault`): a Premium vault's keys behind Key Vault's
//! data plane and a service principal's client secret (Microsoft Entra ID). Managed RSA and
//! EC keys are installed with Azure's "bring your own key" (BYOK) flow, the material wrapped
//! only inside keyorch's HSM:
//!
//! 1. connecting makes sure the vault holds the key-exchange key `EKMF-BYOK-KEK-FOR-IMPORT`:
//!    an RSA-HSM 3072 key that may only import (`key_ops` `["import"]`, tag
//!    `keyorch=import-kek`), created when missing, recovered when soft-deleted (as UKO does);
//! 2. an install reads that key's public JWK (and its versioned `kid`), and wraps the managed
//!    key to it in keyorch's HSM with `CKM_RSA_AES_KEY_WRAP` (RSA-OAEP with SHA-1 of an
//!    ephemeral AES-256 key, then AES key wrap with padding of the key as PKCS#8), which is
//!    the wrap Azure's BYOK specification asks for;
//! 3. it imports the `.byok` JSON (`{"schema_version":"1.0.0","header":{"kid":…,"alg":"dir",
//!    "enc":"CKM_RSA_AES_KEY_WRAP"},"ciphertext":…,"generator":"keyorch"}`) as the JWK's
//!    `key_hsm` of an `RSA-HSM` or `EC-HSM` key named after keyorch's label, `key_ops`
//!    `sign` and `verify` (what keyorch uses its key pairs for), tag `managed-by=keyorch`;
//! 4. the confirmation computes keyorch's check value from the imported key's public JWK
//!    (SHA-256 of the DER SPKI, first 8 bytes) and compares it with the managed key's.
//!
//! The label (`keyorch-<key id>`) is the key's name in the vault; the versioned `kid` is
//! recorded as the remote id. Uninstall (also on deactivation) deletes the key and purges
//! the deleted key (both idempotent: an uninstall cut short between them is finished by the
//! next; with purge protection the key stays soft-deleted, and a later install recovers it).
//! A key under a label without keyorch's tag is never deleted, purged or recovered.
//!
//! AES and HMAC keys (oct-HSM) need an Azure Managed HSM, which is another service: a vault
//! refuses them (the domain already does). The client is [`client::AzureKvClient`].

pub mod client;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{InstallError, ManagedKey, ProbeMode, RemoteCopy, Target, TargetError};
use crate::domain::{validate_azure_client_secret, AzureKeyVaultConfig, DomainError};
use crate::hsm::{Hsm, KeyKind, KeyRef, OaepHash};
use client::{byok_json, AzureKey, AzureKvClient, AzureKvSettings};

/// The key-exchange key's name in the vault.
pub const IMPORT_KEK_NAME: &str = "EKMF-BYOK-KEK-FOR-IMPORT";
/// Its modulus size.
pub const IMPORT_KEK_BITS: usize = 3072;
/// The tag every key keyorch imports carries.
pub const MANAGED_TAG: (&str, &str) = ("managed-by", "keyorch");
/// What an imported key pair may do in the vault: what keyorch uses key pairs for.
pub const KEY_OPS: [&str; 2] = ["sign", "verify"];

/// An azure_key_vault keystore's credential (the service principal's client secret),
/// checked, as the bytes to seal.
pub fn credential_bytes(
    field: &str,
    secret: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, DomainError> {
    validate_azure_client_secret(field, secret.expose_secret())?;
    Ok(Zeroizing::new(secret.expose_secret().as_bytes().to_vec()))
}

/// The vault's key type and curve of a managed key's kind.
pub fn azure_kind(kind: KeyKind) -> Result<(&'static str, Option<&'static str>), TargetError> {
    match kind {
        KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096 => Ok(("RSA-HSM", None)),
        KeyKind::EcP256 => Ok(("EC-HSM", Some("P-256"))),
        KeyKind::EcP384 => Ok(("EC-HSM", Some("P-384"))),
        KeyKind::Aes128 | KeyKind::Aes192 | KeyKind::Aes256 | KeyKind::HmacSha256 => {
            Err(TargetError::NotSupported(format!(
                "an Azure key vault imports RSA (RSA-HSM) and EC (EC-HSM) keys only; {kind:?} keys (oct-HSM) need an Azure Managed HSM"
            )))
        }
    }
}

pub struct AzureKvTarget {
    client: AzureKvClient,
}

impl AzureKvTarget {
    pub fn open(
        config: &AzureKeyVaultConfig,
        client_secret: SecretString,
    ) -> Result<AzureKvTarget, TargetError> {
        let client = AzureKvClient::new(
            AzureKvSettings {
                vault_url: config.vault_url(),
                authority_host: config.authority_host(),
                tenant_id: config.tenant_id.clone(),
                client_id: config.client_id.clone(),
                ca_cert_pem: config.ca_cert_pem.clone(),
            },
            client_secret,
        )?;
        Ok(AzureKvTarget { client })
    }

    /// A target on a client made elsewhere (tests: other timeouts).
    pub fn with_client(client: AzureKvClient) -> AzureKvTarget {
        AzureKvTarget { client }
    }

    pub fn client(&self) -> &AzureKvClient {
        &self.client
    }

    /// Makes sure the vault holds the import KEK: creates it when missing, recovers it when
    /// soft-deleted, enables it when disabled. True when it was created or recovered.
    pub fn ensure_import_kek(&self) -> Result<bool, TargetError> {
        if let Some(k) = self.client.get_key(IMPORT_KEK_NAME)? {
            check_kek(&k)?;
            if !k.enabled {
                self.client.set_enabled(IMPORT_KEK_NAME, true)?;
            }
            return Ok(false);
        }
        if let Some(d) = self.client.get_deleted_key(IMPORT_KEK_NAME)? {
            check_kek(&d.key)?;
            self.client.recover_deleted_key(IMPORT_KEK_NAME)?;
            let k = self.client.wait_for_key(IMPORT_KEK_NAME)?.ok_or_else(|| {
                TargetError::Internal(format!(
                    "{IMPORT_KEK_NAME} was recovered in {} but does not show",
                    self.client.vault_url()
                ))
            })?;
            if !k.enabled {
                self.client.set_enabled(IMPORT_KEK_NAME, true)?;
            }
            return Ok(true);
        }
        let k = self.client.create_import_kek(IMPORT_KEK_NAME)?;
        check_kek(&k)?;
        Ok(true)
    }

    /// The import KEK, checked; `ImportKekMissing` when the vault has no live one.
    pub fn import_kek(&self) -> Result<AzureKey, TargetError> {
        let k = self
            .client
            .get_key(IMPORT_KEK_NAME)?
            .ok_or(TargetError::ImportKekMissing)?;
        check_kek(&k)?;
        Ok(k)
    }

    /// The refusal for a key under `label` that keyorch did not import.
    fn foreign(&self, label: &str, k: &AzureKey, state: &str) -> TargetError {
        TargetError::Internal(format!(
            "{label} names {state}key {} in {}, which keyorch did not import (no {}={} tag{}); it is left alone: remove or rename it in the vault",
            k.kid,
            self.client.vault_url(),
            MANAGED_TAG.0,
            MANAGED_TAG.1,
            if k.managed { ", and the vault manages it" } else { "" }
        ))
    }

    fn import(
        &self,
        hsm: &Hsm,
        material: &KeyRef<'_>,
        label: &str,
    ) -> Result<String, InstallError> {
        let (kty, crv) = azure_kind(material.kind)?;
        if let Some(k) = self.client.get_key(label)? {
            // Judged by confirm_install (or copy).
            return Ok(k.kid);
        }
        if let Some(d) = self.client.get_deleted_key(label)? {
            if !is_keyorchs(&d.key) {
                return Err(self.foreign(label, &d.key, "the soft-deleted ").into());
            }
            if d.purgeable() {
                self.client.purge_deleted_key(label)?;
            } else {
                // Purge protection: keyorch's own copy can only come back.
                self.client.recover_deleted_key(label)?;
                if let Some(k) = self.client.wait_for_key(label)? {
                    return Ok(k.kid);
                }
                return Err(TargetError::Internal(format!(
                    "{label} was recovered in {} but does not show",
                    self.client.vault_url()
                ))
                .into());
            }
        }
        let kek = self.import_kek()?;
        let spki = kek.spki_der()?;
        let blob = Zeroizing::new(hsm.wrap_for_transport(material, &spki, OaepHash::Sha1)?);
        let byok = byok_json(&kek.kid, &blob);
        let key = self
            .client
            .import_key(label, kty, crv, &byok, &KEY_OPS, &[MANAGED_TAG])?;
        Ok(key.kid)
    }
}

/// Whether keyorch imported `k`: its tag, and no certificate's key.
fn is_keyorchs(k: &AzureKey) -> bool {
    k.tag(MANAGED_TAG.0) == Some(MANAGED_TAG.1) && !k.managed
}

/// `k` is keyorch's import KEK: RSA-HSM 3072 that may only import.
fn check_kek(k: &AzureKey) -> Result<(), TargetError> {
    let ok = k.kty == "RSA-HSM" && k.rsa_bits() == IMPORT_KEK_BITS && k.key_ops == ["import"];
    if ok {
        return Ok(());
    }
    Err(TargetError::InvalidConfiguration(format!(
        "{IMPORT_KEK_NAME} in the vault ({}) is a {} key of {} bits with key_ops [{}], not keyorch's import key (RSA-HSM, {IMPORT_KEK_BITS} bits, key_ops [import]); delete and purge it (or rename it), then connect again",
        k.kid,
        if k.kty.is_empty() { "(no kty)" } else { &k.kty },
        k.rsa_bits(),
        k.key_ops.join(", ")
    )))
}

impl Target for AzureKvTarget {
    fn probe(
        &self,
        keystore_id: &str,
        mode: ProbeMode,
        connected: bool,
    ) -> Result<Option<String>, TargetError> {
        if mode == ProbeMode::Heartbeat {
            // One call: proves the vault answers and takes the credentials, and sees the KEK.
            return match self.client.get_key(IMPORT_KEK_NAME)? {
                None if connected => Err(TargetError::ImportKekMissing),
                _ => Ok(None),
            };
        }
        let denied = self.denied_permissions()?;
        if !denied.is_empty() {
            return Err(TargetError::PermissionDenied(denied));
        }
        match mode {
            ProbeMode::Connect => {
                if self.ensure_import_kek()? {
                    tracing::info!(keystore = %keystore_id, vault = %self.client.vault_url(), "made {IMPORT_KEK_NAME} in the Azure key vault");
                }
            }
            // Connect makes a missing KEK; a check predicts success unless the keystore is
            // CONNECTED (then the KEK was deleted under us). A KEK that is not keyorch's
            // fails either way.
            _ => match self.import_kek() {
                Err(TargetError::ImportKekMissing) if !connected => {}
                other => {
                    other?;
                }
            },
        }
        Ok(None)
    }

    /// The seed's ten key permissions the principal lacks (`create`, `import`, `update`,
    /// `list`, `delete`, `get`, `recover`, `purge`, `backup`, `restore`: Key Vault's
    /// access-policy names), probed without changing anything.
    fn denied_permissions(&self) -> Result<Vec<String>, TargetError> {
        self.client.denied_permissions()
    }

    fn install(
        &self,
        hsm: &Hsm,
        material: &KeyRef<'_>,
        label: &str,
    ) -> Result<String, InstallError> {
        self.import(hsm, material, label)
    }

    fn confirm_install(
        &self,
        key: &ManagedKey<'_>,
        label: &str,
        remote_id: &str,
    ) -> Result<(), InstallError> {
        let Some(k) = self.client.get_key(label)? else {
            return Err(InstallError::Mismatch(format!(
                "after the import, {} holds no key {label}",
                self.client.vault_url()
            )));
        };
        if !is_keyorchs(&k) {
            return Err(InstallError::Mismatch(
                self.foreign(label, &k, "").to_string(),
            ));
        }
        let kcv = k.check_value().map_err(|e| {
            InstallError::Mismatch(format!("{label} is no {:?} key: {e}", key.kind))
        })?;
        if kcv != key.kcv {
            return Err(InstallError::Mismatch(format!(
                "the vault holds other material under {label} ({}: check value {kcv}, expected {}); run SyncKey",
                k.kid, key.kcv
            )));
        }
        if !remote_id.is_empty() && remote_id != k.kid {
            tracing::info!(label, remote_id, kid = %k.kid, "the vault's latest version of the key is another than the installed one, with the same material");
        }
        if !k.enabled {
            self.client.set_enabled(label, true)?;
        }
        Ok(())
    }

    fn uninstall(&self, label: &str) -> Result<bool, TargetError> {
        if let Some(k) = self.client.get_key(label)? {
            if !is_keyorchs(&k) {
                return Err(self.foreign(label, &k, ""));
            }
            let deleted = self.client.delete_key(label)?;
            if deleted.as_ref().is_none_or(|d| d.purgeable()) {
                self.client.purge_after_delete(label)?;
            }
            tracing::info!(label, vault = %self.client.vault_url(), "uninstalled a key from the Azure key vault");
            return Ok(true);
        }
        // Finishes an uninstall cut short between the delete and the purge.
        match self.client.get_deleted_key(label)? {
            Some(d) if is_keyorchs(&d.key) && d.purgeable() => {
                let purged = self.client.purge_deleted_key(label)?;
                if purged {
                    tracing::info!(label, vault = %self.client.vault_url(), "purged a deleted key from the Azure key vault");
                }
                Ok(purged)
            }
            _ => Ok(false),
        }
    }

    fn copy(&self, key: &ManagedKey<'_>, label: &str) -> Result<Option<RemoteCopy>, TargetError> {
        let Some(k) = self.client.get_key(label)? else {
            return Ok(None);
        };
        let kcv = k.check_value().unwrap_or_default();
        let mut copy = RemoteCopy::by_check_value(kcv, key.kcv);
        copy.enabled = k.enabled;
        if !is_keyorchs(&k) {
            copy.same = false;
            copy.detail = format!(
                "{label} names key {}, which keyorch did not import (no {}={} tag)",
                k.kid, MANAGED_TAG.0, MANAGED_TAG.1
            );
        } else if copy.kcv.is_empty() {
            copy.detail = format!("{label} names key {}, a {} key", k.kid, k.kty);
        }
        copy.remote_id = k.kid;
        Ok(Some(copy))
    }
}
