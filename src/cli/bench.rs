//! `keyorch bench`: its subcommands, and `bench encrypt` — Encrypt through keyorchd over its
//! socket versus raw in-process PKCS#11 on the same token, per concurrency level.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use secrecy::SecretString;
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::bench_cpu::{CpuClock, CpuPerOp};
use super::bench_fixture::Fixture;
use super::bench_install::BenchInstallArgs;
use super::bench_raw::RawToken;
use super::bench_stats::{micros, millis, throughput_ratio, Summary, WorkerSample};
use super::output::{self, OutputFormat, Table};
use super::{CliError, Context, Outcome};
use crate::client::Clients;
use crate::proto::v1::crypto_service_client::CryptoServiceClient;
use crate::proto::v1::{
    create_keystore_request, CreateKeystoreRequest, EncryptRequest, InternalKeystoreConfig,
    KeystoreType,
};

/// The module the dev-mode daemon uses.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The token label of the dev-mode daemon.
pub const DEFAULT_TOKEN_LABEL: &str = "keyorch-dev";

#[derive(Debug, Clone, PartialEq, Subcommand)]
// Parsed once per process from the command line: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum BenchCommand {
    /// Encrypt ops/s and p50/p99 latency: keyorchd vs raw PKCS#11, per concurrency level.
    ///
    /// Creates a temporary vault, internal keystore and ACTIVE AES-256 key through the
    /// API, and removes them at the end. The baseline runs AES-256-GCM through cryptoki
    /// in this process on the daemon's token (dev-mode layout in --state-dir), with a
    /// session-object key and one session per thread. Also reports the CPU time per call of
    /// keyorchd (its process found through the socket's peer credentials) and of this
    /// client over each measured level.
    Encrypt(BenchEncryptArgs),
    /// Install throughput into a pkcs11, ibm_hpcs, ibm_key_protect or azure_key_vault
    /// keystore: keyorchd vs the same wrap through raw PKCS#11, interleaved.
    ///
    /// Creates a temporary vault, an internal keystore, a keystore of --keystore-type
    /// (pkcs11: on the target token, where connecting creates EKMF-BYOK-KEK-FOR-IMPORT if
    /// missing and leaves it in place; azure_key_vault: connecting creates it in the vault) and
    /// an ACTIVE key of --key in the internal keystore, and removes them at the end. Each
    /// round calls InstallKey into that keystore (timed) and UninstallKey (timed apart), and
    /// does keyorchd's wrap for the type raw through cryptoki in this process, on keyorchd's
    /// token (dev-mode layout in --state-dir), the key unwrapped from under the master KEK
    /// first. pkcs11: RSA-OAEP-SHA1 + AES-KWP to the import KEK, unwrapped into the target
    /// token as a token object (timed), then destroyed (timed apart); keyorchd uses OAEP with
    /// SHA-256 instead when both tokens offer it (SoftHSM2 does not). ibm_hpcs: RSA-OAEP-SHA1
    /// of the key to an RSA-4096 public key + AES-CBC-PAD of a 12-byte nonce under the key
    /// (ibm_key_protect: RSA-OAEP-SHA256 + AES-GCM). azure_key_vault: CKM_RSA_AES_KEY_WRAP
    /// composed, RSA-OAEP-SHA1 of an ephemeral AES-256 key to an RSA-3072 public key + AES-KWP
    /// of the key as PKCS#8. The IBM and Azure baselines send nothing (their wrapping keys
    /// are made in keyorchd's token) and have no uninstall. The side that goes first
    /// alternates. ops/s counts the timed calls' own time only; ratios are ops/s keyorchd ÷
    /// raw and raw p50 ÷ keyorchd p50 (1 is parity).
    Install(BenchInstallArgs),
    /// XKS proxy Encrypt (with a ciphertext integrity value) req/s and p50/p99: keyorchd's
    /// proxy vs raw AES-256-GCM in process, per concurrency level; optionally an open-loop
    /// run at a fixed rate (--rate).
    ///
    /// Needs keyorchd serving the XKS proxy API (`keyorchd --dev --xks-listen ADDR`, which
    /// writes DIR/xks-credentials). Creates a temporary vault, internal keystore and ACTIVE
    /// AES-256 key through the API, and removes them at the end. Each connection is a
    /// keep-alive HTTP/1.1 connection with one request in flight; every request is signed
    /// with SigV4 (service kms-xks-proxy) by the aws-sigv4 crate, and the first answer's
    /// integrity value is checked as KMS checks it. The baseline is the one of `bench
    /// encrypt` with the same plaintext size.
    Xks(super::bench_xks::BenchXksArgs),
    /// Many clients doing mixed operations for minutes: p50/p99 per operation, every error,
    /// and keyorchd's resident memory (start, end, highest 5-second sample).
    ///
    /// Creates a temporary vault, internal keystore and --keys ACTIVE AES-256 keys, and
    /// removes them at the end. Each client has its own connection and repeats, per 10
    /// iterations: 4 Encrypt + Decrypt round trips on the shared keys (the plaintext is
    /// checked), 3 GetKey, 2 ListKeys pages of 20, and the whole lifecycle of a key of its
    /// own (CreateKey ACTIVE, DeactivateKey, DestroyKey, DeleteKey). Any failed call is
    /// reported and makes the command exit non-zero.
    Soak(super::bench_soak::BenchSoakArgs),
    /// ListKeys through every key, GetKey p50/p99 on random keys (1 and 16 concurrent) and
    /// CreateKey p50/p99 in a vault filled beforehand by `keyorchd --fill-keys N`; keyorchd's
    /// resident memory before and after.
    ///
    /// The keys CreateKey made are destroyed and deleted at the end. The baseline generates an
    /// AES-256 key and wraps it with CKM_AES_KEY_WRAP_PAD through cryptoki in this process on
    /// the daemon's token (dev-mode layout in --state-dir): the HSM work of one CreateKey.
    Scale(super::bench_scale::BenchScaleArgs),
    /// CPU per header block of the Unix socket's `:authority` rewriter, in this process (no
    /// daemon needed): blocks of Huffman-coded and of empty Huffman strings against a block
    /// of raw strings of the same size (the baseline), p50/p99 and p50 ÷ raw.
    ///
    /// Each stream is what a client such as grpcio sends on the socket: the preface,
    /// SETTINGS, and a HEADERS frame whose `:authority` makes keyorchd rewrite the
    /// connection, so every field of the block is decoded and encoded again.
    Hpack(super::bench_hpack::BenchHpackArgs),
}

pub(super) fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err("must be more than 0 and at most 86400".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(super) fn parse_warmup_secs(s: &str) -> Result<Duration, String> {
    if s.parse::<f64>().is_ok_and(|v| v == 0.0) {
        return Ok(Duration::ZERO);
    }
    parse_secs(s)
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct BenchEncryptArgs {
    /// Concurrency levels: tokio tasks on one channel (keyorchd), threads (raw).
    #[arg(
        long,
        value_name = "N,N,..",
        value_delimiter = ',',
        default_value = "1,4,16",
        value_parser = clap::value_parser!(u32).range(1..=4096)
    )]
    pub concurrency: Vec<u32>,
    /// Measured seconds per level.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub duration: Duration,
    /// Unmeasured seconds before each level.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_warmup_secs)]
    pub warmup: Duration,
    /// Plaintext size in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..=65536)
    )]
    pub payload: u32,
    /// keyorchd's dev-mode state folder (softhsm2.conf, user-pin).
    #[arg(long, value_name = "DIR", default_value_os_t = crate::paths::default_state_dir())]
    pub state_dir: PathBuf,
    /// PKCS#11 module for the baseline.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODULE)]
    pub module: PathBuf,
    /// Label of the token for the baseline.
    #[arg(long, value_name = "LABEL", default_value = DEFAULT_TOKEN_LABEL)]
    pub token_label: String,
    /// File holding the user PIN [default: DIR/user-pin].
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Skip the raw PKCS#11 baseline.
    #[arg(long)]
    pub no_raw: bool,
}

impl BenchCommand {
    /// Points SoftHSM2 at the daemon's configuration (`DIR/softhsm2.conf`, when present).
    /// Call before any thread starts: it changes the process environment.
    pub fn prepare_environment(&self) -> Result<(), CliError> {
        let (no_raw, state_dir) = match self {
            BenchCommand::Encrypt(args) => (args.no_raw, &args.state_dir),
            BenchCommand::Install(args) => (args.no_raw, &args.state_dir),
            BenchCommand::Xks(args) => (args.no_raw, &args.state_dir),
            BenchCommand::Soak(_) | BenchCommand::Hpack(_) => return Ok(()),
            BenchCommand::Scale(args) => (args.no_raw, &args.state_dir),
        };
        if no_raw {
            return Ok(());
        }
        let conf = state_dir.join("softhsm2.conf");
        if conf.is_file() {
            std::env::set_var("SOFTHSM2_CONF", &conf);
        }
        Ok(())
    }
}

pub async fn run(cmd: BenchCommand, ctx: &Context) -> Result<Outcome, CliError> {
    match cmd {
        BenchCommand::Encrypt(args) => encrypt(args, ctx).await,
        BenchCommand::Install(args) => super::bench_install::install(args, ctx).await,
        BenchCommand::Xks(args) => super::bench_xks::xks(args, ctx).await,
        BenchCommand::Soak(args) => super::bench_soak::soak(args, ctx).await,
        BenchCommand::Scale(args) => super::bench_scale::scale(args, ctx).await,
        BenchCommand::Hpack(args) => super::bench_hpack::hpack(args, ctx).await,
    }
}

/// Reads the PIN file, dropping the trailing line break; an error names the file and
/// gives `hint` (the flags that choose it). The PIN is never printed.
pub(super) fn read_pin(path: &Path, hint: &str) -> Result<SecretString, CliError> {
    let mut text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("cannot read the PIN file {} ({hint})", path.display()),
        source,
    })?;
    let len = text.trim_end_matches(['\r', '\n']).len();
    text.truncate(len);
    Ok(SecretString::from(text))
}

/// One level's results.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelResult {
    pub concurrency: u32,
    pub keyorchd: Summary,
    /// CPU per Encrypt of keyorchd and of this client over the measured seconds.
    pub cpu: CpuPerOp,
    pub raw: Option<Summary>,
}

impl LevelResult {
    /// keyorchd ops/s divided by raw ops/s.
    pub fn ratio(&self) -> Option<f64> {
        self.raw
            .as_ref()
            .and_then(|r| throughput_ratio(&self.keyorchd, r))
    }
}

async fn encrypt(args: BenchEncryptArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let mut payload = vec![0u8; args.payload as usize];
    getrandom::fill(&mut payload)
        .map_err(|e| CliError::Local(format!("cannot draw a random payload: {e}")))?;
    let payload = Arc::new(payload);

    // The token first: a wrong PIN or configuration fails before anything is created.
    let mut raw = open_raw(
        args.no_raw,
        &args.module,
        &args.token_label,
        args.pin_file.as_deref(),
        &args.state_dir,
    )
    .await?;

    let clients = match ctx.clients().await {
        Ok(c) => c,
        Err(e) => {
            close_raw(raw).await;
            return Err(e);
        }
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut fixture = Fixture::default();
    let measured = match create_aes_fixture(&mut fixture, &clients, &suffix, "encrypt").await {
        Ok(key_id) => tokio::select! {
            result = async {
                let clock = CpuClock::for_daemon(&ctx.socket).await;
                measure(&args, &clients.crypto, &key_id, &payload, &clock, &mut raw).await
            } => result,
            _ = tokio::signal::ctrl_c() => Err(CliError::Local("interrupted".into())),
        },
        Err(e) => Err(e),
    };
    let warnings = fixture.remove(&clients).await;
    close_raw(raw).await;
    for w in &warnings {
        eprintln!("warning: bench cleanup: {w}");
    }

    let levels = measured?;
    output::print(&render_report(ctx.output, &args, &levels))?;
    if warnings.is_empty() {
        return Ok(Outcome::Success);
    }
    Err(CliError::Local(format!(
        "bench cleanup incomplete: remove vault bench-{suffix} and its contents by hand"
    )))
}

/// The baseline's token (the dev-mode layout in `state_dir` unless `pin_file` says
/// otherwise), or None with `no_raw`.
pub(super) async fn open_raw(
    no_raw: bool,
    module: &Path,
    label: &str,
    pin_file: Option<&Path>,
    state_dir: &Path,
) -> Result<Option<RawToken>, CliError> {
    if no_raw {
        return Ok(None);
    }
    let (module, label) = (module.to_path_buf(), label.to_string());
    let pin_file = pin_file.map_or_else(|| state_dir.join("user-pin"), Path::to_path_buf);
    let opened = tokio::task::spawn_blocking(move || {
        let pin = read_pin(
            &pin_file,
            "see --state-dir, --pin-file; --no-raw skips the baseline",
        )?;
        RawToken::open(&module, &label, &pin)
    })
    .await
    .map_err(|e| CliError::Local(format!("PKCS#11 setup did not finish: {e}")))??;
    Ok(Some(opened))
}

/// A vault, a CONNECTED internal keystore and an ACTIVE AES-256 key in it, all named
/// `bench-<suffix>` and described as made by `keyorch bench <command>`; the key id.
pub(super) async fn create_aes_fixture(
    fixture: &mut Fixture,
    clients: &Clients,
    suffix: &str,
    command: &str,
) -> Result<String, CliError> {
    let name = format!("bench-{suffix}");
    let description = format!("temporary, made by keyorch bench {command}");
    let description = description.as_str();
    let vault_id = fixture.vault(clients, &name, description).await?;
    let keystore = fixture
        .keystore(
            clients,
            CreateKeystoreRequest {
                vault_id: vault_id.clone(),
                name: name.clone(),
                description: description.to_string(),
                r#type: KeystoreType::Internal as i32,
                connect: true,
                config: Some(create_keystore_request::Config::Internal(
                    InternalKeystoreConfig {},
                )),
                credentials: None,
            },
        )
        .await?;
    fixture
        .active_aes_key(clients, &vault_id, &name, description, vec![keystore.id])
        .await
}

pub(super) async fn close_raw(raw: Option<RawToken>) {
    if let Some(token) = raw {
        let _ = tokio::task::spawn_blocking(move || token.close()).await;
    }
}

async fn measure(
    args: &BenchEncryptArgs,
    crypto: &CryptoServiceClient<Channel>,
    key_id: &str,
    payload: &Arc<Vec<u8>>,
    clock: &CpuClock,
    raw: &mut Option<RawToken>,
) -> Result<Vec<LevelResult>, CliError> {
    let mut levels = Vec::with_capacity(args.concurrency.len());
    for &concurrency in &args.concurrency {
        let (keyorchd, cpu) = grpc_level(
            crypto,
            key_id,
            payload,
            clock,
            concurrency as usize,
            args.warmup,
            args.duration,
        )
        .await?;
        let raw_summary = match raw.take() {
            Some(token) => {
                let payload = Arc::clone(payload);
                let (warmup, duration) = (args.warmup, args.duration);
                let (token, result) = tokio::task::spawn_blocking(move || {
                    let r = token.measure(concurrency as usize, &payload, warmup, duration);
                    (token, r)
                })
                .await
                .map_err(|e| CliError::Local(format!("raw baseline did not finish: {e}")))?;
                *raw = Some(token);
                Some(result?)
            }
            None => None,
        };
        let level = LevelResult {
            concurrency,
            keyorchd,
            cpu,
            raw: raw_summary,
        };
        eprintln!(
            "bench: concurrency {concurrency}: keyorchd {:.0} ops/s{}",
            keyorchd.ops_per_sec,
            raw_summary.map_or(String::new(), |r| format!(
                ", raw {:.0} ops/s",
                r.ops_per_sec
            ))
        );
        levels.push(level);
    }
    Ok(levels)
}

/// `tasks` tokio tasks sharing one channel, each calling Encrypt back to back: `warmup`
/// unmeasured, then `duration` measured, with both sides' CPU read at its start and end.
async fn grpc_level(
    crypto: &CryptoServiceClient<Channel>,
    key_id: &str,
    payload: &Arc<Vec<u8>>,
    clock: &CpuClock,
    tasks: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<(Summary, CpuPerOp), CliError> {
    let measure_from = Instant::now() + warmup;
    let measure_until = measure_from + duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let mut client = crypto.clone();
        let key_id = key_id.to_string();
        let payload = Arc::clone(payload);
        set.spawn(async move {
            let request = || EncryptRequest {
                key_id: key_id.clone(),
                plaintext: payload.to_vec(),
                aad: Vec::new(),
            };
            while Instant::now() < measure_from {
                client.encrypt(request()).await?;
            }
            let started = Instant::now();
            let mut latencies_ns = Vec::with_capacity(1 << 14);
            loop {
                let req = request();
                let t0 = Instant::now();
                if t0 >= measure_until {
                    break;
                }
                client.encrypt(req).await?;
                latencies_ns.push(t0.elapsed().as_nanos() as u64);
            }
            Ok::<_, tonic::Status>(WorkerSample {
                latencies_ns,
                started,
                finished: Instant::now(),
            })
        });
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = clock.sample();
    tokio::time::sleep_until(measure_until.into()).await;
    let cpu_until = clock.sample();
    let mut samples = Vec::with_capacity(tasks);
    while let Some(joined) = set.join_next().await {
        let sample =
            joined.map_err(|e| CliError::Local(format!("a bench task did not finish: {e}")))??;
        samples.push(sample);
    }
    let summary = Summary::from_workers(samples);
    Ok((summary, cpu_from.per_op(&cpu_until, summary.ops)))
}

/// CPU per call in µs, or `-` when it could not be read.
fn cpu_cell(cpu: Option<Duration>) -> String {
    cpu.map_or_else(|| "-".to_string(), |d| format!("{:.1} µs", micros(d)))
}

pub(super) fn optional_cell(raw: Option<Summary>, f: impl Fn(Summary) -> String) -> String {
    raw.map_or_else(|| "-".to_string(), f)
}

pub fn render_report(
    format: OutputFormat,
    args: &BenchEncryptArgs,
    levels: &[LevelResult],
) -> String {
    match format {
        OutputFormat::Table => {
            let mut t = Table::new(vec![
                "level",
                "keyorchd ops/s",
                "p50",
                "p99",
                "cpu/op keyorchd",
                "cpu/op client",
                "raw ops/s",
                "p50",
                "p99",
                "ratio",
            ]);
            for l in levels {
                t.push(vec![
                    l.concurrency.to_string(),
                    format!("{:.0}", l.keyorchd.ops_per_sec),
                    millis(l.keyorchd.p50),
                    millis(l.keyorchd.p99),
                    cpu_cell(l.cpu.daemon),
                    cpu_cell(l.cpu.client),
                    optional_cell(l.raw, |r| format!("{:.0}", r.ops_per_sec)),
                    optional_cell(l.raw, |r| millis(r.p50)),
                    optional_cell(l.raw, |r| millis(r.p99)),
                    l.ratio()
                        .map_or_else(|| "-".to_string(), |r| format!("{r:.3}")),
                ]);
            }
            format!(
                "encrypt, {} B payload, {} s warmup + {} s per level\n{}",
                args.payload,
                args.warmup.as_secs_f64(),
                args.duration.as_secs_f64(),
                t.render()
            )
        }
        OutputFormat::Json => {
            let side = |s: Summary| {
                json!({
                    "ops": s.ops,
                    "elapsed_secs": s.elapsed.as_secs_f64(),
                    "ops_per_sec": s.ops_per_sec,
                    "p50_us": micros(s.p50),
                    "p99_us": micros(s.p99),
                })
            };
            let levels: Vec<Value> = levels
                .iter()
                .map(|l| {
                    json!({
                        "concurrency": l.concurrency,
                        "keyorchd": side(l.keyorchd),
                        "cpu_per_op_us": {
                            "keyorchd": l.cpu.daemon.map(micros),
                            "client": l.cpu.client.map(micros),
                        },
                        "raw": l.raw.map_or(Value::Null, side),
                        "ratio": l.ratio(),
                    })
                })
                .collect();
            output::render_json(&json!({
                "operation": "encrypt",
                "payload_bytes": args.payload,
                "warmup_secs": args.warmup.as_secs_f64(),
                "duration_secs": args.duration.as_secs_f64(),
                "levels": levels,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<BenchEncryptArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("keyorch").chain(args.iter().copied()))?;
        match cli.command {
            Command::Bench(BenchCommand::Encrypt(a)) => Ok(a),
            other => panic!("not bench encrypt: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let a = parse(&["bench", "encrypt"]).expect("ok");
        assert_eq!(a.concurrency, vec![1, 4, 16]);
        assert_eq!(a.duration, Duration::from_secs(5));
        assert_eq!(a.warmup, Duration::from_secs(1));
        assert_eq!(a.payload, 4096);
        assert_eq!(a.module, PathBuf::from(DEFAULT_MODULE));
        assert_eq!(a.token_label, DEFAULT_TOKEN_LABEL);
        assert_eq!(a.pin_file, None);
        assert!(!a.no_raw);
    }

    #[test]
    fn explicit_values() {
        let a = parse(&[
            "bench",
            "encrypt",
            "--concurrency",
            "2,8",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--payload",
            "1024",
            "--state-dir",
            "/tmp/s",
            "--pin-file",
            "/tmp/p",
        ])
        .expect("ok");
        assert_eq!(a.concurrency, vec![2, 8]);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.warmup, Duration::ZERO);
        assert_eq!(a.payload, 1024);
        assert_eq!(a.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(a.pin_file, Some(PathBuf::from("/tmp/p")));
        assert!(parse(&["bench", "encrypt", "--concurrency", "0"]).is_err());
        assert!(parse(&["bench", "encrypt", "--duration", "0"]).is_err());
        assert!(parse(&["bench", "encrypt", "--payload", "70000"]).is_err());
    }

    #[test]
    fn pin_file_loses_its_line_break() {
        use secrecy::ExposeSecret;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("user-pin");
        std::fs::write(&path, "1234\n").expect("write");
        assert_eq!(read_pin(&path, "x").expect("reads").expose_secret(), "1234");
        assert!(!format!("{:?}", read_pin(&path, "x").expect("reads")).contains("1234"));
        let e = read_pin(&dir.path().join("none"), "see --it").expect_err("missing");
        assert!(e.to_string().contains("none (see --it)"), "{e}");
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
        let args = parse(&["bench", "encrypt"]).expect("ok");
        let levels = [
            LevelResult {
                concurrency: 1,
                keyorchd: summary(1000.0, 900),
                cpu: CpuPerOp {
                    daemon: Some(Duration::from_nanos(54_250)),
                    client: Some(Duration::from_micros(21)),
                },
                raw: Some(summary(40000.0, 25)),
            },
            LevelResult {
                concurrency: 4,
                keyorchd: summary(2500.0, 1500),
                cpu: CpuPerOp {
                    daemon: None,
                    client: Some(Duration::from_micros(19)),
                },
                raw: None,
            },
        ];
        assert_eq!(
            render_report(OutputFormat::Table, &args, &levels),
            "encrypt, 4096 B payload, 1 s warmup + 5 s per level\n\
             level  keyorchd ops/s  p50       p99       cpu/op keyorchd  cpu/op client  \
             raw ops/s  p50       p99       ratio\n\
             1      1000            0.900 ms  1.800 ms  54.2 µs          21.0 µs        \
             40000      0.025 ms  0.050 ms  0.025\n\
             4      2500            1.500 ms  3.000 ms  -                19.0 µs        \
             -          -         -         -\n"
        );
        let v: Value =
            serde_json::from_str(&render_report(OutputFormat::Json, &args, &levels)).expect("json");
        assert_eq!(v["payload_bytes"], 4096);
        assert_eq!(v["levels"][0]["concurrency"], 1);
        assert_eq!(v["levels"][0]["ratio"], 0.025);
        assert_eq!(v["levels"][0]["raw"]["p50_us"], 25.0);
        assert_eq!(v["levels"][1]["raw"], Value::Null);
        assert_eq!(v["levels"][1]["ratio"], Value::Null);
        assert_eq!(v["levels"][0]["cpu_per_op_us"]["keyorchd"], 54.25);
        assert_eq!(v["levels"][0]["cpu_per_op_us"]["client"], 21.0);
        assert_eq!(v["levels"][1]["cpu_per_op_us"]["keyorchd"], Value::Null);
    }
}
