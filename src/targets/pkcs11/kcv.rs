//! The key check value as the target computes it, by keyorch's definition, so that a target's
//! copy can be proven identical to keyorch's key (or shown to differ).

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::{Digest, Sha256};

use crate::hsm::KeyKind;

use super::objects::{
    describe, has_shape, internal, is_unusable, pairs, read_public, shape, KnownLabels, Shape,
};
use super::session::Failure;
use super::UNUSABLE_KCV;

/// Bytes of a key check value.
const KCV_LEN: usize = 8;

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
    known: &KnownLabels,
) -> Result<Option<String>, Failure> {
    let handles = known.objects(session, label)?;
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
}
