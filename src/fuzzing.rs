//! Fuzz entry points: the parsers of untrusted bytes, each with the properties it must keep
//! on any input. `fuzz/` runs them under libFuzzer (docs/reliability.md); the unit tests
//! below run them on random inputs in every test run, and every crash a fuzzer found stays
//! here as a regression case.

use std::collections::BTreeMap;

use prost::Message;
use tonic::Code;

use crate::api::authority::Rewriter;
use crate::domain::{
    validate_aws_secret, validate_pin, AuditEvent, Key, KeySpec, Keystore, NewKey, Vault,
};
use crate::proto::v1 as pb;
use crate::store::codec;

/// The Unix socket's `:authority` rewriter on a client's byte stream. Properties: no
/// panic; the same output and verdict whether the bytes arrive at once or one by one (read
/// sizes must not matter); a stream that is not HTTP/2 goes on unchanged.
pub fn authority_rewriter(data: &[u8]) {
    let whole = rewrite(data, data.len().max(1));
    let split = data.first().map_or(1, |b| usize::from(*b % 31) + 1);
    let pieces = rewrite(data, split);
    assert_eq!(
        whole, pieces,
        "output depends on read sizes (chunks of {split})"
    );
    if !data.starts_with(b"PRI * HTTP/2.0") && !b"PRI * HTTP/2.0".starts_with(data) {
        assert_eq!(
            whole.as_deref(),
            Ok(data),
            "a non-HTTP/2 stream was changed"
        );
    }
}

fn rewrite(data: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
    let mut rw = Rewriter::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        rw.feed(piece).map_err(|e| e.to_string())?;
        out.extend_from_slice(rw.take(usize::MAX));
    }
    rw.finish();
    out.extend_from_slice(rw.take(usize::MAX));
    Ok(out)
}

/// A stored record of every table decoded from arbitrary bytes. Properties: no panic; a
/// record that decodes encodes back to bytes that decode to the same record.
pub fn stored_records(data: &[u8]) {
    roundtrip::<Vault>(data);
    roundtrip::<Keystore>(data);
    roundtrip::<Key>(data);
    roundtrip::<AuditEvent>(data);
}

fn roundtrip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(record) = codec::decode::<T>(data) {
        let bytes = codec::encode(&record).expect("a decoded record encodes");
        let again: T = codec::decode(&bytes).expect("an encoded record decodes");
        assert_eq!(record, again, "record changed across encode/decode");
    }
}

/// Request validation: a CreateKeystore or CreateKey request from arbitrary protobuf
/// bytes, through the API's conversion and the domain's field rules. Properties: no panic;
/// every refusal is INVALID_ARGUMENT (or UNIMPLEMENTED) with a message; a refusal never
/// repeats a PIN or secret access key it was given.
pub fn request_validation(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let Ok(r) = pb::CreateKeystoreRequest::decode(body) else {
                return;
            };
            // The same request with the secret in other characters of the same classes:
            // the rules look at a secret's length and classes only, so the refusals must
            // be the same word for word. A refusal that repeated the secret would differ.
            // (Looking for the secret in the message instead flags secrets that happen to
            // be part of a rule's text: "pe: " in "type: is required".)
            let mut other = r.clone();
            let disguised = set_secret(&mut other, disguise);
            let messages = create_keystore_refusals(r);
            if disguised {
                assert_eq!(
                    messages,
                    create_keystore_refusals(other),
                    "a refusal depends on the secret's characters: it may repeat the secret"
                );
            }
        }
        1 => {
            let Ok(r) = pb::CreateKeyRequest::decode(body) else {
                return;
            };
            let family = match crate::api::convert::required_enum::<pb::KeyAlgorithm>(
                "algorithm",
                r.algorithm,
            ) {
                Ok(a) => crate::api::convert::family(a),
                Err(s) => return refusal(&s),
            };
            let Ok(spec) = KeySpec::from_parts(family, r.key_size_bits) else {
                return;
            };
            let key = NewKey {
                id: "key-0".into(),
                vault_id: r.vault_id,
                name: r.name,
                description: r.description,
                spec,
                targets: r.target_keystore_ids,
                tags: r.tags.into_iter().collect::<BTreeMap<_, _>>(),
            };
            if let Err(e) = key.validate() {
                assert!(!e.to_string().is_empty());
            }
        }
        _ => {
            let Ok(r) = pb::ListKeysRequest::decode(body) else {
                return;
            };
            if let Err(s) = crate::api::convert::page(r.page) {
                refusal(&s);
            }
        }
    }
}

/// Replaces the request's PIN or secret access key by `f` of it; false when there is none
/// or `f` left it as it was.
fn set_secret(r: &mut pb::CreateKeystoreRequest, f: fn(&str) -> String) -> bool {
    use pb::create_keystore_request::Credentials;
    let secret = match &mut r.credentials {
        Some(Credentials::Pkcs11Credentials(c)) => &mut c.pin,
        Some(Credentials::AwsKmsCredentials(c)) => &mut c.secret_access_key,
        Some(Credentials::XksCredentials(c)) => &mut c.secret_access_key,
        Some(Credentials::IbmKmsCredentials(c)) => &mut c.api_key,
        Some(Credentials::AzureKeyVaultCredentials(c)) => &mut c.client_secret,
        Some(Credentials::GoogleCloudKmsCredentials(c)) => &mut c.service_account_key_json,
        None => return false,
    };
    let new = f(secret);
    let changed = new != *secret;
    *secret = new;
    changed
}

/// Each ASCII letter and digit moved within its class (ROT13, digits by 5), the rest kept.
fn disguise(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => (((c as u8 - b'a') + 13) % 26 + b'a') as char,
            'A'..='Z' => (((c as u8 - b'A') + 13) % 26 + b'A') as char,
            '0'..='9' => (((c as u8 - b'0') + 5) % 10 + b'0') as char,
            other => other,
        })
        .collect()
}

/// The messages of every refusal the request meets on its way to the service.
fn create_keystore_refusals(r: pb::CreateKeystoreRequest) -> Vec<String> {
    use crate::service::Secret;
    use secrecy::ExposeSecret;
    let mut messages = Vec::new();
    let converted = match crate::api::keystores::create_request(r) {
        Ok(c) => c,
        Err(s) => {
            refusal(&s);
            messages.push(s.message().to_string());
            return messages;
        }
    };
    if let Some(config) = &converted.config {
        if let Err(e) = config.validate() {
            messages.push(e.to_string());
        }
    }
    let checked = match &converted.secret {
        Some(Secret::Pkcs11Pin(p)) => validate_pin("pkcs11_credentials.pin", p.expose_secret()),
        Some(Secret::AwsSecretAccessKey(s)) => {
            validate_aws_secret("aws_kms_credentials.secret_access_key", s.expose_secret())
        }
        Some(Secret::Xks {
            secret_access_key, ..
        }) => crate::domain::validate_xks_secret(
            "xks_credentials.secret_access_key",
            secret_access_key.expose_secret(),
        ),
        Some(Secret::IbmApiKey(k)) => {
            crate::domain::validate_ibm_api_key("ibm_kms_credentials.api_key", k.expose_secret())
        }
        Some(Secret::AzureClientSecret(k)) => crate::domain::validate_azure_client_secret(
            "azure_key_vault_credentials.client_secret",
            k.expose_secret(),
        ),
        Some(Secret::GoogleServiceAccountKey(k)) => crate::domain::parse_service_account_key(
            "google_cloud_kms_credentials.service_account_key_json",
            k.expose_secret(),
        )
        .map(drop),
        None => Ok(()),
    };
    if let Err(e) = checked {
        messages.push(e.to_string());
    }
    for m in &messages {
        assert!(!m.is_empty(), "a refusal without a message");
    }
    messages
}

fn refusal(s: &tonic::Status) {
    assert!(
        matches!(s.code(), Code::InvalidArgument | Code::Unimplemented),
        "refused with {:?}: {}",
        s.code(),
        s.message()
    );
    assert!(!s.message().is_empty(), "a refusal without a message");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An HTTP/2 client stream: the preface, then frames of random types and flags, with
    /// HEADERS payloads that are HPACK-like bytes, so that the rewriter's paths are reached.
    fn h2_stream() -> impl Strategy<Value = Vec<u8>> {
        let frame = (
            prop_oneof![Just(1u8), Just(9u8), 0u8..10],
            any::<u8>(),
            0u32..4,
            prop::collection::vec(any::<u8>(), 0..200),
        );
        prop::collection::vec(frame, 0..8).prop_map(|frames| {
            let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            for (kind, flags, stream, payload) in frames {
                out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
                out.push(kind);
                out.push(flags);
                out.extend_from_slice(&(stream * 2 + 1).to_be_bytes());
                out.extend_from_slice(&payload);
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn authority_rewriter_keeps_its_properties(data in h2_stream()) {
            authority_rewriter(&data);
        }

        #[test]
        fn authority_rewriter_keeps_its_properties_on_noise(
            data in prop::collection::vec(any::<u8>(), 0..300)
        ) {
            authority_rewriter(&data);
        }

        #[test]
        fn stored_records_keep_their_properties(
            data in prop::collection::vec(any::<u8>(), 0..300)
        ) {
            stored_records(&data);
            let mut v1 = vec![1u8];
            v1.extend_from_slice(&data);
            stored_records(&v1);
        }

        #[test]
        fn request_validation_keeps_its_properties(
            data in prop::collection::vec(any::<u8>(), 0..300)
        ) {
            request_validation(&data);
        }
    }

    #[test]
    fn a_refused_pin_is_not_repeated() {
        let r = pb::CreateKeystoreRequest {
            name: "ks".into(),
            vault_id: "vault-x".into(),
            r#type: pb::KeystoreType::Pkcs11 as i32,
            credentials: Some(pb::create_keystore_request::Credentials::Pkcs11Credentials(
                pb::Pkcs11Credentials {
                    pin: "s3cret-pin\u{0}\u{7}".repeat(40),
                },
            )),
            ..Default::default()
        };
        let mut data = vec![0u8];
        data.extend(r.encode_to_vec());
        request_validation(&data);
        // And the refusal is there to check: the PIN breaks a rule.
        let refused = create_keystore_refusals(r);
        assert!(!refused.is_empty());
    }

    /// libFuzzer's first find (2026-12-07): a PIN, "pe: ", that is part of the text of
    /// the refusal it gets ("type: is required") is not a repeated secret.
    #[test]
    fn regression_a_secret_inside_a_rule_text_is_no_echo() {
        let data = hex::decode("2af2010a0a0470653a2058585858").unwrap();
        request_validation(&data);
    }

    /// The check can fail: a refusal that quoted the PIN would differ once it is disguised.
    #[test]
    fn an_echoed_secret_changes_with_its_disguise() {
        let pin = "s3cret-PIN-4821";
        assert_ne!(disguise(pin), pin);
        assert_eq!(disguise(pin).len(), pin.len());
        assert_eq!(disguise(&disguise("az09AZ")), "az09AZ");
        let echo = |p: &str| format!("pin {p} is wrong");
        assert_ne!(echo(pin), echo(&disguise(pin)));
    }

    /// A valid stored vault takes the record path, not only the refusal paths.
    #[test]
    fn a_stored_vault_roundtrips() {
        let bytes =
            br#"{"id":"vault-1","name":"payments","description":"","created_at":1,"updated_at":1}"#;
        let mut data = vec![1u8];
        data.extend_from_slice(bytes);
        let vault: Result<Vault, _> = codec::decode(&data);
        stored_records(&data);
        assert!(vault.is_ok(), "{vault:?}");
    }
}
