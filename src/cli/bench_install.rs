//! `keyorch bench install`: InstallKey of an AES-256 key into a pkcs11 keystore through
//! keyorchd versus the same wrap and unwraps through cryptoki in process, round by round.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args};
use serde_json::{json, Value};

use super::bench::{optional_cell, read_pin, DEFAULT_MODULE, DEFAULT_TOKEN_LABEL};
use super::bench_fixture::Fixture;
use super::bench_raw_install::{RawInstall, TokenAccess};
use super::bench_stats::{median_ratio, micros, millis, throughput_ratio, Summary};
use super::output::{self, short_name, OutputFormat, Table};
use super::{CliError, Context, Outcome};
use crate::client::Clients;
use crate::hsm::TokenSelector;
use crate::proto::v1::{
    create_keystore_request, CreateKeystoreRequest, InstallKeyRequest, InstanceState,
    InternalKeystoreConfig, KeystoreType, Pkcs11Credentials, Pkcs11KeystoreConfig,
};

#[derive(Debug, Clone, PartialEq, Args)]
#[command(group(
    ArgGroup::new("target_token")
        .required(true)
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
    /// PKCS#11 module of the target token.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODULE)]
    pub target_module: PathBuf,
    /// The target token's label (or give --target-token-serial).
    #[arg(long, value_name = "LABEL")]
    pub target_token_label: Option<String>,
    /// The target token's serial number.
    #[arg(long, value_name = "SERIAL")]
    pub target_token_serial: Option<String>,
    /// File holding the target token's user PIN (sent to keyorchd as the keystore's
    /// credential; used by the baseline).
    #[arg(long, value_name = "FILE")]
    pub target_pin_file: PathBuf,
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
            // clap's group requires one of them.
            (None, None) => TokenSelector::Label(String::new()),
        }
    }
}

/// One step's results on both sides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult {
    pub keyorchd: Summary,
    pub raw: Option<Summary>,
}

impl StepResult {
    /// keyorchd ops/s divided by raw ops/s.
    pub fn ratio(&self) -> Option<f64> {
        self.raw
            .as_ref()
            .and_then(|r| throughput_ratio(&self.keyorchd, r))
    }

    /// raw p50 divided by keyorchd p50.
    pub fn median_ratio(&self) -> Option<f64> {
        self.raw
            .as_ref()
            .and_then(|r| median_ratio(&self.keyorchd, r))
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
enum Side {
    Keyorchd,
    Raw,
}

/// Latencies in nanoseconds of the measured rounds, per step and side.
#[derive(Debug, Default)]
struct Latencies {
    install: Vec<u64>,
    uninstall: Vec<u64>,
}

impl Latencies {
    fn push(&mut self, install: Duration, uninstall: Duration) {
        self.install.push(install.as_nanos() as u64);
        self.uninstall.push(uninstall.as_nanos() as u64);
    }
}

pub async fn install(args: BenchInstallArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let target_pin = read_pin(
        &args.target_pin_file,
        "the target token's PIN: see --target-pin-file",
    )?;
    let module_path = args
        .target_module
        .to_str()
        .ok_or_else(|| {
            CliError::Local(format!(
                "--target-module {} is not UTF-8",
                args.target_module.display()
            ))
        })?
        .to_string();
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
        let prefix = format!("bench-raw-{suffix}-");
        let opened = tokio::task::spawn_blocking(move || {
            let own_pin = read_pin(
                &own_pin_file,
                "keyorchd's token PIN: see --state-dir, --pin-file; --no-raw skips the baseline",
            )?;
            RawInstall::open(
                &TokenAccess {
                    role: "keyorchd's token",
                    module: &own_module,
                    token: &TokenSelector::Label(own_label),
                    pin: &own_pin,
                },
                &TokenAccess {
                    role: "the target token",
                    module: &target_module,
                    token: &target_token,
                    pin: &target_pin,
                },
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
    let mut raw = raw;
    let setup = async {
        let pkcs11 = Pkcs11KeystoreConfig {
            module_path,
            token_label: args.target_token_label.clone().unwrap_or_default(),
            token_serial: args.target_token_serial.clone().unwrap_or_default(),
        };
        let ids =
            create_install_fixture(&mut fixture, &clients, &suffix, pkcs11, &target_pin).await?;
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
    let mut warnings = fixture.remove(&clients).await;
    warnings.extend(close_raw(raw).await);
    for w in &warnings {
        eprintln!("warning: bench cleanup: {w}");
    }

    let report = measured?;
    output::print(&render_report(ctx.output, &args, &report))?;
    if warnings.is_empty() {
        return Ok(Outcome::Success);
    }
    Err(CliError::Local(format!(
        "bench cleanup incomplete: remove vault bench-{suffix} and its contents, and target \
         token objects labelled bench-raw-{suffix}-*, by hand"
    )))
}

/// A vault, a CONNECTED internal keystore, a CONNECTED pkcs11 keystore on the target token
/// and an ACTIVE AES-256 key in the internal keystore only; the key and pkcs11 keystore ids.
async fn create_install_fixture(
    fixture: &mut Fixture,
    clients: &Clients,
    suffix: &str,
    pkcs11: Pkcs11KeystoreConfig,
    pin: &secrecy::SecretString,
) -> Result<(String, String), CliError> {
    use secrecy::ExposeSecret;
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
    let target = fixture
        .keystore(
            clients,
            CreateKeystoreRequest {
                config: Some(create_keystore_request::Config::Pkcs11(pkcs11)),
                credentials: Some(create_keystore_request::Credentials::Pkcs11Credentials(
                    Pkcs11Credentials {
                        pin: pin.expose_secret().to_string(),
                    },
                )),
                ..request(format!("{name}-target"), KeystoreType::Pkcs11)
            },
        )
        .await?;
    let key_id = fixture
        .active_aes_key(clients, &vault_id, &name, description, vec![internal.id])
        .await?;
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

/// Warm-up rounds, then measured rounds. Each round installs the key into the pkcs11
/// keystore through keyorchd (InstallKey, then UninstallKey) and raw (install, then
/// C_DestroyObject); which side goes first alternates, so load drifts hit both alike.
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
            [Side::Keyorchd, Side::Raw]
        } else {
            [Side::Raw, Side::Keyorchd]
        };
        for side in order {
            match side {
                Side::Keyorchd => {
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
                        ours.push(installed, t1.elapsed());
                    }
                }
                Side::Raw => {
                    let Some(token) = raw.take() else { continue };
                    let (token, result) = tokio::task::spawn_blocking(move || {
                        let label = token.label(round);
                        let result = token.install(&label).and_then(|(handle, installed)| {
                            token.destroy(handle).map(|removed| (installed, removed))
                        });
                        (token, result)
                    })
                    .await
                    .map_err(|e| CliError::Local(format!("raw baseline did not finish: {e}")))?;
                    *raw = Some(token);
                    let (installed, removed) = result?;
                    if measured {
                        theirs.push(installed, removed);
                    }
                }
            }
        }
    }
    let raw_side = |l: Vec<u64>| (!args.no_raw).then(|| Summary::from_sequential(l));
    let report = InstallReport {
        install: StepResult {
            keyorchd: Summary::from_sequential(ours.install),
            raw: raw_side(theirs.install),
        },
        uninstall: StepResult {
            keyorchd: Summary::from_sequential(ours.uninstall),
            raw: raw_side(theirs.uninstall),
        },
    };
    eprintln!(
        "bench: install: keyorchd {:.0}/s{}",
        report.install.keyorchd.ops_per_sec,
        report
            .install
            .raw
            .map_or(String::new(), |r| format!(", raw {:.0}/s", r.ops_per_sec))
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
    match format {
        OutputFormat::Table => {
            let mut t = Table::new(vec![
                "step",
                "keyorchd ops/s",
                "p50",
                "p99",
                "raw ops/s",
                "p50",
                "p99",
                "ratio",
                "p50 ratio",
            ]);
            for (name, s) in steps {
                t.push(vec![
                    name.to_string(),
                    format!("{:.1}", s.keyorchd.ops_per_sec),
                    millis(s.keyorchd.p50),
                    millis(s.keyorchd.p99),
                    optional_cell(s.raw, |r| format!("{:.1}", r.ops_per_sec)),
                    optional_cell(s.raw, |r| millis(r.p50)),
                    optional_cell(s.raw, |r| millis(r.p99)),
                    ratio_cell(s.ratio()),
                    ratio_cell(s.median_ratio()),
                ]);
            }
            format!(
                "install of an AES-256 key into the pkcs11 token {}, {} rounds after {} warm-up, \
                 keyorchd and raw alternating\n{}\
                 install: keyorchd InstallKey over the socket vs raw RSA-OAEP-SHA1 + AES-KWP wrap \
                 and two unwraps; uninstall: UninstallKey vs C_DestroyObject\n",
                args.target_token(),
                args.count,
                args.warmup,
                t.render()
            )
        }
        OutputFormat::Json => {
            let side = |s: Summary| {
                json!({
                    "ops": s.ops,
                    "busy_secs": s.elapsed.as_secs_f64(),
                    "ops_per_sec": s.ops_per_sec,
                    "p50_us": micros(s.p50),
                    "p99_us": micros(s.p99),
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
            let token = match args.target_token() {
                TokenSelector::Label(l) => json!({ "label": l }),
                TokenSelector::Serial(s) => json!({ "serial": s }),
            };
            output::render_json(&json!({
                "operation": "install",
                "key": "AES-256",
                "target_module": args.target_module.display().to_string(),
                "target_token": token,
                "rounds": args.count,
                "warmup_rounds": args.warmup,
                "steps": steps,
            }))
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

    #[test]
    fn defaults_and_required_flags() {
        let a = parse(&TARGET).expect("ok");
        assert_eq!((a.count, a.warmup), (100, 3));
        assert_eq!(a.target_module, PathBuf::from(DEFAULT_MODULE));
        assert_eq!(a.target_token(), TokenSelector::Label("partner".into()));
        assert_eq!(a.target_pin_file, PathBuf::from("/tmp/p"));
        assert_eq!(a.module, PathBuf::from(DEFAULT_MODULE));
        assert_eq!(a.token_label, DEFAULT_TOKEN_LABEL);
        assert_eq!(a.pin_file, None);
        assert!(!a.no_raw);
        // A token and a PIN file are required; label and serial exclude each other.
        assert!(parse(&["bench", "install", "--target-pin-file", "/p"]).is_err());
        assert!(parse(&["bench", "install", "--target-token-label", "t"]).is_err());
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
        assert_eq!(serial.target_token(), TokenSelector::Serial("0123".into()));
    }

    #[test]
    fn counts_are_bounded() {
        let a = parse(&[&TARGET[..], &["--count", "7", "--warmup", "0"]].concat()).expect("ok");
        assert_eq!((a.count, a.warmup), (7, 0));
        assert!(parse(&[&TARGET[..], &["--count", "0"]].concat()).is_err());
        assert!(parse(&[&TARGET[..], &["--warmup", "1001"]].concat()).is_err());
    }

    fn summary(ops_per_sec: f64, p50_us: u64) -> Summary {
        Summary {
            ops: 10,
            elapsed: Duration::from_secs(1),
            ops_per_sec,
            p50: Duration::from_micros(p50_us),
            p99: Duration::from_micros(p50_us * 2),
        }
    }

    #[test]
    fn renders_the_report() {
        let args = parse(&TARGET).expect("ok");
        let report = InstallReport {
            install: StepResult {
                keyorchd: summary(50.0, 20_000),
                raw: Some(summary(100.0, 10_000)),
            },
            uninstall: StepResult {
                keyorchd: summary(200.0, 5_000),
                raw: None,
            },
        };
        assert_eq!(
            render_report(OutputFormat::Table, &args, &report),
            "install of an AES-256 key into the pkcs11 token label \"partner\", 100 rounds after \
             3 warm-up, keyorchd and raw alternating\n\
             step       keyorchd ops/s  p50        p99        raw ops/s  p50        p99        ratio  p50 ratio\n\
             install    50.0            20.000 ms  40.000 ms  100.0      10.000 ms  20.000 ms  0.500  0.500\n\
             uninstall  200.0           5.000 ms   10.000 ms  -          -          -          -      -\n\
             install: keyorchd InstallKey over the socket vs raw RSA-OAEP-SHA1 + AES-KWP wrap and \
             two unwraps; uninstall: UninstallKey vs C_DestroyObject\n"
        );
        let v: Value =
            serde_json::from_str(&render_report(OutputFormat::Json, &args, &report)).expect("json");
        assert_eq!(v["operation"], "install");
        assert_eq!(v["target_token"]["label"], "partner");
        assert_eq!(v["rounds"], 100);
        assert_eq!(v["steps"][0]["step"], "install");
        assert_eq!(v["steps"][0]["ratio"], 0.5);
        assert_eq!(v["steps"][0]["p50_ratio"], 0.5);
        assert_eq!(v["steps"][0]["raw"]["p50_us"], 10_000.0);
        assert_eq!(v["steps"][1]["raw"], Value::Null);
        assert_eq!(v["steps"][1]["ratio"], Value::Null);
    }
}
