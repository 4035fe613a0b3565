//! keyorchd's composition root: arguments, configuration (TOML or the `--dev`
//! embedded default), logging, and the wiring of store, HSM, services and listener.

pub mod access;
pub mod aws;
pub mod config;
pub mod dev;
pub mod hardening;
pub mod logging;
pub mod reload;
pub mod xks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio_rustls::rustls::ServerConfig;

use crate::api::Limits;
use crate::domain::Policy;
use crate::hsm::{Hsm, HsmConfig};
use crate::service::Services;
use crate::store::Store;

/// keyorchd — key orchestrator daemon. Owns an HSM through PKCS#11 and serves the
/// keyorch.v1 gRPC API on a Unix socket (and, if asked, an AWS KMS-compatible endpoint).
#[derive(Debug, Parser)]
#[command(name = "keyorchd", version, about, long_about = None)]
pub struct Args {
    /// Run on the embedded default: a private SoftHSM2 token, database and socket under
    /// the state folder, created on first start.
    #[arg(long, conflicts_with = "config")]
    pub dev: bool,
    /// State folder for --dev [default: $KEYORCH_STATE_DIR, $XDG_STATE_HOME/keyorch or ~/.local/state/keyorch].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// PKCS#11 module for --dev.
    #[arg(long, value_name = "PATH", default_value = dev::DEFAULT_MODULE)]
    pub module: PathBuf,
    /// Production configuration file (TOML; see docs/configuration.md).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log level: trace, debug, info, warn, error [default: info, or the config's].
    #[arg(long, env = "KEYORCH_LOG", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Serve the AWS KMS-compatible endpoint (AWS KMS JSON 1.1, SigV4) on this address.
    /// With --dev its credentials are written to STATE_DIR/aws-credentials (profile
    /// keyorch); with --config it overrides [aws] listen (the [aws] section is required).
    #[arg(long, value_name = "ADDR:PORT")]
    pub aws_listen: Option<SocketAddr>,
    /// Serve the AWS XKS proxy API (external key store) on this address. With --dev one
    /// endpoint, /keyorch/kms/xks/v1, and its SigV4 credential are written to
    /// STATE_DIR/xks-credentials; with --config it overrides [xks] listen.
    #[arg(long, value_name = "ADDR:PORT")]
    pub xks_listen: Option<SocketAddr>,
    /// sled's page cache in MiB, 1 to 4096 (overrides [store] cache_mib) [default: 16].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub store_cache_mib: Option<u64>,
    /// Internal: initialise the dev token in a child process.
    #[arg(long, hide = true, requires = "state_dir")]
    pub provision_dev_token: bool,
    /// Benchmark fixture: create N ACTIVE AES-256 keys (generated in the HSM, as CreateKey
    /// does) in the vault "bench-scale", 1,000 per durable commit, then exit without serving.
    /// Used by `keyorch bench scale`; see docs/benchmarks.md.
    #[arg(long, value_name = "N")]
    pub fill_keys: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Dev(#[from] dev::DevError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Hardening(#[from] hardening::HardeningError),
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("HSM: {0}")]
    Hsm(#[from] crate::hsm::HsmError),
    #[error("{0}")]
    Service(#[from] crate::service::ServiceError),
    #[error("{0}")]
    Serve(#[from] crate::api::ServeError),
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Everything start-up decided before opening the store and the HSM.
struct Plan {
    hsm: HsmConfig,
    db: PathBuf,
    /// sled's page cache, in bytes.
    store_cache: u64,
    socket: PathBuf,
    socket_gid: Option<u32>,
    tcp: Option<(SocketAddr, Arc<ServerConfig>)>,
    limits: Limits,
    /// Time between two health checks of the CONNECTED keystores.
    health_interval: Duration,
    /// Failed health checks in a row that make a CONNECTED keystore FAILED (0: never).
    health_failed_after: u32,
    /// Threads of the crypto lane (`hsm.crypto_threads`).
    crypto_threads: usize,
    policy: Policy,
    state_dir: Option<PathBuf>,
    /// The AWS KMS-compatible endpoint, when configured.
    aws: Option<crate::api::aws::Settings>,
    /// The XKS proxy, when configured.
    xks: Option<crate::api::xks::Settings>,
    reloader: ReloadPlan,
}

/// What SIGHUP needs later (the services do not exist yet at plan time).
struct ReloadPlan {
    path: Option<PathBuf>,
    level_override: Option<String>,
    log: logging::LogHandle,
    current: Option<config::Config>,
}

/// Entry point of the keyorchd binary.
pub fn main() -> ExitCode {
    // Before any thread exists.
    hardening::limit_malloc_arenas();
    let args = Args::parse();
    if args.provision_dev_token {
        let dir = args
            .state_dir
            .clone()
            .unwrap_or_else(crate::paths::default_state_dir);
        return match dev::DevLayout::new(&dir, &args.module).provision() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keyorchd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("keyorchd cannot start: {e}");
            eprintln!("keyorchd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and checks everything (config, names, TLS files, the PIN) before anything is
/// opened, so that a bad setting stops start-up with its field named. The process is
/// hardened before the first secret (TLS key, PIN) is read.
fn plan(args: &Args) -> Result<Plan, StartError> {
    if args.dev {
        let dir = args
            .state_dir
            .clone()
            .unwrap_or_else(crate::paths::default_state_dir);
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()?.join(dir)
        };
        let level = args.log_level.clone().unwrap_or_else(|| "info".into());
        let format = args.log_format.clone().unwrap_or_else(|| "text".into());
        check_log_args(&level, &format)?;
        let log = logging::init(&level, &format);
        hardening::apply(true)?;
        let layout = dev::DevLayout::new(&dir, &args.module);
        layout.prepare()?;
        // Still single-threaded here: nothing else reads the environment concurrently.
        std::env::set_var("SOFTHSM2_CONF", &layout.softhsm2_conf);
        let uid = nix::unistd::getuid().as_raw();
        tracing::info!(
            uid,
            "--dev: the uid running keyorchd holds every role on every vault"
        );
        let mut policy = access::dev_policy(uid);
        let aws = match args.aws_listen {
            Some(addr) => {
                let settings = aws::dev_settings(&dir, addr, &args.module)?;
                for key in &settings.access_keys {
                    access::grant_all(
                        &mut policy,
                        crate::domain::Subject::AwsAccessKey(key.id.clone()),
                    );
                }
                Some(settings)
            }
            None => None,
        };
        let xks = match args.xks_listen {
            Some(addr) => {
                let settings = xks::dev_settings(&dir, addr)?;
                for e in &settings.endpoints {
                    for c in &e.credentials {
                        access::grant_all(
                            &mut policy,
                            crate::domain::Subject::AwsAccessKey(c.access_key_id.clone()),
                        );
                    }
                }
                Some(settings)
            }
            None => None,
        };
        return Ok(Plan {
            hsm: layout.hsm_config()?,
            db: layout.db,
            store_cache: args
                .store_cache_mib
                .unwrap_or(config::DEFAULT_STORE_CACHE_MIB)
                << 20,
            socket: layout.socket,
            socket_gid: None,
            tcp: None,
            limits: Limits::default(),
            health_interval: config::DEFAULT_HEALTH_INTERVAL,
            health_failed_after: config::DEFAULT_HEALTH_FAILED_AFTER,
            crypto_threads: config::DEFAULT_CRYPTO_THREADS,
            policy,
            state_dir: Some(dir),
            aws,
            xks,
            reloader: ReloadPlan {
                path: None,
                level_override: args.log_level.clone(),
                log,
                current: None,
            },
        });
    }
    let Some(path) = &args.config else {
        return Err(StartError::Usage(
            "give --dev for the embedded default or --config FILE for production (see --help)"
                .into(),
        ));
    };
    let cfg = config::Config::load(path)?;
    let level = args
        .log_level
        .clone()
        .unwrap_or_else(|| cfg.log.level.clone());
    let format = args
        .log_format
        .clone()
        .unwrap_or_else(|| cfg.log.format.clone());
    check_log_args(&level, &format)?;
    let policy = cfg.policy()?;
    let socket_gid = cfg.socket_gid()?;
    let log = logging::init(&level, &format);
    hardening::apply(cfg.security.lock_memory)?;
    let tcp = cfg.tls()?;
    let hsm = cfg.hsm_config()?;
    let aws = match (&cfg.aws, args.aws_listen) {
        (Some(section), listen) => Some(aws::settings(section, listen)?),
        (None, Some(_)) => {
            return Err(StartError::Usage(
                "--aws-listen needs an [aws] section in the config (its access keys and module; see docs/configuration.md)".into(),
            ))
        }
        (None, None) => None,
    };
    let xks = match (&cfg.xks, args.xks_listen) {
        (Some(section), listen) => Some(xks::settings(section, listen)?),
        (None, Some(_)) => {
            return Err(StartError::Usage(
                "--xks-listen needs an [xks] section in the config (its endpoints and credentials; see docs/configuration.md)".into(),
            ))
        }
        (None, None) => None,
    };
    if let Some(conf) = &cfg.hsm.softhsm2_conf {
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
    if cfg.access.grant.is_empty() {
        tracing::warn!(
            "no [[access.grant]] in {}: nobody is authorised to call keyorchd (see docs/configuration.md)",
            path.display()
        );
    }
    Ok(Plan {
        hsm,
        db: cfg.store.path.clone(),
        store_cache: args.store_cache_mib.unwrap_or(cfg.store.cache_mib) << 20,
        socket: cfg.listen.socket.clone(),
        socket_gid,
        tcp,
        limits: cfg.limits(),
        health_interval: cfg.health_interval(),
        health_failed_after: cfg.health.failed_after,
        crypto_threads: cfg.hsm.crypto_threads,
        policy,
        state_dir: None,
        aws,
        xks,
        reloader: ReloadPlan {
            path: Some(path.clone()),
            level_override: args.log_level.clone(),
            log,
            current: Some(cfg),
        },
    })
}

/// `--fill-keys`: the scale benchmark's fixture, then a clean exit.
fn fill_keys(services: &Services, count: usize) -> Result<(), StartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let filled = runtime
        .block_on(
            services.fill_keys("bench-scale".into(), count, 1000, move |done| {
                if done % 50_000 == 0 {
                    tracing::info!(keys = done, "fill-keys: progress");
                }
            }),
        )
        .map_err(|e| StartError::Usage(format!("--fill-keys: {e}")))?;
    services
        .flush()
        .map_err(|e| StartError::Usage(format!("--fill-keys: {e}")))?;
    tracing::info!(
        keys = filled.created,
        vault = %filled.vault_id,
        seconds = started.elapsed().as_secs_f64(),
        "fill-keys: done"
    );
    println!("{} {} {}", filled.vault_id, filled.created, filled.first_id);
    Ok(())
}

/// `--log-level` and `--log-format` are checked like the config's `[log]`.
fn check_log_args(level: &str, format: &str) -> Result<(), StartError> {
    if !config::LOG_LEVELS.contains(&level) {
        return Err(StartError::Usage(format!(
            "log level {level:?}: must be trace, debug, info, warn or error"
        )));
    }
    if !["text", "json"].contains(&format) {
        return Err(StartError::Usage(format!(
            "log format {format:?}: must be text or json"
        )));
    }
    Ok(())
}

fn run(args: Args) -> Result<(), StartError> {
    let plan = plan(&args)?;
    let store = Store::open_with_cache(&plan.db, plan.store_cache)?;
    let hsm = Hsm::open(plan.hsm)?;
    let (label, serial) = hsm.token_info();
    tracing::info!(token = %label, serial = %serial, "HSM token open");
    let services = Services::start(store, hsm, plan.crypto_threads)?;
    services.set_policy(plan.policy);
    if let Some(count) = args.fill_keys {
        return fill_keys(&services, count);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        let unix = crate::api::bind(&plan.socket, plan.socket_gid).await?;
        let tcp = match plan.tcp {
            Some((addr, tls)) => Some(crate::api::bind_tls(addr, tls).await?),
            None => None,
        };
        let tcp_addr = match &tcp {
            Some(t) => Some(t.local_addr()?),
            None => None,
        };
        let aws = match plan.aws {
            Some(settings) => Some(crate::api::aws::bind(settings).await?),
            None => None,
        };
        let aws_url = match &aws {
            Some(a) => Some(a.url()?),
            None => None,
        };
        let xks = match plan.xks {
            Some(settings) => Some(crate::api::xks::bind(settings).await?),
            None => None,
        };
        let xks_url = match &xks {
            Some(x) => Some(x.url()?),
            None => None,
        };
        let refresher = services.clone();
        let health_interval = plan.health_interval;
        let failed_after = plan.health_failed_after;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(health_interval).await;
                if let Err(e) = refresher.refresh_health(failed_after).await {
                    tracing::warn!("health refresh failed: {e}");
                }
            }
        });
        // SIGHUP is handled from here on, before READY.
        let reloader = reload::Reloader {
            path: plan.reloader.path,
            level_override: plan.reloader.level_override,
            log: plan.reloader.log,
            services: services.clone(),
            current: plan.reloader.current,
            xks: xks.as_ref().map(|x| x.endpoints()),
        };
        reloader.spawn()?;
        let socket = plan.socket.clone();
        let state_dir = plan.state_dir.clone();
        if let Some(period) = sd_notify::watchdog_enabled() {
            // Ping at half the watchdog period while the runtime is alive.
            tokio::spawn(async move {
                loop {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    tokio::time::sleep(period / 2).await;
                }
            });
        }
        let listeners = crate::api::Listeners {
            unix,
            tcp,
            aws,
            xks,
        };
        crate::api::serve(
            services.clone(),
            listeners,
            &plan.limits,
            shutdown,
            move || {
                tracing::info!(socket = %socket.display(), "keyorchd serving");
                // systemd Type=notify: READY once listening (a no-op outside systemd).
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                println!("keyorchd ready: listening on {}", socket.display());
                if let Some(addr) = tcp_addr {
                    tracing::info!(%addr, "keyorchd serving mutual TLS");
                    println!("  tcp (mutual TLS): {addr}");
                }
                if let Some(url) = &aws_url {
                    tracing::info!(%url, "keyorchd serving the AWS KMS-compatible endpoint");
                    println!("  aws kms endpoint: {url}");
                }
                if let Some(url) = &xks_url {
                    tracing::info!(%url, "keyorchd serving the XKS proxy API");
                    println!("  xks proxy: {url}");
                }
                if let Some(dir) = &state_dir {
                    println!("  state folder: {}", dir.display());
                    if let Some(url) = &aws_url {
                        println!(
                            "  try: AWS_SHARED_CREDENTIALS_FILE={} aws --profile {} kms list-keys --endpoint-url {url}",
                            dir.join(aws::CREDENTIALS_FILE).display(),
                            aws::DEV_PROFILE
                        );
                    }
                }
                println!(
                    "  try: KEYORCH_SOCKET={} keyorch vault list",
                    socket.display()
                );
            },
        )
        .await?;
        if !services.stop_crypto_lane(LANE_STOP_WAIT) {
            tracing::warn!(
                wait_secs = LANE_STOP_WAIT.as_secs(),
                "shutting down: a crypto-lane thread is still inside the HSM; not waiting for it"
            );
        }
        tracing::info!("shutting down: flushing the store");
        services.flush()?;
        let _ = std::fs::remove_file(&plan.socket);
        Ok::<(), StartError>(())
    })
}

/// How long shutdown waits for the crypto lane to finish the calls it holds.
const LANE_STOP_WAIT: Duration = Duration::from_secs(5);

/// Watches SIGTERM and SIGINT from now on (registered at once, so that a signal that
/// arrives while the listeners start is not lost to its default action); the future
/// resolves at the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        // In-flight requests drain after this; systemd waits for them.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    })
}
