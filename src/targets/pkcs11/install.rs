//! Installing a managed key in the target through the import KEK (two `C_UnwrapKey` calls),
//! completing a key pair cut short, and uninstalling.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::hsm::{self, KeyKind, OaepHash, PublicKey, Temporary};

use super::import_kek::KekHandles;
use super::objects::{
    describe, find_labelled, has_shape, installed_template, internal, pairs, public_template,
    shape, KnownLabels, Shape,
};
use super::session::{Failure, StoreLock};
use super::IMPORT_KEK_LABEL;

/// What an install attempt did.
pub(super) enum Installed {
    /// Finished; `true` when it created an object.
    Done(bool),
    /// The cached import KEK handle no longer works: look it up and try again.
    KekStale,
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

fn hash_name(hash: OaepHash) -> &'static str {
    match hash {
        OaepHash::Sha1 => "SHA-1",
        OaepHash::Sha256 => "SHA-256",
    }
}

/// Return values of a wrapped key that does not decrypt or decode (SoftHSM2 reports a failed
/// RFC 5649 integrity check as `CKR_GENERAL_ERROR`, a bad encoding as `CKR_FUNCTION_FAILED`).
/// Further attempts at a token-object unwrap that failed with a generic error.
const TRANSIENT_RETRIES: usize = 2;
/// Pause before each of them.
const TRANSIENT_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

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

/// What to install: the arguments of [`super::Pkcs11Target::install`], checked.
pub(super) struct Request<'a> {
    pub(super) label: &'a str,
    pub(super) kind: KeyKind,
    pub(super) blob: &'a [u8],
    pub(super) hash: OaepHash,
    /// The public half, for key pairs.
    pub(super) public: Option<&'a PublicKey>,
}

/// Installs (see [`super::Pkcs11Target::install`]).
pub(super) fn install(
    session: &Session,
    kek: &KekHandles,
    request: &Request<'_>,
    known: &KnownLabels,
    store: &StoreLock,
) -> Result<Installed, Failure> {
    let Request {
        label,
        kind,
        blob,
        hash,
        public,
    } = *request;
    {
        let _store = store.hold();
        let existing = known.objects(session, label)?;
        if !existing.is_empty() {
            return complete_pair(session, &existing, label, public, known).map(Installed::Done);
        }
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

    // From here on token objects are made (and, on failure, destroyed again).
    let _store = store.hold();
    let unwrap = || {
        session.unwrap_key(
            &Mechanism::AesKeyWrapPad,
            ephemeral.handle(),
            kwp_part,
            &installed_template(kind, label),
        )
    };
    // SoftHSM2's file store fails a token-object write now and then with
    // CKR_GENERAL_ERROR / CKR_FUNCTION_FAILED while other sessions of the process read the
    // token; nothing is created then, so the unwrap is tried again before giving up.
    let mut result = unwrap();
    for _ in 0..TRANSIENT_RETRIES {
        match &result {
            Err(CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _)) => {
                std::thread::sleep(TRANSIENT_PAUSE);
                result = unwrap();
            }
            _ => break,
        }
    }
    let key = match result {
        Ok(handle) => Created::new(session, handle),
        Err(CkError::Pkcs11(rv, _)) if is_bad_blob(rv) => {
            return Err(internal(format!(
                "C_UnwrapKey (AES-KWP) failed: {} ({} attempts); the blob does not hold a {kind:?} key, or the token cannot store objects",
                hsm::ckr_name(rv),
                TRANSIENT_RETRIES + 1
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
    let mut handles = vec![key.handle];
    if let Some(mut public_object) = pair {
        public_object.keep = true;
        handles.push(public_object.handle);
    }
    known.set(label, handles);
    Ok(Installed::Done(true))
}

/// The label is taken: leaves it alone, except that a key pair cut short (private half only)
/// gets its public half. Returns whether it created something.
fn complete_pair(
    session: &Session,
    existing: &[ObjectHandle],
    label: &str,
    public: Option<&PublicKey>,
    known: &KnownLabels,
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
    let mut handles = existing.to_vec();
    handles.push(public_object.handle);
    known.set(label, handles);
    tracing::info!(
        label,
        "completed a key pair cut short in the PKCS#11 target"
    );
    Ok(true)
}

/// Destroys every token object labelled `label` (found by a search, so that nothing under the
/// label survives); false when there was none.
pub(super) fn uninstall(
    session: &Session,
    label: &str,
    known: &KnownLabels,
) -> Result<bool, Failure> {
    let handles = find_labelled(session, label)?;
    known.set(label, Vec::new());
    for handle in &handles {
        session.destroy_object(*handle)?;
    }
    Ok(!handles.is_empty())
}
