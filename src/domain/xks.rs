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
}
