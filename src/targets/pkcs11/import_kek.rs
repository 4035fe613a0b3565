//! The target's import KEK, `EKMF-BYOK-KEK-FOR-IMPORT`: an RSA-3072 token key pair whose
//! private half only unwraps. Finding and checking it, creating it, its SPKI, the OAEP probe.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::hsm::{self, OaepHash, PublicKey, Temporary};

use super::session::Failure;
use super::{TargetError, IMPORT_KEK_LABEL};

/// Modulus size of a newly created import KEK.
const KEK_BITS: u64 = 3072;

/// The import KEK's two halves, its modulus length in bytes (the length of the RSA-OAEP part of
/// a transport blob) and the DER SPKI of its public half.
#[derive(Clone, Debug)]
pub(super) struct KekHandles {
    pub(super) private: ObjectHandle,
    pub(super) public: ObjectHandle,
    pub(super) modulus_len: usize,
    pub(super) spki: Vec<u8>,
}

fn find(session: &Session, class: ObjectClass) -> Result<Vec<ObjectHandle>, Failure> {
    Ok(session.find_objects(&[
        Attribute::Class(class),
        Attribute::Token(true),
        Attribute::Label(IMPORT_KEK_LABEL.as_bytes().to_vec()),
    ])?)
}

fn invalid(problem: &str) -> Failure {
    Failure::Target(TargetError::InvalidConfiguration(format!(
        "{IMPORT_KEK_LABEL} {problem}; delete it in the target and reconnect to recreate it"
    )))
}

/// Reads the RSA modulus and public exponent of a key object.
fn rsa_public_parts(session: &Session, key: ObjectHandle) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let attrs = session.get_attributes(
        key,
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
    match (modulus, exponent) {
        (Some(n), Some(e)) => Ok((n, e)),
        _ => Err(invalid("does not show its RSA modulus and exponent")),
    }
}

/// Refuses a private half that is not RSA, could leave the token, or could do more than unwrap.
fn check_private(session: &Session, private: ObjectHandle) -> Result<(), Failure> {
    let attrs = session.get_attributes(
        private,
        &[
            AttributeType::KeyType,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Unwrap,
            AttributeType::Decrypt,
            AttributeType::Sign,
        ],
    )?;
    for attr in &attrs {
        let problem = match attr {
            Attribute::KeyType(t) if *t != KeyType::RSA => Some("is not an RSA key"),
            Attribute::Sensitive(false) => Some("(private half) is not sensitive"),
            Attribute::Extractable(true) => Some("(private half) is extractable"),
            Attribute::Unwrap(false) => Some("(private half) cannot unwrap"),
            Attribute::Decrypt(true) | Attribute::Sign(true) => {
                Some("(private half) may also decrypt or sign")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(invalid(problem));
        }
    }
    Ok(())
}

/// Finds both halves and checks them. [`TargetError::ImportKekMissing`] when either is absent.
pub(super) fn find_checked(session: &Session) -> Result<KekHandles, Failure> {
    let privates = find(session, ObjectClass::PRIVATE_KEY)?;
    let publics = find(session, ObjectClass::PUBLIC_KEY)?;
    let (private, public) = match (privates.as_slice(), publics.as_slice()) {
        ([private], [public]) => (*private, *public),
        ([], _) | (_, []) => return Err(TargetError::ImportKekMissing.into()),
        _ => return Err(invalid("exists more than once")),
    };
    check_private(session, private)?;
    let (modulus, exponent) = rsa_public_parts(session, public)?;
    let (private_modulus, private_exponent) = rsa_public_parts(session, private)?;
    if PublicKey::rsa(&modulus, &exponent) != PublicKey::rsa(&private_modulus, &private_exponent) {
        return Err(invalid(
            "has a public half that does not match its private half",
        ));
    }
    let bits = hsm::modulus_bits(&modulus);
    Ok(KekHandles {
        private,
        public,
        modulus_len: bits.div_ceil(8),
        spki: PublicKey::rsa(&modulus, &exponent).to_spki_der()?,
    })
}

fn public_template(id: Vec<u8>) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Modifiable(false),
        Attribute::Wrap(true),
        Attribute::Encrypt(true),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(IMPORT_KEK_LABEL.as_bytes().to_vec()),
        Attribute::Id(id),
    ]
}

/// Generates the pair as token objects with a random 16-byte `CKA_ID`.
fn create(session: &Session) -> Result<(), Failure> {
    let id = session.generate_random_vec(16)?;
    let mut public = public_template(id.clone());
    public.extend([
        Attribute::ModulusBits(KEK_BITS.into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
    ]);
    let private = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Unwrap(true),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::SignRecover(false),
        Attribute::Derive(false),
        Attribute::Label(IMPORT_KEK_LABEL.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    session.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)?;
    Ok(())
}

/// Makes sure the pair is there; returns whether it was created, and its handles.
pub(super) fn ensure(session: &Session) -> Result<(bool, KekHandles), Failure> {
    let privates = find(session, ObjectClass::PRIVATE_KEY)?;
    let publics = find(session, ObjectClass::PUBLIC_KEY)?;
    let created = match privates.as_slice() {
        [] => {
            // A public half without its private half is useless: replace the pair.
            for stale in publics {
                session.destroy_object(stale)?;
            }
            let started = std::time::Instant::now();
            create(session)?;
            tracing::info!(
                label = IMPORT_KEK_LABEL,
                bits = KEK_BITS,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "created the import KEK in the PKCS#11 target"
            );
            true
        }
        [private] if publics.is_empty() => {
            check_private(session, *private)?;
            let (modulus, exponent) = rsa_public_parts(session, *private)?;
            let id = session
                .get_attributes(*private, &[AttributeType::Id])?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Id(id) => Some(id),
                    _ => None,
                })
                .unwrap_or_default();
            let mut template = public_template(id);
            template.extend([
                Attribute::Modulus(modulus),
                Attribute::PublicExponent(exponent),
            ]);
            session.create_object(&template)?;
            tracing::warn!(
                label = IMPORT_KEK_LABEL,
                "the import KEK's public half was missing in the target; rebuilt it"
            );
            false
        }
        _ => false,
    };
    Ok((created, find_checked(session)?))
}

/// True when both handles still name objects labelled `EKMF-BYOK-KEK-FOR-IMPORT` (a deleted
/// object's handle fails; a reused handle shows another label).
pub(super) fn still_there(session: &Session, kek: &KekHandles) -> Result<bool, Failure> {
    for handle in [kek.private, kek.public] {
        match session.get_attributes(handle, &[AttributeType::Label]) {
            Ok(attrs) => {
                if !matches!(attrs.first(),
                    Some(Attribute::Label(l)) if l == IMPORT_KEK_LABEL.as_bytes())
                {
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

/// Wraps a throw-away AES key with the public half and RSA-OAEP-SHA-256, then unwraps it with
/// the private half. `None` when the import KEK is not there to probe with.
pub(super) fn probe_oaep_sha256(session: &Session) -> Result<Option<bool>, Failure> {
    let kek = match find_checked(session) {
        Ok(kek) => kek,
        Err(Failure::Target(TargetError::ImportKekMissing)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let probe = Temporary::new(
        session,
        session.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Extractable(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ],
        )?,
    );
    let mechanism = hsm::oaep_mechanism(OaepHash::Sha256);
    let wrapped = match session.wrap_key(&mechanism, kek.public, probe.handle()) {
        Ok(wrapped) => wrapped,
        Err(e) => {
            tracing::debug!(error = %e, "target: no RSA-OAEP-SHA-256 wrap");
            return Ok(Some(false));
        }
    };
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
    ];
    match session.unwrap_key(&mechanism, kek.private, &wrapped, &template) {
        Ok(handle) => {
            drop(Temporary::new(session, handle));
            Ok(Some(true))
        }
        Err(e) => {
            tracing::debug!(error = %e, "target: no RSA-OAEP-SHA-256 unwrap");
            Ok(Some(false))
        }
    }
}
