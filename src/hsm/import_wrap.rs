//! Wrapping a secret key for a cloud KMS's import: RSA-OAEP of the key's raw value directly
//! under the KMS's wrapping public key (`C_WrapKey` inside the HSM), as AWS `RSAES_OAEP_SHA_*`.

use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::error::{HsmError, OpError};
use super::objects::{self, Temporary};
use super::spki::PublicKey;
use super::transport::oaep_mechanism;
use super::{Family, Hsm, KeyKind, KeyRef, OaepHash};

/// Smallest RSA modulus keyorch wraps to.
const MIN_WRAPPING_KEY_BITS: usize = 2048;

/// A wrap-only RSA public-key session object.
fn wrapping_public_template(modulus: &[u8], exponent: &[u8]) -> [Attribute; 10] {
    [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Wrap(true),
        Attribute::Encrypt(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Modulus(modulus.to_vec()),
        Attribute::PublicExponent(exponent.to_vec()),
    ]
}

/// The secret key as a temporary session object that can be wrapped and do nothing else; None
/// for key pairs (their private halves do not fit in one RSA-OAEP block).
fn extractable_secret_template(kind: KeyKind) -> Option<[Attribute; 13]> {
    let key_type = match kind.family() {
        Family::Aes(_) => KeyType::AES,
        Family::Hmac(_) => KeyType::GENERIC_SECRET,
        Family::Rsa(_) | Family::Ec(_) => return None,
    };
    Some([
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ])
}

/// `RSA-OAEP(hash, MGF1(hash), empty label)` of the key's value under `(modulus, exponent)`;
/// the public key and the extractable copy are session objects destroyed before this returns.
fn wrap_in(
    session: &Session,
    master_kek: ObjectHandle,
    key: &KeyRef<'_>,
    template: &[Attribute],
    (modulus, exponent): (&[u8], &[u8]),
    hash: OaepHash,
) -> Result<Vec<u8>, OpError> {
    let public = Temporary::new(
        session,
        session.create_object(&wrapping_public_template(modulus, exponent))?,
    );
    let secret = Temporary::new(
        session,
        objects::unwrap_with(session, master_kek, key.wrapped, key.kind, template)?,
    );
    objects::check_unwrapped(session, secret.handle(), key.kind)?;
    Ok(session.wrap_key(&oaep_mechanism(hash), public.handle(), secret.handle())?)
}

impl Hsm {
    /// RSA-OAEP wrap of a secret key's raw value directly under `target_spki` (DER
    /// SubjectPublicKeyInfo of an RSA key of at least 2048 bits): what AWS KMS imports as
    /// `RSAES_OAEP_SHA_1` / `RSAES_OAEP_SHA_256`. OAEP uses `hash` for the digest and MGF1 and
    /// an empty label.
    ///
    /// Inside this HSM: the public key becomes a wrap-only session object, the managed key is
    /// unwrapped from `key.wrapped` under the master KEK into a temporary extractable session
    /// object, and `C_WrapKey` does the rest; both objects are destroyed before this returns
    /// (also on error). AES and HMAC keys only (`KeyKindMismatch` otherwise); SHA-256 only
    /// where [`Hsm::supports_oaep_sha256`] (`Unsupported` otherwise; SoftHSM2 does SHA-1 only).
    pub fn wrap_oaep(
        &self,
        key: &KeyRef<'_>,
        target_spki: &[u8],
        hash: OaepHash,
    ) -> Result<Vec<u8>, HsmError> {
        let template = extractable_secret_template(key.kind).ok_or(HsmError::KeyKindMismatch {
            op: "RSA-OAEP key wrap (secret keys only)",
            kind: key.kind,
        })?;
        let target = PublicKey::from_spki_der(target_spki)?;
        let PublicKey::Rsa { modulus, exponent } = &target else {
            return Err(HsmError::KeyBlobInvalid(
                "the wrapping key (SPKI) is not an RSA key",
            ));
        };
        if target.bits() < MIN_WRAPPING_KEY_BITS {
            return Err(HsmError::KeyBlobInvalid(
                "the wrapping key is shorter than 2048 bits",
            ));
        }
        if hash == OaepHash::Sha256 && !self.supports_oaep_sha256() {
            return Err(HsmError::Unsupported(
                "RSA-OAEP with SHA-256 (C_WrapKey): this HSM does SHA-1 only".to_string(),
            ));
        }
        self.inner.run(|inner, session| {
            let kek = inner.kek_handle(session)?;
            wrap_in(session, kek, key, &template, (modulus, exponent), hash)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_secret_kinds_get_an_extractable_template() {
        for kind in KeyKind::ALL {
            assert_eq!(
                extractable_secret_template(kind).is_some(),
                kind.is_symmetric(),
                "{kind:?}"
            );
        }
    }
}
