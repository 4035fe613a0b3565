//! Keystores and their connection lifecycle, with AWS custom-key-store semantics (DESIGN §2).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{
    validate_description, validate_name, DomainError, InstanceState, Key, KeySpec, KeyState,
    KeystoreAction, Millis,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeystoreType {
    Internal,
    Pkcs11,
    AwsKms,
    AzureKeyVault,
    GoogleCloudKms,
    IbmKeyProtect,
    Kmip,
    Xks,
    /// IBM Cloud Hyper Protect Crypto Services' KMS API (the seed's "KMS keystore in
    /// another instance").
    IbmHpcs,
}

impl fmt::Display for KeystoreType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeystoreType::Internal => "internal",
            KeystoreType::Pkcs11 => "pkcs11",
            KeystoreType::AwsKms => "aws_kms",
            KeystoreType::AzureKeyVault => "azure_key_vault",
            KeystoreType::GoogleCloudKms => "google_cloud_kms",
            KeystoreType::IbmKeyProtect => "ibm_key_protect",
            KeystoreType::Kmip => "kmip",
            KeystoreType::Xks => "xks",
            KeystoreType::IbmHpcs => "ibm_hpcs",
        })
    }
}

/// How a PKCS#11 token is found: by label or by serial number (never by slot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRef {
    Label(String),
    Serial(String),
}

/// Non-secret, per-type configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeystoreConfig {
    /// keyorchd's own token: nothing to configure.
    Internal,
    /// Another HSM through a PKCS#11 module. `token` identifies it (locked);
    /// `module_path` is connection configuration.
    Pkcs11 {
        module_path: String,
        token: TokenRef,
    },
    /// An AWS KMS account and region. `region` (and the account, learnt at connect) are
    /// identifying: locked after the first successful connect. `endpoint_url` is connection
    /// configuration; `access_key_id` is the public half of the credential pair and changes
    /// only with the (sealed) secret.
    AwsKms {
        region: String,
        endpoint_url: Option<String>,
        access_key_id: String,
        /// The 12-digit account the credentials act in; set by a connect that could read it.
        account_id: Option<String>,
    },
    /// An AWS KMS external key store proxy (XKS). `uri_endpoint` and `uri_path` identify
    /// the proxy: locked after the first successful connect. The CA and the client
    /// certificate are connection configuration; `access_key_id` is the public half of the
    /// SigV4 credential (the secret and the client certificate's key are sealed).
    Xks {
        uri_endpoint: String,
        uri_path: String,
        ca_cert_pem: Option<String>,
        client_cert_pem: Option<String>,
        access_key_id: String,
        /// The region requests are signed for; None: [`DEFAULT_XKS_SIGNING_REGION`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signing_region: Option<String>,
    },
    /// IBM Key Protect.
    IbmKeyProtect(IbmKmsConfig),
    /// IBM Hyper Protect Crypto Services' KMS API.
    IbmHpcs(IbmKmsConfig),
    /// An Azure Key Vault (Premium).
    AzureKeyVault(AzureKeyVaultConfig),
    /// A Google Cloud KMS key ring.
    GoogleCloudKms(GoogleCloudKmsConfig),
}

/// A Google Cloud KMS key ring (the seed's table 3). `project_id` (read from the service
/// account key file), `location` and `key_ring` identify where the keystore's keys live:
/// locked after the first successful connect. `private_key_id` and `client_email` come from
/// the key file too and change only with it; the key file itself is the sealed credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoogleCloudKmsConfig {
    pub project_id: String,
    pub private_key_id: String,
    pub client_email: String,
    pub location: String,
    pub key_ring: String,
    /// keyorch's addition: the Cloud KMS endpoint when it is not
    /// `https://cloudkms.googleapis.com` (private endpoints); scheme://host[:port].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Cloud KMS's public endpoint.
pub const DEFAULT_GOOGLE_KMS_ENDPOINT: &str = "https://cloudkms.googleapis.com";
/// The seed's limit of a service account key file.
pub const MAX_GOOGLE_KEY_FILE: usize = 4096;

/// The public facts of a service account key file: shown read-only in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountKeyInfo {
    pub project_id: String,
    pub private_key_id: String,
    pub client_email: String,
}

/// Reads a Google service account JSON key file (at most 4 KB, `"type": "service_account"`,
/// with its project, key id, e-mail and PEM private key). Messages name the JSON field, never
/// its value.
pub fn parse_service_account_key(
    field: &str,
    json: &str,
) -> Result<ServiceAccountKeyInfo, DomainError> {
    if json.len() > MAX_GOOGLE_KEY_FILE {
        return Err(DomainError::invalid(
            field,
            format!(
                "must be at most {MAX_GOOGLE_KEY_FILE} bytes (a service account JSON key file)"
            ),
        ));
    }
    let v: serde_json::Value = serde_json::from_str(json).map_err(|_| {
        DomainError::invalid(field, "is not JSON (a service account JSON key file)")
    })?;
    let text = |name: &str| {
        v.get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    };
    if text("type") != "service_account" {
        return Err(DomainError::invalid(
            field,
            "must be a service account key file: its \"type\" is not \"service_account\"",
        ));
    }
    for name in [
        "project_id",
        "private_key_id",
        "client_email",
        "private_key",
    ] {
        if text(name).is_empty() {
            return Err(DomainError::invalid(
                field,
                format!("lacks \"{name}\" (a service account JSON key file)"),
            ));
        }
    }
    if !text("private_key").contains("-----BEGIN PRIVATE KEY-----") {
        return Err(DomainError::invalid(
            field,
            "has a \"private_key\" that is not a PEM PKCS#8 private key",
        ));
    }
    let info = ServiceAccountKeyInfo {
        project_id: text("project_id").to_string(),
        private_key_id: text("private_key_id").to_string(),
        client_email: text("client_email").to_string(),
    };
    validate_google_project(field, &info.project_id)?;
    if info.private_key_id.len() > 64 || !info.private_key_id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(DomainError::invalid(
            field,
            "has a \"private_key_id\" that is not 1 to 64 hexadecimal digits",
        ));
    }
    if info.client_email.len() > 254
        || info.client_email.split('@').count() != 2
        || info
            .client_email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(DomainError::invalid(
            field,
            "has a \"client_email\" that is not an e-mail address",
        ));
    }
    Ok(info)
}

/// Google's rule of a project id: 6 to 30 of a-z 0-9 -, starting with a letter, not ending
/// with a hyphen.
fn validate_google_project(field: &str, id: &str) -> Result<(), DomainError> {
    let b = id.as_bytes();
    let ok = (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            "has a \"project_id\" that is not a Google Cloud project id (6 to 30 of a-z 0-9 -, starting with a letter)",
        ))
    }
}

impl GoogleCloudKmsConfig {
    /// The Cloud KMS endpoint: the override, or Google's public one.
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| DEFAULT_GOOGLE_KMS_ENDPOINT.to_string())
    }

    /// The key ring's resource name.
    pub fn key_ring_name(&self) -> String {
        format!(
            "projects/{}/locations/{}/keyRings/{}",
            self.project_id, self.location, self.key_ring
        )
    }

    fn validate(&self) -> Result<(), DomainError> {
        if self.project_id.is_empty() {
            return Err(DomainError::invalid(
                "google_cloud_kms_credentials.service_account_key_json",
                "is required: the project is read from the service account key file",
            ));
        }
        validate_google_project("google_cloud_kms.project_id", &self.project_id)?;
        let l = self.location.as_bytes();
        if l.is_empty()
            || l.len() > 63
            || !l
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        {
            return Err(DomainError::invalid(
                "google_cloud_kms.location",
                "must be 1 to 63 of a-z 0-9 - (a Cloud KMS location, e.g. europe-west1 or global)",
            ));
        }
        let k = self.key_ring.as_bytes();
        if k.is_empty()
            || k.len() > 63
            || !k
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(DomainError::invalid(
                "google_cloud_kms.key_ring",
                "must be 1 to 63 of A-Z a-z 0-9 - _ (a Cloud KMS key ring id)",
            ));
        }
        if let Some(url) = &self.endpoint {
            let (_, tail) = url_authority("google_cloud_kms.endpoint", url, 2048)?;
            if !tail.is_empty() {
                return Err(DomainError::invalid(
                    "google_cloud_kms.endpoint",
                    "must be scheme://host[:port] without a path or trailing /",
                ));
            }
        }
        Ok(())
    }
}

/// The Azure cloud a key vault and its service principal live in (the seed's "environment").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AzureEnvironment {
    AzureCloud,
    AzureChinaCloud,
    AzureUSGovernment,
}

impl AzureEnvironment {
    pub const ALL: [AzureEnvironment; 3] = [
        AzureEnvironment::AzureCloud,
        AzureEnvironment::AzureChinaCloud,
        AzureEnvironment::AzureUSGovernment,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AzureEnvironment::AzureCloud => "AzureCloud",
            AzureEnvironment::AzureChinaCloud => "AzureChinaCloud",
            AzureEnvironment::AzureUSGovernment => "AzureUSGovernment",
        }
    }

    pub fn parse(field: &str, name: &str) -> Result<AzureEnvironment, DomainError> {
        AzureEnvironment::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                DomainError::invalid(
                    field,
                    "must be AzureCloud, AzureChinaCloud or AzureUSGovernment",
                )
            })
    }

    /// The DNS suffix of key vaults in this cloud.
    pub fn vault_dns_suffix(self) -> &'static str {
        match self {
            AzureEnvironment::AzureCloud => "vault.azure.net",
            AzureEnvironment::AzureChinaCloud => "vault.azure.cn",
            AzureEnvironment::AzureUSGovernment => "vault.usgovcloudapi.net",
        }
    }

    /// Microsoft Entra ID's login endpoint in this cloud.
    pub fn authority_host(self) -> &'static str {
        match self {
            AzureEnvironment::AzureCloud => "https://login.microsoftonline.com",
            AzureEnvironment::AzureChinaCloud => "https://login.chinacloudapi.cn",
            AzureEnvironment::AzureUSGovernment => "https://login.microsoftonline.us",
        }
    }
}

/// An Azure Key Vault (the seed's table 2). `vault_name`, `environment`, `subscription_id`,
/// `resource_group` and `location` identify the vault that holds the keystore's keys: locked
/// after the first successful connect. `tenant_id` and `client_id` name the service principal
/// whose password is the sealed credential; they, the endpoint overrides and the CA are
/// connection configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureKeyVaultConfig {
    pub vault_name: String,
    pub resource_group: String,
    pub location: String,
    pub environment: AzureEnvironment,
    pub tenant_id: String,
    pub client_id: String,
    pub subscription_id: String,
    /// keyorch's addition: the vault's URL when it is not `https://<vault_name>.<suffix>`
    /// (private endpoints); scheme://host[:port] without a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_url: Option<String>,
    /// keyorch's addition: the Entra ID login endpoint when it is not the environment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_host: Option<String>,
    /// keyorch's addition: a CA for private endpoints; None: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
}

impl AzureKeyVaultConfig {
    /// The vault's URL: the override, or `https://<vault_name>.<the environment's suffix>`.
    pub fn vault_url(&self) -> String {
        self.vault_url.clone().unwrap_or_else(|| {
            format!(
                "https://{}.{}",
                self.vault_name,
                self.environment.vault_dns_suffix()
            )
        })
    }

    /// The Entra ID login endpoint: the override, or the environment's.
    pub fn authority_host(&self) -> String {
        self.authority_host
            .clone()
            .unwrap_or_else(|| self.environment.authority_host().to_string())
    }

    fn validate(&self) -> Result<(), DomainError> {
        // Azure's rule of a key vault name: 3 to 24 of a-z A-Z 0-9 -, starting with a
        // letter, ending with a letter or digit, no "--".
        let v = self.vault_name.as_bytes();
        let name_ok = (3..=24).contains(&v.len())
            && v[0].is_ascii_alphabetic()
            && v[v.len() - 1].is_ascii_alphanumeric()
            && v.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && !self.vault_name.contains("--");
        if !name_ok {
            return Err(DomainError::invalid(
                "azure_key_vault.vault_name",
                "must be 3 to 24 of a-z A-Z 0-9 -, starting with a letter, ending with a letter or digit, without -- (an Azure key vault name)",
            ));
        }
        // Azure's rule of a resource group name: 1 to 90 of letters, digits, _ - . ( ),
        // not ending with a period.
        let rg = &self.resource_group;
        if rg.is_empty()
            || rg.chars().count() > 90
            || rg.ends_with('.')
            || !rg
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'))
        {
            return Err(DomainError::invalid(
                "azure_key_vault.resource_group",
                "must be 1 to 90 of letters, digits, _ - . ( ), not ending with a period (an Azure resource group name)",
            ));
        }
        let loc = self.location.as_bytes();
        if loc.is_empty()
            || loc.len() > 64
            || !loc
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(DomainError::invalid(
                "azure_key_vault.location",
                "must be 1 to 64 of a-z 0-9 (an Azure region name, e.g. westeurope)",
            ));
        }
        for (field, v) in [
            ("azure_key_vault.tenant_id", &self.tenant_id),
            ("azure_key_vault.client_id", &self.client_id),
            ("azure_key_vault.subscription_id", &self.subscription_id),
        ] {
            if !is_guid(v) {
                return Err(DomainError::invalid(
                    field,
                    "must be a GUID (8-4-4-4-12 hexadecimal digits)",
                ));
            }
        }
        for (field, url) in [
            ("azure_key_vault.vault_url", &self.vault_url),
            ("azure_key_vault.authority_host", &self.authority_host),
        ] {
            if let Some(url) = url {
                let (_, tail) = url_authority(field, url, 2048)?;
                if !tail.is_empty() {
                    return Err(DomainError::invalid(
                        field,
                        "must be scheme://host[:port] without a path or trailing /",
                    ));
                }
            }
        }
        if let Some(pem) = &self.ca_cert_pem {
            validate_pem_certificates("azure_key_vault.ca_cert_pem", pem)?;
        }
        Ok(())
    }
}

/// Whether `v` is a GUID: 8-4-4-4-12 hexadecimal digits.
fn is_guid(v: &str) -> bool {
    let groups: Vec<&str> = v.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The service principal password (client secret) rule: Entra ID's secrets are 40
/// characters; any 1 to 256 printable characters without white space are taken. The message
/// never contains it.
pub fn validate_azure_client_secret(field: &str, secret: &str) -> Result<(), DomainError> {
    if !(1..=256).contains(&secret.len()) {
        return Err(DomainError::invalid(field, "must be 1 to 256 characters"));
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DomainError::invalid(
            field,
            "must not contain white space or control characters",
        ));
    }
    Ok(())
}

/// An IBM Cloud KMS instance (Key Protect, or Hyper Protect Crypto Services' KMS API) and
/// key ring (the seed's tables 4 and 5). `instance_id` and `key_ring_id` identify where the
/// keystore's keys live: locked after the first successful connect. The endpoints and the CA
/// are connection configuration; the service ID API key is the sealed credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IbmKmsConfig {
    pub instance_id: String,
    /// `default` when the keystore names none.
    pub key_ring_id: String,
    /// `https://<region>.kms.cloud.ibm.com`, or HPCS's `https://api.<region>.hs-crypto.cloud.ibm.com:<port>`.
    pub api_endpoint: String,
    /// `https://iam.cloud.ibm.com` when the keystore names none.
    pub iam_endpoint: String,
    /// keyorch's addition: a CA for private endpoints; None: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
}

/// IBM Cloud's IAM endpoint (the seed's tables 4 and 5).
pub const DEFAULT_IBM_IAM_ENDPOINT: &str = "https://iam.cloud.ibm.com";
/// The key ring a keystore connects to when it names none.
pub const DEFAULT_IBM_KEY_RING: &str = "default";

impl IbmKmsConfig {
    fn validate(&self) -> Result<(), DomainError> {
        let id_rule = |field: &str, v: &str, max: usize| {
            if v.is_empty()
                || v.len() > max
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                Err(DomainError::invalid(
                    field,
                    format!("must be 1 to {max} letters, digits, '-' or '_'"),
                ))
            } else {
                Ok(())
            }
        };
        id_rule("ibm_kms.instance_id", &self.instance_id, 64)?;
        id_rule("ibm_kms.key_ring_id", &self.key_ring_id, 100)?;
        for (field, url) in [
            ("ibm_kms.api_endpoint", &self.api_endpoint),
            ("ibm_kms.iam_endpoint", &self.iam_endpoint),
        ] {
            let (_, tail) = url_authority(field, url, 2048)?;
            if !tail.is_empty() {
                return Err(DomainError::invalid(
                    field,
                    "must be scheme://host[:port] without a path or trailing / (keyorch adds the API's paths)",
                ));
            }
        }
        if let Some(pem) = &self.ca_cert_pem {
            validate_pem_certificates("ibm_kms.ca_cert_pem", pem)?;
        }
        Ok(())
    }
}

/// The region xks requests are signed for when the keystore names none.
pub const DEFAULT_XKS_SIGNING_REGION: &str = "us-east-1";

/// Why no copy of a keyorch key goes into an xks keystore.
pub const XKS_HOLDS_REFERENCES: &str = "an xks keystore holds references to keys of its external key manager, not copies of keyorch's keys; create a key with external_key_id to reference one";

/// Hosts an `http://` endpoint URL may name: plaintext only on this machine (emulators).
const LOOPBACK_HOSTS: &[&str] = &["127.0.0.1", "[::1]", "localhost"];

fn validate_region(field: &str, region: &str) -> Result<(), DomainError> {
    let b = region.as_bytes();
    let ok = (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            "must be an AWS region name: 1 to 32 of a-z 0-9 -, starting with a letter and ending with a digit (e.g. eu-central-1)",
        ))
    }
}

fn validate_endpoint_url(url: &str) -> Result<(), DomainError> {
    url_authority("aws_kms.endpoint_url", url, 2048).map(drop)
}

/// The authority (`host[:port]`) and the rest of an `https://` URL, or of an `http://`
/// one to a loopback host, with no user information; `field` names the URL in errors.
fn url_authority<'a>(
    field: &str,
    url: &'a str,
    max: usize,
) -> Result<(&'a str, &'a str), DomainError> {
    if url.len() > max || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters without white space"),
        ));
    }
    let (secure, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(DomainError::invalid(
            field,
            "must be an https:// URL (http:// only to a loopback host)",
        ));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(DomainError::invalid(
            field,
            "must name a host, without user information",
        ));
    }
    let host = if authority.starts_with('[') {
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if !secure && !LOOPBACK_HOSTS.contains(&host) {
        return Err(DomainError::invalid(
            field,
            "must be https:// unless the host is loopback (127.0.0.1, [::1], localhost): credentials and key material never cross a network in plaintext",
        ));
    }
    Ok((authority, tail))
}

/// Rule of an XKS proxy's URI endpoint (AWS's XksProxyUriEndpoint): `https://host[:port]`,
/// at most 128 characters, no path, query or user information; `http://` only to a
/// loopback host.
fn validate_xks_endpoint(url: &str) -> Result<(), DomainError> {
    const FIELD: &str = "xks.uri_endpoint";
    if url.is_empty() {
        return Err(DomainError::invalid(
            FIELD,
            "is required: https://host[:port] of the XKS proxy",
        ));
    }
    let (authority, tail) = url_authority(FIELD, url, 128)?;
    if !tail.is_empty() {
        return Err(DomainError::invalid(
            FIELD,
            "must be https://host[:port] only: the path goes in xks.uri_path, and there is no query",
        ));
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) || port.starts_with('+') {
            return Err(DomainError::invalid(
                FIELD,
                format!("has port {port:?}; a port is 1 to 65535"),
            ));
        }
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !host_ok {
        return Err(DomainError::invalid(
            FIELD,
            format!("has host {host:?}; a host is a DNS name, an IPv4 address or a [bracketed] IPv6 address"),
        ));
    }
    Ok(())
}

/// Rule of an XKS access key id (AWS's XksProxyAuthenticationCredential): 20 to 30 of
/// A-Z 2-7.
pub fn validate_xks_access_key_id(field: &str, id: &str) -> Result<(), DomainError> {
    let ok = (20..=30).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            "must be 20 to 30 of A-Z 2-7 (an XKS proxy access key id)",
        ))
    }
}

/// Rule of an XKS secret access key: 43 to 64 base64 characters (A-Z a-z 0-9 + / =).
/// The message never contains the secret.
pub fn validate_xks_secret(field: &str, secret: &str) -> Result<(), DomainError> {
    let ok = (43..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            format!(
                "must be 43 to 64 base64 characters (A-Z a-z 0-9 + / =); got {} characters",
                secret.chars().count()
            ),
        ))
    }
}

/// Longest PEM text taken for a CA or a client certificate chain.
pub const MAX_XKS_PEM: usize = 16384;

/// Rule of a PEM certificate field: 1 to 16 KiB holding only PEM `CERTIFICATE` blocks
/// (at least one), each an X.509 certificate.
pub fn validate_pem_certificates(field: &str, pem: &str) -> Result<(), DomainError> {
    if pem.trim().is_empty() || pem.len() > MAX_XKS_PEM {
        return Err(DomainError::invalid(
            field,
            format!("must be 1 to {MAX_XKS_PEM} bytes of PEM certificates"),
        ));
    }
    let mut n = 0;
    for (i, block) in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()).enumerate() {
        let block = block
            .map_err(|e| DomainError::invalid(field, format!("block {} is not PEM: {e}", i + 1)))?;
        if block.label != "CERTIFICATE" {
            return Err(DomainError::invalid(
                field,
                format!(
                    "block {} is a PEM {}, not a CERTIFICATE",
                    i + 1,
                    block.label
                ),
            ));
        }
        block.parse_x509().map_err(|e| {
            DomainError::invalid(
                field,
                format!("block {} is not an X.509 certificate: {e}", i + 1),
            )
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(DomainError::invalid(
            field,
            "holds no PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)",
        ));
    }
    Ok(())
}

fn validate_access_key_id(id: &str) -> Result<(), DomainError> {
    let ok =
        (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "aws_kms.access_key_id",
            "must be 1 to 128 of A-Z a-z 0-9 _ (an AWS access key id)",
        ))
    }
}

/// Rule of an AWS secret access key. The message never contains the secret.
/// An IBM Cloud service ID API key: IBM's keys are 44 characters of base64url; any 16 to
/// 256 printable characters without white space are taken. The message never contains it.
pub fn validate_ibm_api_key(field: &str, key: &str) -> Result<(), DomainError> {
    if !(16..=256).contains(&key.len()) {
        return Err(DomainError::invalid(field, "must be 16 to 256 characters"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DomainError::invalid(
            field,
            "must not contain white space or control characters",
        ));
    }
    Ok(())
}

pub fn validate_aws_secret(field: &str, secret: &str) -> Result<(), DomainError> {
    if !(1..=256).contains(&secret.len()) {
        return Err(DomainError::invalid(field, "must be 1 to 256 characters"));
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DomainError::invalid(
            field,
            "must not contain white space or control characters",
        ));
    }
    Ok(())
}

impl KeystoreConfig {
    pub fn keystore_type(&self) -> KeystoreType {
        match self {
            KeystoreConfig::Internal => KeystoreType::Internal,
            KeystoreConfig::Pkcs11 { .. } => KeystoreType::Pkcs11,
            KeystoreConfig::AwsKms { .. } => KeystoreType::AwsKms,
            KeystoreConfig::Xks { .. } => KeystoreType::Xks,
            KeystoreConfig::IbmKeyProtect(_) => KeystoreType::IbmKeyProtect,
            KeystoreConfig::IbmHpcs(_) => KeystoreType::IbmHpcs,
            KeystoreConfig::AzureKeyVault(_) => KeystoreType::AzureKeyVault,
            KeystoreConfig::GoogleCloudKms(_) => KeystoreType::GoogleCloudKms,
        }
    }

    /// Field rules of a configuration (names are the API's).
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            KeystoreConfig::Internal => Ok(()),
            KeystoreConfig::IbmKeyProtect(c) | KeystoreConfig::IbmHpcs(c) => c.validate(),
            KeystoreConfig::AzureKeyVault(c) => c.validate(),
            KeystoreConfig::GoogleCloudKms(c) => c.validate(),
            KeystoreConfig::Pkcs11 { module_path, token } => {
                if module_path.is_empty() {
                    return Err(DomainError::invalid("pkcs11.module_path", "is required"));
                }
                if !module_path.starts_with('/') || module_path.len() > 4096 {
                    return Err(DomainError::invalid(
                        "pkcs11.module_path",
                        "must be an absolute path of at most 4096 characters",
                    ));
                }
                match token {
                    TokenRef::Label(l) if l.is_empty() || l.len() > 32 => {
                        Err(DomainError::invalid(
                            "pkcs11.token_label",
                            "must be 1 to 32 bytes (a PKCS#11 token label)",
                        ))
                    }
                    TokenRef::Serial(s) if s.is_empty() || s.len() > 16 => {
                        Err(DomainError::invalid(
                            "pkcs11.token_serial",
                            "must be 1 to 16 bytes (a PKCS#11 serial number)",
                        ))
                    }
                    _ => Ok(()),
                }
            }
            KeystoreConfig::AwsKms {
                region,
                endpoint_url,
                access_key_id,
                account_id,
            } => {
                validate_region("aws_kms.region", region)?;
                if let Some(url) = endpoint_url {
                    validate_endpoint_url(url)?;
                }
                validate_access_key_id(access_key_id)?;
                match account_id {
                    Some(a) if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) => Err(
                        DomainError::invalid("aws_kms.account_id", "must be 12 digits"),
                    ),
                    _ => Ok(()),
                }
            }
            KeystoreConfig::Xks {
                uri_endpoint,
                uri_path,
                ca_cert_pem,
                client_cert_pem,
                access_key_id,
                signing_region,
            } => {
                validate_xks_endpoint(uri_endpoint)?;
                if let Some(r) = signing_region {
                    validate_region("xks.signing_region", r)?;
                }
                if uri_path.is_empty() {
                    return Err(DomainError::invalid(
                        "xks.uri_path",
                        "is required: the proxy's [/prefix]/kms/xks/v1",
                    ));
                }
                super::xks::check_uri_path("xks.uri_path", uri_path)?;
                if let Some(pem) = ca_cert_pem {
                    validate_pem_certificates("xks.ca_cert_pem", pem)?;
                }
                if let Some(pem) = client_cert_pem {
                    validate_pem_certificates("xks.client_cert_pem", pem)?;
                    if uri_endpoint.starts_with("http://") {
                        return Err(DomainError::invalid(
                            "xks.client_cert_pem",
                            "needs an https:// uri_endpoint: a client certificate is presented in the TLS handshake",
                        ));
                    }
                }
                if ca_cert_pem.is_some() && uri_endpoint.starts_with("http://") {
                    return Err(DomainError::invalid(
                        "xks.ca_cert_pem",
                        "needs an https:// uri_endpoint: the CA verifies the proxy's TLS certificate",
                    ));
                }
                validate_xks_access_key_id("xks_credentials.access_key_id", access_key_id)
            }
        }
    }

    /// Whether a keystore of this type needs credentials.
    pub fn needs_credentials(&self) -> bool {
        !matches!(self, KeystoreConfig::Internal)
    }

    /// Whether managed keys are installed in a keystore of this type as copies. Not xks: its
    /// keys are references to keys of the external key manager behind its proxy
    /// ([`crate::domain::ExternalRef`]).
    pub fn holds_key_copies(&self) -> bool {
        !matches!(self, KeystoreConfig::Xks { .. })
    }

    /// Whether a managed key of `spec` can be installed in a keystore of this type, and if
    /// not, the provider's limit in words (checked before anything is sent).
    pub fn accepts(&self, spec: KeySpec) -> Result<(), String> {
        match self {
            KeystoreConfig::Internal | KeystoreConfig::Pkcs11 { .. } => Ok(()),
            KeystoreConfig::Xks { .. } => Err(XKS_HOLDS_REFERENCES.to_string()),
            KeystoreConfig::IbmKeyProtect(_) | KeystoreConfig::IbmHpcs(_) => match spec {
                KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256 => Ok(()),
                _ => Err(format!(
                    "IBM Key Protect and Hyper Protect Crypto Services import root keys only as 128-, 192- or 256-bit AES, not {spec}"
                )),
            },
            KeystoreConfig::AzureKeyVault(_) => match spec {
                KeySpec::Rsa2048
                | KeySpec::Rsa3072
                | KeySpec::Rsa4096
                | KeySpec::EcP256
                | KeySpec::EcP384 => Ok(()),
                KeySpec::Aes128 | KeySpec::Aes192 | KeySpec::Aes256 => Err(format!(
                    "an Azure key vault imports RSA and EC keys only; {spec} keys (oct-HSM) need an Azure Managed HSM, which keyorch does not connect to yet"
                )),
                _ => Err(format!(
                    "Azure Key Vault imports RSA and EC keys only, not {spec}"
                )),
            },
            KeystoreConfig::GoogleCloudKms(_) => match spec {
                KeySpec::Aes256
                | KeySpec::HmacSha256
                | KeySpec::Rsa2048
                | KeySpec::Rsa3072
                | KeySpec::Rsa4096
                | KeySpec::EcP256
                | KeySpec::EcP384 => Ok(()),
                KeySpec::Aes128 | KeySpec::Aes192 => Err(format!(
                    "Google Cloud KMS imports symmetric encryption keys only as 256-bit AES (GOOGLE_SYMMETRIC_ENCRYPTION), not {spec}"
                )),
            },
            KeystoreConfig::AwsKms { .. } => match spec {
                KeySpec::Aes256 | KeySpec::HmacSha256 => Ok(()),
                KeySpec::Aes128 | KeySpec::Aes192 => Err(format!(
                    "AWS KMS imports symmetric encryption keys only as 256-bit AES (SYMMETRIC_DEFAULT), not {spec}"
                )),
                _ => Err(format!(
                    "AWS KMS imports {spec} private keys only under RSA_AES_KEY_WRAP, which keyorch does not install with yet; aws_kms keystores take AES-256 and HMAC-SHA256 keys"
                )),
            },
        }
    }
}

/// PIN rule of PKCS#11 credentials. The message never contains the PIN.
pub fn validate_pin(field: &str, pin: &str) -> Result<(), DomainError> {
    let n = pin.chars().count();
    if !(4..=255).contains(&n) {
        return Err(DomainError::invalid(field, "must be 4 to 255 characters"));
    }
    if pin.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Credentials as stored: sealed under the master KEK, never in plaintext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCredentials {
    #[serde(with = "super::serde_bytes")]
    pub sealed: Vec<u8>,
}

impl fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedCredentials([{} bytes, sealed])",
            self.sealed.len()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionState {
    Connected,
    Connecting,
    Disconnecting,
    Disconnected,
    Failed,
}

impl ConnectionState {
    pub const ALL: [ConnectionState; 5] = [
        ConnectionState::Connected,
        ConnectionState::Connecting,
        ConnectionState::Disconnecting,
        ConnectionState::Disconnected,
        ConnectionState::Failed,
    ];

    /// Whether `action` may start from this state (the table of DESIGN §2).
    pub fn allows(self, action: KeystoreAction) -> bool {
        use ConnectionState::*;
        match action {
            KeystoreAction::Connect => !matches!(self, Disconnecting | Failed),
            KeystoreAction::Disconnect => !matches!(self, Disconnecting | Disconnected),
            KeystoreAction::UpdateConnectionConfig | KeystoreAction::Delete => self == Disconnected,
            KeystoreAction::CreateKeyTargeting
            | KeystoreAction::Install
            | KeystoreAction::Uninstall => self == Connected,
        }
    }

    fn allowed_from(action: KeystoreAction) -> Vec<ConnectionState> {
        Self::ALL.into_iter().filter(|s| s.allows(action)).collect()
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectionState::Connected => "CONNECTED",
            ConnectionState::Connecting => "CONNECTING",
            ConnectionState::Disconnecting => "DISCONNECTING",
            ConnectionState::Disconnected => "DISCONNECTED",
            ConnectionState::Failed => "FAILED",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionErrorCode {
    InvalidCredentials,
    InsufficientPermissions,
    NetworkErrors,
    TimedOut,
    TargetNotFound,
    ImportKekMissing,
    InvalidConfiguration,
    InternalError,
    XksProxyAccessDenied,
    XksProxyInvalidConfiguration,
    XksProxyInvalidResponse,
    XksProxyInvalidTlsConfiguration,
    XksProxyNotReachable,
    XksProxyTimedOut,
}

impl ConnectionErrorCode {
    /// One of AWS's codes for an XKS proxy (`XKS_PROXY_*`).
    pub fn is_xks(self) -> bool {
        matches!(
            self,
            ConnectionErrorCode::XksProxyAccessDenied
                | ConnectionErrorCode::XksProxyInvalidConfiguration
                | ConnectionErrorCode::XksProxyInvalidResponse
                | ConnectionErrorCode::XksProxyInvalidTlsConfiguration
                | ConnectionErrorCode::XksProxyNotReachable
                | ConnectionErrorCode::XksProxyTimedOut
        )
    }

    /// The API's name (as in `connection_error_code`), e.g. `IMPORT_KEK_MISSING`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
            ConnectionErrorCode::InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
            ConnectionErrorCode::NetworkErrors => "NETWORK_ERRORS",
            ConnectionErrorCode::TimedOut => "TIMED_OUT",
            ConnectionErrorCode::TargetNotFound => "TARGET_NOT_FOUND",
            ConnectionErrorCode::ImportKekMissing => "IMPORT_KEK_MISSING",
            ConnectionErrorCode::InvalidConfiguration => "INVALID_CONFIGURATION",
            ConnectionErrorCode::InternalError => "INTERNAL_ERROR",
            ConnectionErrorCode::XksProxyAccessDenied => "XKS_PROXY_ACCESS_DENIED",
            ConnectionErrorCode::XksProxyInvalidConfiguration => "XKS_PROXY_INVALID_CONFIGURATION",
            ConnectionErrorCode::XksProxyInvalidResponse => "XKS_PROXY_INVALID_RESPONSE",
            ConnectionErrorCode::XksProxyInvalidTlsConfiguration => {
                "XKS_PROXY_INVALID_TLS_CONFIGURATION"
            }
            ConnectionErrorCode::XksProxyNotReachable => "XKS_PROXY_NOT_REACHABLE",
            ConnectionErrorCode::XksProxyTimedOut => "XKS_PROXY_TIMED_OUT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionError {
    pub code: ConnectionErrorCode,
    pub message: String,
}

/// Whether `consecutive` failed health checks in a row move a CONNECTED keystore to FAILED,
/// with `[health] failed_after = failed_after` (0: never; the health only reports).
pub fn fails_after_checks(consecutive: u32, failed_after: u32) -> bool {
    failed_after != 0 && consecutive >= failed_after
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    NotResponding,
    ConfigurationError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub message: String,
    pub last_heartbeat: Millis,
    /// Health checks failed in a row up to this one (kept in memory only).
    #[serde(skip)]
    pub failed_checks: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keystore {
    pub id: String,
    pub vault_id: String,
    pub name: String,
    pub description: String,
    pub config: KeystoreConfig,
    /// Sealed under the master KEK; write-only through the API.
    #[serde(default)]
    pub credentials: Option<SealedCredentials>,
    pub state: ConnectionState,
    /// Set only while FAILED.
    pub error: Option<ConnectionError>,
    pub health: Option<Health>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// When a connect first succeeded: from then on identifying properties are locked.
    #[serde(default)]
    pub first_connected_at: Option<Millis>,
    /// pkcs11 keystores created through the AWS endpoint: AWS CloudHSM's
    /// `TrustAnchorCertificate` (PEM), kept and reported back; not used by the PKCS#11
    /// session (docs/decisions.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_anchor_certificate: Option<String>,
}

/// Longest trust anchor certificate accepted (AWS's limit for `TrustAnchorCertificate`).
pub const MAX_TRUST_ANCHOR: usize = 5000;

/// Rule of a trust anchor certificate: 1 to 5000 characters holding exactly one PEM
/// `CERTIFICATE` block that parses as an X.509 certificate.
pub fn validate_trust_anchor(field: &str, pem: &str) -> Result<(), DomainError> {
    if pem.is_empty() || pem.chars().count() > MAX_TRUST_ANCHOR {
        return Err(DomainError::invalid(
            field,
            format!("must be 1 to {MAX_TRUST_ANCHOR} characters"),
        ));
    }
    let blocks: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()).collect();
    let [Ok(block)] = blocks.as_slice() else {
        return Err(DomainError::invalid(
            field,
            "must hold exactly one PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)",
        ));
    };
    if block.label != "CERTIFICATE" {
        return Err(DomainError::invalid(
            field,
            format!("must be a PEM CERTIFICATE, not a PEM {}", block.label),
        ));
    }
    block
        .parse_x509()
        .map_err(|e| DomainError::invalid(field, format!("is not an X.509 certificate: {e}")))?;
    Ok(())
}

/// A validated create request.
pub struct NewKeystore {
    pub id: String,
    pub vault_id: String,
    pub name: String,
    pub description: String,
    pub config: KeystoreConfig,
    pub credentials: Option<SealedCredentials>,
}

/// What ConnectKeystore has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStart {
    /// Already CONNECTED: a no-op success.
    AlreadyConnected,
    /// Move to CONNECTING and run the connection checks.
    Begin,
}

impl Keystore {
    pub fn new(req: NewKeystore, now: Millis) -> Result<Keystore, DomainError> {
        validate_name("name", &req.name)?;
        validate_description("description", &req.description)?;
        req.config.validate()?;
        if req.config.needs_credentials() && req.credentials.is_none() {
            return Err(DomainError::invalid(
                "credentials",
                format!(
                    "a {} keystore needs credentials",
                    req.config.keystore_type()
                ),
            ));
        }
        Ok(Keystore {
            id: req.id,
            vault_id: req.vault_id,
            name: req.name,
            description: req.description,
            config: req.config,
            credentials: req.credentials,
            state: ConnectionState::Disconnected,
            error: None,
            health: None,
            created_at: now,
            updated_at: now,
            first_connected_at: None,
            trust_anchor_certificate: None,
        })
    }

    /// Keeps the trust anchor certificate of a pkcs11 keystore (see
    /// [`validate_trust_anchor`]); `field` names it in errors.
    pub fn set_trust_anchor(&mut self, field: &str, pem: String) -> Result<(), DomainError> {
        if self.keystore_type() != KeystoreType::Pkcs11 {
            return Err(DomainError::invalid(
                field,
                "only a pkcs11 keystore keeps a trust anchor certificate",
            ));
        }
        validate_trust_anchor(field, &pem)?;
        self.trust_anchor_certificate = Some(pem);
        Ok(())
    }

    pub fn keystore_type(&self) -> KeystoreType {
        self.config.keystore_type()
    }

    /// Fails with the documented error when `action` is not allowed in the current state.
    pub fn require(&self, action: KeystoreAction) -> Result<(), DomainError> {
        if self.state.allows(action) {
            Ok(())
        } else {
            Err(DomainError::KeystoreState {
                id: self.id.clone(),
                state: self.state,
                action,
                allowed: ConnectionState::allowed_from(action),
            })
        }
    }

    pub fn begin_connect(&mut self, now: Millis) -> Result<ConnectStart, DomainError> {
        self.require(KeystoreAction::Connect)?;
        if self.state == ConnectionState::Connected {
            return Ok(ConnectStart::AlreadyConnected);
        }
        self.state = ConnectionState::Connecting;
        self.error = None;
        self.updated_at = now;
        Ok(ConnectStart::Begin)
    }

    /// Records the outcome of the connection checks begun by `begin_connect`.
    pub fn finish_connect(&mut self, outcome: Result<(), ConnectionError>, now: Millis) {
        match outcome {
            Ok(()) => {
                self.state = ConnectionState::Connected;
                self.error = None;
                self.first_connected_at.get_or_insert(now);
                self.health = Some(Health {
                    status: HealthStatus::Ok,
                    message: String::new(),
                    last_heartbeat: now,
                    failed_checks: 0,
                });
            }
            Err(e) => {
                self.state = ConnectionState::Failed;
                self.error = Some(e);
            }
        }
        self.updated_at = now;
    }

    /// A CONNECTED keystore whose target kept failing its health checks (see
    /// [`fails_after_checks`]) goes FAILED with the last check's error; it is recovered as a
    /// failed connect is: disconnect, (update,) connect. Returns false, changing nothing, in
    /// any other state.
    pub fn fail_connected(&mut self, e: ConnectionError, now: Millis) -> bool {
        if self.state != ConnectionState::Connected {
            return false;
        }
        self.state = ConnectionState::Failed;
        self.error = Some(e);
        self.health = None;
        self.updated_at = now;
        true
    }

    pub fn begin_disconnect(&mut self, now: Millis) -> Result<(), DomainError> {
        self.require(KeystoreAction::Disconnect)?;
        self.state = ConnectionState::Disconnecting;
        self.updated_at = now;
        Ok(())
    }

    pub fn finish_disconnect(&mut self, now: Millis) {
        self.state = ConnectionState::Disconnected;
        self.error = None;
        self.health = None;
        self.updated_at = now;
    }

    /// Name and description may change in any state.
    pub fn update(
        &mut self,
        name: Option<String>,
        description: Option<String>,
        now: Millis,
    ) -> Result<(), DomainError> {
        if let Some(n) = &name {
            validate_name("name", n)?;
        }
        if let Some(d) = &description {
            validate_description("description", d)?;
        }
        if let Some(n) = name {
            self.name = n;
        }
        if let Some(d) = description {
            self.description = d;
        }
        self.updated_at = now;
        Ok(())
    }

    /// UpdateKeystore of the configuration: identifying properties are locked (the token),
    /// connection configuration (the module path) changes only while DISCONNECTED.
    pub fn update_config(&mut self, new: KeystoreConfig, now: Millis) -> Result<(), DomainError> {
        new.validate()?;
        match (&self.config, &new) {
            (
                KeystoreConfig::Pkcs11 {
                    module_path: old_m,
                    token: old_t,
                },
                KeystoreConfig::Pkcs11 {
                    module_path: new_m,
                    token: new_t,
                },
            ) => {
                if old_t != new_t {
                    let field = match new_t {
                        TokenRef::Label(_) => "pkcs11.token_label",
                        TokenRef::Serial(_) => "pkcs11.token_serial",
                    };
                    return Err(DomainError::invalid(
                        field,
                        "is locked: the token identifies the keystore and never changes",
                    ));
                }
                if old_m != new_m {
                    self.require(KeystoreAction::UpdateConnectionConfig)?;
                }
            }
            (
                KeystoreConfig::AwsKms {
                    region: old_r,
                    endpoint_url: old_e,
                    account_id: old_acct,
                    ..
                },
                KeystoreConfig::AwsKms {
                    region: new_r,
                    endpoint_url: new_e,
                    account_id: new_acct,
                    ..
                },
            ) => {
                if old_acct != new_acct {
                    return Err(DomainError::invalid(
                        "aws_kms.account_id",
                        "is output only: it is learnt at connect and never changes",
                    ));
                }
                if old_r != new_r && self.first_connected_at.is_some() {
                    return Err(DomainError::invalid(
                        "aws_kms.region",
                        "is locked: the keystore has connected, and its region and account identify it",
                    ));
                }
                if old_e != new_e {
                    self.require(KeystoreAction::UpdateConnectionConfig)?;
                }
            }
            (
                KeystoreConfig::Xks {
                    uri_endpoint: old_e,
                    uri_path: old_p,
                    ca_cert_pem: old_ca,
                    client_cert_pem: old_cc,
                    signing_region: old_r,
                    ..
                },
                KeystoreConfig::Xks {
                    uri_endpoint: new_e,
                    uri_path: new_p,
                    ca_cert_pem: new_ca,
                    client_cert_pem: new_cc,
                    signing_region: new_r,
                    ..
                },
            ) => {
                let locked = self.first_connected_at.is_some();
                for (field, changed) in [
                    ("xks.uri_endpoint", old_e != new_e),
                    ("xks.uri_path", old_p != new_p),
                ] {
                    if changed && locked {
                        return Err(DomainError::invalid(
                            field,
                            "is locked: the keystore has connected, and uri_endpoint and uri_path identify its proxy",
                        ));
                    }
                }
                if old_e != new_e
                    || old_p != new_p
                    || old_ca != new_ca
                    || old_cc != new_cc
                    || old_r != new_r
                {
                    self.require(KeystoreAction::UpdateConnectionConfig)?;
                }
            }
            (KeystoreConfig::IbmKeyProtect(old), KeystoreConfig::IbmKeyProtect(new))
            | (KeystoreConfig::IbmHpcs(old), KeystoreConfig::IbmHpcs(new)) => {
                let locked = self.first_connected_at.is_some();
                for (field, changed) in [
                    ("ibm_kms.instance_id", old.instance_id != new.instance_id),
                    ("ibm_kms.key_ring_id", old.key_ring_id != new.key_ring_id),
                ] {
                    if changed && locked {
                        return Err(DomainError::invalid(
                            field,
                            "is locked: the keystore has connected, and its instance and key ring hold its keys",
                        ));
                    }
                }
                if old != new {
                    self.require(KeystoreAction::UpdateConnectionConfig)?;
                }
            }
            (KeystoreConfig::AzureKeyVault(old), KeystoreConfig::AzureKeyVault(new)) => {
                let locked = self.first_connected_at.is_some();
                for (field, changed) in [
                    (
                        "azure_key_vault.vault_name",
                        old.vault_name != new.vault_name,
                    ),
                    (
                        "azure_key_vault.environment",
                        old.environment != new.environment,
                    ),
                    (
                        "azure_key_vault.subscription_id",
                        old.subscription_id != new.subscription_id,
                    ),
                    (
                        "azure_key_vault.resource_group",
                        old.resource_group != new.resource_group,
                    ),
                    ("azure_key_vault.location", old.location != new.location),
                ] {
                    if changed && locked {
                        return Err(DomainError::invalid(
                            field,
                            "is locked: the keystore has connected, and its vault holds its keys",
                        ));
                    }
                }
                if old != new {
                    self.require(KeystoreAction::UpdateConnectionConfig)?;
                }
            }
            (KeystoreConfig::GoogleCloudKms(old), KeystoreConfig::GoogleCloudKms(new)) => {
                let locked = self.first_connected_at.is_some();
                for (field, changed, why) in [
                    (
                        "google_cloud_kms_credentials.service_account_key_json",
                        old.project_id != new.project_id,
                        "is of another project: the keystore has connected, and its key ring lives in project ",
                    ),
                    (
                        "google_cloud_kms.location",
                        old.location != new.location,
                        "is locked: the keystore has connected, and its key ring lives in project ",
                    ),
                    (
                        "google_cloud_kms.key_ring",
                        old.key_ring != new.key_ring,
                        "is locked: the keystore has connected, and its key ring lives in project ",
                    ),
                ] {
                    if changed && locked {
                        return Err(DomainError::invalid(
                            field,
                            format!("{why}{}", old.project_id),
                        ));
                    }
                }
                if old.location != new.location
                    || old.key_ring != new.key_ring
                    || old.endpoint != new.endpoint
                {
                    self.require(KeystoreAction::UpdateConnectionConfig)?;
                }
            }
            (old, new) if old.keystore_type() != new.keystore_type() => {
                return Err(DomainError::invalid(
                    "config",
                    "is locked: a keystore's type never changes",
                ));
            }
            _ => {}
        }
        self.config = new;
        self.updated_at = now;
        Ok(())
    }

    /// Binds an aws_kms keystore to the account its credentials act in, seen at a connect.
    /// The first account seen is kept; credentials of another account are refused with
    /// INVALID_CONFIGURATION (the keystore's keys live in the first one).
    pub fn bind_account(&mut self, seen: &str) -> Result<(), ConnectionError> {
        let KeystoreConfig::AwsKms { account_id, .. } = &mut self.config else {
            return Ok(());
        };
        match account_id {
            Some(bound) if bound != seen => Err(ConnectionError {
                code: ConnectionErrorCode::InvalidConfiguration,
                message: format!(
                    "the credentials act in AWS account {seen}, but this keystore belongs to account {bound}; use credentials of account {bound}"
                ),
            }),
            Some(_) => Ok(()),
            None => {
                *account_id = Some(seen.to_string());
                Ok(())
            }
        }
    }

    /// Replaces the sealed credentials (allowed in every state, as in AWS).
    pub fn set_credentials(&mut self, sealed: SealedCredentials, now: Millis) {
        self.credentials = Some(sealed);
        self.updated_at = now;
    }

    /// DeleteKeystore: only DISCONNECTED, and no live key may still target it.
    /// `live_targeting` are the ids of keys (not DESTROYED*) that list it as a target.
    pub fn check_delete(&self, live_targeting: &[String]) -> Result<(), DomainError> {
        self.require(KeystoreAction::Delete)?;
        if !live_targeting.is_empty() {
            return Err(DomainError::KeystoreHasKeys {
                id: self.id.clone(),
                keys: live_targeting.to_vec(),
            });
        }
        Ok(())
    }
}

/// ACTIVE keys that would be left with no INSTALLED instance in a CONNECTED keystore
/// if `keystore_id` were disconnected. `states` gives every keystore's state.
pub fn stranded_keys(
    keystore_id: &str,
    keys: &[Key],
    states: &HashMap<String, ConnectionState>,
) -> Vec<String> {
    keys.iter()
        .filter(|k| k.state == KeyState::Active)
        .filter(|k| {
            k.instances
                .iter()
                .any(|i| i.keystore_id == keystore_id && i.state == InstanceState::Installed)
        })
        .filter(|k| {
            !k.instances.iter().any(|i| {
                i.keystore_id != keystore_id
                    && i.state == InstanceState::Installed
                    && states.get(&i.keystore_id) == Some(&ConnectionState::Connected)
            })
        })
        .map(|k| k.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn trust_anchors_are_one_pem_certificate_and_only_on_pkcs11_keystores() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["hsm.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        validate_trust_anchor("TrustAnchorCertificate", &cert).unwrap();
        for bad in [
            String::new(),
            "not a certificate".to_string(),
            format!("{cert}{cert}"),
            key.serialize_pem(),
            cert.replace("MII", "MIX"),
            "x".repeat(MAX_TRUST_ANCHOR + 1),
        ] {
            let e = validate_trust_anchor("TrustAnchorCertificate", &bad).unwrap_err();
            assert_eq!(e.field(), Some("TrustAnchorCertificate"), "{bad}");
        }
        let mut internal = keystore(ConnectionState::Disconnected);
        assert!(internal.set_trust_anchor("t", cert.clone()).is_err());
        let mut p11 = internal.clone();
        p11.config = KeystoreConfig::Pkcs11 {
            module_path: "/m.so".into(),
            token: TokenRef::Label("cluster-1234567890abc".into()),
        };
        p11.set_trust_anchor("t", cert.clone()).unwrap();
        assert_eq!(p11.trust_anchor_certificate.as_deref(), Some(cert.as_str()));
        // Records written before the field existed still decode.
        let mut json = serde_json::to_value(&internal).unwrap();
        json.as_object_mut()
            .unwrap()
            .remove("trust_anchor_certificate");
        let back: Keystore = serde_json::from_value(json).unwrap();
        assert_eq!(back.trust_anchor_certificate, None);
    }

    fn keystore(state: ConnectionState) -> Keystore {
        let mut ks = Keystore::new(
            NewKeystore {
                id: "ks_1".into(),
                vault_id: "vault_1".into(),
                name: "main".into(),
                description: String::new(),
                config: KeystoreConfig::Internal,
                credentials: None,
            },
            0,
        )
        .unwrap();
        ks.state = state;
        ks
    }

    fn aws(region: &str, url: Option<&str>, key_id: &str) -> KeystoreConfig {
        KeystoreConfig::AwsKms {
            region: region.into(),
            endpoint_url: url.map(str::to_string),
            access_key_id: key_id.into(),
            account_id: None,
        }
    }

    fn field_of(e: DomainError) -> String {
        match e {
            DomainError::Invalid { field, .. } => field,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn aws_kms_configuration_rules() {
        let ok = [
            aws("eu-central-1", None, "AKIAIOSFODNN7EXAMPLE"),
            aws(
                "us-gov-west-1",
                Some("https://kms.example.internal:8443/"),
                "A_1",
            ),
            aws("us-east-1", Some("http://127.0.0.1:4566"), "test"),
            aws("us-east-1", Some("http://localhost:4566"), "test"),
            aws("us-east-1", Some("http://[::1]:4566"), "test"),
        ];
        for c in ok {
            assert!(c.validate().is_ok(), "{c:?}");
            assert!(c.needs_credentials());
            assert_eq!(c.keystore_type(), KeystoreType::AwsKms);
        }
        let bad = [
            (aws("", None, "A"), "aws_kms.region"),
            (aws("EU-central-1", None, "A"), "aws_kms.region"),
            (aws("eu-central-", None, "A"), "aws_kms.region"),
            (aws("1us-east-1", None, "A"), "aws_kms.region"),
            (
                aws("us-east-1", Some("ftp://x"), "A"),
                "aws_kms.endpoint_url",
            ),
            (
                aws("us-east-1", Some("http://kms.example.com"), "A"),
                "aws_kms.endpoint_url",
            ),
            (
                aws("us-east-1", Some("http://127.0.0.1.evil.com"), "A"),
                "aws_kms.endpoint_url",
            ),
            (
                aws("us-east-1", Some("https://u:p@kms.example.com"), "A"),
                "aws_kms.endpoint_url",
            ),
            (
                aws("us-east-1", Some("https://a b"), "A"),
                "aws_kms.endpoint_url",
            ),
            (aws("us-east-1", None, ""), "aws_kms.access_key_id"),
            (
                aws("us-east-1", None, "AKIA EXAMPLE"),
                "aws_kms.access_key_id",
            ),
            (
                aws("us-east-1", None, &"A".repeat(129)),
                "aws_kms.access_key_id",
            ),
        ];
        for (c, field) in bad {
            assert_eq!(field_of(c.validate().unwrap_err()), field, "{c:?}");
        }
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert!(validate_aws_secret("s", secret).is_ok());
        for bad in ["", "a b", "a\nb", &"x".repeat(257)] {
            let e = validate_aws_secret("s", bad).unwrap_err();
            assert!(bad.is_empty() || !e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn aws_kms_takes_aes256_and_hmac_keys_only() {
        let c = aws("us-east-1", None, "A");
        for spec in [KeySpec::Aes256, KeySpec::HmacSha256] {
            assert!(c.accepts(spec).is_ok());
        }
        for spec in [KeySpec::Aes128, KeySpec::Rsa2048, KeySpec::EcP256] {
            let limit = c.accepts(spec).unwrap_err();
            assert!(
                limit.contains("AWS KMS") && limit.contains(&spec.to_string()),
                "{limit}"
            );
            assert!(KeystoreConfig::Internal.accepts(spec).is_ok());
        }
    }

    #[test]
    fn aws_kms_region_and_account_lock_after_the_first_connect() {
        let mut ks = keystore(ConnectionState::Disconnected);
        ks.config = aws("us-east-1", None, "A");
        // Before any connect the region may still be corrected.
        ks.update_config(aws("eu-west-1", None, "A"), 1).unwrap();
        ks.begin_connect(2).unwrap();
        ks.finish_connect(Ok(()), 3);
        assert_eq!(ks.first_connected_at, Some(3));
        ks.bind_account("123456789012").unwrap();
        ks.begin_disconnect(4).unwrap();
        ks.finish_disconnect(5);
        let bound_in = |region: &str, url: Option<&str>| KeystoreConfig::AwsKms {
            region: region.into(),
            endpoint_url: url.map(str::to_string),
            access_key_id: "A".into(),
            account_id: Some("123456789012".into()),
        };
        let e = ks
            .update_config(bound_in("us-east-1", None), 6)
            .unwrap_err();
        assert_eq!(field_of(e), "aws_kms.region");
        // The endpoint is connection configuration: DISCONNECTED only.
        let bound = |url: Option<&str>| bound_in("eu-west-1", url);
        ks.update_config(bound(Some("https://vpce.example")), 7)
            .unwrap();
        ks.state = ConnectionState::Connected;
        assert!(matches!(
            ks.update_config(bound(None), 8),
            Err(DomainError::KeystoreState { .. })
        ));
        // The account is output only, and another account's credentials are refused.
        let e = ks.update_config(aws("eu-west-1", Some("https://vpce.example"), "A"), 9);
        assert_eq!(field_of(e.unwrap_err()), "aws_kms.account_id");
        ks.bind_account("123456789012").unwrap();
        let e = ks.bind_account("210987654321").unwrap_err();
        assert_eq!(e.code, ConnectionErrorCode::InvalidConfiguration);
        assert!(e.message.contains("210987654321") && e.message.contains("123456789012"));
    }

    fn xks(endpoint: &str, path: &str) -> KeystoreConfig {
        KeystoreConfig::Xks {
            uri_endpoint: endpoint.into(),
            uri_path: path.into(),
            ca_cert_pem: None,
            client_cert_pem: None,
            access_key_id: "ABCDEFGHIJKLMNOPQRST".into(),
            signing_region: None,
        }
    }

    #[test]
    fn xks_configuration_rules() {
        for ok in [
            xks("https://xks.example.com", "/kms/xks/v1"),
            xks("https://xks.example.com:8443", "/keyorch/kms/xks/v1"),
            xks("https://10.0.0.1", "/kms/xks/v1"),
            xks("https://[2001:db8::1]:443", "/kms/xks/v1"),
            xks("http://127.0.0.1:4600", "/keyorch/kms/xks/v1"),
            xks("http://localhost:4600", "/keyorch/kms/xks/v1"),
            xks("http://[::1]:4600", "/keyorch/kms/xks/v1"),
        ] {
            assert!(ok.validate().is_ok(), "{ok:?}");
            assert!(ok.needs_credentials());
            assert_eq!(ok.keystore_type(), KeystoreType::Xks);
            // No copy of a keyorch key goes into an xks keystore, whatever its spec.
            assert!(!ok.holds_key_copies());
            for spec in KeySpec::ALL {
                assert!(ok.accepts(spec).unwrap_err().contains("external_key_id"));
            }
        }
        let long_host = format!("https://{}.com", "a".repeat(125));
        for (bad, field) in [
            (xks("", "/kms/xks/v1"), "xks.uri_endpoint"),
            (xks("xks.example.com", "/kms/xks/v1"), "xks.uri_endpoint"),
            (
                xks("http://xks.example.com", "/kms/xks/v1"),
                "xks.uri_endpoint",
            ),
            (
                xks("https://xks.example.com/", "/kms/xks/v1"),
                "xks.uri_endpoint",
            ),
            (
                xks("https://xks.example.com?a=b", "/kms/xks/v1"),
                "xks.uri_endpoint",
            ),
            (
                xks("https://xks.example.com:", "/kms/xks/v1"),
                "xks.uri_endpoint",
            ),
            (
                xks("https://xks.example.com:65536", "/kms/xks/v1"),
                "xks.uri_endpoint",
            ),
            (
                xks("https://-x.example.com", "/kms/xks/v1"),
                "xks.uri_endpoint",
            ),
            (xks("https://[zz::1]", "/kms/xks/v1"), "xks.uri_endpoint"),
            (xks(&long_host, "/kms/xks/v1"), "xks.uri_endpoint"),
            (xks("https://xks.example.com", ""), "xks.uri_path"),
            (
                xks("https://xks.example.com", "/kms/xks/v2"),
                "xks.uri_path",
            ),
        ] {
            assert_eq!(field_of(bad.validate().unwrap_err()), field, "{bad:?}");
        }
        // The signing region follows AWS's region rule; absent means us-east-1.
        let with_region = |r: &str| {
            let mut c = xks("https://xks.example.com", "/kms/xks/v1");
            if let KeystoreConfig::Xks { signing_region, .. } = &mut c {
                *signing_region = Some(r.into());
            }
            c
        };
        for ok in ["eu-west-3", "us-gov-west-1", "ap-southeast-2"] {
            assert!(with_region(ok).validate().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "EU-WEST-3",
            "eu-west-",
            "3-eu",
            "eu west 3",
            &"a1".repeat(17),
        ] {
            assert_eq!(
                field_of(with_region(bad).validate().unwrap_err()),
                "xks.signing_region",
                "{bad:?}"
            );
        }
        let mut no_tls = xks("http://127.0.0.1:1", "/kms/xks/v1");
        if let KeystoreConfig::Xks { ca_cert_pem, .. } = &mut no_tls {
            *ca_cert_pem = Some("x".into());
        }
        assert_eq!(field_of(no_tls.validate().unwrap_err()), "xks.ca_cert_pem");
        for bad in [
            "",
            "ABCDEFGHIJKLMNOPQRS",
            "abcdefghijklmnopqrst",
            "ABCDEFGHIJKLMNOPQRS8",
        ] {
            assert!(validate_xks_access_key_id("f", bad).is_err(), "{bad}");
        }
        let secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U=";
        assert!(validate_xks_secret("s", secret).is_ok());
        for bad in [
            &secret[..42],
            &format!("{secret}{secret}"),
            &format!("{}!", &secret[..44]),
        ] {
            let e = validate_xks_secret("s", bad).unwrap_err().to_string();
            assert!(!e.contains(bad), "{e}");
        }
    }

    #[test]
    fn xks_identity_locks_after_the_first_connect() {
        let mut ks = keystore(ConnectionState::Disconnected);
        ks.config = xks("https://a.example.com", "/kms/xks/v1");
        // Before any connect the proxy may still be corrected.
        ks.update_config(xks("https://b.example.com", "/p/kms/xks/v1"), 1)
            .unwrap();
        ks.begin_connect(2).unwrap();
        ks.finish_connect(Ok(()), 3);
        // Locked in every state, also once DISCONNECTED again.
        let e = ks.update_config(xks("https://c.example.com", "/p/kms/xks/v1"), 4);
        assert_eq!(field_of(e.unwrap_err()), "xks.uri_endpoint");
        ks.begin_disconnect(5).unwrap();
        ks.finish_disconnect(6);
        let e = ks.update_config(xks("https://b.example.com", "/q/kms/xks/v1"), 7);
        assert_eq!(field_of(e.unwrap_err()), "xks.uri_path");
        // Connection configuration (the CA) only while DISCONNECTED.
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let mut with_ca = xks("https://b.example.com", "/p/kms/xks/v1");
        if let KeystoreConfig::Xks { ca_cert_pem, .. } = &mut with_ca {
            *ca_cert_pem = Some(ca);
        }
        ks.update_config(with_ca.clone(), 8).unwrap();
        ks.state = ConnectionState::Connected;
        assert!(matches!(
            ks.update_config(xks("https://b.example.com", "/p/kms/xks/v1"), 9),
            Err(DomainError::KeystoreState { .. })
        ));
        // So is the signing region.
        let mut in_paris = with_ca.clone();
        if let KeystoreConfig::Xks { signing_region, .. } = &mut in_paris {
            *signing_region = Some("eu-west-3".into());
        }
        assert!(matches!(
            ks.update_config(in_paris.clone(), 9),
            Err(DomainError::KeystoreState { .. })
        ));
        ks.state = ConnectionState::Disconnected;
        ks.update_config(in_paris, 9).unwrap();
        ks.update_config(with_ca.clone(), 9).unwrap();
        ks.state = ConnectionState::Connected;
        // A new access key id (with its secret) in any state.
        let mut rotated = with_ca;
        if let KeystoreConfig::Xks { access_key_id, .. } = &mut rotated {
            *access_key_id = "ZYXWVUTSRQPONMLKJIHG".into();
        }
        ks.update_config(rotated, 10).unwrap();
    }

    fn azure() -> AzureKeyVaultConfig {
        AzureKeyVaultConfig {
            vault_name: "contoso-kv1".into(),
            resource_group: "rg-keys_(prod).1".into(),
            location: "westeurope".into(),
            environment: AzureEnvironment::AzureCloud,
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "00000000-1111-2222-3333-444455556666".into(),
            subscription_id: "AAAAAAAA-bbbb-CCCC-dddd-000000000000".into(),
            vault_url: None,
            authority_host: None,
            ca_cert_pem: None,
        }
    }

    #[test]
    fn azure_key_vault_configuration_rules() {
        let c = azure();
        KeystoreConfig::AzureKeyVault(c.clone()).validate().unwrap();
        assert_eq!(c.vault_url(), "https://contoso-kv1.vault.azure.net");
        assert_eq!(c.authority_host(), "https://login.microsoftonline.com");
        let cn = AzureKeyVaultConfig {
            environment: AzureEnvironment::AzureChinaCloud,
            ..azure()
        };
        assert_eq!(cn.vault_url(), "https://contoso-kv1.vault.azure.cn");
        let gov = AzureKeyVaultConfig {
            environment: AzureEnvironment::parse("f", "azureusgovernment").unwrap(),
            vault_url: Some("https://10.0.0.4:8443".into()),
            ..azure()
        };
        assert_eq!(gov.vault_url(), "https://10.0.0.4:8443");
        assert_eq!(gov.authority_host(), "https://login.microsoftonline.us");
        assert!(AzureEnvironment::parse("f", "AzureGermanCloud").is_err());
        let field = |c: AzureKeyVaultConfig| {
            field_of(KeystoreConfig::AzureKeyVault(c).validate().unwrap_err())
        };
        for name in [
            "kv",
            "1vault",
            "vault-",
            "va--ult",
            "vault_1",
            &"v".repeat(25),
        ] {
            let c = AzureKeyVaultConfig {
                vault_name: name.into(),
                ..azure()
            };
            assert_eq!(field(c), "azure_key_vault.vault_name", "{name}");
        }
        for rg in ["", "rg.", "rg/x", &"r".repeat(91)] {
            let c = AzureKeyVaultConfig {
                resource_group: rg.into(),
                ..azure()
            };
            assert_eq!(field(c), "azure_key_vault.resource_group", "{rg}");
        }
        let c = AzureKeyVaultConfig {
            location: "West Europe".into(),
            ..azure()
        };
        assert_eq!(field(c), "azure_key_vault.location");
        for (f, bad) in [
            ("tenant_id", "contoso.onmicrosoft.com"),
            ("client_id", "00000000-1111-2222-3333-44445555666"),
            ("subscription_id", "gggggggg-bbbb-cccc-dddd-000000000000"),
        ] {
            let mut c = azure();
            match f {
                "tenant_id" => c.tenant_id = bad.into(),
                "client_id" => c.client_id = bad.into(),
                _ => c.subscription_id = bad.into(),
            }
            assert_eq!(field(c), format!("azure_key_vault.{f}"), "{bad}");
        }
        for url in [
            "http://kv.example",
            "https://kv.example/",
            "https://u@kv.example",
        ] {
            let c = AzureKeyVaultConfig {
                vault_url: Some(url.into()),
                ..azure()
            };
            assert_eq!(field(c), "azure_key_vault.vault_url", "{url}");
        }
        let c = AzureKeyVaultConfig {
            authority_host: Some("https://login.example/tenant".into()),
            ..azure()
        };
        assert_eq!(field(c), "azure_key_vault.authority_host");
        let c = AzureKeyVaultConfig {
            ca_cert_pem: Some("not pem".into()),
            ..azure()
        };
        assert_eq!(field(c), "azure_key_vault.ca_cert_pem");
        // Vaults import RSA and EC keys; AES needs a Managed HSM.
        let kv = KeystoreConfig::AzureKeyVault(azure());
        for ok in [
            KeySpec::Rsa2048,
            KeySpec::Rsa4096,
            KeySpec::EcP256,
            KeySpec::EcP384,
        ] {
            kv.accepts(ok).unwrap();
        }
        assert!(kv
            .accepts(KeySpec::Aes256)
            .unwrap_err()
            .contains("Managed HSM"));
        assert!(kv.accepts(KeySpec::HmacSha256).is_err());
    }

    #[test]
    fn the_azure_vault_locks_after_the_first_connect_and_the_principal_does_not() {
        let mut ks = keystore(ConnectionState::Disconnected);
        ks.config = KeystoreConfig::AzureKeyVault(azure());
        let other_vault = || {
            KeystoreConfig::AzureKeyVault(AzureKeyVaultConfig {
                vault_name: "other-kv".into(),
                ..azure()
            })
        };
        ks.update_config(other_vault(), 1).unwrap();
        ks.update_config(KeystoreConfig::AzureKeyVault(azure()), 1)
            .unwrap();
        ks.begin_connect(2).unwrap();
        ks.finish_connect(Ok(()), 3);
        ks.begin_disconnect(4).unwrap();
        ks.finish_disconnect(5);
        type Change = (&'static str, fn(&mut AzureKeyVaultConfig));
        let changes: [Change; 5] = [
            ("azure_key_vault.vault_name", |c| {
                c.vault_name = "other-kv".into()
            }),
            ("azure_key_vault.environment", |c| {
                c.environment = AzureEnvironment::AzureChinaCloud
            }),
            ("azure_key_vault.subscription_id", |c| {
                c.subscription_id = "11111111-1111-1111-1111-111111111111".into()
            }),
            ("azure_key_vault.resource_group", |c| {
                c.resource_group = "rg2".into()
            }),
            ("azure_key_vault.location", |c| c.location = "eastus".into()),
        ];
        for (f, change) in changes {
            let mut c = azure();
            change(&mut c);
            let e = ks.update_config(KeystoreConfig::AzureKeyVault(c), 6);
            assert_eq!(field_of(e.unwrap_err()), f);
        }
        // The service principal and the endpoints: while DISCONNECTED only.
        let moved = KeystoreConfig::AzureKeyVault(AzureKeyVaultConfig {
            client_id: "99999999-1111-2222-3333-444455556666".into(),
            vault_url: Some("https://10.0.0.4".into()),
            ..azure()
        });
        ks.state = ConnectionState::Connected;
        assert!(matches!(
            ks.update_config(moved.clone(), 7),
            Err(DomainError::KeystoreState { .. })
        ));
        ks.state = ConnectionState::Disconnected;
        ks.update_config(moved.clone(), 8).unwrap();
        assert_eq!(ks.config, moved);
    }

    #[test]
    fn xks_records_without_a_signing_region_still_decode() {
        let old = r#"{"type":"xks","uri_endpoint":"https://x.example.com","uri_path":"/kms/xks/v1","ca_cert_pem":null,"client_cert_pem":null,"access_key_id":"ABCDEFGHIJKLMNOPQRST"}"#;
        let c: KeystoreConfig = serde_json::from_str(old).unwrap();
        assert_eq!(c, xks("https://x.example.com", "/kms/xks/v1"));
        // And None is not written, so the record is as before.
        assert!(!serde_json::to_string(&c)
            .unwrap()
            .contains("signing_region"));
    }

    #[test]
    fn new_keystores_start_disconnected() {
        assert_eq!(
            keystore(ConnectionState::Disconnected).state,
            ConnectionState::Disconnected
        );
    }

    #[test]
    fn table_of_design_section_2() {
        use ConnectionState::*;
        // ConnectKeystore is rejected from DISCONNECTING and FAILED.
        for (s, ok) in [
            (Connected, true),
            (Connecting, true),
            (Disconnecting, false),
            (Disconnected, true),
            (Failed, false),
        ] {
            assert_eq!(s.allows(KeystoreAction::Connect), ok, "connect from {s}");
        }
        // DisconnectKeystore is rejected from DISCONNECTING and DISCONNECTED.
        for (s, ok) in [
            (Connected, true),
            (Connecting, true),
            (Disconnecting, false),
            (Disconnected, false),
            (Failed, true),
        ] {
            assert_eq!(
                s.allows(KeystoreAction::Disconnect),
                ok,
                "disconnect from {s}"
            );
        }
        for s in ConnectionState::ALL {
            assert_eq!(s.allows(KeystoreAction::Delete), s == Disconnected);
        }
    }

    #[test]
    fn connect_on_connected_is_a_no_op() {
        let mut ks = keystore(ConnectionState::Connected);
        assert_eq!(ks.begin_connect(1).unwrap(), ConnectStart::AlreadyConnected);
        assert_eq!(ks.state, ConnectionState::Connected);
    }

    #[test]
    fn failed_is_recovered_by_disconnect_then_connect() {
        let mut ks = keystore(ConnectionState::Failed);
        assert!(ks.begin_connect(1).is_err());
        ks.begin_disconnect(2).unwrap();
        ks.finish_disconnect(3);
        assert_eq!(ks.begin_connect(4).unwrap(), ConnectStart::Begin);
        ks.finish_connect(Ok(()), 5);
        assert_eq!(ks.state, ConnectionState::Connected);
    }

    #[test]
    fn a_connected_keystore_whose_checks_keep_failing_goes_failed_and_recovers() {
        assert!(!fails_after_checks(2, 3));
        assert!(fails_after_checks(3, 3));
        assert!(fails_after_checks(4, 3));
        assert!(fails_after_checks(1, 1));
        assert!(!fails_after_checks(0, 1));
        assert!(!fails_after_checks(u32::MAX, 0), "0 means never");
        let e = ConnectionError {
            code: ConnectionErrorCode::NetworkErrors,
            message: "cannot reach the target".into(),
        };
        for state in ConnectionState::ALL {
            let mut ks = keystore(state);
            let before = ks.clone();
            let changed = ks.fail_connected(e.clone(), 9);
            assert_eq!(changed, state == ConnectionState::Connected, "{state}");
            if !changed {
                assert_eq!(ks, before, "{state}: changed nothing");
            }
        }
        let mut ks = keystore(ConnectionState::Connected);
        assert!(ks.fail_connected(e.clone(), 9));
        assert_eq!(ks.state, ConnectionState::Failed);
        assert_eq!(ks.error, Some(e));
        assert!(ks.health.is_none());
        // Recovered as a failed connect is.
        assert!(ks.begin_connect(10).is_err());
        ks.begin_disconnect(11).unwrap();
        ks.finish_disconnect(12);
        assert!(ks.error.is_none());
        assert_eq!(ks.begin_connect(13).unwrap(), ConnectStart::Begin);
    }

    fn pkcs11(state: ConnectionState) -> Keystore {
        let mut ks = Keystore::new(
            NewKeystore {
                id: "ks_2".into(),
                vault_id: "vault_1".into(),
                name: "hsm2".into(),
                description: String::new(),
                config: KeystoreConfig::Pkcs11 {
                    module_path: "/usr/lib/softhsm/libsofthsm2.so".into(),
                    token: TokenRef::Label("target".into()),
                },
                credentials: Some(SealedCredentials {
                    sealed: vec![1, 2, 3],
                }),
            },
            0,
        )
        .unwrap();
        ks.state = state;
        ks
    }

    #[test]
    fn update_rules_of_design_section_2() {
        let moved = KeystoreConfig::Pkcs11 {
            module_path: "/opt/hsm/lib.so".into(),
            token: TokenRef::Label("target".into()),
        };
        let other_token = KeystoreConfig::Pkcs11 {
            module_path: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token: TokenRef::Label("other".into()),
        };
        for s in ConnectionState::ALL {
            // Identifying properties: always locked.
            let mut ks = pkcs11(s);
            let err = ks.update_config(other_token.clone(), 1).unwrap_err();
            assert!(
                matches!(err, DomainError::Invalid { ref field, .. } if field == "pkcs11.token_label")
            );
            // Connection configuration: only while DISCONNECTED.
            let mut ks = pkcs11(s);
            let r = ks.update_config(moved.clone(), 1);
            assert_eq!(r.is_ok(), s == ConnectionState::Disconnected, "{s}");
            // Credentials and names: always.
            let mut ks = pkcs11(s);
            ks.set_credentials(SealedCredentials { sealed: vec![9] }, 1);
            assert!(ks.update(Some("renamed".into()), None, 1).is_ok());
        }
        let no_creds = Keystore::new(
            NewKeystore {
                id: "x".into(),
                vault_id: "v".into(),
                name: "n".into(),
                description: String::new(),
                config: moved,
                credentials: None,
            },
            0,
        );
        assert!(
            matches!(no_creds, Err(DomainError::Invalid { ref field, .. }) if field == "credentials")
        );
        assert!(validate_pin("pkcs11_credentials.pin", "123").is_err());
        let err = validate_pin("pkcs11_credentials.pin", "secret\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Connect(bool),
        Disconnect,
        Delete,
        Rename,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(Op::Connect),
            Just(Op::Disconnect),
            Just(Op::Delete),
            Just(Op::Rename),
        ]
    }

    proptest! {
        /// Random operation sequences: only the transitions of DESIGN §2 happen, a
        /// rejected operation changes nothing, FAILED always carries an error code, and
        /// no operation ever leaves a keystore in a transient state.
        #[test]
        fn random_sequences_respect_the_table(ops in proptest::collection::vec(op(), 0..40)) {
            let mut ks = keystore(ConnectionState::Disconnected);
            for (t, op) in ops.into_iter().enumerate() {
                let before = ks.clone();
                let now = t as i64 + 1;
                match op {
                    Op::Connect(works) => match ks.begin_connect(now) {
                        Ok(ConnectStart::AlreadyConnected) => {
                            prop_assert_eq!(before.state, ConnectionState::Connected);
                            prop_assert_eq!(&ks, &before);
                        }
                        Ok(ConnectStart::Begin) => {
                            prop_assert!(matches!(before.state, ConnectionState::Disconnected | ConnectionState::Connecting));
                            let outcome = if works { Ok(()) } else {
                                Err(ConnectionError { code: ConnectionErrorCode::InternalError, message: "x".into() })
                            };
                            ks.finish_connect(outcome, now);
                            prop_assert_eq!(ks.state, if works { ConnectionState::Connected } else { ConnectionState::Failed });
                        }
                        Err(e) => {
                            prop_assert!(matches!(before.state, ConnectionState::Failed | ConnectionState::Disconnecting));
                            let is_state_error = matches!(e, DomainError::KeystoreState { .. });
                            prop_assert!(is_state_error);
                            prop_assert_eq!(&ks, &before);
                        }
                    },
                    Op::Disconnect => match ks.begin_disconnect(now) {
                        Ok(()) => {
                            ks.finish_disconnect(now);
                            prop_assert_eq!(ks.state, ConnectionState::Disconnected);
                            prop_assert!(ks.error.is_none());
                        }
                        Err(_) => {
                            prop_assert_eq!(before.state, ConnectionState::Disconnected);
                            prop_assert_eq!(&ks, &before);
                        }
                    },
                    Op::Delete => {
                        let r = ks.check_delete(&[]);
                        prop_assert_eq!(r.is_ok(), ks.state == ConnectionState::Disconnected);
                        prop_assert!(ks.check_delete(&["key_1".to_string()]).is_err());
                    }
                    Op::Rename => {
                        ks.update(Some(format!("n{t}")), None, now).unwrap();
                        prop_assert_eq!(ks.state, before.state);
                    }
                }
                prop_assert!(!matches!(ks.state, ConnectionState::Connecting | ConnectionState::Disconnecting));
                prop_assert_eq!(ks.error.is_some(), ks.state == ConnectionState::Failed);
            }
        }
    }
}
