//! Wrapping a managed key for transport to another HSM: the bytes of `CKM_RSA_AES_KEY_WRAP`,
//! composed inside the HSM from `CKM_RSA_PKCS_OAEP` and `CKM_AES_KEY_WRAP_PAD`, and the OAEP probe.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::error::{HsmError, OpError};
use super::objects::{self, Temporary};
use super::spki::PublicKey;
use super::{Family, Hsm, KeyKind, KeyRef};

/// The hash of RSA-OAEP (and of its MGF1) in a transport wrap; the label is always empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

/// Smallest RSA modulus keyorch wraps to.
const MIN_TRANSPORT_KEK_BITS: usize = 2048;

/// Bytes of the ephemeral AES key of an RSA-AES wrap.
const EPHEMERAL_KEY_BYTES: u64 = 32;

/// The `CKM_RSA_PKCS_OAEP` mechanism with `hash`, MGF1 with the same hash and an empty label.
pub(crate) fn oaep_mechanism(hash: OaepHash) -> Mechanism<'static> {
    let (hash_alg, mgf) = match hash {
        OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    };
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash_alg, mgf, PkcsOaepSource::empty()))
}

/// Template of the ephemeral AES-256 key: a session object that can only be wrapped (by the
/// RSA key) and wrap (the managed key).
fn ephemeral_template() -> [Attribute; 14] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(EPHEMERAL_KEY_BYTES.into()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

/// A wrap-only RSA public-key session object.
fn wrapping_public_template(modulus: &[u8], exponent: &[u8]) -> Vec<Attribute> {
    vec![
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

/// The managed key as a temporary session object that can be wrapped and do nothing else.
fn exportable_template(kind: KeyKind) -> Vec<Attribute> {
    let (class, key_type) = match kind.family() {
        Family::Aes(_) => (ObjectClass::SECRET_KEY, KeyType::AES),
        Family::Hmac(_) => (ObjectClass::SECRET_KEY, KeyType::GENERIC_SECRET),
        Family::Rsa(_) => (ObjectClass::PRIVATE_KEY, KeyType::RSA),
        Family::Ec(_) => (ObjectClass::PRIVATE_KEY, KeyType::EC),
    };
    let mut t = vec![
        Attribute::Class(class),
        Attribute::KeyType(key_type),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Sign(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    if class == ObjectClass::SECRET_KEY {
        t.extend([
            Attribute::Encrypt(false),
            Attribute::Verify(false),
            Attribute::Wrap(false),
        ]);
    }
    t
}

/// `RSA-OAEP(ephemeral AES-256 key) || AES-KWP(ephemeral, key)`, all inside the HSM: the
/// ephemeral key and the extractable copy of the managed key are session objects destroyed
/// before this returns (also on error).
fn wrap_in(
    session: &Session,
    master_kek: ObjectHandle,
    key: &KeyRef<'_>,
    target: &PublicKey,
    hash: OaepHash,
) -> Result<Vec<u8>, OpError> {
    let PublicKey::Rsa { modulus, exponent } = target else {
        return Err(HsmError::KeyBlobInvalid("the transport key is not an RSA key").into());
    };
    let public = Temporary::new(
        session,
        session.create_object(&wrapping_public_template(modulus, exponent))?,
    );
    let ephemeral = Temporary::new(
        session,
        session.generate_key(&Mechanism::AesKeyGen, &ephemeral_template())?,
    );
    let managed = Temporary::new(
        session,
        objects::unwrap_with(
            session,
            master_kek,
            key.wrapped,
            key.kind,
            &exportable_template(key.kind),
        )?,
    );
    objects::check_unwrapped(session, managed.handle(), key.kind)?;
    let mut out = session.wrap_key(&oaep_mechanism(hash), public.handle(), ephemeral.handle())?;
    let inner = session.wrap_key(
        &Mechanism::AesKeyWrapPad,
        ephemeral.handle(),
        managed.handle(),
    )?;
    out.extend_from_slice(&inner);
    Ok(out)
}

/// A real RSA-2048 public key (its private half was discarded) to probe OAEP parameters with.
const PROBE_MODULUS_HEX: &str = concat!(
    "C4AE80A8FEFF2BA04F58CF0E514A915EF46F5CAAE6D3874DD5C80F29BC87CA52",
    "CBEA5DF43001778DD0C3BA56624285C7E5FA1879B3797D1D241CC03E6A510568",
    "4AA3656C1A9C0AE706E7ACDEA62F28887065801FE89B2732F8813F58336B9BEF",
    "67B98B6E7F92C83742C09CF46F3986770B5CCED534A4A365EE5100AB52A220B1",
    "60D09CDD76CB9932065CA6B96210D71E44572BF85EFC1B356CD29E5D94BCFA53",
    "DEDFEB0135EA76A52D9CAF760E4D0C55C9FBB070862977ADF73E8199CBF75BA5",
    "3FFDDA83E98D541737364318E55FC1D827D48B221E57F8E1E3394E6EEFDF7CE2",
    "529E33230109F153C17233219444AE52191DCB0F78C2E43C4DCAB22D99DAB2DB",
);

/// Whether `session`'s token wraps an AES key with RSA-OAEP-SHA-256 (MGF1-SHA-256): the exact
/// call [`Hsm::wrap_for_transport`] makes, with a throw-away public key and ephemeral key.
/// Any failure counts as "no" (SoftHSM2 answers `CKR_ARGUMENTS_BAD`).
pub(crate) fn probe_oaep_sha256(session: &Session) -> bool {
    let Ok(modulus) = hex::decode(PROBE_MODULUS_HEX) else {
        return false;
    };
    let attempt = || -> Result<Vec<u8>, cryptoki::error::Error> {
        let public = Temporary::new(
            session,
            session.create_object(&wrapping_public_template(&modulus, &[0x01, 0x00, 0x01]))?,
        );
        let ephemeral = Temporary::new(
            session,
            session.generate_key(&Mechanism::AesKeyGen, &ephemeral_template())?,
        );
        session.wrap_key(
            &oaep_mechanism(OaepHash::Sha256),
            public.handle(),
            ephemeral.handle(),
        )
    };
    match attempt() {
        Ok(wrapped) => wrapped.len() == modulus.len(),
        Err(e) => {
            tracing::debug!(error = %e, "RSA-OAEP with SHA-256 is not available for wrapping");
            false
        }
    }
}

impl Hsm {
    /// Whether this HSM does RSA-OAEP with SHA-256 for wrapping (probed once at open;
    /// SoftHSM2: false).
    pub fn supports_oaep_sha256(&self) -> bool {
        self.inner.oaep_sha256
    }

    /// RSA-AES key wrap of a managed key for transport to another HSM: the bytes of
    /// `CKM_RSA_AES_KEY_WRAP`, composed from `CKM_RSA_PKCS_OAEP` and `CKM_AES_KEY_WRAP_PAD`.
    ///
    /// Inside this HSM: `target_spki` (DER SubjectPublicKeyInfo of the target's RSA KEK, at
    /// least 2048 bits) becomes a wrap-only session public key; an ephemeral AES-256 session
    /// key is generated; the managed key is unwrapped from `key.wrapped` under the master KEK
    /// into a temporary extractable session object. The output is
    /// `RSA-OAEP(hash, MGF1(hash), empty label) of the ephemeral key || AES-KWP (RFC 5649) of
    /// the managed key under the ephemeral key` (private keys as PKCS#8 inside the KWP layer).
    /// Every one of those objects is destroyed before this returns; the cached, non-extractable
    /// objects used for crypto operations are not involved.
    pub fn wrap_for_transport(
        &self,
        key: &KeyRef<'_>,
        target_spki: &[u8],
        hash: OaepHash,
    ) -> Result<Vec<u8>, HsmError> {
        let target = PublicKey::from_spki_der(target_spki)?;
        if !matches!(target, PublicKey::Rsa { .. }) {
            return Err(HsmError::KeyBlobInvalid(
                "the transport key (SPKI) is not an RSA key",
            ));
        }
        if target.bits() < MIN_TRANSPORT_KEK_BITS {
            return Err(HsmError::KeyBlobInvalid(
                "the transport key is shorter than 2048 bits",
            ));
        }
        if hash == OaepHash::Sha256 && !self.inner.oaep_sha256 {
            return Err(HsmError::Unsupported(
                "RSA-OAEP with SHA-256 (C_WrapKey): this HSM does SHA-1 only".to_string(),
            ));
        }
        self.inner.run(|inner, session| {
            let kek = inner.kek_handle(session)?;
            wrap_in(session, kek, key, &target, hash)
        })
    }
}
