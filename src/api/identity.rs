//! Who is calling: the Unix peer's uid/gid (SO_PEERCRED) or the verified TLS client
//! certificate's subject (RFC 4514; first DNS/URI SAN if empty), from the connection info.

use std::collections::HashMap;

use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::domain::Principal;

/// `ErrorInfo.reason` of a call that carries no identity.
pub const UNAUTHENTICATED_REASON: &str = "UnauthenticatedException";

/// The caller of `req`: its Unix credentials or its client certificate's subject.
/// No identity (which the listeners never let happen) is UNAUTHENTICATED.
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, Status> {
    let ext = req.extensions();
    resolve(
        ext.get::<UdsConnectInfo>(),
        ext.get::<TlsConnectInfo<TcpConnectInfo>>(),
    )
}

/// Like [`principal`], on the HTTP request before tonic decodes it (for the request gate).
pub fn principal_of_http<B>(req: &http::Request<B>) -> Result<Principal, Status> {
    let ext = req.extensions();
    resolve(
        ext.get::<UdsConnectInfo>(),
        ext.get::<TlsConnectInfo<TcpConnectInfo>>(),
    )
}

fn resolve(
    uds: Option<&UdsConnectInfo>,
    tls: Option<&TlsConnectInfo<TcpConnectInfo>>,
) -> Result<Principal, Status> {
    if let Some(cred) = uds.and_then(|u| u.peer_cred) {
        return Ok(Principal::Unix {
            uid: cred.uid(),
            gid: cred.gid(),
        });
    }
    if let Some(certs) = tls.and_then(|t| t.peer_certs()) {
        // The first certificate is the client's own; rustls verified the chain.
        let leaf = certs
            .first()
            .ok_or_else(|| unauthenticated("the TLS client sent no certificate"))?;
        let subject = certificate_identity(leaf.as_ref()).map_err(|e| unauthenticated(&e))?;
        return Ok(Principal::Certificate { subject });
    }
    Err(unauthenticated(
        "no caller identity on this connection (neither SO_PEERCRED nor a client certificate)",
    ))
}

fn unauthenticated(message: &str) -> Status {
    Status::with_error_details(
        Code::Unauthenticated,
        message,
        ErrorDetails::with_error_info(
            UNAUTHENTICATED_REASON,
            super::status::ERROR_DOMAIN,
            HashMap::<String, String>::new(),
        ),
    )
}

/// The identity a client certificate (DER) stands for: its subject as an RFC 4514
/// string (`CN=ops,O=example`: last RDN first, no spaces), or — when the subject is
/// empty — its first DNS or URI subject alternative name as `DNS:name` / `URI:uri`.
pub fn certificate_identity(der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let subject = rfc4514(cert.subject());
    if !subject.is_empty() {
        return Ok(subject);
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("the client certificate's subjectAltName does not parse: {e}"))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => return Ok(format!("DNS:{d}")),
                GeneralName::URI(u) => return Ok(format!("URI:{u}")),
                _ => {}
            }
        }
    }
    Err("the client certificate has neither a subject nor a DNS or URI subjectAltName".into())
}

/// RFC 4514 §2: RDNs from the last to the first, joined by `,`; multi-valued RDNs by `+`.
pub fn rfc4514(name: &X509Name) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<String>>().join("+"))
        .collect();
    rdns.into_iter().rev().collect::<Vec<String>>().join(",")
}

fn attribute(a: &AttributeTypeAndValue) -> String {
    let ty = short_name(a.attr_type()).map_or_else(|| a.attr_type().to_id_string(), String::from);
    match a.as_str() {
        Ok(s) => format!("{ty}={}", escape(s)),
        // RFC 4514 §2.4: a value that is not a string is `#` and the hex of its encoding.
        Err(_) => format!("{ty}=#{}", hex::encode(a.attr_value().data)),
    }
}

/// The short names RFC 4514 §3 defines; any other type is written as its dotted OID.
fn short_name(oid: &Oid) -> Option<&'static str> {
    const NAMES: &[(&str, &str)] = &[
        ("2.5.4.3", "CN"),
        ("2.5.4.7", "L"),
        ("2.5.4.8", "ST"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.6", "C"),
        ("2.5.4.9", "STREET"),
        ("0.9.2342.19200300.100.1.25", "DC"),
        ("0.9.2342.19200300.100.1.1", "UID"),
    ];
    let id = oid.to_id_string();
    NAMES.iter().find(|(o, _)| *o == id).map(|(_, n)| *n)
}

/// RFC 4514 §2.4 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert_der(params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_is_rfc4514_last_rdn_first() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "DE");
        dn.push(DnType::OrganizationName, "example");
        dn.push(DnType::CommonName, "ops");
        params.distinguished_name = dn;
        assert_eq!(
            certificate_identity(&cert_der(params)).unwrap(),
            "CN=ops,O=example,C=DE"
        );
    }

    #[test]
    fn special_characters_are_escaped() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, " ops, \"team\"+1 ");
        params.distinguished_name = dn;
        assert_eq!(
            certificate_identity(&cert_der(params)).unwrap(),
            r#"CN=\ ops\, \"team\"\+1\ "#
        );
    }

    #[test]
    fn empty_subject_falls_back_to_the_first_dns_or_uri_san() {
        let mut params = CertificateParams::new(vec!["client.example".to_string()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        assert_eq!(
            certificate_identity(&cert_der(params)).unwrap(),
            "DNS:client.example"
        );

        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
            SanType::URI("spiffe://example/ops".try_into().unwrap()),
        ];
        assert_eq!(
            certificate_identity(&cert_der(params)).unwrap(),
            "URI:spiffe://example/ops"
        );
    }

    #[test]
    fn no_subject_and_no_usable_san_is_refused() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        assert!(certificate_identity(&cert_der(params)).is_err());
        assert!(certificate_identity(b"not a certificate").is_err());
    }

    #[test]
    fn a_connection_without_identity_is_unauthenticated() {
        let req = tonic::Request::new(());
        let status = principal(&req).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.reason, UNAUTHENTICATED_REASON);
    }
}
