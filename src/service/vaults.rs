//! Vault use cases.

use super::{new_id, now, Listing, ServiceError, Services};
use crate::domain::{DomainError, Key, Keystore, Page, Vault};
use crate::store::{Batch, Table};

impl Services {
    pub async fn create_vault(
        &self,
        name: String,
        description: String,
    ) -> Result<Vault, ServiceError> {
        self.blocking(move |inner| {
            let vault = Vault::new(new_id("vault"), name, description, now())?;
            let _w = inner.lock();
            if inner
                .store
                .name_owner(Table::Vaults, "", &vault.name)?
                .is_some()
            {
                return Err(DomainError::VaultNameInUse(vault.name).into());
            }
            let mut b = Batch::new();
            b.put(Table::Vaults, &vault.id, &vault)?;
            b.claim_name(Table::Vaults, "", &vault.name, &vault.id);
            inner.commit(b)?;
            Ok(vault)
        })
        .await
    }

    pub async fn get_vault(&self, id: String) -> Result<Vault, ServiceError> {
        self.blocking(move |inner| inner.vault(&id)).await
    }

    /// The vault with this name (through the name index) or, failing that, this id.
    /// Names and ids share no rule that keeps them apart ("vault-1" is a valid name), so
    /// the name wins: it is what an operator writes in a config file.
    pub async fn find_vault(&self, name_or_id: String) -> Result<Option<Vault>, ServiceError> {
        self.blocking(move |inner| {
            let id = inner
                .store
                .name_owner(Table::Vaults, "", &name_or_id)?
                .unwrap_or(name_or_id);
            Ok(inner.store.get(Table::Vaults, &id)?)
        })
        .await
    }

    pub async fn list_vaults(&self, page: Page) -> Result<Listing<Vault>, ServiceError> {
        self.blocking(move |inner| {
            let (items, more) = inner.store.list(
                Table::Vaults,
                page.after.as_deref(),
                page.size,
                |_: &Vault| true,
            )?;
            Ok(listing(items, more, |v| &v.id))
        })
        .await
    }

    pub async fn update_vault(
        &self,
        id: String,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<Vault, ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            let mut vault = inner.vault(&id)?;
            let old_name = vault.name.clone();
            vault.update(name, description, now())?;
            let mut b = Batch::new();
            if vault.name != old_name {
                if inner
                    .store
                    .name_owner(Table::Vaults, "", &vault.name)?
                    .is_some()
                {
                    return Err(DomainError::VaultNameInUse(vault.name).into());
                }
                b.release_name(Table::Vaults, "", &old_name);
                b.claim_name(Table::Vaults, "", &vault.name, &vault.id);
            }
            b.put(Table::Vaults, &vault.id, &vault)?;
            inner.commit(b)?;
            Ok(vault)
        })
        .await
    }

    pub async fn delete_vault(&self, id: String) -> Result<(), ServiceError> {
        self.blocking(move |inner| {
            let _w = inner.lock();
            let vault = inner.vault(&id)?;
            let keystores = inner
                .store
                .list(Table::Keystores, None, usize::MAX, |k: &Keystore| {
                    k.vault_id == id
                })?
                .0
                .len();
            let keys = inner
                .store
                .list(Table::Keys, None, usize::MAX, |k: &Key| k.vault_id == id)?
                .0
                .len();
            if keystores + keys > 0 {
                return Err(DomainError::VaultNotEmpty {
                    id,
                    keystores,
                    keys,
                }
                .into());
            }
            let mut b = Batch::new();
            b.delete(Table::Vaults, &vault.id);
            b.release_name(Table::Vaults, "", &vault.name);
            inner.commit(b)?;
            Ok(())
        })
        .await
    }
}

/// Builds a page from store results, with the token for the next one.
pub(crate) fn listing<T>(items: Vec<T>, more: bool, id: impl Fn(&T) -> &String) -> Listing<T> {
    let next_page_token = match (more, items.last()) {
        (true, Some(last)) => Page::token_after(id(last)),
        _ => String::new(),
    };
    Listing {
        items,
        next_page_token,
    }
}
