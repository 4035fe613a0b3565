//! Session objects for keys: the attribute templates per kind, unwrapping a stored blob (or
//! taking it from the cache), public-key objects from an SPKI, and temporaries destroyed on drop.

use std::sync::Arc;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::cache::{CachedObject, Role};
use super::context::lock;
use super::error::{HsmError, OpError};
use super::kek;
use super::pool::Holder;
use super::spki::{modulus_bits, Curve, PublicKey};
use super::{Family, Inner, KeyKind, KeyRef};

/// A session object destroyed when this goes out of scope (errors ignored: the session may be
/// gone already, taking the object with it).
pub(crate) struct Temporary<'s> {
    session: &'s Session,
    handle: ObjectHandle,
}

impl<'s> Temporary<'s> {
    pub(crate) fn new(session: &'s Session, handle: ObjectHandle) -> Temporary<'s> {
        Temporary { session, handle }
    }

    pub(crate) fn handle(&self) -> ObjectHandle {
        self.handle
    }
}

impl Drop for Temporary<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.session.destroy_object(self.handle) {
            tracing::debug!(error = %e, "could not destroy a temporary HSM object");
        }
    }
}

/// Attributes every session object for key material carries.
fn session_secret() -> [Attribute; 4] {
    [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
    ]
}

/// The template for unwrapping a stored blob of `kind` into a usable object: a sensitive,
/// non-extractable session object allowed only what its kind needs (AES: encrypt, decrypt and
/// sign for the CMAC check value; HMAC: sign and verify; private keys: sign).
pub(crate) fn unwrap_template(kind: KeyKind) -> Vec<Attribute> {
    let mut t = session_secret().to_vec();
    let none = |t: &mut Vec<Attribute>, attrs: &[fn(bool) -> Attribute]| {
        t.extend(attrs.iter().map(|a| a(false)));
    };
    match kind.family() {
        Family::Aes(_) => {
            t.extend([
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Sign(true),
            ]);
            none(
                &mut t,
                &[
                    Attribute::Verify,
                    Attribute::Wrap,
                    Attribute::Unwrap,
                    Attribute::Derive,
                ],
            );
        }
        Family::Hmac(_) => {
            t.extend([
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ]);
            none(
                &mut t,
                &[
                    Attribute::Encrypt,
                    Attribute::Decrypt,
                    Attribute::Wrap,
                    Attribute::Unwrap,
                    Attribute::Derive,
                ],
            );
        }
        Family::Rsa(_) | Family::Ec(_) => {
            let key_type = match kind.family() {
                Family::Rsa(_) => KeyType::RSA,
                _ => KeyType::EC,
            };
            t.extend([
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(key_type),
                Attribute::Sign(true),
            ]);
            none(
                &mut t,
                &[Attribute::Decrypt, Attribute::Unwrap, Attribute::Derive],
            );
        }
    }
    t
}

/// The template for a verify-only public-key session object.
fn public_template(key: &PublicKey) -> Result<Vec<Attribute>, HsmError> {
    let mut t = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ];
    match key {
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

/// True when `key` is what `kind` says (modulus size or curve).
pub(crate) fn public_fits(key: &PublicKey, kind: KeyKind) -> bool {
    match (kind.family(), key) {
        (Family::Rsa(bits), PublicKey::Rsa { .. }) => key.bits() == bits,
        (Family::Ec(curve), PublicKey::Ec { curve: c, .. }) => curve == *c,
        _ => false,
    }
}

/// Unwraps `wrapped` under `kek` into a usable object of `kind`, in `session`.
///
/// SoftHSM2 reports a failed RFC 5649 integrity check as `CKR_GENERAL_ERROR` and a blob that
/// does not decode as the template's key type as `CKR_FUNCTION_FAILED`; with the KEK known
/// good, both mean the blob is unusable.
pub(crate) fn unwrap(
    session: &Session,
    kek: ObjectHandle,
    wrapped: &[u8],
    kind: KeyKind,
) -> Result<ObjectHandle, OpError> {
    unwrap_with(session, kek, wrapped, kind, &unwrap_template(kind))
}

/// [`unwrap`] with the caller's template (which must name the class and key type of `kind`).
pub(crate) fn unwrap_with(
    session: &Session,
    kek: ObjectHandle,
    wrapped: &[u8],
    kind: KeyKind,
    template: &[Attribute],
) -> Result<ObjectHandle, OpError> {
    if !wrapped_len_fits(kind, wrapped.len()) {
        return Err(HsmError::KeyBlobInvalid("the wrapped key is not of the stated kind").into());
    }
    session
        .unwrap_key(&Mechanism::AesKeyWrapPad, kek, wrapped, template)
        .map_err(|e| match e {
            CkError::Pkcs11(
                RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::GeneralError
                | RvError::FunctionFailed,
                _,
            ) => OpError::Hsm(HsmError::KeyBlobInvalid(
                "the wrapped key does not unwrap under the master KEK as the stated kind",
            )),
            other => other.into(),
        })
}

/// RFC 5649 output is the key padded to a multiple of 8 bytes plus an 8-byte integrity block,
/// so a secret key's length is fixed by its blob's (and the integrity block records the exact
/// length). This is the size check for secret keys: SoftHSM2 leaves `CKA_VALUE_LEN` at 0 on
/// unwrapped keys and refuses it in the unwrap template.
fn wrapped_len_fits(kind: KeyKind, wrapped_len: usize) -> bool {
    match kind.family() {
        Family::Aes(len) | Family::Hmac(len) => wrapped_len == len.div_ceil(8) * 8 + 8,
        Family::Rsa(_) | Family::Ec(_) => true,
    }
}

/// Checks that an unwrapped object has the size or curve its kind promises.
pub(crate) fn check_unwrapped(
    session: &Session,
    handle: ObjectHandle,
    kind: KeyKind,
) -> Result<(), OpError> {
    let fits = match kind.family() {
        Family::Aes(len) | Family::Hmac(len) => {
            let attrs = session.get_attributes(handle, &[AttributeType::ValueLen])?;
            // 0: not reported (SoftHSM2); the blob length was checked before unwrapping.
            matches!(attrs.first(),
                Some(Attribute::ValueLen(n)) if [0, len as u64].contains(&u64::from(*n)))
        }
        Family::Rsa(bits) => {
            let attrs = session.get_attributes(handle, &[AttributeType::Modulus])?;
            matches!(attrs.first(),
                Some(Attribute::Modulus(n)) if modulus_bits(n) == bits)
        }
        Family::Ec(curve) => {
            let attrs = session.get_attributes(handle, &[AttributeType::EcParams])?;
            matches!(attrs.first(),
                Some(Attribute::EcParams(p)) if Curve::from_ec_params(p) == Some(curve))
        }
    };
    if fits {
        Ok(())
    } else {
        Err(HsmError::KeyBlobInvalid("the wrapped key is not of the stated kind").into())
    }
}

impl Inner {
    /// The usable object for `key` (secret key or private half): from the cache, or unwrapped
    /// into the holder session and cached.
    pub(crate) fn key_object(&self, key: &KeyRef<'_>) -> Result<Arc<CachedObject>, OpError> {
        let generation = self.pool.generation();
        if let Some(object) = self.cache.get(key.id, Role::Key, key.wrapped, generation) {
            return Ok(object);
        }
        let holder = self.pool.holder()?;
        // Another thread may have unwrapped it while this one waited for the holder.
        if let Some(object) = self
            .cache
            .get(key.id, Role::Key, key.wrapped, holder.generation())
        {
            return Ok(object);
        }
        self.bury(&holder);
        let session = holder_session(&holder)?;
        let kek = self.kek_handle(session)?;
        let handle = unwrap(session, kek, key.wrapped, key.kind)?;
        // Adopted first, so that a failed check below still destroys the object.
        let object = self.cache.adopt(handle, holder.generation());
        check_unwrapped(session, handle, key.kind)?;
        self.cache
            .insert(key.id, Role::Key, key.wrapped, Arc::clone(&object));
        Ok(object)
    }

    /// The verify-only public-key object for `key`, built from its SPKI and cached.
    pub(crate) fn public_object(&self, key: &KeyRef<'_>) -> Result<Arc<CachedObject>, OpError> {
        let spki = key.spki_der.ok_or(HsmError::KeyBlobInvalid(
            "no public key (SPKI) was given for an asymmetric key",
        ))?;
        let generation = self.pool.generation();
        if let Some(object) = self.cache.get(key.id, Role::Public, spki, generation) {
            return Ok(object);
        }
        let public = PublicKey::from_spki_der(spki)?;
        if !public_fits(&public, key.kind) {
            return Err(
                HsmError::KeyBlobInvalid("the public key is not of the stated kind").into(),
            );
        }
        let template = public_template(&public)?;
        let holder = self.pool.holder()?;
        self.bury(&holder);
        let session = holder_session(&holder)?;
        let handle = session.create_object(&template)?;
        let object = self.cache.adopt(handle, holder.generation());
        self.cache
            .insert(key.id, Role::Public, spki, Arc::clone(&object));
        Ok(object)
    }

    /// The master KEK's handle, found once per session generation.
    pub(crate) fn kek_handle(&self, session: &Session) -> Result<ObjectHandle, OpError> {
        let generation = self.pool.generation();
        if let Some((handle, found_in)) = *lock(&self.kek) {
            if found_in == generation {
                return Ok(handle);
            }
        }
        let handle = kek::find(session)?.ok_or(HsmError::KekMissing)?;
        *lock(&self.kek) = Some((handle, generation));
        Ok(handle)
    }

    /// Destroys cached objects that were evicted or forgotten and are no longer in use.
    fn bury(&self, holder: &Holder) {
        let Some(session) = holder.session() else {
            return;
        };
        for (handle, generation) in self.cache.take_graveyard() {
            if generation != holder.generation() {
                continue; // died with its session already
            }
            if let Err(e) = session.destroy_object(handle) {
                tracing::debug!(error = %e, "could not destroy an evicted key object");
            }
        }
    }

    /// [`Inner::bury`] if the holder session is open; never opens one.
    pub(crate) fn bury_if_open(&self) {
        if let Some(holder) = self.pool.holder_if_open() {
            self.bury(&holder);
        }
    }
}

fn holder_session(holder: &Holder) -> Result<&Session, OpError> {
    holder.session().ok_or(OpError::Ck(CkError::Pkcs11(
        RvError::SessionHandleInvalid,
        cryptoki::context::Function::OpenSession,
    )))
}
