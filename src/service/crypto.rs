//! Cryptographic use cases: each checks the key's usage, state and keystores (domain
//! `check_use`) and then runs inside keyorchd's HSM.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::keys::key_ref;
use super::{require_id, Inner, ServiceError, Services};
use crate::domain::{
    check_payload, check_use, xks, Action, AuditEntry, CryptoOp, DomainError, Key, KeySpec,
    PayloadKind, Principal, SigningAlgorithm,
};
use crate::hsm::{HsmError, KeyRef, SignAlg};
use crate::secret::SecretBytes;

pub struct DataKey {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub ciphertext: Vec<u8>,
}

pub struct PublicKey {
    pub der: Vec<u8>,
    pub pem: String,
    pub algorithms: Vec<SigningAlgorithm>,
}

fn sign_alg(a: SigningAlgorithm) -> SignAlg {
    match a {
        SigningAlgorithm::RsaPssSha256 => SignAlg::RsaPssSha256,
        SigningAlgorithm::RsaPssSha384 => SignAlg::RsaPssSha384,
        SigningAlgorithm::RsaPssSha512 => SignAlg::RsaPssSha512,
        SigningAlgorithm::RsaPkcs1Sha256 => SignAlg::RsaPkcs1Sha256,
        SigningAlgorithm::RsaPkcs1Sha384 => SignAlg::RsaPkcs1Sha384,
        SigningAlgorithm::RsaPkcs1Sha512 => SignAlg::RsaPkcs1Sha512,
        SigningAlgorithm::EcdsaSha256 => SignAlg::EcdsaSha256,
        SigningAlgorithm::EcdsaSha384 => SignAlg::EcdsaSha384,
    }
}

/// PEM text of a DER SubjectPublicKeyInfo.
fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

/// What the crypto lane did: the operation, or, for an external key (whose call goes to its
/// keystore's proxy and must not hold up the lane's few threads), the checked key and the
/// request's inputs, for the blocking pool.
enum Lane<T, D> {
    Done(T),
    External(Box<Key>, D),
}

/// A refused use of a key that must still be audited. On the crypto lane the audit write
/// (a flushed store commit) is left to the blocking pool, so denials never hold up the lane.
struct Denial {
    entry: AuditEntry,
    error: ServiceError,
}

impl Inner {
    /// The key, if `principal` may use it for `op` and it may serve `op` right now; a
    /// denial comes back unaudited, as [`Denial`].
    fn usable_key_or_denial(
        &self,
        principal: &Principal,
        key_id: &str,
        op: CryptoOp,
    ) -> Result<Result<Arc<Key>, Denial>, ServiceError> {
        require_id("key_id", key_id)?;
        let entry = self.key_for_use(key_id)?;
        let action = action_of(op);
        let permitted = self
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .permits(principal, Some(&entry.key.vault_id), action);
        if !permitted {
            let vault = Some(entry.key.vault_id.as_str());
            return Ok(Err(Denial {
                entry: Services::audit_entry(principal, action, key_id, vault, "denied"),
                error: ServiceError::denied(principal, action, vault),
            }));
        }
        check_use(&entry.key, op, &entry.states)?;
        Ok(Ok(entry.key))
    }

    /// Like [`Inner::usable_key_or_denial`], auditing a denial here (on the blocking pool).
    fn usable_key(
        &self,
        principal: &Principal,
        key_id: &str,
        op: CryptoOp,
    ) -> Result<Arc<Key>, ServiceError> {
        match self.usable_key_or_denial(principal, key_id, op)? {
            Ok(key) => Ok(key),
            Err(denial) => Err(self.refuse(denial)),
        }
    }

    /// Audits a denial and gives back its error (or the audit failure, if the write fails).
    fn refuse(&self, denial: Denial) -> ServiceError {
        match self.append_audit(denial.entry) {
            Ok(_) => denial.error,
            Err(e) => e,
        }
    }
}

impl Services {
    /// Runs `f` with the key on the crypto lane, once `principal` may use it for `op`.
    async fn with_usable_key<T, F>(
        &self,
        principal: &Principal,
        key_id: String,
        op: CryptoOp,
        f: F,
    ) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &Key) -> Result<T, ServiceError> + Send + 'static,
    {
        let principal = principal.clone();
        let runtime = tokio::runtime::Handle::current();
        let outcome = self
            .on_lane(move |inner| {
                Ok(match inner.usable_key_or_denial(&principal, &key_id, op)? {
                    Ok(key) => Ok(f(inner, &key)?),
                    // Handed to the blocking pool from here, not by the caller: the denial is
                    // audited even if the caller is gone before the answer.
                    Err(denial) => {
                        let inner = Arc::clone(inner);
                        Err(runtime.spawn_blocking(move || inner.refuse(denial)))
                    }
                })
            })
            .await?;
        match outcome {
            Ok(value) => Ok(value),
            Err(audit) => Err(audit
                .await
                .map_err(|e| ServiceError::Internal(format!("audit task failed: {e}")))?),
        }
    }
}

fn action_of(op: CryptoOp) -> Action {
    match op {
        CryptoOp::Encrypt => Action::Encrypt,
        CryptoOp::Decrypt => Action::Decrypt,
        CryptoOp::GenerateDataKey => Action::GenerateDataKey,
        CryptoOp::Sign => Action::Sign,
        CryptoOp::Verify => Action::Verify,
        CryptoOp::GenerateMac => Action::GenerateMac,
        CryptoOp::VerifyMac => Action::VerifyMac,
        CryptoOp::GetPublicKey => Action::GetPublicKey,
    }
}

fn ciphertext_error(key_id: &str) -> impl Fn(HsmError) -> ServiceError + '_ {
    move |e| match e {
        HsmError::InvalidCiphertext => ServiceError::InvalidCiphertext {
            key_id: key_id.to_string(),
        },
        other => other.into(),
    }
}

impl Services {
    pub async fn encrypt(
        &self,
        principal: &Principal,
        key_id: String,
        plaintext: Vec<u8>,
        aad: Vec<u8>,
    ) -> Result<Vec<u8>, ServiceError> {
        let plaintext = SecretBytes::new(plaintext);
        check_payload("plaintext", PayloadKind::Plaintext, &plaintext)?;
        check_payload("aad", PayloadKind::Aad, &aad)?;
        let routed = self
            .with_usable_key(principal, key_id, CryptoOp::Encrypt, move |inner, key| {
                if key.is_external() {
                    return Ok(Lane::External(Box::new(key.clone()), (plaintext, aad)));
                }
                Ok(Lane::Done(inner.hsm.encrypt(
                    &key_ref(key)?,
                    &plaintext,
                    &aad,
                )?))
            })
            .await?;
        match routed {
            Lane::Done(ciphertext) => Ok(ciphertext),
            Lane::External(key, (plaintext, aad)) => {
                let who = principal.to_string();
                self.blocking(move |inner| {
                    inner.external_encrypt(&who, &key, "Encrypt", &plaintext, &aad)
                })
                .await
            }
        }
    }

    pub async fn decrypt(
        &self,
        principal: &Principal,
        key_id: String,
        ciphertext: Vec<u8>,
        aad: Vec<u8>,
    ) -> Result<SecretBytes, ServiceError> {
        check_payload("ciphertext", PayloadKind::Ciphertext, &ciphertext)?;
        check_payload("aad", PayloadKind::Aad, &aad)?;
        let id = key_id.clone();
        let routed = self
            .with_usable_key(principal, key_id, CryptoOp::Decrypt, move |inner, key| {
                if key.is_external() {
                    return Ok(Lane::External(Box::new(key.clone()), (ciphertext, aad)));
                }
                inner
                    .hsm
                    .decrypt(&key_ref(key)?, &ciphertext, &aad)
                    .map(Lane::Done)
                    .map_err(ciphertext_error(&id))
            })
            .await?;
        match routed {
            Lane::Done(plaintext) => Ok(plaintext),
            Lane::External(key, (ciphertext, aad)) => {
                let who = principal.to_string();
                self.blocking(move |inner| {
                    let plaintext = inner.external_decrypt(&who, &key, &ciphertext, &aad)?;
                    Ok(SecretBytes::new(plaintext.to_vec()))
                })
                .await
            }
        }
    }

    pub async fn generate_data_key(
        &self,
        principal: &Principal,
        key_id: String,
        bytes: u32,
        aad: Vec<u8>,
    ) -> Result<DataKey, ServiceError> {
        let len = match bytes {
            0 | 32 => 32,
            16 => 16,
            n => {
                return Err(DomainError::invalid(
                    "number_of_bytes",
                    format!("must be 16 or 32 (AES-128 or AES-256 data key), got {n}"),
                )
                .into())
            }
        };
        check_payload("aad", PayloadKind::Aad, &aad)?;
        let routed = self
            .with_usable_key(
                principal,
                key_id,
                CryptoOp::GenerateDataKey,
                move |inner, key| {
                    if key.is_external() {
                        return Ok(Lane::External(Box::new(key.clone()), aad));
                    }
                    let plaintext = inner.hsm.random(len)?;
                    let ciphertext = inner.hsm.encrypt(&key_ref(key)?, &plaintext, &aad)?;
                    Ok(Lane::Done(DataKey {
                        plaintext,
                        ciphertext,
                    }))
                },
            )
            .await?;
        match routed {
            Lane::Done(data_key) => Ok(data_key),
            Lane::External(key, aad) => {
                let who = principal.to_string();
                self.blocking(move |inner| {
                    let plaintext = inner.hsm.random(len)?;
                    let ciphertext =
                        inner.external_encrypt(&who, &key, "GenerateDataKey", &plaintext, &aad)?;
                    Ok(DataKey {
                        plaintext,
                        ciphertext,
                    })
                })
                .await
            }
        }
    }

    pub async fn sign(
        &self,
        principal: &Principal,
        key_id: String,
        message: Vec<u8>,
        alg: SigningAlgorithm,
    ) -> Result<Vec<u8>, ServiceError> {
        check_payload("message", PayloadKind::Message, &message)?;
        let principal = principal.clone();
        self.blocking(move |inner| {
            let key = inner.usable_key(&principal, &key_id, CryptoOp::Sign)?;
            alg.check(&key.id, key.spec)?;
            Ok(inner.hsm.sign(&key_ref(&key)?, sign_alg(alg), &message)?)
        })
        .await
    }

    pub async fn verify(
        &self,
        principal: &Principal,
        key_id: String,
        message: Vec<u8>,
        signature: Vec<u8>,
        alg: SigningAlgorithm,
    ) -> Result<bool, ServiceError> {
        check_payload("message", PayloadKind::Message, &message)?;
        check_payload("signature", PayloadKind::Signature, &signature)?;
        let principal = principal.clone();
        self.blocking(move |inner| {
            let key = inner.usable_key(&principal, &key_id, CryptoOp::Verify)?;
            alg.check(&key.id, key.spec)?;
            Ok(inner
                .hsm
                .verify(&key_ref(&key)?, sign_alg(alg), &message, &signature)?)
        })
        .await
    }

    pub async fn generate_mac(
        &self,
        principal: &Principal,
        key_id: String,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, ServiceError> {
        check_payload("message", PayloadKind::Message, &message)?;
        self.with_usable_key(
            principal,
            key_id,
            CryptoOp::GenerateMac,
            move |inner, key| Ok(inner.hsm.hmac(&key_ref(key)?, &message)?),
        )
        .await
    }

    pub async fn verify_mac(
        &self,
        principal: &Principal,
        key_id: String,
        message: Vec<u8>,
        mac: Vec<u8>,
    ) -> Result<bool, ServiceError> {
        check_payload("message", PayloadKind::Message, &message)?;
        check_payload("mac", PayloadKind::Signature, &mac)?;
        self.with_usable_key(principal, key_id, CryptoOp::VerifyMac, move |inner, key| {
            Ok(inner.hsm.verify_hmac(&key_ref(key)?, &message, &mac)?)
        })
        .await
    }

    pub async fn get_public_key(
        &self,
        principal: &Principal,
        key_id: String,
    ) -> Result<PublicKey, ServiceError> {
        let principal = principal.clone();
        self.blocking(move |inner| {
            let key = inner.usable_key(&principal, &key_id, CryptoOp::GetPublicKey)?;
            let der = key
                .material
                .as_ref()
                .and_then(|m| m.spki_der.clone())
                .ok_or_else(|| {
                    ServiceError::Internal(format!("key {key_id} has no stored public key"))
                })?;
            Ok(PublicKey {
                pem: pem(&der),
                der,
                algorithms: SigningAlgorithm::for_spec(key.spec).to_vec(),
            })
        })
        .await
    }
}

/// An XKS Encrypt's answer: the parts of keyorch's `IV || ciphertext || tag`, and the
/// CDIV when it was asked for.
pub struct XksSealed {
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
    pub cdiv: Option<[u8; 32]>,
}

/// Id under which the proxy's health-check key is cached in the HSM layer (no managed key
/// has it: theirs are `key-…`).
const SELF_TEST_KEY_ID: &str = "xks-health-self-test";

/// What every XKS call on a key names: the key, the vault it must be in (the endpoint's,
/// if configured), the caller's AAD and the ciphertext metadata.
pub struct XksKey {
    pub key_id: String,
    pub vault_id: Option<String>,
    pub aad: Vec<u8>,
    pub metadata: Vec<u8>,
}

/// An XKS Decrypt's input besides the key.
pub struct XksCiphertext {
    pub ciphertext: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
}

/// A key of another vault is, to an XKS endpoint, a key that does not exist.
fn in_vault(key: &Key, vault_id: Option<&str>) -> Result<(), ServiceError> {
    match vault_id {
        Some(v) if v != key.vault_id => Err(DomainError::KeyNotFound(key.id.clone()).into()),
        _ => Ok(()),
    }
}

impl Services {
    /// XKS Encrypt (DESIGN §8): AES-256-GCM in the HSM with the spec's AAD binding of the
    /// caller's AAD and the metadata. With `cdiv`, the integrity value is computed over the
    /// output first and the output is then decrypted once in the HSM (Appendix C), so a
    /// corrupted answer is never returned.
    pub async fn xks_encrypt(
        &self,
        principal: &Principal,
        req: XksKey,
        plaintext: SecretBytes,
        cdiv: bool,
    ) -> Result<XksSealed, ServiceError> {
        xks::check_data("plaintext", &plaintext)?;
        let gcm_aad = xks::gcm_aad(&req.aad, &req.metadata)?;
        let XksKey {
            key_id,
            vault_id,
            aad,
            metadata,
        } = req;
        self.with_usable_key(principal, key_id, CryptoOp::Encrypt, move |inner, key| {
            in_vault(key, vault_id.as_deref())?;
            aes_256_only(key, CryptoOp::Encrypt)?;
            let key_ref = key_ref(key)?;
            let blob = inner.hsm.encrypt(&key_ref, &plaintext, &gcm_aad)?;
            let (iv, rest) = blob.split_at(xks::XKS_IV_LEN);
            let (ciphertext, tag) = rest.split_at(rest.len() - xks::XKS_TAG_LEN);
            let sealed = XksSealed {
                iv: iv.to_vec(),
                ciphertext: ciphertext.to_vec(),
                tag: tag.to_vec(),
                cdiv: cdiv.then(|| xks::cdiv(&aad, &metadata, iv, ciphertext, tag)),
            };
            if cdiv {
                let opened = inner.hsm.decrypt(&key_ref, &blob, &gcm_aad)?;
                if opened[..] != plaintext[..] {
                    return Err(ServiceError::Internal(
                        "the HSM's ciphertext did not decrypt to the plaintext".into(),
                    ));
                }
            }
            Ok(sealed)
        })
        .await
    }

    /// XKS Decrypt: the reverse of [`Services::xks_encrypt`].
    pub async fn xks_decrypt(
        &self,
        principal: &Principal,
        req: XksKey,
        sealed: XksCiphertext,
    ) -> Result<SecretBytes, ServiceError> {
        let XksCiphertext {
            ciphertext,
            iv,
            tag,
        } = sealed;
        xks::check_data("ciphertext", &ciphertext)?;
        if tag.len() != xks::XKS_TAG_LEN {
            return Err(DomainError::invalid(
                "authenticationTag",
                format!("must be {} bytes (got {})", xks::XKS_TAG_LEN, tag.len()),
            )
            .into());
        }
        if iv.len() != 12 && iv.len() != 16 {
            return Err(DomainError::invalid(
                "initializationVector",
                format!("must be 12 or 16 bytes (got {})", iv.len()),
            )
            .into());
        }
        let gcm_aad = xks::gcm_aad(&req.aad, &req.metadata)?;
        let XksKey {
            key_id, vault_id, ..
        } = req;
        let id = key_id.clone();
        self.with_usable_key(principal, key_id, CryptoOp::Decrypt, move |inner, key| {
            in_vault(key, vault_id.as_deref())?;
            aes_256_only(key, CryptoOp::Decrypt)?;
            // keyorch's IVs are 12 bytes: a 16-byte one was made by no encrypt of ours.
            if iv.len() != xks::XKS_IV_LEN {
                return Err(ServiceError::InvalidCiphertext { key_id: id });
            }
            let mut blob = Vec::with_capacity(iv.len() + ciphertext.len() + tag.len());
            blob.extend_from_slice(&iv);
            blob.extend_from_slice(&ciphertext);
            blob.extend_from_slice(&tag);
            inner
                .hsm
                .decrypt(&key_ref(key)?, &blob, &gcm_aad)
                .map_err(ciphertext_error(&id))
        })
        .await
    }

    /// A real round trip through keyorchd's HSM: AES-256-GCM encrypt and decrypt with a
    /// test key of its own (generated in the HSM on first use, never a managed key).
    pub async fn hsm_self_test(&self) -> Result<(), ServiceError> {
        self.blocking(|inner| {
            let wrapped = match inner.self_test_key.get() {
                Some(w) => w.clone(),
                None => {
                    let made = inner.hsm.generate(super::keys::kind(KeySpec::Aes256))?;
                    inner.self_test_key.get_or_init(|| made.wrapped).clone()
                }
            };
            let key = KeyRef {
                id: SELF_TEST_KEY_ID,
                kind: super::keys::kind(KeySpec::Aes256),
                wrapped: &wrapped,
                spki_der: None,
            };
            let probe = b"keyorch xks health";
            let sealed = inner.hsm.encrypt(&key, probe, b"health")?;
            let opened = inner.hsm.decrypt(&key, &sealed, b"health")?;
            if opened[..] != probe[..] {
                return Err(ServiceError::Internal(
                    "the HSM self-test did not decrypt to its plaintext".into(),
                ));
            }
            Ok(())
        })
        .await
    }
}

/// XKS v1 serves AES-256 keys only, and keyorchd's proxy only keys its HSM holds (not the
/// external keys of its own xks keystores).
fn aes_256_only(key: &Key, op: CryptoOp) -> Result<(), ServiceError> {
    if let Some((keystore_id, external_key_id)) = key.external_ref() {
        return Err(DomainError::KeyUnavailable {
            id: key.id.clone(),
            reason: format!("it references the external key {external_key_id} of xks keystore {keystore_id}; keyorchd's XKS proxy serves only keys its own HSM holds"),
        }
        .into());
    }
    if key.spec == KeySpec::Aes256 {
        Ok(())
    } else {
        Err(DomainError::KeyUsage {
            id: key.id.clone(),
            spec: key.spec,
            op,
        }
        .into())
    }
}
