//! The master key-encryption key: the one token object keyorch owns (AES-256, wrap/unwrap only,
//! sensitive, never extractable), how it is found, created, checked and identified by its KCV.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use sha2::{Digest, Sha256};

use super::error::{HsmError, OpError};
use super::objects::Temporary;
use super::{Hsm, KekStatus};

/// `CKA_LABEL` of the master KEK.
pub const KEK_LABEL: &str = "keyorch-master-kek";

const KEK_BYTES: u64 = 32;

fn search_template() -> [Attribute; 3] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Label(KEK_LABEL.as_bytes().to_vec()),
    ]
}

/// Finds the KEK and checks its attributes. `Ok(None)` when it is not on the token.
pub(crate) fn find(session: &Session) -> Result<Option<ObjectHandle>, OpError> {
    let found = session.find_objects(&search_template())?;
    let handle = match found.as_slice() {
        [] => {
            // Private objects are invisible when the login is gone (another user of the module
            // in this process logged out): that is a lost login, not a missing KEK.
            let state = session.get_session_info()?.session_state();
            if !matches!(state, SessionState::RwUser | SessionState::RoUser) {
                return Err(CkError::Pkcs11(
                    RvError::UserNotLoggedIn,
                    cryptoki::context::Function::FindObjects,
                )
                .into());
            }
            return Ok(None);
        }
        [one] => *one,
        _ => {
            return Err(
                HsmError::KekInvalid("more than one object is labelled keyorch-master-kek").into(),
            )
        }
    };
    check(session, handle)?;
    Ok(Some(handle))
}

/// Refuses a KEK that is not AES-256, could leave the HSM, or could encrypt or sign data.
fn check(session: &Session, handle: ObjectHandle) -> Result<(), OpError> {
    let attrs = session.get_attributes(
        handle,
        &[
            AttributeType::KeyType,
            AttributeType::ValueLen,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Wrap,
            AttributeType::Unwrap,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
            AttributeType::Sign,
        ],
    )?;
    for attr in &attrs {
        let problem = match attr {
            Attribute::KeyType(t) if *t != KeyType::AES => Some("it is not an AES key"),
            Attribute::ValueLen(n) if u64::from(*n) != KEK_BYTES => Some("it is not 256 bits long"),
            Attribute::Sensitive(false) => Some("it is not sensitive"),
            Attribute::Extractable(true) => Some("it is extractable"),
            Attribute::Wrap(false) | Attribute::Unwrap(false) => Some("it cannot wrap and unwrap"),
            Attribute::Encrypt(true) | Attribute::Decrypt(true) | Attribute::Sign(true) => {
                Some("it may also encrypt, decrypt or sign data")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(HsmError::KekInvalid(problem).into());
        }
    }
    Ok(())
}

/// Creates the KEK as a token object with a random 16-byte `CKA_ID` from the HSM's RNG.
fn create(session: &Session) -> Result<ObjectHandle, OpError> {
    let id = session.generate_random_vec(16)?;
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(KEK_BYTES.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(KEK_LABEL.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    Ok(session.generate_key(&Mechanism::AesKeyGen, &template)?)
}

/// The KEK's check value: lowercase hex of the first 8 bytes of
/// SHA-256( AES-KWP-wrap(KEK, K0) ), where K0 is the AES-256 key of 32 zero bytes.
///
/// The usual AES check values (encrypt zeros, or CMAC) need `CKA_ENCRYPT` or `CKA_SIGN`, which
/// the KEK must not have. Wrapping a fixed, publicly known key is what the KEK *can* do, and
/// RFC 5649 wrapping is deterministic, so the result depends only on the KEK's material: a
/// restored or re-imported copy of the same KEK has the same KCV, a different KEK (even with
/// the same label and `CKA_ID`) a different one. Nothing about the KEK leaks beyond one
/// known-plaintext AES output, the same as a classic KCV. The wrapped bytes are public, so they
/// are hashed in software.
fn kcv(session: &Session, kek: ObjectHandle) -> Result<String, OpError> {
    let probe = session.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Value(vec![0u8; KEK_BYTES as usize]),
    ])?;
    let probe = Temporary::new(session, probe);
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, kek, probe.handle())?;
    Ok(hex::encode(&Sha256::digest(&wrapped)[..8]))
}

impl Hsm {
    /// Finds the master KEK (label `keyorch-master-kek`). If it is missing, creates it when
    /// `create_if_missing`, else fails with [`HsmError::KekMissing`]. A KEK with unsafe
    /// attributes, or two of them, fails with [`HsmError::KekInvalid`].
    pub fn master_kek(&self, create_if_missing: bool) -> Result<KekStatus, HsmError> {
        let _creating = super::context::lock(&self.inner.kek_creation);
        self.inner.run(|_, session| match find(session)? {
            Some(kek) => Ok(KekStatus::Found {
                kcv: kcv(session, kek)?,
            }),
            None if create_if_missing => {
                let kek = create(session)?;
                tracing::info!(label = KEK_LABEL, "created the master KEK");
                Ok(KekStatus::Created {
                    kcv: kcv(session, kek)?,
                })
            }
            None => Err(HsmError::KekMissing.into()),
        })
    }

    /// A cheap liveness probe: a session works, the login holds and the master KEK is present.
    pub fn health(&self) -> Result<(), HsmError> {
        self.inner.run(|_, session| {
            find(session)?.ok_or(HsmError::KekMissing)?;
            Ok(())
        })
    }
}
