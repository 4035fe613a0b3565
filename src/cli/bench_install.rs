//! `keyorch bench install`: InstallKey of a key into a pkcs11, ibm_hpcs, ibm_key_protect or
//! azure_key_vault keystore through keyorchd versus the same wrap (and, for pkcs11, the
//! unwraps) through cryptoki in process, round by round.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::bench::{read_pin, DEFAULT_MODULE, DEFAULT_TOKEN_LABEL};
use super::bench_fixture::Fixture;
use super::bench_raw_install::{PrivateKind, RawInstall, RawWrap, TokenAccess};
use super::bench_stats::{median_ratio, micros, millis, percentile, throughput_ratio, Summary};
use super::keystore::{read_pem, read_secret};
use super::output::{self, short_name, OutputFormat, Table};
use super::{CliError, Context, Outcome};
use crate::client::Clients;
use crate::hsm::TokenSelector;
use crate::proto::v1::{
    create_keystore_request, AzureKeyVaultCredentials, AzureKeyVaultKeystoreConfig,
    CreateKeyRequest, CreateKeystoreRequest, GetKeyRequest, IbmKmsCredentials,
    IbmKmsKeystoreConfig, InstallKeyRequest, InstanceState, InternalKeystoreConfig, KeyAlgorithm,
    KeyIdRequest, KeyState, KeystoreType, Pkcs11Credentials, Pkcs11KeystoreConfig,
};

/// `--keystore-type`: the keystore the bench installs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchKeystoreType {
    /// A second token through its PKCS#11 module (--target-*).
    Pkcs11,
    /// An IBM Hyper Protect Crypto Services instance (--instance-id, --api-endpoint, ...).
    IbmHpcs,
    /// An IBM Key Protect instance (installs need an HSM with RSA-OAEP SHA-256; SoftHSM2 has none).
    IbmKeyProtect,
    /// An Azure key vault (--vault-name, --tenant-id, ...).
    AzureKeyVault,
}

impl BenchKeystoreType {
    fn api(self) -> KeystoreType {
        match self {
            BenchKeystoreType::Pkcs11 => KeystoreType::Pkcs11,
            BenchKeystoreType::IbmHpcs => KeystoreType::IbmHpcs,
            BenchKeystoreType::IbmKeyProtect => KeystoreType::IbmKeyProtect,
            BenchKeystoreType::AzureKeyVault => KeystoreType::AzureKeyVault,
        }
    }

    /// The API's lowercase name (`ibm_hpcs`).
    fn name(self) -> String {
        short_name::<KeystoreType>(self.api() as i32).to_lowercase()
    }
}

/// `--key`: the managed key installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchKey {
    #[value(name = "aes-256")]
    Aes256,
    #[value(name = "rsa-2048")]
    Rsa2048,
    EcP256,
}

impl BenchKey {
    fn label(self) -> &'static str {
        match self {
            BenchKey::Aes256 => "AES-256",
            BenchKey::Rsa2048 => "RSA-2048",
            BenchKey::EcP256 => "EC P-256",
        }
    }

    fn algorithm(self) -> (KeyAlgorithm, u32) {
        match self {
            BenchKey::Aes256 => (KeyAlgorithm::Aes, 256),
            BenchKey::Rsa2048 => (KeyAlgorithm::Rsa, 2048),
            BenchKey::EcP256 => (KeyAlgorithm::Ec, 256),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Args)]
#[command(group(
    ArgGroup::new("target_token")
        .multiple(false)
        .args(["target_token_label", "target_token_serial"])
))]
pub struct BenchInstallArgs {
    /// Measured rounds: each installs once through keyorchd and once raw.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub count: u32,
    /// Unmeasured rounds before them.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 3,
        value_parser = clap::value_parser!(u32).range(0..=1000)
    )]
    pub warmup: u32,
    /// The type of the keystore installed into; each takes its own connection flags.
    #[arg(long, value_enum, default_value_t = BenchKeystoreType::Pkcs11)]
    pub keystore_type: BenchKeystoreType,
    /// The managed key: aes-256 for pkcs11 and the IBM types, rsa-2048 or ec-p256 for
    /// azure-key-vault (Azure key vaults import RSA and EC keys only) [default: aes-256;
    /// azure-key-vault: rsa-2048].
    #[arg(long, value_enum)]
    pub key: Option<BenchKey>,
    /// PKCS#11 module of the target token.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODULE, help_heading = "pkcs11 target")]
    pub target_module: PathBuf,
    /// The target token's label (or give --target-token-serial).
    #[arg(long, value_name = "LABEL", help_heading = "pkcs11 target")]
    pub target_token_label: Option<String>,
    /// The target token's serial number.
    #[arg(long, value_name = "SERIAL", help_heading = "pkcs11 target")]
    pub target_token_serial: Option<String>,
    /// File holding the target token's user PIN (sent to keyorchd as the keystore's
    /// credential; used by the baseline).
    #[arg(long, value_name = "FILE", help_heading = "pkcs11 target")]
    pub target_pin_file: Option<PathBuf>,
    /// The service instance ID.
    #[arg(
        long,
        value_name = "GUID",
        help_heading = "ibm-hpcs, ibm-key-protect target"
    )]
    pub instance_id: Option<String>,
    /// The key ring ID [default: default].
    #[arg(
        long,
        value_name = "ID",
        help_heading = "ibm-hpcs, ibm-key-protect target"
    )]
    pub key_ring_id: Option<String>,
    /// The KMS API endpoint, https://host[:port] (http:// only to loopback).
    #[arg(
        long,
        value_name = "URL",
        help_heading = "ibm-hpcs, ibm-key-protect target"
    )]
    pub api_endpoint: Option<String>,
    /// The IAM endpoint [default: https://iam.cloud.ibm.com].
    #[arg(
        long,
        value_name = "URL",
        help_heading = "ibm-hpcs, ibm-key-protect target"
    )]
    pub iam_endpoint: Option<String>,
    /// File holding the service ID API key (sent to keyorchd as the keystore's credential).
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "ibm-hpcs, ibm-key-protect target"
    )]
    pub api_key_file: Option<PathBuf>,
    /// The key vault's name.
    #[arg(long, value_name = "NAME", help_heading = "azure-key-vault target")]
    pub vault_name: Option<String>,
    /// The vault's resource group.
    #[arg(long, value_name = "NAME", help_heading = "azure-key-vault target")]
    pub resource_group: Option<String>,
    /// The vault's Azure region, e.g. westeurope.
    #[arg(long, value_name = "REGION", help_heading = "azure-key-vault target")]
    pub location: Option<String>,
    /// The Azure cloud [default: AzureCloud].
    #[arg(
        long,
        value_name = "CLOUD",
        value_parser = ["AzureCloud", "AzureChinaCloud", "AzureUSGovernment"],
        help_heading = "azure-key-vault target"
    )]
    pub environment: Option<String>,
    /// The vault's subscription (a GUID).
    #[arg(long, value_name = "GUID", help_heading = "azure-key-vault target")]
    pub subscription_id: Option<String>,
    /// The service principal's Microsoft Entra ID tenant (a GUID).
    #[arg(long, value_name = "GUID", help_heading = "azure-key-vault target")]
    pub tenant_id: Option<String>,
    /// The service principal's application (client) ID (a GUID).
    #[arg(long, value_name = "GUID", help_heading = "azure-key-vault target")]
    pub client_id: Option<String>,
    /// The vault's https://host[:port] (http:// only to loopback) [default: the environment's
    /// URL of --vault-name].
    #[arg(long, value_name = "URL", help_heading = "azure-key-vault target")]
    pub vault_url: Option<String>,
    /// The Entra ID login endpoint [default: the environment's].
    #[arg(long, value_name = "URL", help_heading = "azure-key-vault target")]
    pub authority_host: Option<String>,
    /// File holding the service principal's client secret (sent to keyorchd as the
    /// keystore's credential).
    #[arg(long, value_name = "FILE", help_heading = "azure-key-vault target")]
    pub client_secret_file: Option<PathBuf>,
    /// ibm-hpcs, ibm-key-protect, azure-key-vault: PEM file of the CA(s) to trust for the
    /// endpoints [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// keyorchd's dev-mode state folder (softhsm2.conf, user-pin).
    #[arg(long, value_name = "DIR", default_value_os_t = crate::paths::default_state_dir())]
    pub state_dir: PathBuf,
    /// PKCS#11 module of keyorchd's token, for the baseline.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODULE)]
    pub module: PathBuf,
    /// Label of keyorchd's token, for the baseline.
    #[arg(long, value_name = "LABEL", default_value = DEFAULT_TOKEN_LABEL)]
    pub token_label: String,
    /// File holding the user PIN of keyorchd's token [default: DIR/user-pin].
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Skip the raw PKCS#11 baseline.
    #[arg(long)]
    pub no_raw: bool,
}

impl BenchInstallArgs {
    fn target_token(&self) -> TokenSelector {
        match (&self.target_token_label, &self.target_token_serial) {
            (Some(label), _) => TokenSelector::Label(label.clone()),
            (None, Some(serial)) => TokenSelector::Serial(serial.clone()),
            // check() requires one of them for pkcs11.
            (None, None) => TokenSelector::Label(String::new()),
        }
    }

    /// The managed key: --key, or the type's default.
    pub fn key(&self) -> BenchKey {
        self.key.unwrap_or(match self.keystore_type {
            BenchKeystoreType::AzureKeyVault => BenchKey::Rsa2048,
            _ => BenchKey::Aes256,
        })
    }

    /// The baseline's wrap: keyorchd's for the keystore type and key.
    fn raw_wrap(&self) -> RawWrap {
        match self.keystore_type {
            BenchKeystoreType::Pkcs11 => RawWrap::Pkcs11,
            BenchKeystoreType::IbmHpcs => RawWrap::IbmHpcs,
            BenchKeystoreType::IbmKeyProtect => RawWrap::IbmKeyProtect,
            BenchKeystoreType::AzureKeyVault => RawWrap::Azure(match self.key() {
                BenchKey::EcP256 => PrivateKind::EcP256,
                _ => PrivateKind::Rsa2048,
            }),
        }
    }

    /// The connection flags given: name, given, and the types they are for.
    fn target_flags(&self) -> [(&'static str, bool, &'static [BenchKeystoreType]); 19] {
        use BenchKeystoreType::{AzureKeyVault, IbmHpcs, IbmKeyProtect, Pkcs11};
        const PKCS11: &[BenchKeystoreType] = &[Pkcs11];
        const IBM: &[BenchKeystoreType] = &[IbmHpcs, IbmKeyProtect];
        const AZURE: &[BenchKeystoreType] = &[AzureKeyVault];
        const CA: &[BenchKeystoreType] = &[IbmHpcs, IbmKeyProtect, AzureKeyVault];
        [
            (
                "--target-token-label",
                self.target_token_label.is_some(),
                PKCS11,
            ),
            (
                "--target-token-serial",
                self.target_token_serial.is_some(),
                PKCS11,
            ),
            ("--target-pin-file", self.target_pin_file.is_some(), PKCS11),
            ("--instance-id", self.instance_id.is_some(), IBM),
            ("--key-ring-id", self.key_ring_id.is_some(), IBM),
            ("--api-endpoint", self.api_endpoint.is_some(), IBM),
            ("--iam-endpoint", self.iam_endpoint.is_some(), IBM),
            ("--api-key-file", self.api_key_file.is_some(), IBM),
            ("--vault-name", self.vault_name.is_some(), AZURE),
            ("--resource-group", self.resource_group.is_some(), AZURE),
            ("--location", self.location.is_some(), AZURE),
            ("--environment", self.environment.is_some(), AZURE),
            ("--subscription-id", self.subscription_id.is_some(), AZURE),
            ("--tenant-id", self.tenant_id.is_some(), AZURE),
            ("--client-id", self.client_id.is_some(), AZURE),
            ("--vault-url", self.vault_url.is_some(), AZURE),
            ("--authority-host", self.authority_host.is_some(), AZURE),
            (
                "--client-secret-file",
                self.client_secret_file.is_some(),
                AZURE,
            ),
            ("--ca-cert", self.ca_cert.is_some(), CA),
        ]
    }

    /// Refuses connection flags of another keystore type, a missing required one, and a key
    /// the type does not import; before anything is read or created.
    pub fn check(&self) -> Result<(), CliError> {
        let t = self.keystore_type;
        let value = |t: BenchKeystoreType| {
            t.to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string())
        };
        for (flag, given, types) in self.target_flags() {
            if given && !types.contains(&t) {
                let names: Vec<String> = types.iter().map(|t| value(*t)).collect();
                return Err(CliError::Usage(format!(
                    "{flag} is for --keystore-type {}, not {}",
                    names.join(" or "),
                    value(t)
                )));
            }
        }
        let required: &[(&str, bool)] = match t {
            BenchKeystoreType::Pkcs11 => &[
                (
                    "--target-token-label or --target-token-serial",
                    self.target_token_label.is_some() || self.target_token_serial.is_some(),
                ),
                ("--target-pin-file", self.target_pin_file.is_some()),
            ],
            BenchKeystoreType::IbmHpcs | BenchKeystoreType::IbmKeyProtect => &[
                ("--instance-id", self.instance_id.is_some()),
                ("--api-endpoint", self.api_endpoint.is_some()),
                ("--api-key-file", self.api_key_file.is_some()),
            ],
            BenchKeystoreType::AzureKeyVault => &[
                ("--vault-name", self.vault_name.is_some()),
                ("--resource-group", self.resource_group.is_some()),
                ("--location", self.location.is_some()),
                ("--subscription-id", self.subscription_id.is_some()),
                ("--tenant-id", self.tenant_id.is_some()),
                ("--client-id", self.client_id.is_some()),
                ("--client-secret-file", self.client_secret_file.is_some()),
            ],
        };
        let missing: Vec<&str> = required
            .iter()
            .filter(|(_, given)| !given)
            .map(|(flag, _)| *flag)
            .collect();
        if !missing.is_empty() {
            return Err(CliError::Usage(format!(
                "--keystore-type {} needs {}",
                value(t),
                missing.join(", ")
            )));
        }
        let key = self.key();
        let fits = match t {
            BenchKeystoreType::AzureKeyVault => key != BenchKey::Aes256,
            _ => key == BenchKey::Aes256,
        };
        if !fits {
            let takes = match t {
                BenchKeystoreType::AzureKeyVault => {
                    "rsa-2048 or ec-p256 (Azure key vaults import RSA and EC keys only)"
                }
                _ => "aes-256",
            };
            return Err(CliError::Usage(format!(
                "--keystore-type {} installs --key {takes}",
                value(t)
            )));
        }
        Ok(())
    }

    /// Where the bench installs, for the report's first line.
    fn target_description(&self) -> String {
        let t = self.keystore_type.name();
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        match self.keystore_type {
            BenchKeystoreType::Pkcs11 => format!("the pkcs11 token {}", self.target_token()),
            BenchKeystoreType::IbmHpcs | BenchKeystoreType::IbmKeyProtect => format!(
                "the {t} instance {} at {}",
                text(&self.instance_id),
                text(&self.api_endpoint)
            ),
            BenchKeystoreType::AzureKeyVault => format!(
                "the {t} vault {}{}",
                text(&self.vault_name),
                self.vault_url
                    .as_ref()
                    .map_or_else(String::new, |u| format!(" at {u}"))
            ),
        }
    }

    /// What the raw side does, for the report's last line.
    fn raw_description(&self) -> &'static str {
        match self.raw_wrap() {
            RawWrap::Pkcs11 => {
                "install: keyorchd InstallKey over the socket vs raw RSA-OAEP-SHA1 + AES-KWP wrap \
                 and two unwraps; uninstall: UninstallKey vs C_DestroyObject"
            }
            RawWrap::IbmHpcs => {
                "install: keyorchd InstallKey over the socket vs raw RSA-OAEP-SHA1 wrap to an \
                 RSA-4096 key + AES-CBC-PAD of a 12-byte nonce under the key, in keyorchd's \
                 token, nothing sent; uninstall: UninstallKey, no raw counterpart"
            }
            RawWrap::IbmKeyProtect => {
                "install: keyorchd InstallKey over the socket vs raw RSA-OAEP-SHA256 wrap to an \
                 RSA-4096 key + AES-GCM of a 12-byte nonce under the key, in keyorchd's token, \
                 nothing sent; uninstall: UninstallKey, no raw counterpart"
            }
            RawWrap::Azure(_) => {
                "install: keyorchd InstallKey over the socket vs raw CKM_RSA_AES_KEY_WRAP \
                 composed (RSA-OAEP-SHA1 of an ephemeral AES-256 key to an RSA-3072 key + \
                 AES-KWP of the key as PKCS#8), in keyorchd's token, nothing sent; uninstall: \
                 UninstallKey, no raw counterpart"
            }
        }
    }

    /// The target keystore's configuration and credentials (secret files read here).
    fn target_keystore(
        &self,
        target_pin: Option<&SecretString>,
    ) -> Result<
        (
            create_keystore_request::Config,
            create_keystore_request::Credentials,
        ),
        CliError,
    > {
        use create_keystore_request::{Config, Credentials};
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let ca_cert_pem = self
            .ca_cert
            .as_deref()
            .map(read_pem)
            .transpose()?
            .unwrap_or_default();
        let secret = |path: &Option<PathBuf>, what: &str| match path {
            Some(p) => read_secret(p, what),
            None => Err(CliError::Usage(format!("no {what} file"))),
        };
        Ok(match self.keystore_type {
            BenchKeystoreType::Pkcs11 => {
                let module_path = self
                    .target_module
                    .to_str()
                    .ok_or_else(|| {
                        CliError::Local(format!(
                            "--target-module {} is not UTF-8",
                            self.target_module.display()
                        ))
                    })?
                    .to_string();
                let pin = target_pin.ok_or_else(|| {
                    CliError::Usage("--keystore-type pkcs11 needs --target-pin-file".into())
                })?;
                (
                    Config::Pkcs11(Pkcs11KeystoreConfig {
                        module_path,
                        token_label: text(&self.target_token_label),
                        token_serial: text(&self.target_token_serial),
                    }),
                    Credentials::Pkcs11Credentials(Pkcs11Credentials {
                        pin: pin.expose_secret().to_string(),
                    }),
                )
            }
            BenchKeystoreType::IbmHpcs | BenchKeystoreType::IbmKeyProtect => (
                Config::IbmKms(IbmKmsKeystoreConfig {
                    instance_id: text(&self.instance_id),
                    key_ring_id: text(&self.key_ring_id),
                    api_endpoint: text(&self.api_endpoint),
                    iam_endpoint: text(&self.iam_endpoint),
                    ca_cert_pem,
                }),
                Credentials::IbmKmsCredentials(IbmKmsCredentials {
                    api_key: secret(&self.api_key_file, "API key")?,
                }),
            ),
            BenchKeystoreType::AzureKeyVault => (
                Config::AzureKeyVault(AzureKeyVaultKeystoreConfig {
                    vault_name: text(&self.vault_name),
                    resource_group: text(&self.resource_group),
                    location: text(&self.location),
                    environment: text(&self.environment),
                    tenant_id: text(&self.tenant_id),
                    client_id: text(&self.client_id),
                    subscription_id: text(&self.subscription_id),
                    vault_url: text(&self.vault_url),
                    authority_host: text(&self.authority_host),
                    ca_cert_pem,
                }),
                Credentials::AzureKeyVaultCredentials(AzureKeyVaultCredentials {
                    client_secret: secret(&self.client_secret_file, "client secret")?,
                }),
            ),
        })
    }
}

/// One side's latencies of one step: the summary (ops/s, p50, p99) and the p90.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Side {
    pub summary: Summary,
    pub p90: Duration,
}

impl Side {
    fn from_sequential(latencies_ns: Vec<u64>) -> Side {
        let mut sorted = latencies_ns.clone();
        sorted.sort_unstable();
        Side {
            p90: Duration::from_nanos(percentile(&sorted, 90.0)),
            summary: Summary::from_sequential(latencies_ns),
        }
    }
}

/// One step's results on both sides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult {
    pub keyorchd: Side,
    pub raw: Option<Side>,
}

impl StepResult {
    /// keyorchd ops/s divided by raw ops/s.
    pub fn ratio(&self) -> Option<f64> {
        self.raw
            .as_ref()
            .and_then(|r| throughput_ratio(&self.keyorchd.summary, &r.summary))
    }

    /// raw p50 divided by keyorchd p50.
    pub fn median_ratio(&self) -> Option<f64> {
        self.raw
            .as_ref()
            .and_then(|r| median_ratio(&self.keyorchd.summary, &r.summary))
    }
}

/// The measured rounds: installs, and the uninstalls between them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstallReport {
    pub install: StepResult,
    pub uninstall: StepResult,
}

/// Who installs in a round.
#[derive(Debug, Clone, Copy)]
enum Turn {
    Keyorchd,
    Raw,
}

/// Latencies in nanoseconds of the measured rounds, per step and side.
#[derive(Debug, Default)]
struct Latencies {
    install: Vec<u64>,
    uninstall: Vec<u64>,
}

pub async fn install(args: BenchInstallArgs, ctx: &Context) -> Result<Outcome, CliError> {
    args.check()?;
    let target_pin = args
        .target_pin_file
        .as_deref()
        .map(|p| read_pin(p, "the target token's PIN: see --target-pin-file"))
        .transpose()?;
    let (config, credentials) = args.target_keystore(target_pin.as_ref())?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

    // The tokens first: a wrong PIN or configuration fails before anything is created.
    let raw = if args.no_raw {
        None
    } else {
        let (own_module, own_label) = (args.module.clone(), args.token_label.clone());
        let own_pin_file = args
            .pin_file
            .clone()
            .unwrap_or_else(|| args.state_dir.join("user-pin"));
        let (target_module, target_token) = (args.target_module.clone(), args.target_token());
        let target_pin = target_pin.clone();
        let wrap = args.raw_wrap();
        let prefix = format!("bench-raw-{suffix}-");
        let opened = tokio::task::spawn_blocking(move || {
            let own_pin = read_pin(
                &own_pin_file,
                "keyorchd's token PIN: see --state-dir, --pin-file; --no-raw skips the baseline",
            )?;
            let target = target_pin.as_ref().map(|pin| TokenAccess {
                role: "the target token",
                module: &target_module,
                token: &target_token,
                pin,
            });
            RawInstall::open(
                &TokenAccess {
                    role: "keyorchd's token",
                    module: &own_module,
                    token: &TokenSelector::Label(own_label),
                    pin: &own_pin,
                },
                target.as_ref(),
                wrap,
                prefix,
            )
        })
        .await
        .map_err(|e| CliError::Local(format!("PKCS#11 setup did not finish: {e}")))??;
        Some(opened)
    };

    let clients = match ctx.clients().await {
        Ok(c) => c,
        Err(e) => {
            close_raw(raw).await;
            return Err(e);
        }
    };
    let mut fixture = Fixture::default();
    let mut pair = PairKey::default();
    let mut raw = raw;
    let setup = async {
        let ids = create_install_fixture(
            &mut fixture,
            &mut pair,
            &clients,
            &suffix,
            &args,
            (config, credentials),
        )
        .await?;
        if let Some(r) = raw.take() {
            raw = Some(prepare_raw(r).await?);
        }
        Ok::<_, CliError>(ids)
    };
    let measured = match setup.await {
        Ok((key_id, keystore_id)) => tokio::select! {
            result = measure(&args, &clients, &key_id, &keystore_id, &mut raw) => result,
            _ = tokio::signal::ctrl_c() => Err(CliError::Local("interrupted".into())),
        },
        Err(e) => Err(e),
    };
    let mut warnings = pair.remove(&clients).await;
    warnings.extend(fixture.remove(&clients).await);
    warnings.extend(close_raw(raw).await);
    for w in &warnings {
        eprintln!("warning: bench cleanup: {w}");
    }

    let report = measured?;
    output::print(&render_report(ctx.output, &args, &report))?;
    if warnings.is_empty() {
        return Ok(Outcome::Success);
    }
    let target_objects = if args.keystore_type == BenchKeystoreType::Pkcs11 {
        format!(", and target token objects labelled bench-raw-{suffix}-*,")
    } else {
        String::new()
    };
    Err(CliError::Local(format!(
        "bench cleanup incomplete: remove vault bench-{suffix} and its contents{target_objects} \
         by hand"
    )))
}

/// The bench's RSA or EC key ([`Fixture`] makes AES keys only), removed before the fixture
/// (its keystores and vault need it gone).
#[derive(Debug, Default)]
struct PairKey {
    id: Option<String>,
}

impl PairKey {
    /// Creates an ACTIVE key of `key` in `vault_id` targeting `targets`; returns its id.
    async fn create(
        &mut self,
        clients: &Clients,
        request: CreateKeyRequest,
    ) -> Result<String, CliError> {
        let key = clients.keys.clone().create_key(request).await?.into_inner();
        self.id = Some(key.id.clone());
        if key.state != KeyState::Active as i32 {
            return Err(CliError::Local(format!(
                "the bench key is {}, not ACTIVE",
                short_name::<KeyState>(key.state)
            )));
        }
        Ok(key.id)
    }

    /// Deactivates, destroys and deletes the key, if made; returns what could not be undone.
    async fn remove(&self, clients: &Clients) -> Vec<String> {
        let mut warnings = Vec::new();
        let Some(id) = &self.id else {
            return warnings;
        };
        let mut keys = clients.keys.clone();
        let mut note = |what: &str, status: tonic::Status| {
            warnings.push(format!("{what}: {}", CliError::from(status)));
        };
        let state = keys
            .get_key(GetKeyRequest { id: id.clone() })
            .await
            .map(|k| k.into_inner().state);
        if state.is_ok_and(|s| s == KeyState::Active as i32) {
            if let Err(s) = keys.deactivate_key(KeyIdRequest { id: id.clone() }).await {
                note("deactivate key", s);
            }
        }
        if let Err(s) = keys.destroy_key(KeyIdRequest { id: id.clone() }).await {
            note("destroy key", s);
        }
        if let Err(s) = keys.delete_key(KeyIdRequest { id: id.clone() }).await {
            note("delete key", s);
        }
        warnings
    }
}

/// A vault, a CONNECTED internal keystore, a CONNECTED keystore of --keystore-type (`target`:
/// its configuration and credentials) and an ACTIVE key of --key in the internal keystore
/// only; the key and target keystore ids.
async fn create_install_fixture(
    fixture: &mut Fixture,
    pair: &mut PairKey,
    clients: &Clients,
    suffix: &str,
    args: &BenchInstallArgs,
    target: (
        create_keystore_request::Config,
        create_keystore_request::Credentials,
    ),
) -> Result<(String, String), CliError> {
    let name = format!("bench-{suffix}");
    let description = "temporary, made by keyorch bench install";
    let vault_id = fixture.vault(clients, &name, description).await?;
    let request = |name: String, r#type: KeystoreType| CreateKeystoreRequest {
        vault_id: vault_id.clone(),
        name,
        description: description.to_string(),
        r#type: r#type as i32,
        connect: true,
        config: None,
        credentials: None,
    };
    let internal = fixture
        .keystore(
            clients,
            CreateKeystoreRequest {
                config: Some(create_keystore_request::Config::Internal(
                    InternalKeystoreConfig {},
                )),
                ..request(format!("{name}-own"), KeystoreType::Internal)
            },
        )
        .await?;
    let (config, credentials) = target;
    let target = fixture
        .keystore(
            clients,
            CreateKeystoreRequest {
                config: Some(config),
                credentials: Some(credentials),
                ..request(format!("{name}-target"), args.keystore_type.api())
            },
        )
        .await?;
    let key_id = match args.key() {
        BenchKey::Aes256 => {
            fixture
                .active_aes_key(clients, &vault_id, &name, description, vec![internal.id])
                .await?
        }
        key => {
            let (algorithm, key_size_bits) = key.algorithm();
            pair.create(
                clients,
                CreateKeyRequest {
                    vault_id: vault_id.clone(),
                    name: name.clone(),
                    description: description.to_string(),
                    algorithm: algorithm as i32,
                    key_size_bits,
                    target_keystore_ids: vec![internal.id],
                    activate: true,
                    tags: [("purpose".to_string(), "bench".to_string())].into(),
                    external_key_id: String::new(),
                },
            )
            .await?
        }
    };
    Ok((key_id, target.id))
}

async fn prepare_raw(mut raw: RawInstall) -> Result<RawInstall, CliError> {
    tokio::task::spawn_blocking(move || raw.prepare().map(|()| raw))
        .await
        .map_err(|e| CliError::Local(format!("PKCS#11 setup did not finish: {e}")))?
}

async fn close_raw(raw: Option<RawInstall>) -> Vec<String> {
    match raw {
        Some(r) => tokio::task::spawn_blocking(move || r.close())
            .await
            .unwrap_or_else(|e| vec![format!("raw baseline clean-up did not finish: {e}")]),
        None => Vec::new(),
    }
}

/// Warm-up rounds, then measured rounds. Each round installs the key into the target
/// keystore through keyorchd (InstallKey, then UninstallKey) and raw (the type's wrap; for
/// pkcs11 the unwraps into the target, then C_DestroyObject); which side goes first
/// alternates, so load drifts hit both alike.
async fn measure(
    args: &BenchInstallArgs,
    clients: &Clients,
    key_id: &str,
    keystore_id: &str,
    raw: &mut Option<RawInstall>,
) -> Result<InstallReport, CliError> {
    let mut keys = clients.keys.clone();
    let request = || InstallKeyRequest {
        id: key_id.to_string(),
        keystore_id: keystore_id.to_string(),
    };
    let (mut ours, mut theirs) = (Latencies::default(), Latencies::default());
    for round in 0..args.warmup + args.count {
        let measured = round >= args.warmup;
        let order = if round % 2 == 0 {
            [Turn::Keyorchd, Turn::Raw]
        } else {
            [Turn::Raw, Turn::Keyorchd]
        };
        for turn in order {
            match turn {
                Turn::Keyorchd => {
                    let t0 = Instant::now();
                    let key = keys.install_key(request()).await?.into_inner();
                    let installed = t0.elapsed();
                    let state = key
                        .instances
                        .iter()
                        .find(|i| i.keystore_id == keystore_id)
                        .map(|i| i.state);
                    if state != Some(InstanceState::Installed as i32) {
                        return Err(CliError::Local(format!(
                            "InstallKey answered, but the key's instance in the bench keystore \
                             is {}",
                            state.map_or("missing".into(), short_name::<InstanceState>)
                        )));
                    }
                    let t1 = Instant::now();
                    keys.uninstall_key(request()).await?;
                    if measured {
                        ours.install.push(installed.as_nanos() as u64);
                        ours.uninstall.push(t1.elapsed().as_nanos() as u64);
                    }
                }
                Turn::Raw => {
                    let Some(token) = raw.take() else { continue };
                    let (token, result) = tokio::task::spawn_blocking(move || {
                        let label = token.label(round);
                        let result = token.install(&label).and_then(|(handle, installed)| {
                            handle
                                .map(|h| token.destroy(h))
                                .transpose()
                                .map(|removed| (installed, removed))
                        });
                        (token, result)
                    })
                    .await
                    .map_err(|e| CliError::Local(format!("raw baseline did not finish: {e}")))?;
                    *raw = Some(token);
                    let (installed, removed) = result?;
                    if measured {
                        theirs.install.push(installed.as_nanos() as u64);
                        if let Some(removed) = removed {
                            theirs.uninstall.push(removed.as_nanos() as u64);
                        }
                    }
                }
            }
        }
    }
    // No raw side when skipped, or (uninstall of the types that send nothing) when there is
    // nothing to compare with.
    let raw_side = |l: Vec<u64>| (!args.no_raw && !l.is_empty()).then(|| Side::from_sequential(l));
    let report = InstallReport {
        install: StepResult {
            keyorchd: Side::from_sequential(ours.install),
            raw: raw_side(theirs.install),
        },
        uninstall: StepResult {
            keyorchd: Side::from_sequential(ours.uninstall),
            raw: raw_side(theirs.uninstall),
        },
    };
    eprintln!(
        "bench: install: keyorchd {:.0}/s{}",
        report.install.keyorchd.summary.ops_per_sec,
        report.install.raw.map_or(String::new(), |r| format!(
            ", raw {:.0}/s",
            r.summary.ops_per_sec
        ))
    );
    Ok(report)
}

pub fn render_report(
    format: OutputFormat,
    args: &BenchInstallArgs,
    report: &InstallReport,
) -> String {
    let steps = [("install", report.install), ("uninstall", report.uninstall)];
    let ratio_cell = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"));
    let cell = |s: Option<Side>, f: &dyn Fn(Side) -> String| s.map_or_else(|| "-".into(), f);
    match format {
        OutputFormat::Table => {
            let mut t = Table::new(vec![
                "step",
                "keyorchd ops/s",
                "p50",
                "p90",
                "p99",
                "raw ops/s",
                "p50",
                "p90",
                "p99",
                "ratio",
                "p50 ratio",
            ]);
            for (name, s) in steps {
                let k = s.keyorchd;
                t.push(vec![
                    name.to_string(),
                    format!("{:.1}", k.summary.ops_per_sec),
                    millis(k.summary.p50),
                    millis(k.p90),
                    millis(k.summary.p99),
                    cell(s.raw, &|r| format!("{:.1}", r.summary.ops_per_sec)),
                    cell(s.raw, &|r| millis(r.summary.p50)),
                    cell(s.raw, &|r| millis(r.p90)),
                    cell(s.raw, &|r| millis(r.summary.p99)),
                    ratio_cell(s.ratio()),
                    ratio_cell(s.median_ratio()),
                ]);
            }
            format!(
                "install of an {} key into {}, {} rounds after {} warm-up, keyorchd and raw \
                 alternating\n{}{}\n",
                args.key().label(),
                args.target_description(),
                args.count,
                args.warmup,
                t.render(),
                args.raw_description(),
            )
        }
        OutputFormat::Json => {
            let side = |s: Side| {
                json!({
                    "ops": s.summary.ops,
                    "busy_secs": s.summary.elapsed.as_secs_f64(),
                    "ops_per_sec": s.summary.ops_per_sec,
                    "p50_us": micros(s.summary.p50),
                    "p90_us": micros(s.p90),
                    "p99_us": micros(s.summary.p99),
                })
            };
            let steps: Vec<Value> = steps
                .iter()
                .map(|(name, s)| {
                    json!({
                        "step": name,
                        "keyorchd": side(s.keyorchd),
                        "raw": s.raw.map_or(Value::Null, side),
                        "ratio": s.ratio(),
                        "p50_ratio": s.median_ratio(),
                    })
                })
                .collect();
            let mut v = json!({
                "operation": "install",
                "keystore_type": args.keystore_type.name(),
                "key": args.key().label(),
                "raw_wrap": args.raw_description(),
                "rounds": args.count,
                "warmup_rounds": args.warmup,
                "steps": steps,
            });
            let text = |v: &Option<String>| v.clone().unwrap_or_default();
            let target = match args.keystore_type {
                BenchKeystoreType::Pkcs11 => {
                    v["target_module"] = json!(args.target_module.display().to_string());
                    match args.target_token() {
                        TokenSelector::Label(l) => json!({ "label": l }),
                        TokenSelector::Serial(s) => json!({ "serial": s }),
                    }
                }
                BenchKeystoreType::IbmHpcs | BenchKeystoreType::IbmKeyProtect => json!({
                    "instance_id": text(&args.instance_id),
                    "api_endpoint": text(&args.api_endpoint),
                }),
                BenchKeystoreType::AzureKeyVault => json!({
                    "vault_name": text(&args.vault_name),
                    "vault_url": text(&args.vault_url),
                }),
            };
            let field = if args.keystore_type == BenchKeystoreType::Pkcs11 {
                "target_token"
            } else {
                "target"
            };
            v[field] = target;
            output::render_json(&v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::BenchCommand;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<BenchInstallArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("keyorch").chain(args.iter().copied()))?;
        match cli.command {
            Command::Bench(BenchCommand::Install(a)) => Ok(a),
            other => panic!("not bench install: {other:?}"),
        }
    }

    const TARGET: [&str; 6] = [
        "bench",
        "install",
        "--target-token-label",
        "partner",
        "--target-pin-file",
        "/tmp/p",
    ];

    const HPCS: [&str; 10] = [
        "bench",
        "install",
        "--keystore-type",
        "ibm-hpcs",
        "--instance-id",
        "2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f",
        "--api-endpoint",
        "http://127.0.0.1:9730",
        "--api-key-file",
        "/tmp/k",
    ];

    const AZURE: [&str; 18] = [
        "bench",
        "install",
        "--keystore-type",
        "azure-key-vault",
        "--vault-name",
        "bench-kv",
        "--resource-group",
        "rg",
        "--location",
        "westeurope",
        "--subscription-id",
        "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "--tenant-id",
        "11111111-2222-3333-4444-555555555555",
        "--client-id",
        "66666666-7777-8888-9999-000000000000",
        "--client-secret-file",
        "/tmp/s",
    ];

    #[track_caller]
    fn refused(args: &[&str]) -> String {
        match parse(args).expect("parses").check() {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_required_flags() {
        let a = parse(&TARGET).expect("ok");
        a.check().expect("complete");
        assert_eq!((a.count, a.warmup), (100, 3));
        assert_eq!(a.keystore_type, BenchKeystoreType::Pkcs11);
        assert_eq!(a.key(), BenchKey::Aes256);
        assert_eq!(a.raw_wrap(), RawWrap::Pkcs11);
        assert_eq!(a.target_module, PathBuf::from(DEFAULT_MODULE));
        assert_eq!(a.target_token(), TokenSelector::Label("partner".into()));
        assert_eq!(a.target_pin_file, Some(PathBuf::from("/tmp/p")));
        assert_eq!(a.module, PathBuf::from(DEFAULT_MODULE));
        assert_eq!(a.token_label, DEFAULT_TOKEN_LABEL);
        assert_eq!(a.pin_file, None);
        assert!(!a.no_raw);
        // A token and a PIN file are required; label and serial exclude each other.
        assert_eq!(
            refused(&["bench", "install", "--target-pin-file", "/p"]),
            "--keystore-type pkcs11 needs --target-token-label or --target-token-serial"
        );
        assert_eq!(
            refused(&["bench", "install", "--target-token-label", "t"]),
            "--keystore-type pkcs11 needs --target-pin-file"
        );
        let both = [&TARGET[..], &["--target-token-serial", "1"]].concat();
        assert!(parse(&both).is_err());
        let serial = parse(&[
            "bench",
            "install",
            "--target-token-serial",
            "0123",
            "--target-pin-file",
            "/p",
        ])
        .expect("ok");
        serial.check().expect("complete");
        assert_eq!(serial.target_token(), TokenSelector::Serial("0123".into()));
    }

    #[test]
    fn ibm_and_azure_types_take_their_own_flags_and_keys() {
        let a = parse(&HPCS).expect("ok");
        a.check().expect("complete");
        assert_eq!(
            (a.keystore_type, a.key(), a.raw_wrap()),
            (
                BenchKeystoreType::IbmHpcs,
                BenchKey::Aes256,
                RawWrap::IbmHpcs
            )
        );
        let mut kp = HPCS;
        kp[3] = "ibm-key-protect";
        assert_eq!(parse(&kp).expect("ok").raw_wrap(), RawWrap::IbmKeyProtect);
        let a = parse(&AZURE).expect("ok");
        a.check().expect("complete");
        assert_eq!(
            (a.key(), a.raw_wrap()),
            (BenchKey::Rsa2048, RawWrap::Azure(PrivateKind::Rsa2048))
        );
        let ec = parse(&[&AZURE[..], &["--key", "ec-p256"]].concat()).expect("ok");
        ec.check().expect("complete");
        assert_eq!(ec.raw_wrap(), RawWrap::Azure(PrivateKind::EcP256));

        // Flags of another type, missing ones, and keys the type does not import.
        assert_eq!(
            refused(&[&HPCS[..], &["--target-pin-file", "/p"]].concat()),
            "--target-pin-file is for --keystore-type pkcs11, not ibm-hpcs"
        );
        assert_eq!(
            refused(&[&TARGET[..], &["--ca-cert", "/ca.pem"]].concat()),
            "--ca-cert is for --keystore-type ibm-hpcs or ibm-key-protect or azure-key-vault, \
             not pkcs11"
        );
        assert_eq!(
            refused(&[&AZURE[..], &["--api-endpoint", "http://127.0.0.1:1"]].concat()),
            "--api-endpoint is for --keystore-type ibm-hpcs or ibm-key-protect, not \
             azure-key-vault"
        );
        assert_eq!(
            refused(&[&HPCS[..], &["--vault-url", "http://127.0.0.1:1"]].concat()),
            "--vault-url is for --keystore-type azure-key-vault, not ibm-hpcs"
        );
        assert_eq!(
            refused(&[
                "bench",
                "install",
                "--keystore-type",
                "ibm-hpcs",
                "--instance-id",
                "i"
            ]),
            "--keystore-type ibm-hpcs needs --api-endpoint, --api-key-file"
        );
        assert_eq!(
            refused(&AZURE[..AZURE.len() - 2]),
            "--keystore-type azure-key-vault needs --client-secret-file"
        );
        assert_eq!(
            refused(&[&AZURE[..], &["--key", "aes-256"]].concat()),
            "--keystore-type azure-key-vault installs --key rsa-2048 or ec-p256 (Azure key \
             vaults import RSA and EC keys only)"
        );
        assert_eq!(
            refused(&[&HPCS[..], &["--key", "rsa-2048"]].concat()),
            "--keystore-type ibm-hpcs installs --key aes-256"
        );
        assert!(parse(&[&AZURE[..], &["--environment", "Mars"]].concat()).is_err());
    }

    #[test]
    fn target_keystores_carry_the_settings_and_the_secret_files() {
        let dir = tempfile::tempdir().expect("dir");
        let (ca, key) = (dir.path().join("ca.pem"), dir.path().join("api-key"));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").expect("write");
        std::fs::write(&key, "Key-0123456789abcdef\n").expect("write");
        let mut hpcs = HPCS.map(String::from).to_vec();
        hpcs[9] = key.display().to_string();
        hpcs.extend(["--ca-cert".to_string(), ca.display().to_string()]);
        let hpcs: Vec<&str> = hpcs.iter().map(String::as_str).collect();
        let (config, credentials) = parse(&hpcs)
            .expect("ok")
            .target_keystore(None)
            .expect("read");
        assert_eq!(
            config,
            create_keystore_request::Config::IbmKms(IbmKmsKeystoreConfig {
                instance_id: "2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f".into(),
                key_ring_id: String::new(),
                api_endpoint: "http://127.0.0.1:9730".into(),
                iam_endpoint: String::new(),
                ca_cert_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            })
        );
        assert_eq!(
            credentials,
            create_keystore_request::Credentials::IbmKmsCredentials(IbmKmsCredentials {
                api_key: "Key-0123456789abcdef".into()
            })
        );
        let mut azure = AZURE.map(String::from).to_vec();
        azure[17] = key.display().to_string();
        azure.extend([
            "--vault-url".to_string(),
            "http://127.0.0.1:8443".to_string(),
        ]);
        let azure: Vec<&str> = azure.iter().map(String::as_str).collect();
        let (config, credentials) = parse(&azure)
            .expect("ok")
            .target_keystore(None)
            .expect("read");
        let create_keystore_request::Config::AzureKeyVault(c) = config else {
            panic!("not azure: {config:?}")
        };
        assert_eq!(
            (
                c.vault_name.as_str(),
                c.vault_url.as_str(),
                c.ca_cert_pem.as_str()
            ),
            ("bench-kv", "http://127.0.0.1:8443", "")
        );
        assert_eq!(c.tenant_id, "11111111-2222-3333-4444-555555555555");
        assert_eq!(
            credentials,
            create_keystore_request::Credentials::AzureKeyVaultCredentials(
                AzureKeyVaultCredentials {
                    client_secret: "Key-0123456789abcdef".into()
                }
            )
        );
    }

    #[test]
    fn counts_are_bounded() {
        let a = parse(&[&TARGET[..], &["--count", "7", "--warmup", "0"]].concat()).expect("ok");
        assert_eq!((a.count, a.warmup), (7, 0));
        assert!(parse(&[&TARGET[..], &["--count", "0"]].concat()).is_err());
        assert!(parse(&[&TARGET[..], &["--warmup", "1001"]].concat()).is_err());
    }

    fn side(ops_per_sec: f64, p50_us: u64) -> Side {
        Side {
            summary: Summary {
                ops: 10,
                elapsed: Duration::from_secs(1),
                ops_per_sec,
                p50: Duration::from_micros(p50_us),
                p99: Duration::from_micros(p50_us * 2),
            },
            p90: Duration::from_micros(p50_us * 3 / 2),
        }
    }

    #[test]
    fn the_p90_is_the_nearest_rank() {
        let ms = 1_000_000;
        let s = Side::from_sequential((1..=20).rev().map(|i| i * ms).collect());
        assert_eq!(s.p90, Duration::from_millis(18));
        assert_eq!(s.summary.p50, Duration::from_millis(10));
        assert_eq!(s.summary.p99, Duration::from_millis(20));
    }

    #[test]
    fn renders_the_report() {
        let args = parse(&TARGET).expect("ok");
        let report = InstallReport {
            install: StepResult {
                keyorchd: side(50.0, 20_000),
                raw: Some(side(100.0, 10_000)),
            },
            uninstall: StepResult {
                keyorchd: side(200.0, 5_000),
                raw: None,
            },
        };
        assert_eq!(
            render_report(OutputFormat::Table, &args, &report),
            "install of an AES-256 key into the pkcs11 token label \"partner\", 100 rounds after \
             3 warm-up, keyorchd and raw alternating\n\
             step       keyorchd ops/s  p50        p90        p99        raw ops/s  p50        p90        p99        ratio  p50 ratio\n\
             install    50.0            20.000 ms  30.000 ms  40.000 ms  100.0      10.000 ms  15.000 ms  20.000 ms  0.500  0.500\n\
             uninstall  200.0           5.000 ms   7.500 ms   10.000 ms  -          -          -          -          -      -\n\
             install: keyorchd InstallKey over the socket vs raw RSA-OAEP-SHA1 + AES-KWP wrap and \
             two unwraps; uninstall: UninstallKey vs C_DestroyObject\n"
        );
        let v: Value =
            serde_json::from_str(&render_report(OutputFormat::Json, &args, &report)).expect("json");
        assert_eq!(v["operation"], "install");
        assert_eq!(v["keystore_type"], "pkcs11");
        assert_eq!(v["key"], "AES-256");
        assert_eq!(v["target_token"]["label"], "partner");
        assert_eq!(v["target_module"], DEFAULT_MODULE);
        assert_eq!(v["rounds"], 100);
        assert_eq!(v["steps"][0]["step"], "install");
        assert_eq!(v["steps"][0]["ratio"], 0.5);
        assert_eq!(v["steps"][0]["p50_ratio"], 0.5);
        assert_eq!(v["steps"][0]["raw"]["p50_us"], 10_000.0);
        assert_eq!(v["steps"][0]["raw"]["p90_us"], 15_000.0);
        assert_eq!(v["steps"][1]["raw"], Value::Null);
        assert_eq!(v["steps"][1]["ratio"], Value::Null);
    }

    #[test]
    fn renders_what_the_ibm_and_azure_baselines_do() {
        let report = InstallReport {
            install: StepResult {
                keyorchd: side(5.0, 200_000),
                raw: Some(side(100.0, 10_000)),
            },
            uninstall: StepResult {
                keyorchd: side(200.0, 5_000),
                raw: None,
            },
        };
        let hpcs = parse(&HPCS).expect("ok");
        let text = render_report(OutputFormat::Table, &hpcs, &report);
        assert!(
            text.starts_with(
                "install of an AES-256 key into the ibm_hpcs instance \
                 2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f at http://127.0.0.1:9730, 100 rounds"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "install: keyorchd InstallKey over the socket vs raw RSA-OAEP-SHA1 wrap to an \
                 RSA-4096 key + AES-CBC-PAD of a 12-byte nonce under the key, in keyorchd's \
                 token, nothing sent; uninstall: UninstallKey, no raw counterpart\n"
            ),
            "{text}"
        );
        let v: Value =
            serde_json::from_str(&render_report(OutputFormat::Json, &hpcs, &report)).expect("json");
        assert_eq!(v["keystore_type"], "ibm_hpcs");
        assert_eq!(
            v["target"]["instance_id"],
            "2f8c7a52-4b1e-4d0a-9c3e-5a6b7c8d9e0f"
        );
        assert_eq!(v["target_token"], Value::Null);
        assert_eq!(v["steps"][0]["ratio"], 0.05);

        let azure = parse(
            &[
                &AZURE[..],
                &["--key", "ec-p256", "--vault-url", "http://127.0.0.1:1"],
            ]
            .concat(),
        )
        .expect("ok");
        let text = render_report(OutputFormat::Table, &azure, &report);
        assert!(
            text.starts_with(
                "install of an EC P-256 key into the azure_key_vault vault bench-kv at \
                 http://127.0.0.1:1, 100 rounds"
            ),
            "{text}"
        );
        assert!(text.contains("CKM_RSA_AES_KEY_WRAP composed (RSA-OAEP-SHA1 of an ephemeral AES-256 key to an RSA-3072 key + AES-KWP of the key as PKCS#8)"), "{text}");
        let v: Value = serde_json::from_str(&render_report(OutputFormat::Json, &azure, &report))
            .expect("json");
        assert_eq!(v["key"], "EC P-256");
        assert_eq!(v["target"]["vault_name"], "bench-kv");
    }
}
