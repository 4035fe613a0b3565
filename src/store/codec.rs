//! Record encoding: one version byte, then JSON. Unknown versions are refused.

use serde::de::DeserializeOwned;
use serde::Serialize;

const RECORD_V1: u8 = 1;

pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = vec![RECORD_V1];
    serde_json::to_writer(&mut out, record)?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&RECORD_V1, body)) => serde_json::from_slice(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown record version {v}")),
        None => Err("empty record".to_string()),
    }
}
