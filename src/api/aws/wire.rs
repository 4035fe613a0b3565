//! The AWS JSON 1.1 wire format: exception names and their HTTP statuses, the error body
//! `{"__type": …, "message": …}`, request decoding (field names in errors, never values)
//! and the write-only `Sensitive` string for passwords.

use std::fmt;

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// The content type of every request and response.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Every exception the endpoint answers, by AWS KMS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exception {
    AccessDenied,
    CloudHsmClusterInUse,
    CloudHsmClusterInvalidConfiguration,
    CloudHsmClusterNotRelated,
    CustomKeyStoreHasCmks,
    CustomKeyStoreInvalidState,
    CustomKeyStoreNameInUse,
    CustomKeyStoreNotFound,
    Disabled,
    IncompleteSignature,
    IncorrectKey,
    InvalidCiphertext,
    InvalidKeyUsage,
    InvalidMarker,
    InvalidSignature,
    KmsInternal,
    KmsInvalidState,
    MissingAuthenticationToken,
    NotFound,
    Serialization,
    UnrecognizedClient,
    UnsupportedOperation,
    Validation,
    XksKeyAlreadyInUse,
    XksKeyInvalidConfiguration,
    XksKeyNotFound,
    XksProxyInvalidConfiguration,
    XksProxyInvalidResponse,
    XksProxyUriUnreachable,
}

impl Exception {
    /// The `__type` AWS uses (and boto3's `client.exceptions.<name>`).
    pub fn name(self) -> &'static str {
        use Exception::*;
        match self {
            AccessDenied => "AccessDeniedException",
            CloudHsmClusterInUse => "CloudHsmClusterInUseException",
            CloudHsmClusterInvalidConfiguration => "CloudHsmClusterInvalidConfigurationException",
            CloudHsmClusterNotRelated => "CloudHsmClusterNotRelatedException",
            CustomKeyStoreHasCmks => "CustomKeyStoreHasCMKsException",
            CustomKeyStoreInvalidState => "CustomKeyStoreInvalidStateException",
            CustomKeyStoreNameInUse => "CustomKeyStoreNameInUseException",
            CustomKeyStoreNotFound => "CustomKeyStoreNotFoundException",
            Disabled => "DisabledException",
            IncompleteSignature => "IncompleteSignatureException",
            IncorrectKey => "IncorrectKeyException",
            InvalidCiphertext => "InvalidCiphertextException",
            InvalidKeyUsage => "InvalidKeyUsageException",
            InvalidMarker => "InvalidMarkerException",
            InvalidSignature => "InvalidSignatureException",
            KmsInternal => "KMSInternalException",
            KmsInvalidState => "KMSInvalidStateException",
            MissingAuthenticationToken => "MissingAuthenticationTokenException",
            NotFound => "NotFoundException",
            Serialization => "SerializationException",
            UnrecognizedClient => "UnrecognizedClientException",
            UnsupportedOperation => "UnsupportedOperationException",
            Validation => "ValidationException",
            XksKeyAlreadyInUse => "XksKeyAlreadyInUseException",
            XksKeyInvalidConfiguration => "XksKeyInvalidConfigurationException",
            XksKeyNotFound => "XksKeyNotFoundException",
            XksProxyInvalidConfiguration => "XksProxyInvalidConfigurationException",
            XksProxyInvalidResponse => "XksProxyInvalidResponseException",
            XksProxyUriUnreachable => "XksProxyUriUnreachableException",
        }
    }

    /// The HTTP status AWS KMS answers it with: 500 for its internal error, 403 for a
    /// request without any signature, 400 for every other client error.
    pub fn status(self) -> u16 {
        match self {
            Exception::KmsInternal => 500,
            Exception::MissingAuthenticationToken => 403,
            _ => 400,
        }
    }
}

/// An error answer: the exception and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub exception: Exception,
    pub message: String,
}

impl AwsError {
    pub fn new(exception: Exception, message: impl Into<String>) -> AwsError {
        AwsError {
            exception,
            message: message.into(),
        }
    }

    /// A field rule, in AWS's words: `1 validation error detected: Value at 'limit' failed
    /// to satisfy constraint: Member must …`. `field` is the API's (PascalCase) name.
    pub fn validation(field: &str, rule: impl fmt::Display) -> AwsError {
        AwsError::new(
            Exception::Validation,
            format!(
                "1 validation error detected: Value at '{}' failed to satisfy constraint: {rule}",
                lower_camel(field)
            ),
        )
    }

    /// A required field that is absent.
    pub fn required(field: &str) -> AwsError {
        AwsError::new(
            Exception::Validation,
            format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                lower_camel(field)
            ),
        )
    }

    pub fn unsupported(message: impl Into<String>) -> AwsError {
        AwsError::new(Exception::UnsupportedOperation, message)
    }

    pub fn internal(message: impl Into<String>) -> AwsError {
        AwsError::new(Exception::KmsInternal, message)
    }

    /// The JSON body of the answer.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "__type": self.exception.name(),
            "message": self.message,
        }))
        .unwrap_or_default()
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.exception.name(), self.message)
    }
}

fn lower_camel(field: &str) -> String {
    let mut c = field.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Decodes a JSON request body. An empty body is `{}`. Errors name the field and the
/// expected type, never the value received (a password sent in the wrong field must not
/// come back in a message).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = match inner.classify() {
            serde_json::error::Category::Data => redact_quoted(&inner.to_string()),
            _ => format!("the body is not valid JSON ({})", inner.classify_name()),
        };
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        AwsError::new(Exception::Serialization, format!("{at}{what}"))
    })?;
    de.end().map_err(|_| {
        AwsError::new(
            Exception::Serialization,
            "the body has data after its JSON object",
        )
    })?;
    Ok(value)
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong type",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
}

/// serde's message without the values it quotes (`"…"` and `` `…` ``), and without its
/// line/column suffix.
fn redact_quoted(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '"' || c == '`' => {
                out.push(c);
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

/// A write-only string (KeyStorePassword): deserialized straight into a `SecretString`,
/// `[redacted]` in `Debug`, never serialized.
pub struct Sensitive(pub SecretString);

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sensitive([redacted])")
    }
}

impl<'de> Deserialize<'de> for Sensitive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Sensitive;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sensitive, E> {
                // An exact-capacity copy: turning it into the secret's box does not move it.
                Ok(Sensitive(SecretString::from(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Base64 blobs as AWS sends them (standard alphabet, padded).
pub mod blob {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer};
    use zeroize::Zeroizing;

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    /// A blob field: `Option<Zeroizing<Vec<u8>>>`, decoded from base64.
    pub fn optional<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, D::Error> {
        let text: Option<Zeroizing<String>> = Option::<String>::deserialize(d)?.map(Zeroizing::new);
        match text {
            None => Ok(None),
            Some(t) => STANDARD
                .decode(t.as_bytes())
                .map(|v| Some(Zeroizing::new(v)))
                .map_err(|_| serde::de::Error::custom("is not base64")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "PascalCase")]
    struct Input {
        limit: Option<u32>,
        key_store_password: Option<Sensitive>,
    }

    #[test]
    fn errors_have_the_aws_shape_and_status() {
        let e = AwsError::new(Exception::CustomKeyStoreNotFound, "no such store");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["__type"], "CustomKeyStoreNotFoundException");
        assert_eq!(v["message"], "no such store");
        assert_eq!(Exception::CustomKeyStoreNotFound.status(), 400);
        assert_eq!(Exception::KmsInternal.status(), 500);
        assert_eq!(
            Exception::CustomKeyStoreHasCmks.name(),
            "CustomKeyStoreHasCMKsException"
        );
        let v = AwsError::validation(
            "CustomKeyStoreName",
            "Member must have length less than or equal to 256",
        );
        assert!(v.message.contains("'customKeyStoreName'"), "{}", v.message);
    }

    #[test]
    fn decoding_names_the_field_but_never_echoes_a_value() {
        let e = decode::<Input>(br#"{"Limit": "hunter2-secret"}"#).unwrap_err();
        assert_eq!(e.exception, Exception::Serialization);
        assert!(e.message.starts_with("Limit: "), "{}", e.message);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        let e = decode::<Input>(br#"{"KeyStorePassword": 12345678}"#).unwrap_err();
        assert!(!e.message.contains("12345678"), "{}", e.message);
        assert_eq!(
            decode::<Input>(b"{oops").unwrap_err().exception,
            Exception::Serialization
        );
        assert_eq!(decode::<Input>(b"").unwrap().limit, None);
        let ok = decode::<Input>(br#"{"KeyStorePassword": "kmsuser-pw", "Unknown": 1}"#).unwrap();
        assert_eq!(
            ok.key_store_password.unwrap().0.expose_secret(),
            "kmsuser-pw"
        );
    }
}
