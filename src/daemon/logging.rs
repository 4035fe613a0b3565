//! keyorchd's logs: text or JSON lines on standard error, with a level filter that SIGHUP
//! can replace at run time (a tracing-subscriber `reload` layer).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the level of the running logger.
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

/// keyorch's own targets at `level`; dependencies at warn.
fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_new(format!("keyorch={level},keyorchd={level},warn"))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global logger (once per process).
pub fn init(level: &str, format: &str) -> LogHandle {
    let (layer, handle) = reload::Layer::new(filter(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(layer);
    // A second init (never done by keyorchd itself) keeps the first logger.
    let _ = if format == "json" {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    LogHandle { filter: handle }
}

impl LogHandle {
    /// Applies a new level to every later log line.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        self.filter
            .reload(filter(level))
            .map_err(|e| format!("cannot change the log level: {e}"))
    }
}
