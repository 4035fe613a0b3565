//! keyorchd's composition root: arguments, configuration (TOML or the `--dev`
//! embedded default), logging, and the wiring of store, HSM, services and listener.

pub mod config;
pub mod dev;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::hsm::{Hsm, HsmConfig};
use crate::service::Services;
use crate::store::Store;

/// keyorchd — key orchestrator daemon. Owns an HSM through PKCS#11 and serves the
/// keyorch.v1 gRPC API on a Unix socket.
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
    /// Internal: initialise the dev token in a child process.
    #[arg(long, hide = true, requires = "state_dir")]
    pub provision_dev_token: bool,
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Dev(#[from] dev::DevError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
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

struct Plan {
    hsm: HsmConfig,
    db: PathBuf,
    socket: PathBuf,
    state_dir: Option<PathBuf>,
}

fn init_logging(level: &str, format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(format!("keyorch={level},keyorchd={level},warn"))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Entry point of the keyorchd binary.
pub fn main() -> ExitCode {
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

fn plan(args: &Args) -> Result<(Plan, String, String), StartError> {
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
        init_logging(&level, &format);
        let layout = dev::DevLayout::new(&dir, &args.module);
        layout.prepare()?;
        // Still single-threaded here: nothing else reads the environment concurrently.
        std::env::set_var("SOFTHSM2_CONF", &layout.softhsm2_conf);
        let plan = Plan {
            hsm: layout.hsm_config()?,
            db: layout.db,
            socket: layout.socket,
            state_dir: Some(dir),
        };
        return Ok((plan, level, format));
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
    init_logging(&level, &format);
    if let Some(conf) = &cfg.hsm.softhsm2_conf {
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
    let plan = Plan {
        hsm: cfg.hsm_config()?,
        db: cfg.store.path.clone(),
        socket: cfg.listen.socket.clone(),
        state_dir: None,
    };
    Ok((plan, level, format))
}

fn run(args: Args) -> Result<(), StartError> {
    let (plan, _, _) = plan(&args)?;
    let store = Store::open(&plan.db)?;
    let hsm = Hsm::open(plan.hsm)?;
    let (label, serial) = hsm.token_info();
    tracing::info!(token = %label, serial = %serial, "HSM token open");
    let services = Services::start(store, hsm)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = crate::api::bind(&plan.socket).await?;
        let refresher = services.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                if let Err(e) = refresher.refresh_health().await {
                    tracing::warn!("health refresh failed: {e}");
                }
            }
        });
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
        crate::api::serve(services.clone(), listener, shutdown_signal(), move || {
            tracing::info!(socket = %socket.display(), "keyorchd serving");
            // systemd Type=notify: READY once listening (a no-op outside systemd).
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            println!("keyorchd ready: listening on {}", socket.display());
            if let Some(dir) = state_dir {
                println!("  state folder: {}", dir.display());
            }
            println!(
                "  try: KEYORCH_SOCKET={} keyorch vault list",
                socket.display()
            );
        })
        .await?;
        tracing::info!("shutting down: flushing the store");
        services.flush()?;
        let _ = std::fs::remove_file(&plan.socket);
        Ok::<(), StartError>(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
    // In-flight requests drain after this; systemd waits for them.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}
