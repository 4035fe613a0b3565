//! SigV4 verification of the AWS endpoint's requests: parses the `Authorization` header,
//! rebuilds the canonical request from what was received and compares signatures in
//! constant time. Pure: the caller passes the clock and looks up the secret.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The only algorithm accepted (SigV4a, AWS4-ECDSA-P256-SHA256, is not).
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service name in the credential scope.
pub const SERVICE: &str = "kms";
/// The service name of the XKS proxy API's signatures.
pub const XKS_SERVICE: &str = "kms-xks-proxy";
/// Largest difference between the request's X-Amz-Date and the server's clock (AWS's).
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// Why a request's signature is refused, by AWS's exception names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// No `Authorization` header at all (`MissingAuthenticationTokenException`).
    Missing,
    /// The header is there but incomplete or malformed (`IncompleteSignatureException`).
    Incomplete(String),
    /// Well-formed, but wrong: scope, clock, body hash or signature (`InvalidSignatureException`).
    Invalid(String),
    /// A session token was sent: keyorch issues none (`UnrecognizedClientException`).
    SessionToken,
}

/// Which regions a credential scope may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regions {
    /// Any syntactically valid region name (`"*"` in the config; `--dev`).
    Any,
    /// Only these.
    Only(Vec<String>),
}

impl Regions {
    pub fn admits(&self, region: &str) -> bool {
        valid_region(region)
            && match self {
                Regions::Any => true,
                Regions::Only(list) => list.iter().any(|r| r == region),
            }
    }
}

/// An AWS region name: 1 to 32 of a-z 0-9 `-`, starting with a letter, ending with a digit.
pub fn valid_region(region: &str) -> bool {
    let b = region.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`
/// with the request's `X-Amz-Date`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub scope_date: String,
    pub region: String,
    pub service: String,
    /// The SignedHeaders value as received (`content-type;host;x-amz-date;…`).
    pub signed_headers: String,
    pub signature: Vec<u8>,
    /// `YYYYMMDDTHHMMSSZ` from `X-Amz-Date` (or `Date` in that form).
    pub amz_date: String,
    /// `amz_date` in seconds since the epoch.
    pub time: i64,
}

/// What was received, as the signer saw it.
pub struct Received<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn incomplete(m: impl Into<String>) -> SigError {
    SigError::Incomplete(m.into())
}

fn invalid(m: impl Into<String>) -> SigError {
    SigError::Invalid(m.into())
}

/// Parses the Authorization header and the request date. Presigned (query-string)
/// authentication is refused: the endpoint accepts header signatures only.
pub fn parse(headers: &HeaderMap, query: &str) -> Result<Authorization, SigError> {
    let Some(raw) = headers.get(http::header::AUTHORIZATION) else {
        if query
            .split('&')
            .any(|p| p.starts_with("X-Amz-Signature=") || p.starts_with("X-Amz-Credential="))
        {
            return Err(incomplete(
                "query-string (presigned) authentication is not accepted here; sign the Authorization header",
            ));
        }
        return Err(SigError::Missing);
    };
    let raw = raw
        .to_str()
        .map_err(|_| incomplete("the Authorization header is not ASCII"))?
        .trim();
    let (algorithm, rest) = raw.split_once(' ').unwrap_or((raw, ""));
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}' (only {ALGORITHM} is accepted)"
        )));
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').ok_or_else(|| {
            incomplete(format!(
                "Authorization header parameter '{part}' is not of the form key=value"
            ))
        })?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            other => {
                return Err(incomplete(format!(
                    "Authorization header has an unknown parameter '{other}'"
                )))
            }
        };
        if slot.replace(v.to_string()).is_some() {
            return Err(incomplete(format!(
                "Authorization header repeats the '{k}' parameter"
            )));
        }
    }
    let missing: Vec<&str> = [
        ("Credential", credential.is_none()),
        ("Signature", signature.is_none()),
        ("SignedHeaders", signed.is_none()),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(n, _)| *n)
    .collect();
    if !missing.is_empty() {
        return Err(incomplete(
            missing
                .iter()
                .map(|n| format!("Authorization header requires '{n}' parameter."))
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    let (credential, signed, signature) = (
        credential.unwrap_or_default(),
        signed.unwrap_or_default(),
        signature.unwrap_or_default(),
    );
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, terminator] = parts.as_slice() else {
        return Err(incomplete(
            "Credential must have the form ACCESS_KEY_ID/YYYYMMDD/region/SERVICE/aws4_request",
        ));
    };
    if akid.is_empty() {
        return Err(incomplete("Credential has an empty access key id"));
    }
    if *terminator != "aws4_request" {
        return Err(invalid(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."
        )));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete(format!(
            "Credential date '{date}' is not YYYYMMDD"
        )));
    }
    if signed.is_empty()
        || signed.split(';').any(|h| {
            h.is_empty()
                || h.bytes()
                    .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace())
        })
    {
        return Err(incomplete(
            "SignedHeaders must be lowercase header names separated by ';'",
        ));
    }
    if !signed.split(';').any(|h| h == "host") {
        return Err(incomplete(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    // The operation travels in X-Amz-Target, beside a body that may fit several operations
    // ({"CustomKeyStoreId": ...}): unsigned, a captured request could be replayed as another
    // operation. Every AWS SDK signs it; keyorch requires it.
    if headers.contains_key("x-amz-target") && !signed.split(';').any(|h| h == "x-amz-target") {
        return Err(incomplete(
            "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let signature_bytes = match hex::decode(&signature) {
        Ok(b) if b.len() == 32 => b,
        _ => {
            return Err(incomplete(
                "Signature must be 64 hexadecimal digits (HMAC-SHA256)",
            ))
        }
    };
    let (amz_date, date_header) = match headers.get("x-amz-date") {
        Some(v) => (v, "x-amz-date"),
        None => match headers.get(http::header::DATE) {
            Some(v) => (v, "date"),
            None => {
                return Err(incomplete(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
                ))
            }
        },
    };
    let amz_date = amz_date
        .to_str()
        .map_err(|_| incomplete("X-Amz-Date is not ASCII"))?
        .trim()
        .to_string();
    let time = parse_amz_date(&amz_date).ok_or_else(|| {
        incomplete(format!(
            "the '{date_header}' header must be an ISO 8601 basic date-time such as 20150830T123600Z, not '{amz_date}'"
        ))
    })?;
    if !signed.split(';').any(|h| h == date_header) {
        return Err(incomplete(format!(
            "'{date_header}' must be a 'SignedHeader' in the AWS Authorization."
        )));
    }
    Ok(Authorization {
        access_key_id: akid.to_string(),
        scope_date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed,
        signature: signature_bytes,
        amz_date,
        time,
    })
}

impl Authorization {
    /// Service (`kms` for the AWS endpoint, `kms-xks-proxy` for the XKS proxy), region,
    /// scope date and clock skew (`now` in seconds since the epoch).
    pub fn check_scope(&self, service: &str, regions: &Regions, now: i64) -> Result<(), SigError> {
        if self.service != service {
            return Err(invalid(format!(
                "Credential should be scoped to correct service: '{service}'."
            )));
        }
        if !regions.admits(&self.region) {
            return Err(invalid(format!(
                "Credential should be scoped to a valid region, not '{}'. ",
                self.region
            )));
        }
        if !self.amz_date.starts_with(&self.scope_date) {
            return Err(invalid(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
                self.scope_date,
                &self.amz_date[..8],
                self.amz_date
            )));
        }
        if self.time < now - MAX_SKEW_SECS {
            return Err(invalid(format!(
                "Signature expired: {} is now earlier than {} ({} - 5 min.)",
                self.amz_date,
                format_amz_date(now - MAX_SKEW_SECS),
                format_amz_date(now)
            )));
        }
        if self.time > now + MAX_SKEW_SECS {
            return Err(invalid(format!(
                "Signature not yet current: {} is still later than {} ({} + 5 min.)",
                self.amz_date,
                format_amz_date(now + MAX_SKEW_SECS),
                format_amz_date(now)
            )));
        }
        Ok(())
    }

    /// Recomputes the signature over what was received with `secret` and compares it, in
    /// constant time, with the one sent. The body is hashed here: an altered body fails,
    /// and an `X-Amz-Content-Sha256` header must equal the body's hash.
    pub fn verify(&self, secret: &SecretString, req: &Received<'_>) -> Result<(), SigError> {
        let body_hash = hex::encode(Sha256::digest(req.body));
        if let Some(claimed) = req.headers.get("x-amz-content-sha256") {
            if claimed.as_bytes() != body_hash.as_bytes() {
                return Err(invalid(
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
        }
        let canonical = canonical_request(req, &self.signed_headers, &body_hash)?;
        let expected = self.signature_of(secret, &canonical);
        if bool::from(expected.as_slice().ct_eq(self.signature.as_slice())) {
            Ok(())
        } else {
            Err(invalid(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
            ))
        }
    }

    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.scope_date, self.region, self.service
        )
    }

    /// HMAC-SHA256 signature of `canonical` under the key derived from `secret`.
    fn signature_of(&self, secret: &SecretString, canonical: &str) -> Zeroizing<[u8; 32]> {
        let string_to_sign = format!(
            "{ALGORITHM}\n{}\n{}\n{}",
            self.amz_date,
            self.scope(),
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let secret = secret.expose_secret().as_bytes();
        let mut k_secret = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
        k_secret.extend_from_slice(b"AWS4");
        k_secret.extend_from_slice(secret);
        let k_date = hmac(&k_secret[..], self.scope_date.as_bytes());
        let k_region = hmac(&k_date[..], self.region.as_bytes());
        let k_service = hmac(&k_region[..], self.service.as_bytes());
        let k_signing = hmac(&k_service[..], b"aws4_request");
        hmac(&k_signing[..], string_to_sign.as_bytes())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The SigV4 canonical request of what was received, signing `signed_headers`.
pub fn canonical_request(
    req: &Received<'_>,
    signed_headers: &str,
    body_hash: &str,
) -> Result<String, SigError> {
    let mut headers = String::new();
    for name in signed_headers.split(';') {
        let values: Vec<&http::HeaderValue> = req.headers.get_all(name).iter().collect();
        if values.is_empty() {
            return Err(invalid(format!(
                "The request does not carry the signed header '{name}'"
            )));
        }
        let mut joined = Vec::with_capacity(values.len());
        for v in values {
            let v = v
                .to_str()
                .map_err(|_| invalid(format!("the signed header '{name}' is not visible ASCII")))?;
            joined.push(trim_all(v));
        }
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&joined.join(","));
        headers.push('\n');
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query),
        headers,
        signed_headers,
        body_hash
    ))
}

/// Leading and trailing white space removed, inner runs of spaces collapsed to one.
fn trim_all(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// SigV4 URI encoding: unreserved characters kept, everything else `%XX` (upper case).
fn uri_encode(s: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The path, each segment decoded and encoded again (non-S3 services encode twice: the
/// signer encodes the already-encoded path).
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    uri_encode(path.as_bytes(), true)
}

/// Query parameters decoded, encoded the SigV4 way, sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYYMMDDTHHMMSSZ` → seconds since the epoch.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    if civil_from_days(days) != (y, mo, d) {
        return None; // 20230231 and the like
    }
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// Seconds since the epoch → `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    const AKID: &str = "AKIAKEYORCHTEST00001";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const BODY: &[u8] = br#"{"CustomKeyStoreId":"cks-1234567890abcdef0"}"#;

    /// A request signed by the AWS SDK's own signer (aws-sigv4), as botocore would.
    fn signed(secret: &str, at: SystemTime, region: &str, body: &[u8]) -> http::Request<Vec<u8>> {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("http://127.0.0.1:4599/")
            .header("host", "127.0.0.1:4599")
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "TrentService.DisconnectCustomKeyStore")
            .body(body.to_vec())
            .unwrap();
        let identity = Credentials::new(AKID, secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("kms")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            "http://127.0.0.1:4599/",
            req.headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap())),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut req);
        req
    }

    fn now() -> (SystemTime, i64) {
        let t = SystemTime::now();
        (t, t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64)
    }

    fn check(
        req: &http::Request<Vec<u8>>,
        secret: &str,
        body: &[u8],
        now: i64,
    ) -> Result<Authorization, SigError> {
        let auth = parse(req.headers(), "")?;
        auth.check_scope(SERVICE, &Regions::Only(vec!["us-east-1".into()]), now)?;
        auth.verify(
            &SecretString::from(secret.to_string()),
            &Received {
                method: req.method().as_str(),
                path: req.uri().path(),
                query: req.uri().query().unwrap_or(""),
                headers: req.headers(),
                body,
            },
        )?;
        Ok(auth)
    }

    #[test]
    fn a_request_signed_by_the_aws_sdk_verifies() {
        let (t, secs) = now();
        let req = signed(SECRET, t, "us-east-1", BODY);
        let auth = check(&req, SECRET, BODY, secs).unwrap();
        assert_eq!(auth.access_key_id, AKID);
        assert_eq!(auth.region, "us-east-1");
        assert_eq!(auth.service, "kms");
    }

    #[test]
    fn wrong_secret_tampered_body_and_extra_headers_fail() {
        let (t, secs) = now();
        let req = signed(SECRET, t, "us-east-1", BODY);
        let bad = |r: Result<Authorization, SigError>| {
            assert!(matches!(r, Err(SigError::Invalid(_))), "{r:?}")
        };
        bad(check(&req, "not-the-secret", BODY, secs));
        bad(check(
            &req,
            SECRET,
            br#"{"CustomKeyStoreId":"cks-0000000000000000"}"#,
            secs,
        ));
        // A signed header changed in transit.
        let mut changed = req.clone();
        changed.headers_mut().insert(
            "x-amz-target",
            "TrentService.DeleteCustomKeyStore".parse().unwrap(),
        );
        bad(check(&changed, SECRET, BODY, secs));
        // A body hash header that does not match the body.
        let mut hashed = req.clone();
        hashed.headers_mut().insert(
            "x-amz-content-sha256",
            hex::encode(Sha256::digest(b"other")).parse().unwrap(),
        );
        bad(check(&hashed, SECRET, BODY, secs));
        // UNSIGNED-PAYLOAD is no way around the body hash.
        let mut unsigned = req.clone();
        unsigned
            .headers_mut()
            .insert("x-amz-content-sha256", "UNSIGNED-PAYLOAD".parse().unwrap());
        bad(check(&unsigned, SECRET, BODY, secs));
    }

    #[test]
    fn clock_skew_beyond_five_minutes_is_refused_either_way() {
        let (t, secs) = now();
        for (offset, ok) in [(-290i64, true), (290, true), (-310, false), (310, false)] {
            let at = if offset < 0 {
                t - Duration::from_secs(offset.unsigned_abs())
            } else {
                t + Duration::from_secs(offset as u64)
            };
            let req = signed(SECRET, at, "us-east-1", BODY);
            let r = check(&req, SECRET, BODY, secs);
            assert_eq!(r.is_ok(), ok, "offset {offset}: {r:?}");
            if offset == -310 {
                let Err(SigError::Invalid(m)) = r else {
                    panic!()
                };
                assert!(m.starts_with("Signature expired:"), "{m}");
            }
        }
    }

    #[test]
    fn scope_is_checked() {
        let (t, secs) = now();
        let req = signed(SECRET, t, "eu-west-1", BODY);
        assert!(matches!(
            check(&req, SECRET, BODY, secs),
            Err(SigError::Invalid(m)) if m.contains("valid region")
        ));
        let auth = parse(req.headers(), "").unwrap();
        auth.check_scope(SERVICE, &Regions::Any, secs).unwrap();
        let mut other_service = auth.clone();
        other_service.service = "s3".into();
        assert!(matches!(
            other_service.check_scope(SERVICE, &Regions::Any, secs),
            Err(SigError::Invalid(m)) if m.contains("'kms'")
        ));
        assert!(!Regions::Any.admits("US-EAST-1"));
        assert!(!Regions::Any.admits(""));
    }

    #[test]
    fn malformed_headers_are_incomplete_and_absence_is_missing() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("authorization", v.parse().unwrap());
            m.insert("x-amz-date", "20240101T000000Z".parse().unwrap());
            m
        };
        assert_eq!(parse(&HeaderMap::new(), ""), Err(SigError::Missing));
        assert!(matches!(
            parse(&HeaderMap::new(), "X-Amz-Signature=abc"),
            Err(SigError::Incomplete(_))
        ));
        let sig = "0".repeat(64);
        for bad in [
            "AWS4-HMAC-SHA1 Credential=A/20240101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=00".to_string(),
            "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date".to_string(),
            format!("AWS4-HMAC-SHA256 Credential=A/20240101/us-east-1/kms, SignedHeaders=host;x-amz-date, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=A/20240101/us-east-1/kms/aws4_request, SignedHeaders=x-amz-date, Signature={sig}"),
            format!("AWS4-HMAC-SHA256 Credential=A/20240101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature={sig}"),
            "AWS4-HMAC-SHA256 Credential=A/20240101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=xyz".to_string(),
        ] {
            assert!(matches!(parse(&h(&bad), ""), Err(SigError::Incomplete(_))), "{bad}");
        }
        // The operation header, when present, must be signed.
        let mut with_target = h(&format!("AWS4-HMAC-SHA256 Credential=A/20240101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"));
        with_target.insert(
            "x-amz-target",
            "TrentService.DeleteCustomKeyStore".parse().unwrap(),
        );
        let Err(SigError::Incomplete(m)) = parse(&with_target, "") else {
            panic!("an unsigned X-Amz-Target was accepted")
        };
        assert!(m.contains("X-Amz-Target"), "{m}");
        let missing = parse(&h("AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date"), "");
        let Err(SigError::Incomplete(m)) = missing else {
            panic!()
        };
        assert!(
            m.contains("'Credential'") && m.contains("'Signature'"),
            "{m}"
        );
    }

    #[test]
    fn dates_round_trip_and_nonsense_is_refused() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        for t in [0i64, 951_782_400, 1_440_938_160, 4_102_444_799] {
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
        }
        for bad in [
            "20150830T123600",
            "2015-08-30T12:36:00Z",
            "20150230T000000Z",
            "20151301T000000Z",
            "20150830T250000Z",
            "2015083OT123600Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn canonical_query_is_sorted_and_encoded() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("k=a%20b&s"), "k=a%20b&s=");
        assert_eq!(canonical_uri("/"), "/");
    }
}
