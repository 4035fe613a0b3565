//! IBM Key Protect and Hyper Protect Crypto Services keystores (`ibm_key_protect`,
//! `ibm_hpcs`): an instance's key ring behind the KMS API v2 and IAM API-key login. Managed
//! AES keys are installed as imported root keys with the import-token flow, the material
//! wrapped only inside keyorch's HSM:
//!
//! 1. create an import token (one per instance; a new one replaces the old) and read its
//!    RSA-4096 public key and nonce;
//! 2. wrap the managed key with RSA-OAEP to that public key in keyorch's HSM (Key Protect:
//!    `RSAES_OAEP_SHA_256`; HPCS: `RSAES_OAEP_SHA_1`);
//! 3. encrypt the nonce under the managed key itself in keyorch's HSM (Key Protect: AES-GCM,
//!    12-byte IV, the tag appended; HPCS: AES-CBC with PKCS#7 padding, 16-byte IV), which
//!    proves to the service that the importer holds the key;
//! 4. create the root key named after keyorch's label with payload, encryptedNonce and iv.
//!
//! Uninstall deletes the key. The name (`keyorch-<key id>`) is the reference; the service's
//! key id is recorded at install and checked by status and sync.

pub mod client;

use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{InstallError, ManagedKey, ProbeMode, RemoteCopy, Target, TargetError};
use crate::domain::{validate_ibm_api_key, DomainError, IbmKmsConfig};
use crate::hsm::{Hsm, KeyRef, OaepHash};
use client::{IamService, IbmKmsClient, IbmKmsSettings, KmsKey};

/// Key Protect's state of an active key (0 pre-active, 1 active, 2 suspended, 3 deactivated,
/// 5 destroyed).
const STATE_ACTIVE: u32 = 1;
const STATE_DESTROYED: u32 = 5;
/// Most keys under one label an uninstall deletes.
const MAX_DELETES: usize = 16;

/// Which of IBM's two KMS services the keystore is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    KeyProtect,
    Hpcs,
}

impl Flavor {
    /// The OAEP digest the service accepts: Key Protect SHA-256 only, HPCS SHA-1 only
    /// (IBM's docs: "SHA1 is only supported by HPCS").
    fn oaep(self) -> OaepHash {
        match self {
            Flavor::KeyProtect => OaepHash::Sha256,
            Flavor::Hpcs => OaepHash::Sha1,
        }
    }

    fn algorithm(self) -> &'static str {
        match self {
            Flavor::KeyProtect => "RSAES_OAEP_SHA_256",
            Flavor::Hpcs => "RSAES_OAEP_SHA_1",
        }
    }

    fn service(self) -> &'static str {
        match self {
            Flavor::KeyProtect => "IBM Key Protect",
            Flavor::Hpcs => "IBM Hyper Protect Crypto Services",
        }
    }
}

/// An ibm_key_protect or ibm_hpcs keystore's credential (a service ID API key), checked, as
/// the bytes to seal.
pub fn credential_bytes(
    field: &str,
    api_key: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, DomainError> {
    validate_ibm_api_key(field, api_key.expose_secret())?;
    Ok(Zeroizing::new(api_key.expose_secret().as_bytes().to_vec()))
}

pub struct IbmKmsTarget {
    client: IbmKmsClient,
    flavor: Flavor,
    /// One import at a time: an instance has one import token, which a second import's
    /// token would replace between the first one's read and use.
    importing: Mutex<()>,
}

impl IbmKmsTarget {
    pub fn open(
        config: &IbmKmsConfig,
        flavor: Flavor,
        api_key: SecretString,
    ) -> Result<IbmKmsTarget, TargetError> {
        let client = IbmKmsClient::new(
            IbmKmsSettings {
                api_endpoint: config.api_endpoint.clone(),
                iam_endpoint: config.iam_endpoint.clone(),
                instance_id: config.instance_id.clone(),
                key_ring_id: config.key_ring_id.clone(),
                ca_cert_pem: config.ca_cert_pem.clone(),
            },
            api_key,
        )?
        .with_iam_service(match flavor {
            Flavor::KeyProtect => IamService::KeyProtect,
            Flavor::Hpcs => IamService::Hpcs,
        });
        Ok(IbmKmsTarget {
            client,
            flavor,
            importing: Mutex::new(()),
        })
    }

    /// The key keyorch installed under `label`, not destroyed.
    fn live(&self, label: &str) -> Result<Option<KmsKey>, TargetError> {
        Ok(self
            .client
            .find_key_by_name(label)?
            .filter(|k| k.state != STATE_DESTROYED))
    }

    fn import(
        &self,
        hsm: &Hsm,
        material: &KeyRef<'_>,
        label: &str,
    ) -> Result<String, InstallError> {
        let hash = self.flavor.oaep();
        if hash == OaepHash::Sha256 && !hsm.supports_oaep_sha256() {
            return Err(TargetError::NotSupported(format!(
                "{} imports keys only wrapped with RSAES_OAEP_SHA_256 (RSA-OAEP with SHA-256), which keyorchd's HSM cannot wrap with (it does SHA-1 only, as SoftHSM2 does); Hyper Protect Crypto Services (ibm_hpcs) takes RSAES_OAEP_SHA_1",
                self.flavor.service()
            ))
            .into());
        }
        let _one = self.importing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = self.live(label)? {
            return Ok(k.id);
        }
        self.client.create_import_token(600, 1)?;
        let token = self.client.get_import_token()?;
        let payload = hsm.wrap_oaep(material, &token.public_key_der, hash)?;
        let (iv_len, sealed) = match self.flavor {
            // IV || ciphertext || tag
            Flavor::KeyProtect => (12, hsm.encrypt(material, &token.nonce, b"")?),
            // IV || ciphertext
            Flavor::Hpcs => (16, hsm.encrypt_cbc_pad(material, &token.nonce)?),
        };
        let (iv, encrypted_nonce) = sealed.split_at(iv_len);
        let key = self.client.import_root_key(
            label,
            "managed by keyorch",
            &payload,
            encrypted_nonce,
            iv,
            self.flavor.algorithm(),
        )?;
        Ok(key.id)
    }
}

impl Target for IbmKmsTarget {
    fn probe(
        &self,
        _keystore_id: &str,
        mode: ProbeMode,
        _connected: bool,
    ) -> Result<Option<String>, TargetError> {
        self.client.list_keys(1, 0)?;
        if mode == ProbeMode::Heartbeat {
            return Ok(None);
        }
        let denied = self.denied_permissions()?;
        if !denied.is_empty() {
            return Err(TargetError::PermissionDenied(denied));
        }
        Ok(None)
    }

    /// The permissions the calls that change nothing can tell about: listing and reading
    /// keys. Importing cannot be probed without replacing the instance's import token; an
    /// install that lacks it fails naming it.
    fn denied_permissions(&self) -> Result<Vec<String>, TargetError> {
        let mut denied = Vec::new();
        for probe in [
            self.client.list_keys(1, 0).map(drop),
            self.client
                .get_key("00000000-0000-0000-0000-000000000000")
                .map(drop),
        ] {
            match probe {
                Ok(()) => {}
                Err(TargetError::PermissionDenied(names)) => denied.extend(names),
                Err(e) => return Err(e),
            }
        }
        denied.dedup();
        Ok(denied)
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
        _key: &ManagedKey<'_>,
        label: &str,
        remote_id: &str,
    ) -> Result<(), InstallError> {
        match self.client.get_key(remote_id)? {
            Some(k) if k.name == label && k.state == STATE_ACTIVE && k.imported => Ok(()),
            Some(k) => Err(InstallError::Mismatch(format!(
                "after the import, key {remote_id} is {:?} in state {}, not keyorch's active imported key {label}",
                k.name, k.state
            ))),
            None => Err(InstallError::Mismatch(format!(
                "after the import, key {remote_id} ({label}) is not in the key ring"
            ))),
        }
    }

    fn uninstall(&self, label: &str) -> Result<bool, TargetError> {
        // Key names are not unique in the service: remove every live key under the label,
        // a bounded number of times (a delete that does not take effect is an error, not a
        // loop).
        let mut removed = false;
        for _ in 0..MAX_DELETES {
            let Some(k) = self.live(label)? else {
                return Ok(removed);
            };
            self.client.delete_key(&k.id)?;
            removed = true;
        }
        Err(TargetError::Internal(format!(
            "{label} still names a live key after {MAX_DELETES} deletes"
        )))
    }

    fn copy(&self, key: &ManagedKey<'_>, label: &str) -> Result<Option<RemoteCopy>, TargetError> {
        let Some(k) = self.live(label)? else {
            return Ok(None);
        };
        let recorded = key.recorded_remote_id;
        let detail = if !k.imported || k.extractable {
            format!(
                "{label} names key {}, which is not an imported root key",
                k.id
            )
        } else if !recorded.is_empty() && recorded != k.id {
            format!(
                "{label} names key {}, not the installed copy {recorded}",
                k.id
            )
        } else {
            String::new()
        };
        Ok(Some(RemoteCopy {
            same: detail.is_empty(),
            enabled: k.state == STATE_ACTIVE,
            kcv: String::new(),
            remote_id: k.id,
            detail,
        }))
    }
}
