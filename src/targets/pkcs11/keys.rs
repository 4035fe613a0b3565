//! Managed keys in the target: the templates of installed objects, install through the import
//! KEK, uninstall, the check value computed in the target, and the labels keyorch installed.

use std::collections::BTreeSet;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::{Digest, Sha256};

use crate::hsm::{self, Curve, KeyKind, OaepHash, PublicKey, Temporary};

use super::import_kek::KekHandles;
use super::session::Failure;
use super::{TargetError, IMPORT_KEK_LABEL, INSTALLED_LABEL_PREFIX, UNUSABLE_KCV};

/// Bytes of a key check value.
const KCV_LEN: usize = 8;
/// What the EC pairing check signs (its SHA-256, with `CKM_ECDSA`).
const PAIRING_PROBE: &[u8] = b"keyorch target pairing probe";

/// What an install attempt did.
pub(super) enum Installed {
    /// Finished; `true` when it created an object.
    Done(bool),
    /// The cached import KEK handle no longer works: look it up and try again.
    KekStale,
}

/// The shape of a kind, as the target stores it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// AES with a key of this many bytes.
    Aes(usize),
    /// A generic secret of this many bytes, for HMAC-SHA256.
    Hmac(usize),
    /// RSA with a modulus of this many bits.
    Rsa(usize),
    Ec(Curve),
}

fn shape(kind: KeyKind) -> Shape {
    match kind {
        KeyKind::Aes128 => Shape::Aes(16),
        KeyKind::Aes192 => Shape::Aes(24),
        KeyKind::Aes256 => Shape::Aes(32),
        KeyKind::HmacSha256 => Shape::Hmac(32),
        KeyKind::Rsa2048 => Shape::Rsa(2048),
        KeyKind::Rsa3072 => Shape::Rsa(3072),
        KeyKind::Rsa4096 => Shape::Rsa(4096),
        KeyKind::EcP256 => Shape::Ec(Curve::P256),
        KeyKind::EcP384 => Shape::Ec(Curve::P384),
    }
}

impl Shape {
    fn class(self) -> ObjectClass {
        match self {
            Shape::Aes(_) | Shape::Hmac(_) => ObjectClass::SECRET_KEY,
            Shape::Rsa(_) | Shape::Ec(_) => ObjectClass::PRIVATE_KEY,
        }
    }

    fn key_type(self) -> KeyType {
        match self {
            Shape::Aes(_) => KeyType::AES,
            Shape::Hmac(_) => KeyType::GENERIC_SECRET,
            Shape::Rsa(_) => KeyType::RSA,
            Shape::Ec(_) => KeyType::EC,
        }
    }

    /// True when `public` has this shape's modulus size or curve.
    fn fits(self, public: &PublicKey) -> bool {
        match (self, public) {
            (Shape::Rsa(bits), PublicKey::Rsa { .. }) => public.bits() == bits,
            (Shape::Ec(curve), PublicKey::Ec { curve: c, .. }) => curve == *c,
            _ => false,
        }
    }
}

/// Refuses labels keyorch must never touch: empty ones and the import KEK's.
pub(super) fn check_label(label: &str) -> Result<(), TargetError> {
    if label.is_empty() || label == IMPORT_KEK_LABEL {
        return Err(TargetError::InvalidConfiguration(format!(
            "{label:?} cannot label a managed key in the target"
        )));
    }
    Ok(())
}

/// The public key an asymmetric install needs, parsed and checked against `kind`; None for
/// symmetric kinds.
pub(super) fn parse_spki(
    kind: KeyKind,
    spki: Option<&[u8]>,
) -> Result<Option<PublicKey>, TargetError> {
    if kind.is_symmetric() {
        return Ok(None);
    }
    let der = spki.ok_or_else(|| {
        TargetError::Internal(format!(
            "installing a {kind:?} key needs its public key (SPKI)"
        ))
    })?;
    let public = PublicKey::from_spki_der(der)?;
    if !shape(kind).fits(&public) {
        return Err(TargetError::Internal(format!(
            "the public key (SPKI) is not a {kind:?} key"
        )));
    }
    Ok(Some(public))
}

/// Attributes every installed object has: a token object labelled and identified by `label`.
fn labelled(label: &str) -> [Attribute; 3] {
    [
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
    ]
}

/// The template of the installed secret or private key: sensitive, never extractable, allowed
/// only what its kind needs.
fn installed_template(kind: KeyKind, label: &str) -> Vec<Attribute> {
    let shape = shape(kind);
    let mut t = labelled(label).to_vec();
    t.extend([
        Attribute::Class(shape.class()),
        Attribute::KeyType(shape.key_type()),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Derive(false),
        Attribute::Unwrap(false),
        Attribute::Decrypt(matches!(shape, Shape::Aes(_))),
        Attribute::Sign(true),
    ]);
    match shape {
        Shape::Aes(_) | Shape::Hmac(_) => t.extend([
            Attribute::Encrypt(matches!(shape, Shape::Aes(_))),
            Attribute::Verify(true),
            Attribute::Wrap(false),
        ]),
        Shape::Rsa(_) | Shape::Ec(_) => t.push(Attribute::SignRecover(false)),
    }
    t
}

/// The template of the verify-only public half of an installed key pair.
fn public_template(public: &PublicKey, label: &str) -> Result<Vec<Attribute>, Failure> {
    let mut t = labelled(label).to_vec();
    t.extend([
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ]);
    match public {
        PublicKey::Rsa { modulus, exponent } => t.extend([
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(modulus.clone()),
            Attribute::PublicExponent(exponent.clone()),
        ]),
        PublicKey::Ec { curve, point } => t.extend([
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(curve.ec_params()?),
            Attribute::EcPoint(PublicKey::ec_point_attr(point)?),
        ]),
    }
    Ok(t)
}

/// The ephemeral AES key of a transport blob, unwrapped as a session object that only unwraps.
fn ephemeral_template() -> [Attribute; 12] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Wrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
    ]
}

/// A token object just created, destroyed on drop unless kept: a failed install leaves nothing.
struct Created<'s> {
    session: &'s Session,
    handle: ObjectHandle,
    keep: bool,
}

impl<'s> Created<'s> {
    fn new(session: &'s Session, handle: ObjectHandle) -> Created<'s> {
        Created {
            session,
            handle,
            keep: false,
        }
    }
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = self.session.destroy_object(self.handle) {
                tracing::warn!(error = %e, "could not remove a half-installed key from the target");
            }
        }
    }
}

fn internal(message: String) -> Failure {
    Failure::Target(TargetError::Internal(message))
}

fn hash_name(hash: OaepHash) -> &'static str {
    match hash {
        OaepHash::Sha1 => "SHA-1",
        OaepHash::Sha256 => "SHA-256",
    }
}

/// Return values of a wrapped key that does not decrypt or decode (SoftHSM2 reports a failed
/// RFC 5649 integrity check as `CKR_GENERAL_ERROR`, a bad encoding as `CKR_FUNCTION_FAILED`).
fn is_bad_blob(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange
            | RvError::GeneralError
            | RvError::FunctionFailed
    )
}

fn find_labelled(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, Failure> {
    Ok(session.find_objects(&[
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?)
}

/// Each object's class and key type (None where the object has none, e.g. a data object).
fn describe(
    session: &Session,
    handles: &[ObjectHandle],
) -> Result<Vec<(ObjectHandle, ObjectClass, Option<KeyType>)>, Failure> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        let attrs =
            session.get_attributes(*handle, &[AttributeType::Class, AttributeType::KeyType])?;
        let mut class = None;
        let mut key_type = None;
        for attr in attrs {
            match attr {
                Attribute::Class(c) => class = Some(c),
                Attribute::KeyType(t) => key_type = Some(t),
                _ => {}
            }
        }
        if let Some(class) = class {
            out.push((*handle, class, key_type));
        }
    }
    Ok(out)
}

/// Installs (see [`super::Pkcs11Target::install`]).
pub(super) fn install(
    session: &Session,
    kek: &KekHandles,
    label: &str,
    kind: KeyKind,
    blob: &[u8],
    hash: OaepHash,
    public: Option<&PublicKey>,
) -> Result<Installed, Failure> {
    let existing = find_labelled(session, label)?;
    if !existing.is_empty() {
        return complete_pair(session, &existing, label, public).map(Installed::Done);
    }
    let shape = shape(kind);
    let (rsa_part, kwp_part) = match blob.split_at_checked(kek.modulus_len) {
        Some((rsa, kwp)) if kwp.len() >= 16 && kwp.len().is_multiple_of(8) => (rsa, kwp),
        _ => {
            return Err(internal(format!(
                "the transport blob ({} bytes) does not fit an RSA-{} import KEK",
                blob.len(),
                kek.modulus_len * 8
            )))
        }
    };
    if let Shape::Aes(len) | Shape::Hmac(len) = shape {
        if kwp_part.len() != len.div_ceil(8) * 8 + 8 {
            return Err(internal(format!(
                "the transport blob does not hold a {kind:?} key"
            )));
        }
    }

    let ephemeral = match session.unwrap_key(
        &hsm::oaep_mechanism(hash),
        kek.private,
        rsa_part,
        &ephemeral_template(),
    ) {
        Ok(handle) => Temporary::new(session, handle),
        Err(CkError::Pkcs11(
            RvError::UnwrappingKeyHandleInvalid
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid,
            _,
        )) => return Ok(Installed::KekStale),
        Err(CkError::Pkcs11(rv, _)) if is_bad_blob(rv) => {
            return Err(internal(format!(
                "C_UnwrapKey (RSA-OAEP, {}) under {IMPORT_KEK_LABEL} failed: {}; the blob was \
                 not wrapped to this target's import KEK with this hash",
                hash_name(hash),
                hsm::ckr_name(rv)
            )))
        }
        Err(e) => return Err(e.into()),
    };

    let key = match session.unwrap_key(
        &Mechanism::AesKeyWrapPad,
        ephemeral.handle(),
        kwp_part,
        &installed_template(kind, label),
    ) {
        Ok(handle) => Created::new(session, handle),
        Err(CkError::Pkcs11(rv, _)) if is_bad_blob(rv) => {
            return Err(internal(format!(
                "C_UnwrapKey (AES-KWP) failed: {}; the blob does not hold a {kind:?} key",
                hsm::ckr_name(rv)
            )))
        }
        Err(e) => return Err(e.into()),
    };
    drop(ephemeral);
    if !has_shape(session, key.handle, shape)? {
        return Err(internal(format!(
            "the transport blob holds a key of another kind than {kind:?}"
        )));
    }
    let mut pair = None;
    if let Some(public) = public {
        let public_object = Created::new(
            session,
            session.create_object(&public_template(public, label)?)?,
        );
        if !pairs(session, key.handle, public_object.handle, public)? {
            return Err(internal(format!(
                "the installed {kind:?} private key does not match the public key given with it"
            )));
        }
        pair = Some(public_object);
    }
    let mut key = key;
    key.keep = true;
    if let Some(mut public_object) = pair {
        public_object.keep = true;
    }
    Ok(Installed::Done(true))
}

/// The label is taken: leaves it alone, except that a key pair cut short (private half only)
/// gets its public half. Returns whether it created something.
fn complete_pair(
    session: &Session,
    existing: &[ObjectHandle],
    label: &str,
    public: Option<&PublicKey>,
) -> Result<bool, Failure> {
    let Some(public) = public else {
        return Ok(false);
    };
    let objects = describe(session, existing)?;
    let privates: Vec<ObjectHandle> = objects
        .iter()
        .filter(|(_, class, _)| *class == ObjectClass::PRIVATE_KEY)
        .map(|(handle, _, _)| *handle)
        .collect();
    let has_public = objects
        .iter()
        .any(|(_, class, _)| *class == ObjectClass::PUBLIC_KEY);
    let [private] = privates.as_slice() else {
        return Ok(false);
    };
    if has_public {
        return Ok(false);
    }
    let public_object = Created::new(
        session,
        session.create_object(&public_template(public, label)?)?,
    );
    if !pairs(session, *private, public_object.handle, public)? {
        // Someone else's key under our label: leave it for the check value to report.
        return Ok(false);
    }
    let mut public_object = public_object;
    public_object.keep = true;
    tracing::info!(
        label,
        "completed a key pair cut short in the PKCS#11 target"
    );
    Ok(true)
}

/// True when the object has the class, key type and size (or curve) of `shape`.
fn has_shape(session: &Session, handle: ObjectHandle, shape: Shape) -> Result<bool, Failure> {
    let wanted = match shape {
        Shape::Aes(_) | Shape::Hmac(_) => AttributeType::ValueLen,
        Shape::Rsa(_) => AttributeType::Modulus,
        Shape::Ec(_) => AttributeType::EcParams,
    };
    let attrs = session.get_attributes(
        handle,
        &[AttributeType::Class, AttributeType::KeyType, wanted],
    )?;
    let mut class_ok = false;
    let mut type_ok = false;
    // SoftHSM2 leaves CKA_VALUE_LEN at 0 on unwrapped keys: 0 or absent is "unknown", not wrong.
    let mut size_ok = matches!(shape, Shape::Aes(_) | Shape::Hmac(_));
    for attr in &attrs {
        match (attr, shape) {
            (Attribute::Class(c), _) => class_ok = *c == shape.class(),
            (Attribute::KeyType(t), _) => type_ok = *t == shape.key_type(),
            (Attribute::ValueLen(n), Shape::Aes(len) | Shape::Hmac(len)) => {
                size_ok = [0, len as u64].contains(&u64::from(*n));
            }
            (Attribute::Modulus(n), Shape::Rsa(bits)) => size_ok = hsm::modulus_bits(n) == bits,
            (Attribute::EcParams(p), Shape::Ec(curve)) => {
                size_ok = Curve::from_ec_params(p) == Some(curve);
            }
            _ => {}
        }
    }
    Ok(class_ok && type_ok && size_ok)
}

/// True when `private` is the private half of `public` (object `public_object`): RSA by its
/// modulus and exponent, EC by signing a probe and verifying it with the public object.
fn pairs(
    session: &Session,
    private: ObjectHandle,
    public_object: ObjectHandle,
    public: &PublicKey,
) -> Result<bool, Failure> {
    match public {
        PublicKey::Rsa { .. } => {
            let attrs = session.get_attributes(
                private,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let mut modulus = None;
            let mut exponent = None;
            for attr in attrs {
                match attr {
                    Attribute::Modulus(n) => modulus = Some(n),
                    Attribute::PublicExponent(e) => exponent = Some(e),
                    _ => {}
                }
            }
            Ok(match (modulus, exponent) {
                (Some(n), Some(e)) => PublicKey::rsa(&n, &e) == *public,
                _ => false,
            })
        }
        PublicKey::Ec { .. } => {
            let digest = Sha256::digest(PAIRING_PROBE);
            let signature = match session.sign(&Mechanism::Ecdsa, private, &digest) {
                Ok(signature) => signature,
                Err(CkError::Pkcs11(rv, _)) if is_unusable(rv) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            match session.verify(&Mechanism::Ecdsa, public_object, &digest, &signature) {
                Ok(()) => Ok(true),
                Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
                    Ok(false)
                }
                Err(CkError::Pkcs11(rv, _)) if is_unusable(rv) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Return values meaning "this object cannot be used that way" (its type or usage flags).
fn is_unusable(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::KeyFunctionNotPermitted
            | RvError::KeyTypeInconsistent
            | RvError::KeySizeRange
            | RvError::KeyHandleInvalid
    )
}

/// Destroys every token object labelled `label`; false when there was none.
pub(super) fn uninstall(session: &Session, label: &str) -> Result<bool, Failure> {
    let handles = find_labelled(session, label)?;
    for handle in &handles {
        session.destroy_object(*handle)?;
    }
    Ok(!handles.is_empty())
}

fn prefix_hex(bytes: &[u8]) -> Result<String, Failure> {
    bytes
        .get(..KCV_LEN)
        .map(hex::encode)
        .ok_or_else(|| internal("the check value came back too short".to_string()))
}

fn unusable(label: &str, kind: KeyKind, why: &str) -> Option<String> {
    tracing::warn!(
        label,
        ?kind,
        why,
        "object in the PKCS#11 target is not the expected key"
    );
    Some(UNUSABLE_KCV.to_string())
}

/// The check value of the key labelled `label` (see [`super::Pkcs11Target::key_check_value`]).
pub(super) fn key_check_value(
    session: &Session,
    label: &str,
    kind: KeyKind,
) -> Result<Option<String>, Failure> {
    let handles = find_labelled(session, label)?;
    if handles.is_empty() {
        return Ok(None);
    }
    let objects = describe(session, &handles)?;
    let shape = shape(kind);
    let of_class = |class: ObjectClass| -> Vec<(ObjectHandle, Option<KeyType>)> {
        objects
            .iter()
            .filter(|(_, c, _)| *c == class)
            .map(|(h, _, t)| (*h, *t))
            .collect()
    };
    match shape {
        Shape::Aes(_) | Shape::Hmac(_) => {
            let secrets = of_class(ObjectClass::SECRET_KEY);
            let [(secret, _)] = secrets.as_slice() else {
                return Ok(unusable(label, kind, "not exactly one secret key"));
            };
            if objects.len() != 1 || !has_shape(session, *secret, shape)? {
                return Ok(unusable(label, kind, "not a key of this kind"));
            }
            match secret_kcv(session, *secret, shape)? {
                Some(kcv) => Ok(Some(kcv)),
                None => Ok(unusable(label, kind, "its usage forbids the check value")),
            }
        }
        Shape::Rsa(_) | Shape::Ec(_) => {
            let privates = of_class(ObjectClass::PRIVATE_KEY);
            let publics = of_class(ObjectClass::PUBLIC_KEY);
            let (private, public_object) = match (privates.as_slice(), publics.as_slice()) {
                ([], _) | (_, []) => return Ok(None),
                ([(private, _)], [(public, _)]) if objects.len() == 2 => (*private, *public),
                _ => return Ok(unusable(label, kind, "not one private and one public key")),
            };
            if !has_shape(session, private, shape)? {
                return Ok(unusable(label, kind, "the private key is not of this kind"));
            }
            let Some(public) = read_public(session, public_object)? else {
                return Ok(unusable(label, kind, "the public key does not parse"));
            };
            if !shape.fits(&public) {
                return Ok(unusable(label, kind, "the public key is not of this kind"));
            }
            if !pairs(session, private, public_object, &public)? {
                return Ok(unusable(
                    label,
                    kind,
                    "the private and public keys do not pair",
                ));
            }
            let spki = public.to_spki_der()?;
            let digest = match session.digest(&Mechanism::Sha256, &spki) {
                Ok(digest) => digest,
                // The SPKI is public: hashing it in software is as good.
                Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => {
                    Sha256::digest(&spki).to_vec()
                }
                Err(e) => return Err(e.into()),
            };
            prefix_hex(&digest).map(Some)
        }
    }
}

/// AES: CMAC of 16 zero bytes (`CKM_AES_CMAC`, or from two `CKM_AES_ECB` blocks when the key
/// may encrypt but not sign); HMAC: HMAC-SHA256 of 32 zero bytes. None when the key's usage
/// forbids both.
fn secret_kcv(
    session: &Session,
    handle: ObjectHandle,
    shape: Shape,
) -> Result<Option<String>, Failure> {
    let (mechanism, zeros) = match shape {
        Shape::Aes(_) => (Mechanism::AesCMac, &[0u8; 16][..]),
        _ => (Mechanism::Sha256Hmac, &[0u8; 32][..]),
    };
    match session.sign(&mechanism, handle, zeros) {
        Ok(mac) => return prefix_hex(&mac).map(Some),
        Err(CkError::Pkcs11(rv, _)) if is_unusable(rv) || rv == RvError::MechanismInvalid => {}
        Err(e) => return Err(e.into()),
    }
    if !matches!(shape, Shape::Aes(_)) {
        return Ok(None);
    }
    // CMAC of one full block M (NIST SP 800-38B): L = E(0), K1 = dbl(L), T = E(M xor K1).
    let ecb = |block: &[u8]| -> Result<Option<Vec<u8>>, Failure> {
        match session.encrypt(&Mechanism::AesEcb, handle, block) {
            Ok(out) => Ok(Some(out)),
            Err(CkError::Pkcs11(rv, _)) if is_unusable(rv) || rv == RvError::MechanismInvalid => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    };
    let Some(l) = ecb(&[0u8; 16])? else {
        return Ok(None);
    };
    let Ok(l) = <[u8; 16]>::try_from(l.as_slice()) else {
        return Err(internal("AES-ECB returned a short block".to_string()));
    };
    let Some(tag) = ecb(&cmac_subkey(l))? else {
        return Ok(None);
    };
    prefix_hex(&tag).map(Some)
}

/// The CMAC subkey K1 = dbl(L) in GF(2^128).
fn cmac_subkey(l: [u8; 16]) -> [u8; 16] {
    let v = u128::from_be_bytes(l);
    let k1 = (v << 1) ^ if v >> 127 == 1 { 0x87 } else { 0 };
    k1.to_be_bytes()
}

/// The public key held by a public-key object; None when its attributes do not make one.
fn read_public(session: &Session, handle: ObjectHandle) -> Result<Option<PublicKey>, Failure> {
    let attrs = session.get_attributes(
        handle,
        &[
            AttributeType::Modulus,
            AttributeType::PublicExponent,
            AttributeType::EcParams,
            AttributeType::EcPoint,
        ],
    )?;
    let (mut n, mut e, mut params, mut point) = (None, None, None, None);
    for attr in attrs {
        match attr {
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    Ok(match (n, e, params, point) {
        (Some(n), Some(e), _, _) => Some(PublicKey::rsa(&n, &e)),
        (_, _, Some(params), Some(point)) => PublicKey::ec(&params, &point).ok(),
        _ => None,
    })
}

/// Every token object's label that starts with [`INSTALLED_LABEL_PREFIX`], sorted, once each.
pub(super) fn installed_labels(session: &Session) -> Result<Vec<String>, Failure> {
    let mut labels = BTreeSet::new();
    for handle in session.find_objects(&[Attribute::Token(true)])? {
        for attr in session.get_attributes(handle, &[AttributeType::Label])? {
            if let Attribute::Label(bytes) = attr {
                if let Ok(label) = String::from_utf8(bytes) {
                    if label.starts_with(INSTALLED_LABEL_PREFIX) {
                        labels.insert(label);
                    }
                }
            }
        }
    }
    Ok(labels.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmac_subkey_matches_sp_800_38b() {
        // NIST SP 800-38B D.1 (AES-128): L = 7df76b0c1ab899b33e42f047b91b546f,
        // K1 = fbeed618357133667c85e08f7236a8de.
        let l = hex::decode("7df76b0c1ab899b33e42f047b91b546f").unwrap();
        let k1 = cmac_subkey(l.try_into().unwrap());
        assert_eq!(hex::encode(k1), "fbeed618357133667c85e08f7236a8de");
    }

    #[test]
    fn labels_that_are_refused() {
        assert!(check_label("").is_err());
        assert!(check_label(IMPORT_KEK_LABEL).is_err());
        assert!(check_label("keyorch-0123").is_ok());
    }

    #[test]
    fn installed_objects_are_locked_down() {
        for kind in KeyKind::ALL {
            let t = installed_template(kind, "keyorch-x");
            assert!(t.contains(&Attribute::Sensitive(true)), "{kind:?}");
            assert!(t.contains(&Attribute::Extractable(false)), "{kind:?}");
            assert!(t.contains(&Attribute::Token(true)), "{kind:?}");
            assert!(t.contains(&Attribute::Unwrap(false)), "{kind:?}");
            assert!(
                t.contains(&Attribute::Id(b"keyorch-x".to_vec())),
                "{kind:?}"
            );
        }
    }
}
