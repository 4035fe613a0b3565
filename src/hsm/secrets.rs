//! Sealing small secrets (keystore credentials such as a target's PIN) under the master KEK,
//! so that the store keeps only the sealed blob; plaintext lives in zeroizing memory only.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;
use zeroize::{Zeroize, Zeroizing};

use super::error::{HsmError, OpError};
use super::objects::Temporary;
use super::Hsm;

/// The largest secret [`Hsm::seal_secret`] takes: the largest credential keyorch stores is a
/// Google service account JSON key file, at most 4 KB (about 2.4 KB as Google makes them).
pub const MAX_SECRET_LEN: usize = 4096;

/// First byte of the sealed plaintext: the format version. It also keeps the plaintext
/// non-empty, which RFC 5649 requires, so an empty secret can be sealed too.
const FORMAT_V1: u8 = 0x01;

/// Random bytes (from the HSM) after the version: RFC 5649 is deterministic, and without them
/// two keystores with the same PIN would store the same sealed blob.
const SALT_LEN: usize = 8;

/// Bytes of the sealed plaintext before the secret: version, salt, secret length (u16 BE).
const HEADER_LEN: usize = 1 + SALT_LEN + 2;

/// The sealed plaintext is zero-padded to a multiple of 8 bytes by keyorch itself: SoftHSM2
/// 2.6.1 hands a generic secret unwrapped with `CKM_AES_KEY_WRAP_PAD` back with RFC 5649's
/// padding still on, so the length is recorded in the header rather than trusted to the HSM.
fn framed_len(secret_len: usize) -> usize {
    (HEADER_LEN + secret_len).div_ceil(8) * 8
}

/// Length of the sealed blob of a secret of `secret_len` bytes (RFC 5649 adds 8 bytes).
fn sealed_len(secret_len: usize) -> usize {
    framed_len(secret_len) + 8
}

/// Attributes of the temporary generic-secret object that carries the secret through the wrap.
fn carrier(sensitive: bool) -> [Attribute; 12] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(sensitive),
        Attribute::Extractable(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ]
}

fn seal_in(
    session: &Session,
    kek: cryptoki::object::ObjectHandle,
    secret: &[u8],
) -> Result<Vec<u8>, OpError> {
    let len = u16::try_from(secret.len())
        .map_err(|_| HsmError::Unsupported("sealing a secret this long".to_string()))?;
    let mut value = Zeroizing::new(Vec::with_capacity(framed_len(secret.len())));
    value.push(FORMAT_V1);
    value.extend_from_slice(&session.generate_random_vec(SALT_LEN as u32)?);
    value.extend_from_slice(&len.to_be_bytes());
    value.extend_from_slice(secret);
    value.resize(framed_len(secret.len()), 0);
    let mut template = carrier(true).to_vec();
    template.push(Attribute::Value(value.to_vec()));
    let created = session.create_object(&template);
    for attr in &mut template {
        if let Attribute::Value(v) = attr {
            v.zeroize();
        }
    }
    let object = Temporary::new(session, created?);
    Ok(session.wrap_key(&Mechanism::AesKeyWrapPad, kek, object.handle())?)
}

fn unseal_in(
    session: &Session,
    kek: cryptoki::object::ObjectHandle,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpError> {
    let invalid = || {
        OpError::Hsm(HsmError::KeyBlobInvalid(
            "the sealed secret does not unseal",
        ))
    };
    let handle = match session.unwrap_key(&Mechanism::AesKeyWrapPad, kek, sealed, &carrier(false)) {
        Ok(handle) => handle,
        Err(CkError::Pkcs11(
            RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::GeneralError
            | RvError::FunctionFailed,
            _,
        )) => return Err(invalid()),
        Err(e) => return Err(e.into()),
    };
    let object = Temporary::new(session, handle);
    let mut attrs = session.get_attributes(object.handle(), &[AttributeType::Value])?;
    let value = match attrs.pop() {
        Some(Attribute::Value(v)) => Zeroizing::new(v),
        _ => return Err(invalid()),
    };
    drop(object);
    let (header, rest) = value.split_at_checked(HEADER_LEN).ok_or_else(invalid)?;
    let len = usize::from(u16::from_be_bytes([
        header[HEADER_LEN - 2],
        header[HEADER_LEN - 1],
    ]));
    match (header.first(), rest.split_at_checked(len)) {
        (Some(&FORMAT_V1), Some((secret, padding))) if padding.iter().all(|b| *b == 0) => {
            Ok(Zeroizing::new(secret.to_vec()))
        }
        _ => Err(invalid()),
    }
}

impl Hsm {
    /// Seals a small secret (at most [`MAX_SECRET_LEN`] bytes, for example a keystore PIN) under
    /// the master KEK: `0x01 || 8 random bytes || secret` becomes a temporary generic-secret
    /// session object, wrapped with `CKM_AES_KEY_WRAP_PAD` (RFC 5649) and destroyed. The result
    /// is what the store keeps; sealing the same secret twice gives different blobs.
    pub fn seal_secret(&self, secret: &[u8]) -> Result<Vec<u8>, HsmError> {
        if secret.len() > MAX_SECRET_LEN {
            return Err(HsmError::Unsupported(format!(
                "sealing secrets longer than {MAX_SECRET_LEN} bytes"
            )));
        }
        self.inner.run(|inner, session| {
            let kek = inner.kek_handle(session)?;
            seal_in(session, kek, secret)
        })
    }

    /// Opens a blob from [`Hsm::seal_secret`]. A blob that does not unwrap under this token's
    /// master KEK fails with [`HsmError::KeyBlobInvalid`].
    pub fn unseal_secret(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let shortest = sealed_len(0);
        if sealed.len() < shortest
            || sealed.len() > sealed_len(MAX_SECRET_LEN)
            || !sealed.len().is_multiple_of(8)
        {
            return Err(HsmError::KeyBlobInvalid(
                "the sealed secret does not unseal",
            ));
        }
        self.inner.run(|inner, session| {
            let kek = inner.kek_handle(session)?;
            unseal_in(session, kek, sealed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_lengths_follow_rfc_5649() {
        assert_eq!(sealed_len(0), 24);
        assert_eq!(sealed_len(5), 24);
        assert_eq!(sealed_len(6), 32);
        assert_eq!(sealed_len(MAX_SECRET_LEN), 4120);
    }
}
