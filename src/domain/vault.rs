//! The vault: the access-control container every keystore and key belongs to.

use serde::{Deserialize, Serialize};

use super::{validate_description, validate_name, DomainError, Millis};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vault {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Vault {
    pub fn new(
        id: String,
        name: String,
        description: String,
        now: Millis,
    ) -> Result<Vault, DomainError> {
        validate_name("name", &name)?;
        validate_description("description", &description)?;
        Ok(Vault {
            id,
            name,
            description,
            created_at: now,
            updated_at: now,
        })
    }

    /// Applies an update; `None` leaves a field as it is.
    pub fn update(
        &mut self,
        name: Option<String>,
        description: Option<String>,
        now: Millis,
    ) -> Result<(), DomainError> {
        if let Some(n) = &name {
            validate_name("name", n)?;
        }
        if let Some(d) = &description {
            validate_description("description", d)?;
        }
        if let Some(n) = name {
            self.name = n;
        }
        if let Some(d) = description {
            self.description = d;
        }
        self.updated_at = now;
        Ok(())
    }
}
