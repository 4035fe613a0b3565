//! Pure mapping rules between keyorch and the AWS KMS model: state and error-code names,
//! key states, ARNs and account ids, KeyId forms, the ciphertext blob, the encryption
//! context as AAD, and AWS's field and paging rules. No I/O; unit-tested here.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::wire::{AwsError, Exception};
use crate::domain::{
    ConnectionErrorCode, ConnectionState, InstanceState, Key, KeySpec, KeyState, Page,
};

/// `ConnectionState` as AWS names it (the same five words).
pub fn connection_state(s: ConnectionState) -> &'static str {
    match s {
        ConnectionState::Connected => "CONNECTED",
        ConnectionState::Connecting => "CONNECTING",
        ConnectionState::Disconnecting => "DISCONNECTING",
        ConnectionState::Disconnected => "DISCONNECTED",
        ConnectionState::Failed => "FAILED",
    }
}

/// keyorch's connection error codes onto AWS's `ConnectionErrorCode` values for
/// AWS_CLOUDHSM key stores. AWS has no code for a missing import KEK, a bad module or a
/// missing permission: those are `INTERNAL_ERROR` (keyorch's own message says which, in
/// the gRPC API and the log).
pub fn connection_error_code(c: ConnectionErrorCode) -> &'static str {
    match c {
        ConnectionErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
        ConnectionErrorCode::TargetNotFound => "CLUSTER_NOT_FOUND",
        ConnectionErrorCode::NetworkErrors | ConnectionErrorCode::TimedOut => "NETWORK_ERRORS",
        ConnectionErrorCode::InsufficientPermissions
        | ConnectionErrorCode::ImportKekMissing
        | ConnectionErrorCode::InvalidConfiguration
        | ConnectionErrorCode::InternalError => "INTERNAL_ERROR",
        // AWS's own codes for external key stores.
        c @ (ConnectionErrorCode::XksProxyAccessDenied
        | ConnectionErrorCode::XksProxyInvalidConfiguration
        | ConnectionErrorCode::XksProxyInvalidResponse
        | ConnectionErrorCode::XksProxyInvalidTlsConfiguration
        | ConnectionErrorCode::XksProxyNotReachable
        | ConnectionErrorCode::XksProxyTimedOut) => c.as_str(),
    }
}

/// AWS's `KeyState` of a key as a reader sees it (`Key::as_seen`): `Unavailable` when it
/// is not destroyed and none of its keystores is CONNECTED (its custom key store is
/// disconnected); else ACTIVE is `Enabled`, PRE_ACTIVE, DEACTIVATED and COMPROMISED are
/// `Disabled`, and destroyed keys (whose record stays) are `PendingDeletion`.
pub fn key_state(seen: &Key) -> &'static str {
    if seen.state.is_destroyed() {
        return "PendingDeletion";
    }
    let unavailable = !seen.instances.is_empty()
        && seen
            .instances
            .iter()
            .all(|i| i.state == InstanceState::Unavailable);
    if unavailable {
        return "Unavailable";
    }
    match seen.state {
        KeyState::Active => "Enabled",
        _ => "Disabled",
    }
}

/// The `KeySpec` of a key, and its `KeyUsage`.
pub fn key_spec(spec: KeySpec) -> (&'static str, &'static str) {
    match spec {
        KeySpec::Aes256 => ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
        // AWS has no 128/192-bit symmetric KMS keys; keyorch's own are shown by size.
        KeySpec::Aes128 => ("AES_128", "ENCRYPT_DECRYPT"),
        KeySpec::Aes192 => ("AES_192", "ENCRYPT_DECRYPT"),
        KeySpec::Rsa2048 => ("RSA_2048", "SIGN_VERIFY"),
        KeySpec::Rsa3072 => ("RSA_3072", "SIGN_VERIFY"),
        KeySpec::Rsa4096 => ("RSA_4096", "SIGN_VERIFY"),
        KeySpec::EcP256 => ("ECC_NIST_P256", "SIGN_VERIFY"),
        KeySpec::EcP384 => ("ECC_NIST_P384", "SIGN_VERIFY"),
        KeySpec::HmacSha256 => ("HMAC_256", "GENERATE_VERIFY_MAC"),
    }
}

/// The 12-digit "account" of a vault: the vault is the AWS account of its keys and custom
/// key stores. Derived (SHA-256 of the vault id, first 8 bytes, modulo 10^12), stable.
pub fn account_id(vault_id: &str) -> String {
    let h = Sha256::digest(vault_id.as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&h[..8]);
    format!("{:012}", u64::from_be_bytes(n) % 1_000_000_000_000)
}

pub fn key_arn(region: &str, vault_id: &str, key_id: &str) -> String {
    format!("arn:aws:kms:{region}:{}:key/{key_id}", account_id(vault_id))
}

/// The keyorch key id a `KeyId` names: a key id, or a key ARN. Aliases do not exist in
/// keyorch: `alias/…` and alias ARNs are `NotFoundException`.
pub fn key_id(field: &str, given: &str) -> Result<String, AwsError> {
    if given.is_empty() || given.chars().count() > 2048 {
        return Err(AwsError::validation(
            field,
            "Member must have length between 1 and 2048",
        ));
    }
    let alias = || {
        AwsError::new(
            Exception::NotFound,
            format!(
                "Alias {given} is not found: keyorch has no aliases; use the key id or key ARN"
            ),
        )
    };
    if given.starts_with("alias/") {
        return Err(alias());
    }
    if let Some(rest) = given.strip_prefix("arn:") {
        // arn:PARTITION:kms:REGION:ACCOUNT:key/ID
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        return match parts.as_slice() {
            [_, "kms", _, _, resource] => match resource.split_once('/') {
                Some(("key", id)) if !id.is_empty() => Ok(id.to_string()),
                Some(("alias", _)) => Err(alias()),
                _ => Err(AwsError::new(
                    Exception::NotFound,
                    format!("Invalid keyId {given}"),
                )),
            },
            _ => Err(AwsError::new(
                Exception::NotFound,
                format!("Invalid arn {given}"),
            )),
        };
    }
    Ok(given.to_string())
}

/// First bytes of every ciphertext blob the endpoint returns (format version 1).
const BLOB_MAGIC: [u8; 3] = *b"ko\x01";

/// The `CiphertextBlob`: magic, the key id (length-prefixed), then keyorch's own Encrypt
/// output (IV ‖ ciphertext ‖ tag, AES-256-GCM in the HSM). Decrypt reads the key from it,
/// as AWS does.
pub fn seal_blob(key_id: &str, ciphertext: &[u8]) -> Vec<u8> {
    let id = key_id.as_bytes();
    let mut out = Vec::with_capacity(BLOB_MAGIC.len() + 1 + id.len() + ciphertext.len());
    out.extend_from_slice(&BLOB_MAGIC);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(ciphertext);
    out
}

/// The key id and keyorch ciphertext of a blob; anything else is
/// `InvalidCiphertextException`.
pub fn open_blob(blob: &[u8]) -> Result<(String, &[u8]), AwsError> {
    let bad = || {
        AwsError::new(
            Exception::InvalidCiphertext,
            "the ciphertext is not one this endpoint made (or it was altered)",
        )
    };
    let rest = blob.strip_prefix(&BLOB_MAGIC).ok_or_else(bad)?;
    let (&n, rest) = rest.split_first().ok_or_else(bad)?;
    let n = usize::from(n);
    if n == 0 || rest.len() <= n {
        return Err(bad());
    }
    let id = std::str::from_utf8(&rest[..n]).map_err(|_| bad())?;
    Ok((id.to_string(), &rest[n..]))
}

/// The AAD an `EncryptionContext` becomes: empty for none, else a version label and each
/// pair, sorted by key, length-prefixed. The same context decrypts; any other fails.
pub fn context_aad(context: &BTreeMap<String, String>) -> Vec<u8> {
    if context.is_empty() {
        return Vec::new();
    }
    let mut out = b"keyorch-aws-encryption-context-v1".to_vec();
    for (k, v) in context {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

/// AWS's length rule on a string field (in characters).
pub fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), AwsError> {
    let n = value.chars().count();
    if n < min {
        return Err(AwsError::validation(
            field,
            format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if n > max {
        return Err(AwsError::validation(
            field,
            format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// A required string field with AWS's length rule.
pub fn required<'a>(
    field: &str,
    value: &'a Option<String>,
    min: usize,
    max: usize,
) -> Result<&'a str, AwsError> {
    let v = value.as_deref().ok_or_else(|| AwsError::required(field))?;
    check_len(field, v, min, max)?;
    Ok(v)
}

/// `Limit` (1–1000, default 100) and `Marker` (1–1024 characters of U+0020–U+00FF; one
/// this endpoint issued, else `InvalidMarkerException`) as a page.
pub fn page(limit: Option<i64>, marker: Option<&str>) -> Result<Page, AwsError> {
    let size = match limit {
        None => 100,
        Some(n) if n < 1 => {
            return Err(AwsError::validation(
                "Limit",
                "Member must have value greater than or equal to 1",
            ))
        }
        Some(n) if n > 1000 => {
            return Err(AwsError::validation(
                "Limit",
                "Member must have value less than or equal to 1000",
            ))
        }
        Some(n) => n as u32,
    };
    let marker = marker.unwrap_or("");
    if let Some(m) = Some(marker).filter(|m| !m.is_empty()) {
        check_len("Marker", m, 1, 1024)?;
        if m.chars().any(|c| !('\u{20}'..='\u{ff}').contains(&c)) {
            return Err(AwsError::validation(
                "Marker",
                "Member must satisfy regular expression pattern: [\\u0020-\\u00FF]*",
            ));
        }
    }
    Page::parse(size, marker).map_err(|_| {
        AwsError::new(
            Exception::InvalidMarker,
            "The marker is not one this endpoint returned as NextMarker",
        )
    })
}

/// Seconds since the epoch, as AWS's JSON timestamps are (a number, with milliseconds).
pub fn epoch_seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Instance, Material};

    fn key(state: KeyState, instances: &[InstanceState]) -> Key {
        Key {
            id: "key-1".into(),
            vault_id: "vault-1".into(),
            name: "k".into(),
            description: String::new(),
            spec: KeySpec::Aes256,
            state,
            targets: (0..instances.len()).map(|i| format!("ks-{i}")).collect(),
            instances: instances
                .iter()
                .enumerate()
                .map(|(i, s)| Instance {
                    keystore_id: format!("ks-{i}"),
                    state: *s,
                    remote_ref: String::new(),
                    remote_id: String::new(),
                    error: String::new(),
                    updated_at: 0,
                    target_change: Default::default(),
                })
                .collect(),
            kcv: String::new(),
            material: Some(Material {
                wrapped: vec![],
                spki_der: None,
            }),
            tags: Default::default(),
            created_at: 0,
            updated_at: 0,
            activated_at: None,
            deactivated_at: None,
            destroyed_at: None,
            compromised_at: None,
            external: None,
        }
    }

    #[test]
    fn key_states_follow_aws() {
        use InstanceState::*;
        assert_eq!(key_state(&key(KeyState::Active, &[Installed])), "Enabled");
        assert_eq!(
            key_state(&key(KeyState::Active, &[Unavailable])),
            "Unavailable"
        );
        assert_eq!(
            key_state(&key(KeyState::Active, &[Unavailable, Installed])),
            "Enabled"
        );
        assert_eq!(
            key_state(&key(KeyState::Deactivated, &[NotInstalled])),
            "Disabled"
        );
        assert_eq!(
            key_state(&key(KeyState::Deactivated, &[Unavailable])),
            "Unavailable"
        );
        assert_eq!(
            key_state(&key(KeyState::PreActive, &[NotInstalled])),
            "Disabled"
        );
        assert_eq!(
            key_state(&key(KeyState::Destroyed, &[Unavailable])),
            "PendingDeletion"
        );
        assert_eq!(
            key_state(&key(KeyState::DestroyedCompromised, &[])),
            "PendingDeletion"
        );
    }

    #[test]
    fn error_codes_use_aws_names() {
        assert_eq!(
            connection_error_code(ConnectionErrorCode::TargetNotFound),
            "CLUSTER_NOT_FOUND"
        );
        assert_eq!(
            connection_error_code(ConnectionErrorCode::InvalidCredentials),
            "INVALID_CREDENTIALS"
        );
        assert_eq!(
            connection_error_code(ConnectionErrorCode::TimedOut),
            "NETWORK_ERRORS"
        );
        assert_eq!(
            connection_error_code(ConnectionErrorCode::ImportKekMissing),
            "INTERNAL_ERROR"
        );
        for s in ConnectionState::ALL {
            assert_eq!(connection_state(s), s.to_string());
        }
    }

    #[test]
    fn key_ids_arns_and_aliases() {
        let arn = key_arn("eu-west-1", "vault-abc", "key-123");
        assert!(arn.starts_with("arn:aws:kms:eu-west-1:"), "{arn}");
        assert_eq!(account_id("vault-abc").len(), 12);
        assert_eq!(account_id("vault-abc"), account_id("vault-abc"));
        assert_ne!(account_id("vault-abc"), account_id("vault-abd"));
        assert_eq!(key_id("KeyId", &arn).unwrap(), "key-123");
        assert_eq!(key_id("KeyId", "key-123").unwrap(), "key-123");
        for alias in ["alias/app", "arn:aws:kms:us-east-1:111122223333:alias/app"] {
            assert_eq!(
                key_id("KeyId", alias).unwrap_err().exception,
                Exception::NotFound
            );
        }
        assert_eq!(
            key_id("KeyId", "").unwrap_err().exception,
            Exception::Validation
        );
        assert_eq!(
            key_id("KeyId", &"k".repeat(2049)).unwrap_err().exception,
            Exception::Validation
        );
    }

    #[test]
    fn blobs_round_trip_and_garbage_is_invalid_ciphertext() {
        let blob = seal_blob("key-0123", b"ivciphertexttag");
        let (id, ct) = open_blob(&blob).unwrap();
        assert_eq!(id, "key-0123");
        assert_eq!(ct, b"ivciphertexttag");
        for bad in [
            &b""[..],
            b"ko",
            b"ko\x01",
            b"ko\x02\x03key1234",
            b"ko\x01\x08key-0123",
            b"xx\x01\x01kct",
        ] {
            assert_eq!(
                open_blob(bad).unwrap_err().exception,
                Exception::InvalidCiphertext,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn encryption_context_is_order_free_and_unambiguous() {
        let a: BTreeMap<_, _> = [("a".to_string(), "bc".to_string())].into();
        let b: BTreeMap<_, _> = [("ab".to_string(), "c".to_string())].into();
        assert_ne!(context_aad(&a), context_aad(&b));
        assert!(context_aad(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn paging_rules() {
        assert_eq!(page(None, None).unwrap().size, 100);
        assert_eq!(page(Some(1000), None).unwrap().size, 1000);
        for bad in [0, -1, 1001] {
            assert_eq!(
                page(Some(bad), None).unwrap_err().exception,
                Exception::Validation
            );
        }
        let m = Page::token_after("ks-1");
        assert_eq!(
            page(Some(5), Some(&m)).unwrap().after.as_deref(),
            Some("ks-1")
        );
        assert_eq!(
            page(None, Some("not-ours")).unwrap_err().exception,
            Exception::InvalidMarker
        );
        assert_eq!(
            page(None, Some("\u{263a}")).unwrap_err().exception,
            Exception::Validation
        );
        assert_eq!(
            page(None, Some(&"a".repeat(1025))).unwrap_err().exception,
            Exception::Validation
        );
    }

    #[test]
    fn lengths() {
        check_len("CloudHsmClusterId", "cluster-1234567890a", 19, 24).unwrap();
        assert!(check_len("CloudHsmClusterId", "short", 19, 24).is_err());
        assert!(required("CustomKeyStoreId", &None, 1, 64).is_err());
    }
}
