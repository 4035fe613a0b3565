//! What a benchmark creates through the API and must remove again: one vault, its keystores
//! and one ACTIVE AES-256 key, each id recorded as soon as it exists.

use std::collections::HashMap;

use super::output::short_name;
use super::CliError;
use crate::client::Clients;
use crate::proto::v1::{
    ConnectionState, CreateKeyRequest, CreateKeystoreRequest, CreateVaultRequest,
    DeleteKeystoreRequest, DeleteVaultRequest, DisconnectKeystoreRequest, GetKeyRequest,
    GetKeystoreRequest, KeyAlgorithm, KeyIdRequest, KeyState, Keystore,
};

/// The resources of one benchmark run, named `bench-<suffix>`.
#[derive(Debug, Default)]
pub struct Fixture {
    vault_id: Option<String>,
    keystore_ids: Vec<String>,
    key_id: Option<String>,
}

impl Fixture {
    /// The vault, once created.
    pub fn vault_id(&self) -> Option<&str> {
        self.vault_id.as_deref()
    }

    /// Creates the vault; returns its id.
    pub async fn vault(
        &mut self,
        clients: &Clients,
        name: &str,
        description: &str,
    ) -> Result<String, CliError> {
        let vault = clients
            .vaults
            .clone()
            .create_vault(CreateVaultRequest {
                name: name.to_string(),
                description: description.to_string(),
            })
            .await?
            .into_inner();
        self.vault_id = Some(vault.id.clone());
        Ok(vault.id)
    }

    /// Creates a keystore (the request should ask to connect); fails unless it is CONNECTED.
    pub async fn keystore(
        &mut self,
        clients: &Clients,
        request: CreateKeystoreRequest,
    ) -> Result<Keystore, CliError> {
        let keystore = clients
            .keystores
            .clone()
            .create_keystore(request)
            .await?
            .into_inner();
        self.keystore_ids.push(keystore.id.clone());
        if keystore.connection_state != ConnectionState::Connected as i32 {
            return Err(CliError::Local(format!(
                "the bench keystore {} is {}, not CONNECTED: {}",
                keystore.name,
                short_name::<ConnectionState>(keystore.connection_state),
                keystore.connection_error_message
            )));
        }
        Ok(keystore)
    }

    /// Creates an AES-256 key in `vault_id` targeting `targets`, activated; returns its id.
    pub async fn active_aes_key(
        &mut self,
        clients: &Clients,
        vault_id: &str,
        name: &str,
        description: &str,
        targets: Vec<String>,
    ) -> Result<String, CliError> {
        let key = clients
            .keys
            .clone()
            .create_key(CreateKeyRequest {
                vault_id: vault_id.to_string(),
                name: name.to_string(),
                description: description.to_string(),
                algorithm: KeyAlgorithm::Aes as i32,
                key_size_bits: 256,
                target_keystore_ids: targets,
                activate: true,
                tags: HashMap::from([("purpose".to_string(), "bench".to_string())]),
                external_key_id: String::new(),
            })
            .await?
            .into_inner();
        self.key_id = Some(key.id.clone());
        if key.state != KeyState::Active as i32 {
            return Err(CliError::Local(format!(
                "the bench key is {}, not ACTIVE",
                short_name::<KeyState>(key.state)
            )));
        }
        Ok(key.id)
    }

    /// Removes whatever was created, in dependency order (destroying the key also removes
    /// its copies from the keystores); returns what could not be undone.
    pub async fn remove(&self, clients: &Clients) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut note = |what: &str, status: tonic::Status| {
            warnings.push(format!("{what}: {}", CliError::from(status)));
        };
        if let Some(id) = &self.key_id {
            let mut keys = clients.keys.clone();
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
        }
        for id in &self.keystore_ids {
            let mut keystores = clients.keystores.clone();
            let state = keystores
                .get_keystore(GetKeystoreRequest { id: id.clone() })
                .await
                .map(|k| k.into_inner().connection_state);
            let disconnected = [
                ConnectionState::Disconnected as i32,
                ConnectionState::Disconnecting as i32,
            ];
            if state.as_ref().is_ok_and(|s| !disconnected.contains(s)) {
                let request = DisconnectKeystoreRequest {
                    id: id.clone(),
                    uninstall_keys: false,
                    force: true,
                };
                if let Err(s) = keystores.disconnect_keystore(request).await {
                    note("disconnect keystore", s);
                }
            }
            let request = DeleteKeystoreRequest { id: id.clone() };
            if let Err(s) = keystores.delete_keystore(request).await {
                note("delete keystore", s);
            }
        }
        if let Some(id) = &self.vault_id {
            let request = DeleteVaultRequest { id: id.clone() };
            if let Err(s) = clients.vaults.clone().delete_vault(request).await {
                note("delete vault", s);
            }
        }
        warnings
    }
}
