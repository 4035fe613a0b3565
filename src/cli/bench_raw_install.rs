//! The `bench install` baseline: one install's wrap straight through cryptoki, in process,
//! as keyorchd does it for the keystore's type. pkcs11: the RSA-OAEP-SHA1 + AES-KWP wrap in
//! keyorchd's token and the two unwraps into the target token. ibm_hpcs / ibm_key_protect:
//! the RSA-OAEP wrap of the key to an RSA-4096 public key and the nonce encrypted under the
//! key (nothing sent). azure_key_vault: `CKM_RSA_AES_KEY_WRAP` composed, to an RSA-3072
//! public key (nothing sent).

use std::path::Path;
use std::time::{Duration, Instant};

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use secrecy::SecretString;

use super::CliError;
use crate::hsm::{
    find_token, load_module, login_user, oaep_mechanism, Curve, OaepHash, Temporary, TokenSelector,
    KEK_LABEL,
};
use crate::targets::pkcs11::IMPORT_KEK_LABEL;

fn failure(context: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Local(format!("raw PKCS#11 baseline: {context}: {e}"))
}

/// Where a token is and how to log in to it.
pub struct TokenAccess<'a> {
    /// What the token is, in messages ("keyorchd's token", "the target token").
    pub role: &'a str,
    pub module: &'a Path,
    pub token: &'a TokenSelector,
    pub pin: &'a SecretString,
}

/// A user session on `access`'s token (each module loaded once per process, never finalised).
fn open_session(access: &TokenAccess<'_>, read_write: bool) -> Result<Session, CliError> {
    let what = |step: &str| format!("{} ({}): {step}", access.role, access.token);
    let (module, ctx) = load_module(access.module).map_err(|e| failure(&what("load"), e))?;
    let found = find_token(&ctx, access.token).map_err(|e| failure(&what("find"), e))?;
    let session = if read_write {
        ctx.open_rw_session(found.slot)
    } else {
        ctx.open_ro_session(found.slot)
    }
    .map_err(|e| failure(&what("C_OpenSession"), e))?;
    login_user(&module, &session, found.slot, access.pin)
        .map_err(|e| failure(&what("C_Login as user"), e))?;
    Ok(session)
}

/// Exactly one object matching `template`.
fn find_one(
    session: &Session,
    template: &[Attribute],
    what: &str,
) -> Result<ObjectHandle, CliError> {
    let found = session
        .find_objects(template)
        .map_err(|e| failure(&format!("C_FindObjects ({what})"), e))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(CliError::Local(format!(
            "raw PKCS#11 baseline: no {what} on the token"
        ))),
        more => Err(CliError::Local(format!(
            "raw PKCS#11 baseline: {} objects are the {what}, expected one",
            more.len()
        ))),
    }
}

/// The managed key of an azure_key_vault baseline (Azure key vaults import RSA and EC only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateKind {
    Rsa2048,
    EcP256,
}

/// Which wrap a baseline install does: keyorchd's for the keystore's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawWrap {
    /// pkcs11: RSA-OAEP-SHA1 of an ephemeral AES-256 key to the target's import KEK + AES-KWP
    /// of the AES-256 key under it, both unwrapped in the target token (a token object).
    Pkcs11,
    /// ibm_hpcs: RSA-OAEP-SHA1 of the AES-256 key to an RSA-4096 public key, and a
    /// 12-byte nonce encrypted under the key with AES-CBC-PAD (16-byte IV).
    IbmHpcs,
    /// ibm_key_protect: RSA-OAEP-SHA256 of the AES-256 key to an RSA-4096 public key, and a
    /// 12-byte nonce encrypted under the key with AES-GCM (12-byte IV).
    IbmKeyProtect,
    /// azure_key_vault: `CKM_RSA_AES_KEY_WRAP` composed, RSA-OAEP-SHA1 of an ephemeral
    /// AES-256 key to an RSA-3072 public key + AES-KWP of the private key (PKCS#8) under it.
    Azure(PrivateKind),
}

impl RawWrap {
    /// Bits of the RSA public key wrapped to: the target's import KEK (pkcs11; None, read
    /// from the token), IBM's import token key, Azure's EKMF-BYOK-KEK-FOR-IMPORT.
    fn wrapping_bits(self) -> Option<u64> {
        match self {
            RawWrap::Pkcs11 => None,
            RawWrap::IbmHpcs | RawWrap::IbmKeyProtect => Some(4096),
            RawWrap::Azure(_) => Some(3072),
        }
    }
}

/// IBM's import-token nonce: 12 bytes (the fake's, as the service's).
const NONCE_BYTES: usize = 12;

/// What every install uses, found or made once the keystore is connected.
struct Keys {
    /// keyorchd's master KEK.
    master: ObjectHandle,
    /// pkcs11: the target's EKMF-BYOK-KEK-FOR-IMPORT private key.
    import_private: Option<ObjectHandle>,
    /// The RSA public key wrapped to.
    modulus: Vec<u8>,
    exponent: Vec<u8>,
    /// The managed key wrapped under the master KEK with AES-KWP, as keyorchd stores keys
    /// (a private key as PKCS#8).
    blob: Vec<u8>,
    /// IBM: the import token's nonce stand-in.
    nonce: Vec<u8>,
}

/// Keyorchd's token, logged in, the target token for pkcs11, and (after
/// [`RawInstall::prepare`]) the keys an install uses.
pub struct RawInstall {
    own: Session,
    target: Option<Session>,
    wrap: RawWrap,
    keys: Option<Keys>,
    /// Label prefix of the token objects this baseline makes in the target.
    label_prefix: String,
}

impl RawInstall {
    /// Logs in to keyorchd's token and, for [`RawWrap::Pkcs11`], the target token (required
    /// then). Token objects will be labelled `label_prefix` + a round number.
    pub fn open(
        own: &TokenAccess<'_>,
        target: Option<&TokenAccess<'_>>,
        wrap: RawWrap,
        label_prefix: String,
    ) -> Result<RawInstall, CliError> {
        let target = match (wrap, target) {
            (RawWrap::Pkcs11, None) => {
                return Err(CliError::Local(
                    "raw PKCS#11 baseline: a pkcs11 install needs the target token".into(),
                ))
            }
            (RawWrap::Pkcs11, Some(t)) => Some(open_session(t, true)?),
            (_, _) => None,
        };
        Ok(RawInstall {
            own: open_session(own, false)?,
            target,
            wrap,
            keys: None,
            label_prefix,
        })
    }

    /// Finds the master KEK and the RSA public key to wrap to (pkcs11: the target's import
    /// KEK; the other types: a key pair of the type's size generated in keyorchd's token, its
    /// private half destroyed), and makes the managed key (AES-256, or Azure's RSA-2048 or EC
    /// P-256 key pair) wrapped under the master KEK, as keyorchd keeps the key it installs.
    pub fn prepare(&mut self) -> Result<(), CliError> {
        let master = find_one(
            &self.own,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(true),
                Attribute::Label(KEK_LABEL.as_bytes().to_vec()),
            ],
            KEK_LABEL,
        )?;
        let (import_private, (modulus, exponent)) = match (&self.target, self.wrap.wrapping_bits())
        {
            (Some(target), None) => {
                let labelled = |class| {
                    [
                        Attribute::Class(class),
                        Attribute::Token(true),
                        Attribute::Label(IMPORT_KEK_LABEL.as_bytes().to_vec()),
                    ]
                };
                let what = format!("{IMPORT_KEK_LABEL} private key");
                let private = find_one(target, &labelled(ObjectClass::PRIVATE_KEY), &what)?;
                let what = format!("{IMPORT_KEK_LABEL} public key");
                let public = find_one(target, &labelled(ObjectClass::PUBLIC_KEY), &what)?;
                (Some(private), rsa_public(target, public, IMPORT_KEK_LABEL)?)
            }
            (_, Some(bits)) => {
                let (public, private) = self.generate_pair(
                    &Mechanism::RsaPkcsKeyPairGen,
                    vec![
                        Attribute::ModulusBits(bits.into()),
                        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    ],
                    &format!("RSA-{bits} wrapping key"),
                )?;
                let numbers = rsa_public(&self.own, public.handle(), "the wrapping key")?;
                drop((public, private));
                (None, numbers)
            }
            (None, None) => {
                return Err(CliError::Local(
                    "raw PKCS#11 baseline: a pkcs11 install needs the target token".into(),
                ))
            }
        };
        let blob = match self.wrap {
            RawWrap::Azure(kind) => {
                let (mechanism, public_extra, what) = match kind {
                    PrivateKind::Rsa2048 => (
                        Mechanism::RsaPkcsKeyPairGen,
                        vec![
                            Attribute::ModulusBits(2048.into()),
                            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                        ],
                        "RSA-2048 managed key",
                    ),
                    PrivateKind::EcP256 => (
                        Mechanism::EccKeyPairGen,
                        vec![Attribute::EcParams(
                            Curve::P256
                                .ec_params()
                                .map_err(|e| failure("P-256 parameters", e))?,
                        )],
                        "EC P-256 managed key",
                    ),
                };
                let (public, private) = self.generate_pair(&mechanism, public_extra, what)?;
                let blob = self
                    .own
                    .wrap_key(&Mechanism::AesKeyWrapPad, master, private.handle())
                    .map_err(|e| failure("C_WrapKey (AES-KWP under the master KEK)", e))?;
                drop((public, private));
                blob
            }
            RawWrap::Pkcs11 | RawWrap::IbmHpcs | RawWrap::IbmKeyProtect => {
                let key = Temporary::new(
                    &self.own,
                    self.own
                        .generate_key(
                            &Mechanism::AesKeyGen,
                            &secret_session_key(&[
                                Attribute::ValueLen(32.into()),
                                Attribute::Extractable(true),
                            ]),
                        )
                        .map_err(|e| failure("C_GenerateKey (AES-256)", e))?,
                );
                self.own
                    .wrap_key(&Mechanism::AesKeyWrapPad, master, key.handle())
                    .map_err(|e| failure("C_WrapKey (AES-KWP under the master KEK)", e))?
            }
        };
        let nonce = self
            .own
            .generate_random_vec(NONCE_BYTES as u32)
            .map_err(|e| failure("C_GenerateRandom (nonce)", e))?;
        self.keys = Some(Keys {
            master,
            import_private,
            modulus,
            exponent,
            blob,
            nonce,
        });
        Ok(())
    }

    /// A session key pair in keyorchd's token: the public half with `public_extra`, the
    /// private half extractable (to be wrapped under the master KEK).
    fn generate_pair(
        &self,
        mechanism: &Mechanism<'_>,
        public_extra: Vec<Attribute>,
        what: &str,
    ) -> Result<(Temporary<'_>, Temporary<'_>), CliError> {
        let mut public = vec![Attribute::Token(false), Attribute::Private(false)];
        public.extend(public_extra);
        let private = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
        ];
        let (public, private) = self
            .own
            .generate_key_pair(mechanism, &public, &private)
            .map_err(|e| failure(&format!("C_GenerateKeyPair ({what})"), e))?;
        Ok((
            Temporary::new(&self.own, public),
            Temporary::new(&self.own, private),
        ))
    }

    /// The label of round `round`'s token object.
    pub fn label(&self, round: u32) -> String {
        format!("{}{round}", self.label_prefix)
    }

    /// One install, timed: the wrap of [`RawWrap`] in keyorchd's token, and for pkcs11 the two
    /// unwraps in the target, the managed key as a token object labelled `label`. Returns
    /// that object's handle (pkcs11 only: the other types send nothing, so nothing is left to
    /// remove) and the time taken.
    pub fn install(&self, label: &str) -> Result<(Option<ObjectHandle>, Duration), CliError> {
        let keys = self.keys.as_ref().ok_or_else(|| {
            CliError::Local("raw PKCS#11 baseline: install before prepare".into())
        })?;
        let started = Instant::now();
        let installed = match self.wrap {
            RawWrap::Pkcs11 => Some(self.transport_install(keys, label)?),
            RawWrap::IbmHpcs => {
                self.ibm_import(keys, OaepHash::Sha1)?;
                None
            }
            RawWrap::IbmKeyProtect => {
                self.ibm_import(keys, OaepHash::Sha256)?;
                None
            }
            RawWrap::Azure(kind) => {
                self.rsa_aes_wrap(keys, kind)?;
                None
            }
        };
        Ok((installed, started.elapsed()))
    }

    /// The wrap-only RSA public key to wrap to, as a session object.
    fn wrapping_public(&self, keys: &Keys) -> Result<Temporary<'_>, CliError> {
        Ok(Temporary::new(
            &self.own,
            self.own
                .create_object(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Token(false),
                    Attribute::Wrap(true),
                    Attribute::Modulus(keys.modulus.clone()),
                    Attribute::PublicExponent(keys.exponent.clone()),
                ])
                .map_err(|e| failure("C_CreateObject (RSA public key)", e))?,
        ))
    }

    /// An ephemeral AES-256 session key that can wrap.
    fn ephemeral(&self) -> Result<Temporary<'_>, CliError> {
        Ok(Temporary::new(
            &self.own,
            self.own
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &secret_session_key(&[
                        Attribute::ValueLen(32.into()),
                        Attribute::Extractable(true),
                        Attribute::Wrap(true),
                    ]),
                )
                .map_err(|e| failure("C_GenerateKey (ephemeral AES-256)", e))?,
        ))
    }

    /// pkcs11: in keyorchd's token the managed key is unwrapped from its blob (extractable
    /// session object), an ephemeral AES-256 key is generated and wrapped with RSA-OAEP-SHA1
    /// to the import KEK's public key, and the managed key with AES-KWP under the ephemeral
    /// key; in the target both are unwrapped, the managed key as a token object labelled
    /// `label`.
    fn transport_install(&self, keys: &Keys, label: &str) -> Result<ObjectHandle, CliError> {
        let (Some(target), Some(import_private)) = (&self.target, keys.import_private) else {
            return Err(CliError::Local(
                "raw PKCS#11 baseline: a pkcs11 install needs the target token".into(),
            ));
        };
        let oaep = oaep_mechanism(OaepHash::Sha1);
        let own = &self.own;
        let public = self.wrapping_public(keys)?;
        let ephemeral = self.ephemeral()?;
        let managed = Temporary::new(
            own,
            own.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                keys.master,
                &keys.blob,
                &secret_session_key(&[Attribute::Extractable(true)]),
            )
            .map_err(|e| failure("C_UnwrapKey (AES-KWP under the master KEK)", e))?,
        );
        let mut transport = own
            .wrap_key(&oaep, public.handle(), ephemeral.handle())
            .map_err(|e| failure("C_WrapKey (RSA-OAEP-SHA1)", e))?;
        let rsa_len = transport.len();
        transport.extend(
            own.wrap_key(
                &Mechanism::AesKeyWrapPad,
                ephemeral.handle(),
                managed.handle(),
            )
            .map_err(|e| failure("C_WrapKey (AES-KWP)", e))?,
        );
        drop((public, ephemeral, managed));

        let (rsa, kwp) = transport.split_at(rsa_len);
        let ephemeral = Temporary::new(
            target,
            target
                .unwrap_key(
                    &oaep,
                    import_private,
                    rsa,
                    &secret_session_key(&[Attribute::Extractable(false), Attribute::Unwrap(true)]),
                )
                .map_err(|e| failure("C_UnwrapKey (RSA-OAEP-SHA1) in the target", e))?,
        );
        let installed = target
            .unwrap_key(
                &Mechanism::AesKeyWrapPad,
                ephemeral.handle(),
                kwp,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Sign(true),
                    Attribute::Verify(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Id(label.as_bytes().to_vec()),
                ],
            )
            .map_err(|e| failure("C_UnwrapKey (AES-KWP) into a token object", e))?;
        drop(ephemeral);
        Ok(installed)
    }

    /// IBM's import-token wrap: the managed AES key unwrapped from its blob (extractable,
    /// may encrypt), RSA-OAEP (`hash`) of it to the wrapping public key, and the nonce
    /// encrypted under it: SHA-1 (HPCS) with AES-CBC-PAD and a 16-byte IV, SHA-256 (Key
    /// Protect) with AES-GCM and a 12-byte IV. Returns the payload and `IV || sealed nonce`.
    fn ibm_import(&self, keys: &Keys, hash: OaepHash) -> Result<(Vec<u8>, Vec<u8>), CliError> {
        let own = &self.own;
        let public = self.wrapping_public(keys)?;
        let managed = Temporary::new(
            own,
            own.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                keys.master,
                &keys.blob,
                &secret_session_key(&[Attribute::Extractable(true), Attribute::Encrypt(true)]),
            )
            .map_err(|e| failure("C_UnwrapKey (AES-KWP under the master KEK)", e))?,
        );
        let (what, iv_len) = match hash {
            OaepHash::Sha1 => ("C_WrapKey (RSA-OAEP-SHA1)", 16),
            OaepHash::Sha256 => ("C_WrapKey (RSA-OAEP-SHA256)", 12),
        };
        let payload = own
            .wrap_key(&oaep_mechanism(hash), public.handle(), managed.handle())
            .map_err(|e| failure(what, e))?;
        let mut iv = own
            .generate_random_vec(iv_len)
            .map_err(|e| failure("C_GenerateRandom (IV)", e))?;
        let sealed = match hash {
            OaepHash::Sha1 => {
                let mut cbc_iv = [0u8; 16];
                cbc_iv.copy_from_slice(&iv);
                own.encrypt(&Mechanism::AesCbcPad(cbc_iv), managed.handle(), &keys.nonce)
                    .map_err(|e| failure("C_Encrypt (AES-CBC-PAD of the nonce)", e))?
            }
            OaepHash::Sha256 => {
                let mut gcm_iv = iv.clone();
                let params = GcmParams::new(&mut gcm_iv, &[], 128.into())
                    .map_err(|e| failure("AES-GCM parameters", e))?;
                own.encrypt(&Mechanism::AesGcm(params), managed.handle(), &keys.nonce)
                    .map_err(|e| failure("C_Encrypt (AES-GCM of the nonce)", e))?
            }
        };
        iv.extend(sealed);
        Ok((payload, iv))
    }

    /// Azure's BYOK wrap, `CKM_RSA_AES_KEY_WRAP` composed: the managed private key unwrapped
    /// from its blob (extractable session object), an ephemeral AES-256 key wrapped with
    /// RSA-OAEP-SHA1 to the wrapping public key, and the private key (PKCS#8) with AES-KWP
    /// under the ephemeral key. Returns the two concatenated.
    fn rsa_aes_wrap(&self, keys: &Keys, kind: PrivateKind) -> Result<Vec<u8>, CliError> {
        let own = &self.own;
        let public = self.wrapping_public(keys)?;
        let ephemeral = self.ephemeral()?;
        let key_type = match kind {
            PrivateKind::Rsa2048 => KeyType::RSA,
            PrivateKind::EcP256 => KeyType::EC,
        };
        let managed = Temporary::new(
            own,
            own.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                keys.master,
                &keys.blob,
                &[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(key_type),
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                ],
            )
            .map_err(|e| {
                failure(
                    "C_UnwrapKey (AES-KWP of a private key under the master KEK)",
                    e,
                )
            })?,
        );
        let mut out = own
            .wrap_key(
                &oaep_mechanism(OaepHash::Sha1),
                public.handle(),
                ephemeral.handle(),
            )
            .map_err(|e| failure("C_WrapKey (RSA-OAEP-SHA1)", e))?;
        out.extend(
            own.wrap_key(
                &Mechanism::AesKeyWrapPad,
                ephemeral.handle(),
                managed.handle(),
            )
            .map_err(|e| failure("C_WrapKey (AES-KWP of the private key)", e))?,
        );
        Ok(out)
    }

    /// Destroys an installed token object; returns the time taken.
    pub fn destroy(&self, installed: ObjectHandle) -> Result<Duration, CliError> {
        let Some(target) = &self.target else {
            return Err(CliError::Local(
                "raw PKCS#11 baseline: nothing is installed without a target token".into(),
            ));
        };
        let started = Instant::now();
        target
            .destroy_object(installed)
            .map_err(|e| failure("C_DestroyObject (installed key)", e))?;
        Ok(started.elapsed())
    }

    /// Destroys any token object this baseline left in the target (a round cut short) and
    /// ends the sessions (their session objects go with them); returns what could not be
    /// removed. The module stays initialised.
    pub fn close(self) -> Vec<String> {
        let mut warnings = Vec::new();
        let Some(target) = &self.target else {
            return warnings;
        };
        let left = target.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
        ]);
        match left {
            Ok(handles) => {
                for h in handles {
                    let ours = matches!(
                        target.get_attributes(h, &[AttributeType::Label]).as_deref(),
                        Ok([Attribute::Label(l)]) if l.starts_with(self.label_prefix.as_bytes())
                    );
                    if ours {
                        if let Err(e) = target.destroy_object(h) {
                            warnings.push(format!("destroy a raw baseline key: {e}"));
                        }
                    }
                }
            }
            Err(e) => warnings.push(format!("look for raw baseline keys left behind: {e}")),
        }
        warnings
    }
}

/// The modulus and public exponent of the RSA public key `handle` (`what` in messages).
fn rsa_public(
    session: &Session,
    handle: ObjectHandle,
    what: &str,
) -> Result<(Vec<u8>, Vec<u8>), CliError> {
    let (mut modulus, mut exponent) = (Vec::new(), Vec::new());
    for attr in session
        .get_attributes(
            handle,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(|e| failure(&format!("C_GetAttributeValue ({what})"), e))?
    {
        match attr {
            Attribute::Modulus(m) => modulus = m,
            Attribute::PublicExponent(e) => exponent = e,
            _ => {}
        }
    }
    if modulus.is_empty() || exponent.is_empty() {
        return Err(CliError::Local(format!(
            "raw PKCS#11 baseline: {what} has no RSA modulus or exponent"
        )));
    }
    Ok((modulus, exponent))
}

/// An AES session object, private and sensitive, with `extra` attributes.
fn secret_session_key(extra: &[Attribute]) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
    ];
    t.extend_from_slice(extra);
    t
}
