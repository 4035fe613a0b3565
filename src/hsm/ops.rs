//! Operations with stored keys: AES-GCM encrypt and decrypt, RSA and ECDSA sign and verify,
//! HMAC-SHA256, random bytes, and key check values, all computed inside the HSM.

use std::sync::Mutex;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use sha2::{Digest, Sha256, Sha384};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::context::lock;
use super::ecdsa_sig;
use super::error::{HsmError, OpError};
use super::objects;
use super::spki::PublicKey;
use super::{Family, Hsm, Inner, KeyKind, KeyRef, SignAlg};
use crate::secret::SecretBytes;

/// AES-GCM nonce length (from the HSM's RNG) and tag length.
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// IVs fetched per C_GenerateRandom (340 IVs, 4080 bytes).
const IVS_PER_DRAW: usize = 340;
/// Bytes of a key check value.
const KCV_LEN: usize = 8;
/// Fixed input for the EC pairing check in [`Hsm::check_key`].
const PAIRING_PROBE: &[u8] = b"keyorch key pairing probe";

/// Random GCM IVs from the HSM's RNG, drawn [`IVS_PER_DRAW`] at a time instead of one
/// `C_GenerateRandom` per Encrypt (which cost ≈ 11 % of an Encrypt's time in the HSM thread;
/// docs/benchmarks.md). Each IV is handed out once and then removed. IVs are not secret —
/// they are sent with the ciphertext — so holding the next few hundred in memory gives
/// nothing away; what GCM needs, that an IV never repeats under one key, is kept by taking
/// each one out of the block exactly once.
#[derive(Default)]
pub(crate) struct IvSource {
    block: Mutex<Vec<u8>>,
}

impl IvSource {
    fn next(&self, session: &Session) -> Result<[u8; IV_LEN], OpError> {
        let mut block = lock(&self.block);
        if block.len() < IV_LEN {
            let mut fresh = vec![0u8; IV_LEN * IVS_PER_DRAW];
            session.generate_random_slice(&mut fresh)?;
            *block = fresh;
        }
        let rest = block.len() - IV_LEN;
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&block[rest..]);
        block.truncate(rest);
        Ok(iv)
    }
}

fn kind_check(key: &KeyRef<'_>, op: &'static str, ok: bool) -> Result<(), HsmError> {
    if ok {
        Ok(())
    } else {
        Err(HsmError::KeyKindMismatch { op, kind: key.kind })
    }
}

fn is_aes(kind: KeyKind) -> bool {
    matches!(kind.family(), Family::Aes(_))
}

fn is_hmac(kind: KeyKind) -> bool {
    matches!(kind.family(), Family::Hmac(_))
}

/// The PKCS#11 mechanism for an RSA signature algorithm (hashing included).
fn rsa_mechanism(alg: SignAlg) -> Option<Mechanism<'static>> {
    let pss = |hash_alg, mgf, s_len: u64| PkcsPssParams {
        hash_alg,
        mgf,
        s_len: s_len.into(),
    };
    Some(match alg {
        SignAlg::RsaPssSha256 => {
            Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32))
        }
        SignAlg::RsaPssSha384 => {
            Mechanism::Sha384RsaPkcsPss(pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48))
        }
        SignAlg::RsaPssSha512 => {
            Mechanism::Sha512RsaPkcsPss(pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64))
        }
        SignAlg::RsaPkcs1Sha256 => Mechanism::Sha256RsaPkcs,
        SignAlg::RsaPkcs1Sha384 => Mechanism::Sha384RsaPkcs,
        SignAlg::RsaPkcs1Sha512 => Mechanism::Sha512RsaPkcs,
        SignAlg::EcdsaSha256 | SignAlg::EcdsaSha384 => return None,
    })
}

/// The digest an ECDSA algorithm signs (computed in software: it is not secret); None for RSA.
fn ecdsa_digest(alg: SignAlg, message: &[u8]) -> Option<Vec<u8>> {
    match alg {
        SignAlg::EcdsaSha256 => Some(Sha256::digest(message).to_vec()),
        SignAlg::EcdsaSha384 => Some(Sha384::digest(message).to_vec()),
        _ => None,
    }
}

fn field_len(kind: KeyKind) -> usize {
    match kind.family() {
        Family::Ec(curve) => curve.field_len(),
        _ => 0,
    }
}

/// True for the return values that mean "this signature is wrong".
fn is_bad_signature(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)
    )
}

/// KCV of a secret-key object: AES → AES-CMAC over 16 zero bytes; HMAC → HMAC-SHA256 over 32
/// zero bytes; first 8 bytes, lowercase hex.
pub(crate) fn kcv_of_secret(
    session: &Session,
    handle: ObjectHandle,
    kind: KeyKind,
) -> Result<String, OpError> {
    let mac = match kind.family() {
        Family::Aes(_) => session.sign(&Mechanism::AesCMac, handle, &[0u8; 16])?,
        Family::Hmac(_) => session.sign(&Mechanism::Sha256Hmac, handle, &[0u8; 32])?,
        Family::Rsa(_) | Family::Ec(_) => {
            return Err(HsmError::KeyKindMismatch {
                op: "secret key check value",
                kind,
            }
            .into())
        }
    };
    prefix_hex(&mac)
}

/// KCV of a key pair: SHA-256 (`C_Digest` in the HSM) over the DER SPKI; first 8 bytes, hex.
pub(crate) fn kcv_of_public(session: &Session, spki_der: &[u8]) -> Result<String, OpError> {
    prefix_hex(&session.digest(&Mechanism::Sha256, spki_der)?)
}

fn prefix_hex(bytes: &[u8]) -> Result<String, OpError> {
    match bytes.get(..KCV_LEN) {
        Some(prefix) => Ok(hex::encode(prefix)),
        None => Err(HsmError::Pkcs11 {
            op: "C_Sign",
            rv: "the check value came back too short".to_string(),
        }
        .into()),
    }
}

/// Proves that an unwrapped private key belongs to the stored public key: RSA by comparing
/// modulus and exponent, EC by signing a probe and verifying it with the public key.
fn check_pairing(
    inner: &Inner,
    session: &Session,
    key: &KeyRef<'_>,
    private: ObjectHandle,
    public: &PublicKey,
) -> Result<(), OpError> {
    let mismatch = || {
        OpError::Hsm(HsmError::KeyBlobInvalid(
            "the private key does not match the stored public key",
        ))
    };
    match public {
        PublicKey::Rsa { .. } => {
            let attrs = session.get_attributes(
                private,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            match attrs.as_slice() {
                [Attribute::Modulus(n), Attribute::PublicExponent(e)]
                    if PublicKey::rsa(n, e) == *public =>
                {
                    Ok(())
                }
                _ => Err(mismatch()),
            }
        }
        PublicKey::Ec { .. } => {
            let digest = Sha256::digest(PAIRING_PROBE);
            let signature = session.sign(&Mechanism::Ecdsa, private, &digest)?;
            let public_object = inner.public_object(key)?;
            match session.verify(
                &Mechanism::Ecdsa,
                public_object.handle(),
                &digest,
                &signature,
            ) {
                Ok(()) => Ok(()),
                Err(e) if is_bad_signature(&e) => Err(mismatch()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

impl Hsm {
    /// Unwraps the stored key (or takes it from the cache) and recomputes its check value,
    /// proving the blob is usable. For key pairs it also proves that the private key matches
    /// the stored SPKI, over which the check value is computed.
    pub fn check_key(&self, key: &KeyRef<'_>) -> Result<String, HsmError> {
        let public = match (key.kind.is_symmetric(), key.spki_der) {
            (true, _) => None,
            (false, Some(spki)) => {
                let public = PublicKey::from_spki_der(spki)?;
                if !objects::public_fits(&public, key.kind) {
                    return Err(HsmError::KeyBlobInvalid(
                        "the public key is not of the stated kind",
                    ));
                }
                Some((public, spki))
            }
            (false, None) => {
                return Err(HsmError::KeyBlobInvalid(
                    "no public key (SPKI) was given for an asymmetric key",
                ))
            }
        };
        self.inner.run(|inner, session| {
            let object = inner.key_object(key)?;
            match &public {
                None => kcv_of_secret(session, object.handle(), key.kind),
                Some((public, spki)) => {
                    check_pairing(inner, session, key, object.handle(), public)?;
                    kcv_of_public(session, spki)
                }
            }
        })
    }

    /// AES-256/192/128-GCM with a 12-byte IV from the HSM's RNG (see [`IvSource`]) and a
    /// 16-byte tag. Returns `IV || ciphertext || tag`.
    pub fn encrypt(
        &self,
        key: &KeyRef<'_>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        kind_check(key, "encrypt", is_aes(key.kind))?;
        self.inner.run(|inner, session| {
            let object = inner.key_object(key)?;
            let iv = inner.ivs.next(session)?;
            let mut param_iv = iv;
            let params = GcmParams::new(&mut param_iv, aad, ((TAG_LEN * 8) as u64).into())?;
            let sealed = session.encrypt(&Mechanism::AesGcm(params), object.handle(), plaintext)?;
            let mut out = Vec::with_capacity(IV_LEN + sealed.len());
            out.extend_from_slice(&iv);
            out.extend_from_slice(&sealed);
            Ok(out)
        })
    }

    /// AES-CBC with PKCS#7 padding (`CKM_AES_CBC_PAD`) and a 16-byte IV from the HSM's RNG.
    /// Returns `IV || ciphertext`. Not for keyorch's own ciphertexts (no integrity): what
    /// IBM Hyper Protect Crypto Services' import flow asks for, the import token's nonce
    /// encrypted under the key being imported, proving the importer holds it.
    pub fn encrypt_cbc_pad(&self, key: &KeyRef<'_>, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        kind_check(key, "encrypt (AES-CBC-PAD)", is_aes(key.kind))?;
        self.inner.run(|inner, session| {
            let object = inner.key_object(key)?;
            let random = session.generate_random_vec(16)?;
            let mut iv = [0u8; 16];
            iv.copy_from_slice(&random);
            let sealed = session.encrypt(&Mechanism::AesCbcPad(iv), object.handle(), plaintext)?;
            let mut out = Vec::with_capacity(iv.len() + sealed.len());
            out.extend_from_slice(&iv);
            out.extend_from_slice(&sealed);
            Ok(out)
        })
    }

    /// Opens `IV || ciphertext || tag` from [`Hsm::encrypt`]. Fails with
    /// [`HsmError::InvalidCiphertext`] when the blob is too short or the tag does not verify.
    ///
    /// SoftHSM2 reports a failed tag as `CKR_GENERAL_ERROR` from `C_Decrypt` rather than
    /// `CKR_ENCRYPTED_DATA_INVALID`; both count as an invalid ciphertext.
    pub fn decrypt(
        &self,
        key: &KeyRef<'_>,
        blob: &[u8],
        aad: &[u8],
    ) -> Result<SecretBytes, HsmError> {
        kind_check(key, "decrypt", is_aes(key.kind))?;
        if blob.len() < IV_LEN + TAG_LEN {
            return Err(HsmError::InvalidCiphertext);
        }
        let (iv, sealed) = blob.split_at(IV_LEN);
        self.inner.run(|inner, session| {
            let object = inner.key_object(key)?;
            let mut param_iv = [0u8; IV_LEN];
            param_iv.copy_from_slice(iv);
            let params = GcmParams::new(&mut param_iv, aad, ((TAG_LEN * 8) as u64).into())?;
            match session.decrypt(&Mechanism::AesGcm(params), object.handle(), sealed) {
                Ok(plain) => Ok(SecretBytes::new(plain)),
                Err(CkError::Pkcs11(
                    RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::GeneralError,
                    cryptoki::context::Function::Decrypt,
                )) => Err(HsmError::InvalidCiphertext.into()),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Signs `message`. RSA: PSS or PKCS#1 v1.5 with the HSM's combined hash-and-sign
    /// mechanisms. ECDSA: the hash is computed in software, `CKM_ECDSA` in the HSM, and the
    /// raw `r || s` returned as a DER `Ecdsa-Sig-Value`.
    pub fn sign(
        &self,
        key: &KeyRef<'_>,
        alg: SignAlg,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        kind_check(key, "sign", alg.fits(key.kind))?;
        let ecdsa_input = ecdsa_digest(alg, message);
        self.inner.run(|inner, session| {
            let object = inner.key_object(key)?;
            match (&ecdsa_input, rsa_mechanism(alg)) {
                (None, Some(mechanism)) => {
                    Ok(session.sign(&mechanism, object.handle(), message)?)
                }
                (Some(digest), _) => {
                    let raw = session.sign(&Mechanism::Ecdsa, object.handle(), digest)?;
                    ecdsa_sig::raw_to_der(&raw).ok_or_else(|| {
                        OpError::Hsm(HsmError::Pkcs11 {
                            op: "C_Sign",
                            rv: "the ECDSA signature has an odd length".to_string(),
                        })
                    })
                }
                (None, None) => Err(HsmError::KeyKindMismatch {
                    op: "sign",
                    kind: key.kind,
                }
                .into()),
            }
        })
    }

    /// Verifies in the HSM with a public-key session object built from the key's SPKI (cached
    /// like private keys). A wrong or malformed signature is `Ok(false)`, never an error.
    pub fn verify(
        &self,
        key: &KeyRef<'_>,
        alg: SignAlg,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, HsmError> {
        kind_check(key, "verify", alg.fits(key.kind))?;
        let ecdsa_input = match ecdsa_digest(alg, message) {
            Some(digest) => match ecdsa_sig::der_to_raw(signature, field_len(key.kind)) {
                Some(raw) => Some((digest, raw)),
                None => return Ok(false),
            },
            None => None,
        };
        self.inner.run(|inner, session| {
            let object = inner.public_object(key)?;
            let result = match (&ecdsa_input, rsa_mechanism(alg)) {
                (None, Some(mechanism)) => {
                    session.verify(&mechanism, object.handle(), message, signature)
                }
                (Some((digest, raw)), _) => {
                    session.verify(&Mechanism::Ecdsa, object.handle(), digest, raw)
                }
                (None, None) => {
                    return Err(HsmError::KeyKindMismatch {
                        op: "verify",
                        kind: key.kind,
                    }
                    .into())
                }
            };
            match result {
                Ok(()) => Ok(true),
                Err(e) if is_bad_signature(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// HMAC-SHA256 (`CKM_SHA256_HMAC` on a `CKK_GENERIC_SECRET` key): 32 bytes.
    pub fn hmac(&self, key: &KeyRef<'_>, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        kind_check(key, "hmac", is_hmac(key.kind))?;
        self.inner.run(|inner, session| {
            let object = inner.key_object(key)?;
            Ok(session.sign(&Mechanism::Sha256Hmac, object.handle(), message)?)
        })
    }

    /// Recomputes the MAC in the HSM and compares in constant time.
    pub fn verify_hmac(
        &self,
        key: &KeyRef<'_>,
        message: &[u8],
        mac: &[u8],
    ) -> Result<bool, HsmError> {
        let expected = self.hmac(key, message)?;
        Ok(expected.len() == mac.len() && bool::from(expected.ct_eq(mac)))
    }

    /// `len` bytes from the HSM's random number generator.
    pub fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let len32 = u32::try_from(len).map_err(|_| HsmError::Pkcs11 {
            op: "C_GenerateRandom",
            rv: "CKR_DATA_LEN_RANGE".to_string(),
        })?;
        if len32 == 0 {
            return Ok(Zeroizing::new(Vec::new()));
        }
        self.inner
            .run(|_, session| Ok(Zeroizing::new(session.generate_random_vec(len32)?)))
    }
}
