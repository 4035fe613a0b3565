//! The AWS XKS proxy API's rules (aws-kms-xksproxy-api-spec v1.0.3): field limits, the
//! AES-GCM additional data that binds the caller's AAD and the ciphertext metadata, the
//! ciphertext data integrity value (CDIV), and the external key id syntax. Pure code.

use sha2::{Digest, Sha256};

use super::DomainError;

/// Plaintext and ciphertext the proxy must take (the spec's minimum, which is keyorch's).
pub const MAX_XKS_DATA: usize = 4300;
/// Largest additionalAuthenticatedData.
pub const MAX_XKS_AAD: usize = 8192;
/// Largest ciphertextMetadata.
pub const MAX_XKS_METADATA: usize = 20;
/// Longest externalKeyId.
pub const MAX_XKS_KEY_ID: usize = 128;
/// Longest request URI.
pub const MAX_XKS_URI: usize = 256;
/// Longest XksProxyUriPath (`[/prefix]/kms/xks/v1`).
pub const MAX_XKS_URI_PATH: usize = 128;
/// What every XksProxyUriPath ends with.
pub const XKS_URI_SUFFIX: &str = "/kms/xks/v1";
/// GCM initialization vector and tag lengths keyorch produces.
pub const XKS_IV_LEN: usize = 12;
pub const XKS_TAG_LEN: usize = 16;

/// An externalKeyId: 1 to 128 of A-Z a-z 0-9 - . _
pub fn valid_external_key_id(id: &str) -> bool {
    (1..=MAX_XKS_KEY_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// An XksProxyUriPath: at most 128 of a-z A-Z 0-9 / - _, ending in `/kms/xks/v1`.
pub fn check_uri_path(field: &str, path: &str) -> Result<(), DomainError> {
    if path.len() > MAX_XKS_URI_PATH {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {MAX_XKS_URI_PATH} characters"),
        ));
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_'))
    {
        return Err(DomainError::invalid(
            field,
            "may hold only a-z A-Z 0-9 / - _",
        ));
    }
    if !path.starts_with('/') || !path.ends_with(XKS_URI_SUFFIX) || path.contains("//") {
        return Err(DomainError::invalid(
            field,
            format!("must be [/prefix]{XKS_URI_SUFFIX}, e.g. \"/keyorch{XKS_URI_SUFFIX}\""),
        ));
    }
    Ok(())
}

/// The AAD given to AES-GCM: `u16_be(len aad) || aad || u8(len metadata) || metadata`,
/// both lengths always present, so that moving bytes between the caller's AAD and the
/// ciphertext metadata changes the result (the spec's NOTE under ciphertextMetadata).
pub fn gcm_aad(aad: &[u8], metadata: &[u8]) -> Result<Vec<u8>, DomainError> {
    if aad.len() > MAX_XKS_AAD {
        return Err(DomainError::invalid(
            "additionalAuthenticatedData",
            format!("must be at most {MAX_XKS_AAD} bytes (got {})", aad.len()),
        ));
    }
    if metadata.len() > MAX_XKS_METADATA {
        return Err(DomainError::invalid(
            "ciphertextMetadata",
            format!(
                "must be at most {MAX_XKS_METADATA} bytes (got {})",
                metadata.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(3 + aad.len() + metadata.len());
    out.extend_from_slice(&(aad.len() as u16).to_be_bytes());
    out.extend_from_slice(aad);
    out.push(metadata.len() as u8);
    out.extend_from_slice(metadata);
    Ok(out)
}

/// The CDIV: SHA-256 over `aad || metadata || iv || ciphertext || tag` (Appendix C), the
/// fields themselves with no lengths, and the AAD not hashed first.
pub fn cdiv(aad: &[u8], metadata: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [aad, metadata, iv, ciphertext, tag] {
        h.update(part);
    }
    h.finalize().into()
}

/// The size rule of plaintext (Encrypt) and ciphertext (Decrypt): 1 to 4300 bytes.
pub fn check_data(field: &str, data: &[u8]) -> Result<(), DomainError> {
    if data.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if data.len() > MAX_XKS_DATA {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {MAX_XKS_DATA} bytes (got {})", data.len()),
        ));
    }
    Ok(())
}

/// The keyUsage keyorchd's proxy offers for one externalKeyId: both unless its
/// configuration narrows it (an encrypt-only or decrypt-only name of a key, or one with
/// neither, as the spec's test client sets up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XksUsage {
    pub encrypt: bool,
    pub decrypt: bool,
}

impl XksUsage {
    pub const BOTH: XksUsage = XksUsage {
        encrypt: true,
        decrypt: true,
    };

    /// A configured list: each of `ENCRYPT` and `DECRYPT` at most once, nothing else.
    pub fn parse(names: &[String]) -> Result<XksUsage, String> {
        let mut u = XksUsage {
            encrypt: false,
            decrypt: false,
        };
        for n in names {
            let slot = match n.as_str() {
                "ENCRYPT" => &mut u.encrypt,
                "DECRYPT" => &mut u.decrypt,
                other => {
                    return Err(format!(
                        "{other:?} is not a key usage: use \"ENCRYPT\" and/or \"DECRYPT\""
                    ))
                }
            };
            if *slot {
                return Err(format!("{n} is listed twice"));
            }
            *slot = true;
        }
        Ok(u)
    }

    /// The spec's keyUsage list.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.encrypt {
            v.push("ENCRYPT");
        }
        if self.decrypt {
            v.push("DECRYPT");
        }
        v
    }

    /// Whether Encrypt may run: ENCRYPT, and DECRYPT too when a CDIV is asked for (the
    /// proxy decrypts its own output once to compute it, Appendix C).
    pub fn allows_encrypt(self, cdiv: bool) -> bool {
        self.encrypt && (!cdiv || self.decrypt)
    }
}

/// What a proxy's GetKeyMetadata says of an external key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalKeyMetadata {
    pub key_spec: String,
    pub key_usage: Vec<String>,
    pub key_status: String,
}

impl ExternalKeyMetadata {
    /// Why keyorch cannot encrypt and decrypt with the key, or `None`. AWS KMS's rules for
    /// a key of an external key store: `AES_256`, `ENCRYPT` and `DECRYPT` among its usages,
    /// `ENABLED`.
    pub fn problem(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.key_spec != "AES_256" {
            why.push(format!(
                "its keySpec is {:?}, not \"AES_256\"",
                self.key_spec
            ));
        }
        for usage in ["ENCRYPT", "DECRYPT"] {
            if !self.key_usage.iter().any(|u| u == usage) {
                why.push(format!("its keyUsage lacks {usage}"));
            }
        }
        if self.key_status != "ENABLED" {
            why.push(format!(
                "its keyStatus is {:?}, not \"ENABLED\"",
                self.key_status
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// First byte of the ciphertext keyorch returns for a key of an xks keystore.
pub const EXTERNAL_CIPHERTEXT_VERSION: u8 = b'X';

/// What a proxy's Encrypt returned, as keyorch hands it out and takes it back:
/// `'X' || u8(len iv) || iv || u8(len metadata) || metadata || ciphertext || tag(16)`.
/// The caller's AAD is not in it: Decrypt needs it again, as for keyorch's own keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalCiphertext {
    pub iv: Vec<u8>,
    pub metadata: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
}

impl ExternalCiphertext {
    /// The parts' rules: an IV of 12 or 16 bytes (the spec's), metadata of at most 20
    /// bytes, 1 to 4300 bytes of ciphertext, a 16-byte tag.
    pub fn check(&self) -> Result<(), String> {
        if self.iv.len() != 12 && self.iv.len() != 16 {
            return Err(format!(
                "initializationVector must be 12 or 16 bytes (got {})",
                self.iv.len()
            ));
        }
        if self.metadata.len() > MAX_XKS_METADATA {
            return Err(format!(
                "ciphertextMetadata must be at most {MAX_XKS_METADATA} bytes (got {})",
                self.metadata.len()
            ));
        }
        if self.ciphertext.is_empty() || self.ciphertext.len() > MAX_XKS_DATA {
            return Err(format!(
                "ciphertext must be 1 to {MAX_XKS_DATA} bytes (got {})",
                self.ciphertext.len()
            ));
        }
        if self.tag.len() != XKS_TAG_LEN {
            return Err(format!(
                "authenticationTag must be {XKS_TAG_LEN} bytes (got {})",
                self.tag.len()
            ));
        }
        Ok(())
    }

    /// The bytes handed out; the parts must pass [`ExternalCiphertext::check`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            3 + self.iv.len() + self.metadata.len() + self.ciphertext.len() + self.tag.len(),
        );
        out.push(EXTERNAL_CIPHERTEXT_VERSION);
        out.push(self.iv.len() as u8);
        out.extend_from_slice(&self.iv);
        out.push(self.metadata.len() as u8);
        out.extend_from_slice(&self.metadata);
        out.extend_from_slice(&self.ciphertext);
        out.extend_from_slice(&self.tag);
        out
    }

    /// The parts of bytes made by [`ExternalCiphertext::encode`]; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<ExternalCiphertext> {
        let (&version, rest) = bytes.split_first()?;
        if version != EXTERNAL_CIPHERTEXT_VERSION {
            return None;
        }
        let (&iv_len, rest) = rest.split_first()?;
        let (iv, rest) = rest.split_at_checked(usize::from(iv_len))?;
        let (&meta_len, rest) = rest.split_first()?;
        let (metadata, rest) = rest.split_at_checked(usize::from(meta_len))?;
        let (ciphertext, tag) = rest.split_at_checked(rest.len().checked_sub(XKS_TAG_LEN)?)?;
        let parts = ExternalCiphertext {
            iv: iv.to_vec(),
            metadata: metadata.to_vec(),
            ciphertext: ciphertext.to_vec(),
            tag: tag.to_vec(),
        };
        parts.check().ok()?;
        Some(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Appendix C's worked example, byte for byte.
    #[test]
    fn cdiv_matches_the_spec_example() {
        let aad = b"project=nile,department=marketing";
        let metadata = b"key_version=1";
        let iv = hex::decode("1ccae5470f39700254779031").unwrap();
        let ct = hex::decode("821c642b5b71783367deaf18").unwrap();
        let tag = hex::decode("bc1c4dda7707d6812447c5955e99b261").unwrap();
        assert_eq!(
            hex::encode(cdiv(aad, metadata, &iv, &ct, &tag)),
            "a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7"
        );
    }

    #[test]
    fn gcm_aad_always_carries_both_lengths() {
        assert_eq!(gcm_aad(b"", b"").unwrap(), vec![0, 0, 0]);
        assert_eq!(
            gcm_aad(b"ab", b"c").unwrap(),
            vec![0, 2, b'a', b'b', 1, b'c']
        );
        assert!(gcm_aad(&[0; MAX_XKS_AAD], &[0; MAX_XKS_METADATA]).is_ok());
        let e = gcm_aad(&[0; MAX_XKS_AAD + 1], b"").unwrap_err();
        assert!(e.to_string().contains("additionalAuthenticatedData"), "{e}");
        let e = gcm_aad(b"", &[0; MAX_XKS_METADATA + 1]).unwrap_err();
        assert!(e.to_string().contains("ciphertextMetadata"), "{e}");
    }

    #[test]
    fn uri_paths_and_key_ids_follow_the_spec() {
        for ok in ["/kms/xks/v1", "/keyorch/kms/xks/v1", "/a-b/c_d/kms/xks/v1"] {
            assert!(check_uri_path("p", ok).is_ok(), "{ok}");
        }
        for bad in [
            "kms/xks/v1",
            "/x/kms/xks/v2",
            "/a b/kms/xks/v1",
            "//kms/xks/v1",
            "/a.b/kms/xks/v1",
        ] {
            assert!(check_uri_path("p", bad).is_err(), "{bad}");
        }
        let long = format!("/{}{XKS_URI_SUFFIX}", "a".repeat(MAX_XKS_URI_PATH));
        assert!(check_uri_path("p", &long).is_err());
        assert!(valid_external_key_id("key-0123abcd"));
        assert!(valid_external_key_id("a.b_c-D"));
        assert!(!valid_external_key_id(""));
        assert!(!valid_external_key_id("a/b"));
        assert!(!valid_external_key_id(&"a".repeat(129)));
        assert!(valid_external_key_id(&"a".repeat(128)));
    }

    proptest! {
        /// No two different (aad, metadata) pairs give the same GCM AAD.
        #[test]
        fn gcm_aad_is_injective(
            a1 in prop::collection::vec(any::<u8>(), 0..40),
            m1 in prop::collection::vec(any::<u8>(), 0..=20),
            a2 in prop::collection::vec(any::<u8>(), 0..40),
            m2 in prop::collection::vec(any::<u8>(), 0..=20),
        ) {
            let same = gcm_aad(&a1, &m1).unwrap() == gcm_aad(&a2, &m2).unwrap();
            prop_assert_eq!(same, a1 == a2 && m1 == m2);
        }
    }

    #[test]
    fn configured_usages_parse_strictly() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            XksUsage::parse(&s(&["DECRYPT", "ENCRYPT"])),
            Ok(XksUsage::BOTH)
        );
        let enc = XksUsage::parse(&s(&["ENCRYPT"])).unwrap();
        assert!(enc.allows_encrypt(false) && !enc.allows_encrypt(true) && !enc.decrypt);
        let none = XksUsage::parse(&[]).unwrap();
        assert!(none.names().is_empty() && !none.allows_encrypt(false));
        assert!(XksUsage::parse(&s(&["ENCRYPT", "ENCRYPT"])).is_err());
        assert!(XksUsage::parse(&s(&["SIGN"])).is_err());
        assert_eq!(XksUsage::BOTH.names(), vec!["ENCRYPT", "DECRYPT"]);
    }

    fn metadata(spec: &str, usage: &[&str], status: &str) -> ExternalKeyMetadata {
        ExternalKeyMetadata {
            key_spec: spec.into(),
            key_usage: usage.iter().map(|u| u.to_string()).collect(),
            key_status: status.into(),
        }
    }

    #[test]
    fn external_keys_must_be_enabled_aes_256_for_encrypt_and_decrypt() {
        assert_eq!(
            metadata("AES_256", &["DECRYPT", "ENCRYPT"], "ENABLED").problem(),
            None
        );
        let p = metadata("AES_256", &["ENCRYPT"], "ENABLED")
            .problem()
            .unwrap();
        assert!(
            p.contains("lacks DECRYPT") && !p.contains("lacks ENCRYPT"),
            "{p}"
        );
        let p = metadata("RSA_2048", &["ENCRYPT", "DECRYPT"], "DISABLED")
            .problem()
            .unwrap();
        assert!(p.contains("RSA_2048") && p.contains("DISABLED"), "{p}");
        assert!(metadata("AES_256", &[], "ENABLED").problem().is_some());
    }

    fn parts() -> impl Strategy<Value = ExternalCiphertext> {
        (
            prop::sample::select(vec![12usize, 16]),
            0..=MAX_XKS_METADATA,
            1..200usize,
            any::<u8>(),
        )
            .prop_map(|(iv, meta, ct, b)| ExternalCiphertext {
                iv: vec![b; iv],
                metadata: vec![b.wrapping_add(1); meta],
                ciphertext: vec![b.wrapping_add(2); ct],
                tag: vec![b.wrapping_add(3); XKS_TAG_LEN],
            })
    }

    proptest! {
        /// What is encoded decodes to the same parts; no shorter prefix and no other
        /// version byte decodes.
        #[test]
        fn external_ciphertexts_round_trip(p in parts(), cut in 1usize..40) {
            let bytes = p.encode();
            prop_assert_eq!(ExternalCiphertext::decode(&bytes), Some(p.clone()));
            let shorter = &bytes[..bytes.len().saturating_sub(cut)];
            // Dropping bytes off the end may still parse as a shorter ciphertext, never as
            // the same parts.
            prop_assert_ne!(ExternalCiphertext::decode(shorter), Some(p));
            let mut other = bytes.clone();
            other[0] ^= 0x01;
            prop_assert_eq!(ExternalCiphertext::decode(&other), None);
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Some(p) = ExternalCiphertext::decode(&bytes) {
                prop_assert!(p.check().is_ok());
                prop_assert_eq!(p.encode(), bytes);
            }
        }
    }
}
