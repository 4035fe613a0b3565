//! Conversions between keyorch.v1 messages and domain records (no rules here beyond
//! decoding: enum values, required fields).

use prost_types::Timestamp;
use tonic::Status;

use super::status::invalid;
use crate::domain::{
    parse_service_account_key, AzureEnvironment, AzureKeyVaultConfig, AzureKeyVaultPatch,
    ConnectionErrorCode, ConnectionState, Family, GoogleCloudKmsConfig, GoogleCloudKmsPatch,
    HealthStatus, IbmKmsConfig, IbmKmsPatch, InstanceState, Key, KeySpec, KeyState, Keystore,
    KeystoreConfig, KeystoreType, Millis, Page, SigningAlgorithm, TokenRef, Vault,
    DEFAULT_IBM_IAM_ENDPOINT, DEFAULT_IBM_KEY_RING,
};
use crate::proto::v1 as pb;
use crate::service::{AwsKmsPatch, KeyStatus, Pkcs11Patch, TargetStatus, XksPatch};

pub fn ts(ms: Millis) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

fn opt_ts(ms: Option<Millis>) -> Option<Timestamp> {
    ms.and_then(ts)
}

pub fn page(p: Option<pb::PageRequest>) -> Result<Page, Status> {
    let p = p.unwrap_or_default();
    Page::parse(p.page_size, &p.page_token).map_err(|e| super::status::to_status(e.into()))
}

/// Decodes a proto enum field: unknown numbers and (unless `allow_unspecified`) 0 are rejected.
fn enum_value<E: TryFrom<i32>>(
    field: &str,
    raw: i32,
    allow_unspecified: bool,
) -> Result<Option<E>, Status> {
    if raw == 0 {
        return if allow_unspecified {
            Ok(None)
        } else {
            Err(invalid(field, "is required"))
        };
    }
    E::try_from(raw)
        .map(Some)
        .map_err(|_| invalid(field, format!("unknown value {raw}")))
}

pub fn required_enum<E: TryFrom<i32>>(field: &str, raw: i32) -> Result<E, Status> {
    enum_value(field, raw, false)?.ok_or_else(|| invalid(field, "is required"))
}

pub fn optional_enum<E: TryFrom<i32>>(field: &str, raw: i32) -> Result<Option<E>, Status> {
    enum_value(field, raw, true)
}

pub fn vault(v: &Vault) -> pb::Vault {
    pb::Vault {
        id: v.id.clone(),
        name: v.name.clone(),
        description: v.description.clone(),
        created_at: ts(v.created_at),
        updated_at: ts(v.updated_at),
    }
}

pub fn keystore_type(t: pb::KeystoreType) -> KeystoreType {
    match t {
        pb::KeystoreType::Unspecified | pb::KeystoreType::Internal => KeystoreType::Internal,
        pb::KeystoreType::Pkcs11 => KeystoreType::Pkcs11,
        pb::KeystoreType::AwsKms => KeystoreType::AwsKms,
        pb::KeystoreType::AzureKeyVault => KeystoreType::AzureKeyVault,
        pb::KeystoreType::GoogleCloudKms => KeystoreType::GoogleCloudKms,
        pb::KeystoreType::IbmKeyProtect => KeystoreType::IbmKeyProtect,
        pb::KeystoreType::Kmip => KeystoreType::Kmip,
        pb::KeystoreType::Xks => KeystoreType::Xks,
        pb::KeystoreType::IbmHpcs => KeystoreType::IbmHpcs,
    }
}

fn keystore_type_pb(t: KeystoreType) -> pb::KeystoreType {
    match t {
        KeystoreType::Internal => pb::KeystoreType::Internal,
        KeystoreType::Pkcs11 => pb::KeystoreType::Pkcs11,
        KeystoreType::AwsKms => pb::KeystoreType::AwsKms,
        KeystoreType::AzureKeyVault => pb::KeystoreType::AzureKeyVault,
        KeystoreType::GoogleCloudKms => pb::KeystoreType::GoogleCloudKms,
        KeystoreType::IbmKeyProtect => pb::KeystoreType::IbmKeyProtect,
        KeystoreType::Kmip => pb::KeystoreType::Kmip,
        KeystoreType::Xks => pb::KeystoreType::Xks,
        KeystoreType::IbmHpcs => pb::KeystoreType::IbmHpcs,
    }
}

pub fn connection_state(s: pb::ConnectionState) -> ConnectionState {
    match s {
        pb::ConnectionState::Unspecified | pb::ConnectionState::Connected => {
            ConnectionState::Connected
        }
        pb::ConnectionState::Connecting => ConnectionState::Connecting,
        pb::ConnectionState::Disconnecting => ConnectionState::Disconnecting,
        pb::ConnectionState::Disconnected => ConnectionState::Disconnected,
        pb::ConnectionState::Failed => ConnectionState::Failed,
    }
}

fn connection_state_pb(s: ConnectionState) -> pb::ConnectionState {
    match s {
        ConnectionState::Connected => pb::ConnectionState::Connected,
        ConnectionState::Connecting => pb::ConnectionState::Connecting,
        ConnectionState::Disconnecting => pb::ConnectionState::Disconnecting,
        ConnectionState::Disconnected => pb::ConnectionState::Disconnected,
        ConnectionState::Failed => pb::ConnectionState::Failed,
    }
}

pub fn error_code_pb(c: ConnectionErrorCode) -> pb::ConnectionErrorCode {
    match c {
        ConnectionErrorCode::InvalidCredentials => pb::ConnectionErrorCode::InvalidCredentials,
        ConnectionErrorCode::InsufficientPermissions => {
            pb::ConnectionErrorCode::InsufficientPermissions
        }
        ConnectionErrorCode::NetworkErrors => pb::ConnectionErrorCode::NetworkErrors,
        ConnectionErrorCode::TimedOut => pb::ConnectionErrorCode::TimedOut,
        ConnectionErrorCode::TargetNotFound => pb::ConnectionErrorCode::TargetNotFound,
        ConnectionErrorCode::ImportKekMissing => pb::ConnectionErrorCode::ImportKekMissing,
        ConnectionErrorCode::InvalidConfiguration => pb::ConnectionErrorCode::InvalidConfiguration,
        ConnectionErrorCode::InternalError => pb::ConnectionErrorCode::InternalError,
        ConnectionErrorCode::XksProxyAccessDenied => pb::ConnectionErrorCode::XksProxyAccessDenied,
        ConnectionErrorCode::XksProxyInvalidConfiguration => {
            pb::ConnectionErrorCode::XksProxyInvalidConfiguration
        }
        ConnectionErrorCode::XksProxyInvalidResponse => {
            pb::ConnectionErrorCode::XksProxyInvalidResponse
        }
        ConnectionErrorCode::XksProxyInvalidTlsConfiguration => {
            pb::ConnectionErrorCode::XksProxyInvalidTlsConfiguration
        }
        ConnectionErrorCode::XksProxyNotReachable => pb::ConnectionErrorCode::XksProxyNotReachable,
        ConnectionErrorCode::XksProxyTimedOut => pb::ConnectionErrorCode::XksProxyTimedOut,
    }
}

pub fn keystore(k: &Keystore) -> pb::Keystore {
    pb::Keystore {
        id: k.id.clone(),
        vault_id: k.vault_id.clone(),
        name: k.name.clone(),
        description: k.description.clone(),
        r#type: keystore_type_pb(k.keystore_type()) as i32,
        connection_state: connection_state_pb(k.state) as i32,
        connection_error_code: k
            .error
            .as_ref()
            .map(|e| error_code_pb(e.code) as i32)
            .unwrap_or(0),
        connection_error_message: k
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
        created_at: ts(k.created_at),
        updated_at: ts(k.updated_at),
        health: k.health.as_ref().map(|h| pb::KeystoreHealth {
            status: match h.status {
                HealthStatus::Ok => pb::HealthStatus::Ok,
                HealthStatus::NotResponding => pb::HealthStatus::NotResponding,
                HealthStatus::ConfigurationError => pb::HealthStatus::ConfigurationError,
            } as i32,
            message: h.message.clone(),
            last_heartbeat: ts(h.last_heartbeat),
        }),
        has_credentials: k.credentials.is_some(),
        config: Some(match &k.config {
            KeystoreConfig::Internal => {
                pb::keystore::Config::Internal(pb::InternalKeystoreConfig {})
            }
            KeystoreConfig::Pkcs11 { module_path, token } => {
                pb::keystore::Config::Pkcs11(pkcs11_config_pb(module_path, token))
            }
            KeystoreConfig::AwsKms {
                region,
                endpoint_url,
                access_key_id,
                account_id,
            } => pb::keystore::Config::AwsKms(pb::AwsKmsKeystoreConfig {
                region: region.clone(),
                endpoint_url: endpoint_url.clone().unwrap_or_default(),
                access_key_id: access_key_id.clone(),
                account_id: account_id.clone().unwrap_or_default(),
            }),
            KeystoreConfig::Xks {
                uri_endpoint,
                uri_path,
                ca_cert_pem,
                client_cert_pem,
                access_key_id,
                signing_region,
            } => pb::keystore::Config::Xks(pb::XksKeystoreConfig {
                signing_region: signing_region.clone().unwrap_or_default(),
                uri_endpoint: uri_endpoint.clone(),
                uri_path: uri_path.clone(),
                ca_cert_pem: ca_cert_pem.clone().unwrap_or_default(),
                client_cert_pem: client_cert_pem.clone().unwrap_or_default(),
                access_key_id: access_key_id.clone(),
            }),
            KeystoreConfig::IbmKeyProtect(c) | KeystoreConfig::IbmHpcs(c) => {
                pb::keystore::Config::IbmKms(pb::IbmKmsKeystoreConfig {
                    instance_id: c.instance_id.clone(),
                    key_ring_id: c.key_ring_id.clone(),
                    api_endpoint: c.api_endpoint.clone(),
                    iam_endpoint: c.iam_endpoint.clone(),
                    ca_cert_pem: c.ca_cert_pem.clone().unwrap_or_default(),
                })
            }
            KeystoreConfig::GoogleCloudKms(c) => {
                pb::keystore::Config::GoogleCloudKms(pb::GoogleCloudKmsKeystoreConfig {
                    location: c.location.clone(),
                    key_ring: c.key_ring.clone(),
                    endpoint: c.endpoint.clone().unwrap_or_default(),
                    project_id: c.project_id.clone(),
                    private_key_id: c.private_key_id.clone(),
                    client_email: c.client_email.clone(),
                })
            }
            KeystoreConfig::AzureKeyVault(c) => {
                pb::keystore::Config::AzureKeyVault(pb::AzureKeyVaultKeystoreConfig {
                    vault_name: c.vault_name.clone(),
                    resource_group: c.resource_group.clone(),
                    location: c.location.clone(),
                    environment: c.environment.name().to_string(),
                    tenant_id: c.tenant_id.clone(),
                    client_id: c.client_id.clone(),
                    subscription_id: c.subscription_id.clone(),
                    vault_url: c.vault_url.clone().unwrap_or_default(),
                    authority_host: c.authority_host.clone().unwrap_or_default(),
                    ca_cert_pem: c.ca_cert_pem.clone().unwrap_or_default(),
                })
            }
        }),
    }
}

pub fn family(a: pb::KeyAlgorithm) -> Family {
    match a {
        pb::KeyAlgorithm::Unspecified | pb::KeyAlgorithm::Aes => Family::Aes,
        pb::KeyAlgorithm::Rsa => Family::Rsa,
        pb::KeyAlgorithm::Ec => Family::Ec,
        pb::KeyAlgorithm::HmacSha256 => Family::HmacSha256,
    }
}

fn family_pb(f: Family) -> pb::KeyAlgorithm {
    match f {
        Family::Aes => pb::KeyAlgorithm::Aes,
        Family::Rsa => pb::KeyAlgorithm::Rsa,
        Family::Ec => pb::KeyAlgorithm::Ec,
        Family::HmacSha256 => pb::KeyAlgorithm::HmacSha256,
    }
}

pub fn key_state(s: pb::KeyState) -> KeyState {
    match s {
        pb::KeyState::Unspecified | pb::KeyState::PreActive => KeyState::PreActive,
        pb::KeyState::Active => KeyState::Active,
        pb::KeyState::Deactivated => KeyState::Deactivated,
        pb::KeyState::Destroyed => KeyState::Destroyed,
        pb::KeyState::Compromised => KeyState::Compromised,
        pb::KeyState::DestroyedCompromised => KeyState::DestroyedCompromised,
    }
}

fn key_state_pb(s: KeyState) -> pb::KeyState {
    match s {
        KeyState::PreActive => pb::KeyState::PreActive,
        KeyState::Active => pb::KeyState::Active,
        KeyState::Deactivated => pb::KeyState::Deactivated,
        KeyState::Destroyed => pb::KeyState::Destroyed,
        KeyState::Compromised => pb::KeyState::Compromised,
        KeyState::DestroyedCompromised => pb::KeyState::DestroyedCompromised,
    }
}

fn instance_state_pb(s: InstanceState) -> pb::InstanceState {
    match s {
        InstanceState::NotInstalled => pb::InstanceState::NotInstalled,
        InstanceState::Installing => pb::InstanceState::Installing,
        InstanceState::Installed => pb::InstanceState::Installed,
        InstanceState::Uninstalling => pb::InstanceState::Uninstalling,
        InstanceState::Failed => pb::InstanceState::Failed,
        InstanceState::Unavailable => pb::InstanceState::Unavailable,
        InstanceState::Disabled => pb::InstanceState::Disabled,
    }
}

pub fn key(k: &Key) -> pb::Key {
    let spec: KeySpec = k.spec;
    pb::Key {
        id: k.id.clone(),
        vault_id: k.vault_id.clone(),
        name: k.name.clone(),
        description: k.description.clone(),
        algorithm: family_pb(spec.family()) as i32,
        key_size_bits: spec.bits(),
        state: key_state_pb(k.state) as i32,
        target_keystore_ids: k.targets.clone(),
        instances: k
            .instances
            .iter()
            .map(|i| pb::KeyInstance {
                keystore_id: i.keystore_id.clone(),
                state: instance_state_pb(i.state) as i32,
                remote_ref: i.remote_ref.clone(),
                remote_id: i.remote_id.clone(),
                error: i.error.clone(),
                updated_at: ts(i.updated_at),
            })
            .collect(),
        key_check_value: k.kcv.clone(),
        external_key_id: k
            .external_ref()
            .map(|(_, id)| id.to_string())
            .unwrap_or_default(),
        tags: k.tags.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
        created_at: ts(k.created_at),
        updated_at: ts(k.updated_at),
        activated_at: opt_ts(k.activated_at),
        deactivated_at: opt_ts(k.deactivated_at),
        destroyed_at: opt_ts(k.destroyed_at),
        compromised_at: opt_ts(k.compromised_at),
    }
}

pub fn signing_algorithm(a: pb::SigningAlgorithm) -> SigningAlgorithm {
    match a {
        pb::SigningAlgorithm::Unspecified | pb::SigningAlgorithm::RsassaPssSha256 => {
            SigningAlgorithm::RsaPssSha256
        }
        pb::SigningAlgorithm::RsassaPssSha384 => SigningAlgorithm::RsaPssSha384,
        pb::SigningAlgorithm::RsassaPssSha512 => SigningAlgorithm::RsaPssSha512,
        pb::SigningAlgorithm::RsassaPkcs1V15Sha256 => SigningAlgorithm::RsaPkcs1Sha256,
        pb::SigningAlgorithm::RsassaPkcs1V15Sha384 => SigningAlgorithm::RsaPkcs1Sha384,
        pb::SigningAlgorithm::RsassaPkcs1V15Sha512 => SigningAlgorithm::RsaPkcs1Sha512,
        pb::SigningAlgorithm::EcdsaSha256 => SigningAlgorithm::EcdsaSha256,
        pb::SigningAlgorithm::EcdsaSha384 => SigningAlgorithm::EcdsaSha384,
    }
}

pub fn signing_algorithm_pb(a: SigningAlgorithm) -> pb::SigningAlgorithm {
    match a {
        SigningAlgorithm::RsaPssSha256 => pb::SigningAlgorithm::RsassaPssSha256,
        SigningAlgorithm::RsaPssSha384 => pb::SigningAlgorithm::RsassaPssSha384,
        SigningAlgorithm::RsaPssSha512 => pb::SigningAlgorithm::RsassaPssSha512,
        SigningAlgorithm::RsaPkcs1Sha256 => pb::SigningAlgorithm::RsassaPkcs1V15Sha256,
        SigningAlgorithm::RsaPkcs1Sha384 => pb::SigningAlgorithm::RsassaPkcs1V15Sha384,
        SigningAlgorithm::RsaPkcs1Sha512 => pb::SigningAlgorithm::RsassaPkcs1V15Sha512,
        SigningAlgorithm::EcdsaSha256 => pb::SigningAlgorithm::EcdsaSha256,
        SigningAlgorithm::EcdsaSha384 => pb::SigningAlgorithm::EcdsaSha384,
    }
}

fn pkcs11_config_pb(module_path: &str, token: &TokenRef) -> pb::Pkcs11KeystoreConfig {
    let (token_label, token_serial) = match token {
        TokenRef::Label(l) => (l.clone(), String::new()),
        TokenRef::Serial(s) => (String::new(), s.clone()),
    };
    pb::Pkcs11KeystoreConfig {
        module_path: module_path.to_string(),
        token_label,
        token_serial,
    }
}

/// A pkcs11 configuration from the API: exactly one of token_label and token_serial.
pub fn pkcs11_config(c: &pb::Pkcs11KeystoreConfig) -> Result<KeystoreConfig, Status> {
    let token = match (c.token_label.is_empty(), c.token_serial.is_empty()) {
        (false, true) => TokenRef::Label(c.token_label.clone()),
        (true, false) => TokenRef::Serial(c.token_serial.clone()),
        _ => {
            return Err(invalid(
                "pkcs11.token_label",
                "give exactly one of token_label and token_serial",
            ))
        }
    };
    Ok(KeystoreConfig::Pkcs11 {
        module_path: c.module_path.clone(),
        token,
    })
}

/// An aws_kms configuration from the API. `account_id` is output only.
pub fn aws_kms_config(c: &pb::AwsKmsKeystoreConfig) -> Result<KeystoreConfig, Status> {
    if !c.account_id.is_empty() {
        return Err(invalid(
            "aws_kms.account_id",
            "is output only: it is learnt at connect",
        ));
    }
    Ok(KeystoreConfig::AwsKms {
        region: c.region.clone(),
        endpoint_url: Some(c.endpoint_url.clone()).filter(|u| !u.is_empty()),
        access_key_id: c.access_key_id.clone(),
        account_id: None,
    })
}

/// An xks configuration from the API. `access_key_id` is output only: it comes from the
/// credentials (`credentials_key_id`), and may be sent only equal to it.
pub fn xks_config(
    c: &pb::XksKeystoreConfig,
    credentials_key_id: Option<&str>,
) -> Result<KeystoreConfig, Status> {
    if !c.access_key_id.is_empty() && credentials_key_id != Some(c.access_key_id.as_str()) {
        return Err(invalid(
            "xks.access_key_id",
            "is output only: it is shown back from xks_credentials.access_key_id; leave it empty",
        ));
    }
    Ok(KeystoreConfig::Xks {
        uri_endpoint: c.uri_endpoint.clone(),
        uri_path: c.uri_path.clone(),
        ca_cert_pem: Some(c.ca_cert_pem.clone()).filter(|p| !p.is_empty()),
        client_cert_pem: Some(c.client_cert_pem.clone()).filter(|p| !p.is_empty()),
        access_key_id: credentials_key_id.unwrap_or_default().to_string(),
        signing_region: Some(c.signing_region.clone()).filter(|r| !r.is_empty()),
    })
}

/// An xks update: empty fields keep the stored values; the clear flags drop the CA or the
/// client certificate.
pub fn xks_patch(
    c: &pb::XksKeystoreConfig,
    clear_ca_cert: bool,
    clear_client_cert: bool,
) -> Result<XksPatch, Status> {
    let pem = |field: &str, value: &str, clear: bool| match (value.is_empty(), clear) {
        (true, false) => Ok(None),
        (true, true) => Ok(Some(None)),
        (false, false) => Ok(Some(Some(value.to_string()))),
        (false, true) => Err(invalid(
            field,
            "give either a new value or the clear flag, not both",
        )),
    };
    Ok(XksPatch {
        uri_endpoint: Some(c.uri_endpoint.clone()).filter(|v| !v.is_empty()),
        uri_path: Some(c.uri_path.clone()).filter(|v| !v.is_empty()),
        ca_cert_pem: pem("xks.ca_cert_pem", &c.ca_cert_pem, clear_ca_cert)?,
        client_cert_pem: pem("xks.client_cert_pem", &c.client_cert_pem, clear_client_cert)?,
        access_key_id: Some(c.access_key_id.clone()).filter(|v| !v.is_empty()),
        signing_region: Some(c.signing_region.clone()).filter(|v| !v.is_empty()),
    })
}

/// An ibm_key_protect or ibm_hpcs configuration from the API (`t` says which; the same
/// message serves both), with the seed's defaults for an empty key ring and IAM endpoint.
pub fn ibm_kms_config(c: &pb::IbmKmsKeystoreConfig, t: KeystoreType) -> KeystoreConfig {
    let config = IbmKmsConfig {
        instance_id: c.instance_id.clone(),
        key_ring_id: Some(c.key_ring_id.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_IBM_KEY_RING.to_string()),
        api_endpoint: c.api_endpoint.clone(),
        iam_endpoint: Some(c.iam_endpoint.clone())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_IBM_IAM_ENDPOINT.to_string()),
        ca_cert_pem: Some(c.ca_cert_pem.clone()).filter(|p| !p.is_empty()),
    };
    if t == KeystoreType::IbmHpcs {
        KeystoreConfig::IbmHpcs(config)
    } else {
        KeystoreConfig::IbmKeyProtect(config)
    }
}

/// An azure_key_vault configuration from the API; an empty environment is AzureCloud.
pub fn azure_key_vault_config(
    c: &pb::AzureKeyVaultKeystoreConfig,
) -> Result<KeystoreConfig, Status> {
    let environment = if c.environment.is_empty() {
        AzureEnvironment::AzureCloud
    } else {
        azure_environment(&c.environment)?
    };
    let some = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
    Ok(KeystoreConfig::AzureKeyVault(AzureKeyVaultConfig {
        vault_name: c.vault_name.clone(),
        resource_group: c.resource_group.clone(),
        location: c.location.clone(),
        environment,
        tenant_id: c.tenant_id.clone(),
        client_id: c.client_id.clone(),
        subscription_id: c.subscription_id.clone(),
        vault_url: some(&c.vault_url),
        authority_host: some(&c.authority_host),
        ca_cert_pem: some(&c.ca_cert_pem),
    }))
}

/// A google_cloud_kms configuration from the API, with the project, key id and e-mail read
/// from the key file `key_json` (empty without one: refused by the configuration's rules).
/// The output-only fields must be empty or equal to the key file's.
pub fn google_cloud_kms_config(
    c: &pb::GoogleCloudKmsKeystoreConfig,
    key_json: Option<&str>,
) -> Result<KeystoreConfig, Status> {
    let info = key_json
        .map(|j| {
            parse_service_account_key("google_cloud_kms_credentials.service_account_key_json", j)
        })
        .transpose()
        .map_err(|e| super::status::to_status(e.into()))?;
    let (project_id, private_key_id, client_email) = info
        .map(|i| (i.project_id, i.private_key_id, i.client_email))
        .unwrap_or_default();
    google_output_only(c, &project_id, &private_key_id, &client_email)?;
    Ok(KeystoreConfig::GoogleCloudKms(GoogleCloudKmsConfig {
        project_id,
        private_key_id,
        client_email,
        location: c.location.clone(),
        key_ring: c.key_ring.clone(),
        endpoint: Some(c.endpoint.clone()).filter(|e| !e.is_empty()),
    }))
}

/// Refuses output-only google_cloud_kms fields that differ from the key file's.
fn google_output_only(
    c: &pb::GoogleCloudKmsKeystoreConfig,
    project_id: &str,
    private_key_id: &str,
    client_email: &str,
) -> Result<(), Status> {
    for (field, given, actual) in [
        ("google_cloud_kms.project_id", &c.project_id, project_id),
        (
            "google_cloud_kms.private_key_id",
            &c.private_key_id,
            private_key_id,
        ),
        (
            "google_cloud_kms.client_email",
            &c.client_email,
            client_email,
        ),
    ] {
        if !given.is_empty() && given != actual {
            return Err(invalid(
                field,
                "is output only: it is read from the service account key file; leave it empty",
            ));
        }
    }
    Ok(())
}

/// A google_cloud_kms update: empty fields keep the stored values; the output-only fields
/// must be empty.
pub fn google_cloud_kms_patch(
    c: &pb::GoogleCloudKmsKeystoreConfig,
    clear_endpoint: bool,
) -> Result<GoogleCloudKmsPatch, Status> {
    google_output_only(c, "", "", "")?;
    let endpoint = match (c.endpoint.is_empty(), clear_endpoint) {
        (true, false) => None,
        (true, true) => Some(None),
        (false, false) => Some(Some(c.endpoint.clone())),
        (false, true) => {
            return Err(invalid(
                "google_cloud_kms.endpoint",
                "give either a new value or the clear flag, not both",
            ))
        }
    };
    let some = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
    Ok(GoogleCloudKmsPatch {
        location: some(&c.location),
        key_ring: some(&c.key_ring),
        endpoint,
    })
}

fn azure_environment(name: &str) -> Result<AzureEnvironment, Status> {
    AzureEnvironment::parse("azure_key_vault.environment", name)
        .map_err(|e| super::status::to_status(e.into()))
}

/// An azure_key_vault update: empty fields keep the stored values; `clear_ca_cert` goes back
/// to the system's roots, `clear_endpoints` to the environment's vault URL and login
/// endpoint.
pub fn azure_key_vault_patch(
    c: &pb::AzureKeyVaultKeystoreConfig,
    clear_ca_cert: bool,
    clear_endpoints: bool,
) -> Result<AzureKeyVaultPatch, Status> {
    let clearable = |field: &str, v: &str, clear: bool| match (v.is_empty(), clear) {
        (true, false) => Ok(None),
        (true, true) => Ok(Some(None)),
        (false, false) => Ok(Some(Some(v.to_string()))),
        (false, true) => Err(invalid(
            field,
            "give either a new value or the clear flag, not both",
        )),
    };
    let some = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
    Ok(AzureKeyVaultPatch {
        vault_name: some(&c.vault_name),
        resource_group: some(&c.resource_group),
        location: some(&c.location),
        environment: some(&c.environment)
            .map(|e| azure_environment(&e))
            .transpose()?,
        tenant_id: some(&c.tenant_id),
        client_id: some(&c.client_id),
        subscription_id: some(&c.subscription_id),
        vault_url: clearable("azure_key_vault.vault_url", &c.vault_url, clear_endpoints)?,
        authority_host: clearable(
            "azure_key_vault.authority_host",
            &c.authority_host,
            clear_endpoints,
        )?,
        ca_cert_pem: clearable("azure_key_vault.ca_cert_pem", &c.ca_cert_pem, clear_ca_cert)?,
    })
}

/// An ibm_key_protect / ibm_hpcs update: empty fields keep the stored values.
pub fn ibm_kms_patch(
    c: &pb::IbmKmsKeystoreConfig,
    clear_ca_cert: bool,
) -> Result<IbmKmsPatch, Status> {
    let ca_cert_pem = match (c.ca_cert_pem.is_empty(), clear_ca_cert) {
        (true, false) => None,
        (true, true) => Some(None),
        (false, false) => Some(Some(c.ca_cert_pem.clone())),
        (false, true) => {
            return Err(invalid(
                "ibm_kms.ca_cert_pem",
                "give either a new value or the clear flag, not both",
            ))
        }
    };
    let some = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
    Ok(IbmKmsPatch {
        instance_id: some(&c.instance_id),
        key_ring_id: some(&c.key_ring_id),
        api_endpoint: some(&c.api_endpoint),
        iam_endpoint: some(&c.iam_endpoint),
        ca_cert_pem,
    })
}

/// An aws_kms update: empty fields keep the stored values.
pub fn aws_kms_patch(c: &pb::AwsKmsKeystoreConfig, clear_endpoint_url: bool) -> AwsKmsPatch {
    let endpoint_url = if clear_endpoint_url {
        Some(None)
    } else {
        Some(c.endpoint_url.clone())
            .filter(|u| !u.is_empty())
            .map(Some)
    };
    AwsKmsPatch {
        region: Some(c.region.clone()).filter(|r| !r.is_empty()),
        endpoint_url,
        access_key_id: Some(c.access_key_id.clone()).filter(|a| !a.is_empty()),
        account_id: Some(c.account_id.clone()).filter(|a| !a.is_empty()),
    }
}

/// A pkcs11 update: empty fields keep the stored values; at most one token selector.
pub fn pkcs11_patch(c: &pb::Pkcs11KeystoreConfig) -> Result<Pkcs11Patch, Status> {
    let token = match (c.token_label.is_empty(), c.token_serial.is_empty()) {
        (true, true) => None,
        (false, true) => Some(TokenRef::Label(c.token_label.clone())),
        (true, false) => Some(TokenRef::Serial(c.token_serial.clone())),
        (false, false) => {
            return Err(invalid(
                "pkcs11.token_label",
                "give at most one of token_label and token_serial",
            ))
        }
    };
    Ok(Pkcs11Patch {
        module_path: Some(c.module_path.clone()).filter(|m| !m.is_empty()),
        token,
    })
}

pub fn target_status_pb(s: TargetStatus) -> pb::TargetKeyStatus {
    match s {
        TargetStatus::Active => pb::TargetKeyStatus::Active,
        TargetStatus::NotActive => pb::TargetKeyStatus::NotActive,
        TargetStatus::NotPresent => pb::TargetKeyStatus::NotPresent,
        TargetStatus::WrongKey => pb::TargetKeyStatus::WrongKey,
        TargetStatus::Error => pb::TargetKeyStatus::Error,
    }
}

pub fn key_status(key_id: &str, statuses: &[KeyStatus]) -> pb::KeyStatusResponse {
    pb::KeyStatusResponse {
        key_id: key_id.to_string(),
        keystores: statuses
            .iter()
            .map(|s| pb::KeyStatusInKeystore {
                keystore_id: s.keystore_id.clone(),
                status: target_status_pb(s.status) as i32,
                sync: if s.in_sync {
                    pb::SyncStatus::Ok
                } else {
                    pb::SyncStatus::OutOfSync
                } as i32,
                target_key_check_value: s.target_kcv.clone(),
                message: s.message.clone(),
            })
            .collect(),
    }
}
