//! Installed objects in the target: the shape of each key kind, their templates, finding them
//! by label, and proving an object's shape and a key pair's pairing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::{Digest, Sha256};

use crate::hsm::{self, Curve, KeyKind, PublicKey};

use super::session::Failure;
use super::{TargetError, IMPORT_KEK_LABEL, INSTALLED_LABEL_PREFIX};

/// What the EC pairing check signs (its SHA-256, with `CKM_ECDSA`).
const PAIRING_PROBE: &[u8] = b"keyorch target pairing probe";

/// The shape of a kind, as the target stores it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// AES with a key of this many bytes.
    Aes(usize),
    /// A generic secret of this many bytes, for HMAC-SHA256.
    Hmac(usize),
    /// RSA with a modulus of this many bits.
    Rsa(usize),
    Ec(Curve),
}

pub(super) fn shape(kind: KeyKind) -> Shape {
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
    pub(super) fn class(self) -> ObjectClass {
        match self {
            Shape::Aes(_) | Shape::Hmac(_) => ObjectClass::SECRET_KEY,
            Shape::Rsa(_) | Shape::Ec(_) => ObjectClass::PRIVATE_KEY,
        }
    }

    pub(super) fn key_type(self) -> KeyType {
        match self {
            Shape::Aes(_) => KeyType::AES,
            Shape::Hmac(_) => KeyType::GENERIC_SECRET,
            Shape::Rsa(_) => KeyType::RSA,
            Shape::Ec(_) => KeyType::EC,
        }
    }

    /// True when `public` has this shape's modulus size or curve.
    pub(super) fn fits(self, public: &PublicKey) -> bool {
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
pub(super) fn installed_template(kind: KeyKind, label: &str) -> Vec<Attribute> {
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
pub(super) fn public_template(public: &PublicKey, label: &str) -> Result<Vec<Attribute>, Failure> {
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

pub(super) fn internal(message: String) -> Failure {
    Failure::Target(TargetError::Internal(message))
}

/// Every token object labelled `label`, by a search.
pub(super) fn find_labelled(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, Failure> {
    Ok(session.find_objects(&[
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?)
}

/// The handles of the objects under each label as this target last saw them.
///
/// A search costs SoftHSM2 a look at every object file of the token, so it grows with the
/// number of keys installed there; reading one attribute of a known handle does not. Remembered
/// handles are used only after each one is read back with its label (a deleted object's handle
/// fails, a reused handle shows another label); anything else falls back to a search. An object
/// added under the same label by someone else, next to the remembered ones, goes unseen until
/// the next search.
#[derive(Default)]
pub(super) struct KnownLabels {
    handles: Mutex<HashMap<String, Vec<ObjectHandle>>>,
}

impl KnownLabels {
    fn get(&self, label: &str) -> Vec<ObjectHandle> {
        super::lock(&self.handles)
            .get(label)
            .cloned()
            .unwrap_or_default()
    }

    /// Remembers what is under `label` (nothing: forgets the label).
    pub(super) fn set(&self, label: &str, handles: Vec<ObjectHandle>) {
        let mut known = super::lock(&self.handles);
        if handles.is_empty() {
            known.remove(label);
        } else {
            known.insert(label.to_string(), handles);
        }
    }

    pub(super) fn clear(&self) {
        super::lock(&self.handles).clear();
    }

    /// The objects labelled `label`: the remembered handles if every one still carries the
    /// label, else the result of a search (which is then remembered).
    pub(super) fn objects(
        &self,
        session: &Session,
        label: &str,
    ) -> Result<Vec<ObjectHandle>, Failure> {
        let known = self.get(label);
        if !known.is_empty() && still_labelled(session, &known, label)? {
            return Ok(known);
        }
        let found = find_labelled(session, label)?;
        self.set(label, found.clone());
        Ok(found)
    }
}

/// True when every handle still names an object labelled `label`.
fn still_labelled(
    session: &Session,
    handles: &[ObjectHandle],
    label: &str,
) -> Result<bool, Failure> {
    for handle in handles {
        match session.get_attributes(*handle, &[AttributeType::Label]) {
            Ok(attrs) => {
                if !matches!(attrs.first(), Some(Attribute::Label(l)) if l == label.as_bytes()) {
                    return Ok(false);
                }
            }
            Err(CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, _)) => {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Each object's class and key type (None where the object has none, e.g. a data object).
pub(super) fn describe(
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

/// True when the object has the class, key type and size (or curve) of `shape`.
pub(super) fn has_shape(
    session: &Session,
    handle: ObjectHandle,
    shape: Shape,
) -> Result<bool, Failure> {
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
pub(super) fn pairs(
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
pub(super) fn is_unusable(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::KeyFunctionNotPermitted
            | RvError::KeyTypeInconsistent
            | RvError::KeySizeRange
            | RvError::KeyHandleInvalid
    )
}

/// The public key held by a public-key object; None when its attributes do not make one.
pub(super) fn read_public(
    session: &Session,
    handle: ObjectHandle,
) -> Result<Option<PublicKey>, Failure> {
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
