//! Key generation: a session object made in the HSM, wrapped under the master KEK, unwrapped
//! once to prove the blob works, its check value computed, and every object destroyed.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::Session;

use super::error::{HsmError, OpError};
use super::objects::{self, Temporary};
use super::ops::{kcv_of_public, kcv_of_secret};
use super::spki::PublicKey;
use super::{Family, GeneratedKey, Hsm, Inner, KeyKind};

/// Attributes of a freshly generated secret or private key: a sensitive session object that
/// is extractable only so that the KEK can wrap it, and allowed nothing else.
fn generated_secret() -> [Attribute; 9] {
    [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Sign(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
    ]
}

/// The matching public half: a session object, usable for nothing (only read for the SPKI).
fn generated_public() -> [Attribute; 5] {
    [
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
    ]
}

impl Hsm {
    /// Generates a key of `kind` in the HSM and returns it wrapped under the master KEK, with
    /// its SPKI (asymmetric kinds) and check value. No object outlives the call.
    pub fn generate(&self, kind: KeyKind) -> Result<GeneratedKey, HsmError> {
        let started = std::time::Instant::now();
        let key = self
            .inner
            .run(|inner, session| generate_in(inner, session, kind))?;
        tracing::debug!(
            ?kind,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "generated a key"
        );
        Ok(key)
    }
}

fn generate_in(inner: &Inner, session: &Session, kind: KeyKind) -> Result<GeneratedKey, OpError> {
    let kek = inner.kek_handle(session)?;
    match kind.family() {
        Family::Aes(len) | Family::Hmac(len) => {
            let (mechanism, key_type) = match kind.family() {
                Family::Aes(_) => (Mechanism::AesKeyGen, KeyType::AES),
                _ => (Mechanism::GenericSecretKeyGen, KeyType::GENERIC_SECRET),
            };
            let mut template = generated_secret().to_vec();
            template.extend([
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(key_type),
                Attribute::ValueLen((len as u64).into()),
                Attribute::Encrypt(false),
                Attribute::Verify(false),
                Attribute::Wrap(false),
            ]);
            let key = Temporary::new(session, session.generate_key(&mechanism, &template)?);
            let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, kek, key.handle())?;
            let usable = Temporary::new(session, objects::unwrap(session, kek, &wrapped, kind)?);
            let kcv = kcv_of_secret(session, usable.handle(), kind)?;
            Ok(GeneratedKey {
                wrapped,
                spki_der: None,
                kcv,
            })
        }
        Family::Rsa(_) | Family::Ec(_) => {
            let (mechanism, public_extra, read) = match kind.family() {
                Family::Rsa(bits) => (
                    Mechanism::RsaPkcsKeyPairGen,
                    vec![
                        Attribute::ModulusBits((bits as u64).into()),
                        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    ],
                    [AttributeType::Modulus, AttributeType::PublicExponent],
                ),
                Family::Ec(curve) => (
                    Mechanism::EccKeyPairGen,
                    vec![Attribute::EcParams(curve.ec_params()?)],
                    [AttributeType::EcParams, AttributeType::EcPoint],
                ),
                _ => return Err(HsmError::Unsupported(format!("{kind:?} key pairs")).into()),
            };
            let mut public_template = generated_public().to_vec();
            public_template.extend(public_extra);
            let mut private_template = generated_secret().to_vec();
            private_template.push(Attribute::Class(ObjectClass::PRIVATE_KEY));
            let (public, private) =
                session.generate_key_pair(&mechanism, &public_template, &private_template)?;
            let public = Temporary::new(session, public);
            let private = Temporary::new(session, private);

            let attrs = session.get_attributes(public.handle(), &read)?;
            let public_key = match (attrs.as_slice(), kind.family()) {
                ([Attribute::Modulus(n), Attribute::PublicExponent(e)], Family::Rsa(_)) => {
                    PublicKey::rsa(n, e)
                }
                ([Attribute::EcParams(p), Attribute::EcPoint(q)], Family::Ec(_)) => {
                    PublicKey::ec(p, q)?
                }
                _ => {
                    return Err(HsmError::Pkcs11 {
                        op: "C_GetAttributeValue",
                        rv: "the new public key lacks its key attributes".to_string(),
                    }
                    .into())
                }
            };
            let spki_der = public_key.to_spki_der()?;

            let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, kek, private.handle())?;
            drop(Temporary::new(
                session,
                objects::unwrap(session, kek, &wrapped, kind)?,
            ));
            let kcv = kcv_of_public(session, &spki_der)?;
            Ok(GeneratedKey {
                wrapped,
                spki_der: Some(spki_der),
                kcv,
            })
        }
    }
}
