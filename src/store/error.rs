//! Errors of the sled store.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("the database was written by a newer keyorchd (schema {found}; this build reads {supported}); refusing to start rather than rewrite it")]
    NewerSchema { found: u32, supported: u32 },
    #[error("the database uses schema {found}, older than {supported}, and no migration exists; refusing to start")]
    OlderSchema { found: u32, supported: u32 },
    #[error(
        "record {table}/{id} cannot be decoded: {detail}; refusing to start rather than rewrite it"
    )]
    Corrupt {
        table: &'static str,
        id: String,
        detail: String,
    },
    #[error("record {table}/{id} cannot be encoded: {detail}")]
    Encode {
        table: &'static str,
        id: String,
        detail: String,
    },
    #[error("database I/O error: {0}")]
    Io(#[from] sled::Error),
}
