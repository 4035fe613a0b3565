//! SIGHUP: re-reads the config file and applies what can change at run time — the access
//! policy, the log level and the XKS proxy's endpoints (their credentials, vaults and key
//! ids) — without touching connections; a bad file keeps the old ones.

use std::path::PathBuf;

use super::config::Config;
use super::logging::LogHandle;
use crate::api::xks::XksEndpoints;
use crate::service::Services;

/// What a reload needs: the file, the running settings and where to apply new ones.
pub struct Reloader {
    /// The config file (`None` in `--dev`: nothing to reload).
    pub path: Option<PathBuf>,
    /// `--log-level` / `KEYORCH_LOG`, which keeps overriding the file's level.
    pub level_override: Option<String>,
    pub log: LogHandle,
    pub services: Services,
    /// The settings in force.
    pub current: Option<Config>,
    /// The XKS proxy's endpoints, when it serves.
    pub xks: Option<XksEndpoints>,
}

impl Reloader {
    /// Handles SIGHUP from now on (registered before this returns: the default action of
    /// SIGHUP would end the daemon), reloading on each, until the process ends.
    pub fn spawn(mut self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                self.reload().await;
            }
        });
        Ok(())
    }

    async fn reload(&mut self) {
        let Some(path) = self.path.clone() else {
            tracing::info!("SIGHUP received: nothing to reload in --dev mode");
            return;
        };
        tracing::info!(config = %path.display(), "SIGHUP received: reloading the configuration");
        // Reading the file and resolving user and group names may block.
        let serving_xks = self.xks.is_some();
        let loaded = tokio::task::spawn_blocking(move || {
            let config = Config::load(&path)?;
            let policy = config.policy()?;
            // The endpoints' secret files are read now, so that one missing fails the reload.
            let xks = match (&config.xks, serving_xks) {
                (Some(section), true) => Some(super::xks::endpoint_settings(section)?),
                _ => None,
            };
            Ok::<_, super::config::ConfigError>((config, policy, xks))
        })
        .await;
        let (config, policy, xks_endpoints) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => {
                tracing::error!("reload failed, the previous settings stay in force: {e}");
                return;
            }
            Err(e) => {
                tracing::error!("reload failed, the previous settings stay in force: {e}");
                return;
            }
        };
        let level = self
            .level_override
            .clone()
            .unwrap_or_else(|| config.log.level.clone());
        if let Err(e) = self.log.set_level(&level) {
            tracing::error!("reload failed, the previous settings stay in force: {e}");
            return;
        }
        if let Some(old) = &self.current {
            for (section, changed) in [
                ("[hsm]", old.hsm != config.hsm),
                ("[store]", old.store != config.store),
                ("[listen]", old.listen != config.listen),
                ("[limits]", old.limits != config.limits),
                ("[security]", old.security != config.security),
                ("[health]", old.health != config.health),
                ("[aws]", old.aws != config.aws),
                (
                    "[xks] (its presence, listen, TLS, client_common_name or max_in_flight)",
                    match (&old.xks, &config.xks) {
                        (Some(a), Some(b)) => super::xks::listener_changed(a, b),
                        (a, b) => a.is_some() != b.is_some(),
                    },
                ),
                ("log.format", old.log.format != config.log.format),
            ] {
                if changed {
                    tracing::warn!("{section} changed: it takes effect at the next restart");
                }
            }
        }
        let grants = config.access.grant.len();
        if grants == 0 {
            tracing::warn!(
                "no [[access.grant]] in the configuration: nobody is authorised to call keyorchd"
            );
        }
        self.services.set_policy(policy);
        if let (Some(handle), Some(endpoints)) = (&self.xks, xks_endpoints) {
            let credentials: usize = endpoints.iter().map(|e| e.credentials.len()).sum();
            tracing::info!(
                endpoints = endpoints.len(),
                credentials,
                "XKS proxy endpoints reloaded: new credentials, vaults and key ids in force"
            );
            handle.replace(endpoints);
        }
        tracing::info!(level = %level, grants, "configuration reloaded: new log level and access policy in force");
        self.current = Some(config);
    }
}
