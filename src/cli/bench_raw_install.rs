//! The `bench install` baseline: one install straight through cryptoki, in process — the
//! RSA-OAEP-SHA1 + AES-KWP wrap in keyorchd's token, the two unwraps into the target token.

use std::path::Path;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use secrecy::SecretString;

use super::CliError;
use crate::hsm::{
    find_token, load_module, login_user, oaep_mechanism, OaepHash, Temporary, TokenSelector,
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

/// What every install uses, found once the keystore is connected (the import KEK exists).
struct Keys {
    /// keyorchd's master KEK.
    master: ObjectHandle,
    /// The target's EKMF-BYOK-KEK-FOR-IMPORT private key.
    import_private: ObjectHandle,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
    /// An AES-256 key wrapped under the master KEK with AES-KWP, as keyorchd stores keys.
    blob: Vec<u8>,
}

/// The two tokens, logged in, and (after [`RawInstall::prepare`]) the keys an install uses.
pub struct RawInstall {
    own: Session,
    target: Session,
    keys: Option<Keys>,
    /// Label prefix of the token objects this baseline makes in the target.
    label_prefix: String,
}

impl RawInstall {
    /// Logs in to keyorchd's token and the target token. Token objects will be labelled
    /// `label_prefix` + a round number.
    pub fn open(
        own: &TokenAccess<'_>,
        target: &TokenAccess<'_>,
        label_prefix: String,
    ) -> Result<RawInstall, CliError> {
        Ok(RawInstall {
            own: open_session(own, false)?,
            target: open_session(target, true)?,
            keys: None,
            label_prefix,
        })
    }

    /// Finds the master KEK and the target's import KEK, and makes the wrapped AES-256 key
    /// the installs take out of keyorchd's token.
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
        let labelled = |class| {
            [
                Attribute::Class(class),
                Attribute::Token(true),
                Attribute::Label(IMPORT_KEK_LABEL.as_bytes().to_vec()),
            ]
        };
        let what = format!("{IMPORT_KEK_LABEL} private key");
        let import_private = find_one(&self.target, &labelled(ObjectClass::PRIVATE_KEY), &what)?;
        let what = format!("{IMPORT_KEK_LABEL} public key");
        let import_public = find_one(&self.target, &labelled(ObjectClass::PUBLIC_KEY), &what)?;
        let (mut modulus, mut exponent) = (Vec::new(), Vec::new());
        for attr in self
            .target
            .get_attributes(
                import_public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(|e| failure("C_GetAttributeValue (import KEK)", e))?
        {
            match attr {
                Attribute::Modulus(m) => modulus = m,
                Attribute::PublicExponent(e) => exponent = e,
                _ => {}
            }
        }
        if modulus.is_empty() || exponent.is_empty() {
            return Err(CliError::Local(format!(
                "raw PKCS#11 baseline: {IMPORT_KEK_LABEL} has no RSA modulus or exponent"
            )));
        }
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
        let blob = self
            .own
            .wrap_key(&Mechanism::AesKeyWrapPad, master, key.handle())
            .map_err(|e| failure("C_WrapKey (AES-KWP under the master KEK)", e))?;
        self.keys = Some(Keys {
            master,
            import_private,
            modulus,
            exponent,
            blob,
        });
        Ok(())
    }

    /// The label of round `round`'s token object.
    pub fn label(&self, round: u32) -> String {
        format!("{}{round}", self.label_prefix)
    }

    /// One install, timed: in keyorchd's token the managed key is unwrapped from its blob
    /// (extractable session object), an ephemeral AES-256 key is generated and wrapped with
    /// RSA-OAEP-SHA1 to the import KEK's public key, and the managed key with AES-KWP under
    /// the ephemeral key; in the target both are unwrapped, the managed key as a token object
    /// labelled `label`. Returns its handle and the time taken.
    pub fn install(&self, label: &str) -> Result<(ObjectHandle, Duration), CliError> {
        let keys = self.keys.as_ref().ok_or_else(|| {
            CliError::Local("raw PKCS#11 baseline: install before prepare".into())
        })?;
        let oaep = oaep_mechanism(OaepHash::Sha1);
        let started = Instant::now();
        let own = &self.own;
        let public = Temporary::new(
            own,
            own.create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(false),
                Attribute::Wrap(true),
                Attribute::Modulus(keys.modulus.clone()),
                Attribute::PublicExponent(keys.exponent.clone()),
            ])
            .map_err(|e| failure("C_CreateObject (RSA public key)", e))?,
        );
        let ephemeral = Temporary::new(
            own,
            own.generate_key(
                &Mechanism::AesKeyGen,
                &secret_session_key(&[
                    Attribute::ValueLen(32.into()),
                    Attribute::Extractable(true),
                    Attribute::Wrap(true),
                ]),
            )
            .map_err(|e| failure("C_GenerateKey (ephemeral AES-256)", e))?,
        );
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

        let target = &self.target;
        let (rsa, kwp) = transport.split_at(rsa_len);
        let ephemeral = Temporary::new(
            target,
            target
                .unwrap_key(
                    &oaep,
                    keys.import_private,
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
        Ok((installed, started.elapsed()))
    }

    /// Destroys an installed token object; returns the time taken.
    pub fn destroy(&self, installed: ObjectHandle) -> Result<Duration, CliError> {
        let started = Instant::now();
        self.target
            .destroy_object(installed)
            .map_err(|e| failure("C_DestroyObject (installed key)", e))?;
        Ok(started.elapsed())
    }

    /// Destroys any token object this baseline left in the target (a round cut short) and
    /// ends the sessions; returns what could not be removed. The module stays initialised.
    pub fn close(self) -> Vec<String> {
        let mut warnings = Vec::new();
        let left = self.target.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
        ]);
        match left {
            Ok(handles) => {
                for h in handles {
                    let ours = matches!(
                        self.target.get_attributes(h, &[AttributeType::Label]).as_deref(),
                        Ok([Attribute::Label(l)]) if l.starts_with(self.label_prefix.as_bytes())
                    );
                    if ours {
                        if let Err(e) = self.target.destroy_object(h) {
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
