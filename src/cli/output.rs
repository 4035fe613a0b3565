//! Rendering for humans and machines: aligned tables, `field: value` records, pretty JSON,
//! RFC 3339 timestamps, base64 and the short/long names of the proto enums.

use std::io::Write;

use base64::Engine as _;
use clap::ValueEnum;
use serde_json::Value;

use super::CliError;
use crate::proto::v1::{
    ConnectionErrorCode, ConnectionState, HealthStatus, InstanceState, KeyAlgorithm, KeyState,
    KeystoreType, SigningAlgorithm, SyncStatus, TargetKeyStatus,
};

/// `--output`: what stdout looks like: `table` (aligned columns for lists, `field: value`
/// lines for records) or `json` (one JSON document per command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// A list for humans: a header row and columns padded to their widest cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Self {
        Table {
            headers,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as text: two spaces between columns, no trailing blanks, one line per row.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One record for humans: `field: value` lines in a fixed order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    fields: Vec<(String, String)>,
}

impl Record {
    pub fn new() -> Self {
        Record::default()
    }

    /// Adds `name: value`.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// Adds `name: value` only when there is a value.
    pub fn optional(self, name: impl Into<String>, value: Option<String>) -> Self {
        match value {
            Some(v) => self.field(name, v),
            None => self,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.fields {
            if value.is_empty() {
                out.push_str(&format!("{name}:\n"));
            } else {
                out.push_str(&format!("{name}: {value}\n"));
            }
        }
        out
    }
}

/// The answer to a delete command, in either format.
pub fn deleted(format: OutputFormat, id: &str) -> String {
    match format {
        OutputFormat::Table => Record::new()
            .field("id", id)
            .field("deleted", "true")
            .render(),
        OutputFormat::Json => render_json(&serde_json::json!({ "id": id, "deleted": true })),
    }
}

/// A list table followed, when more pages exist, by a `next_page_token:` line.
pub fn list_text(table: Table, next: &str) -> String {
    let mut text = table.render();
    if !next.is_empty() {
        text.push_str(&format!("next_page_token: {next}\n"));
    }
    text
}

/// Pretty JSON, ending with a newline.
pub fn render_json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// Writes text to stdout. A closed pipe (`| head`) is not an error.
pub fn print(text: &str) -> Result<(), CliError> {
    print_bytes(text.as_bytes())
}

/// Writes raw bytes to stdout. A closed pipe (`| head`) is not an error.
pub fn print_bytes(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(source) => Err(CliError::Io {
            what: "cannot write to stdout".into(),
            source,
        }),
    }
}

/// A protobuf timestamp as RFC 3339 UTC (`2025-01-02T03:04:05Z`), if set.
pub fn timestamp(ts: &Option<prost_types::Timestamp>) -> Option<String> {
    ts.as_ref().map(|t| t.to_string())
}

/// A protobuf timestamp as a JSON string, or null when unset.
pub fn timestamp_json(ts: &Option<prost_types::Timestamp>) -> Value {
    timestamp(ts).map_or(Value::Null, Value::String)
}

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64, padded or not, ignoring ASCII whitespace (line breaks).
pub fn b64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    lenient.decode(compact)
}

/// A proto enum whose values print as their proto names, with or without the type prefix.
pub trait ProtoEnum: TryFrom<i32> {
    /// The prefix every value name of the enum shares, e.g. `KEY_STATE_`.
    const PREFIX: &'static str;
    /// The full proto name, e.g. `KEY_STATE_ACTIVE`.
    fn proto_name(&self) -> &'static str;
}

macro_rules! proto_enum {
    ($($ty:ty => $prefix:literal),* $(,)?) => {$(
        impl ProtoEnum for $ty {
            const PREFIX: &'static str = $prefix;
            fn proto_name(&self) -> &'static str {
                self.as_str_name()
            }
        }
    )*};
}

proto_enum! {
    KeystoreType => "KEYSTORE_TYPE_",
    ConnectionState => "CONNECTION_STATE_",
    ConnectionErrorCode => "CONNECTION_ERROR_CODE_",
    HealthStatus => "HEALTH_STATUS_",
    KeyAlgorithm => "KEY_ALGORITHM_",
    KeyState => "KEY_STATE_",
    InstanceState => "INSTANCE_STATE_",
    SigningAlgorithm => "SIGNING_ALGORITHM_",
    TargetKeyStatus => "TARGET_KEY_STATUS_",
    SyncStatus => "SYNC_STATUS_",
}

/// The short name of an enum value for tables (`ACTIVE`); unknown numbers print as digits.
pub fn short_name<E: ProtoEnum>(value: i32) -> String {
    match E::try_from(value) {
        Ok(e) => {
            let full = e.proto_name();
            full.strip_prefix(E::PREFIX).unwrap_or(full).to_string()
        }
        Err(_) => value.to_string(),
    }
}

/// The full proto name of an enum value for JSON (`"KEY_STATE_ACTIVE"`); unknown numbers
/// stay numbers, as in the proto3 JSON mapping.
pub fn full_name<E: ProtoEnum>(value: i32) -> Value {
    match E::try_from(value) {
        Ok(e) => Value::String(e.proto_name().to_string()),
        Err(_) => Value::from(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let mut t = Table::new(vec!["ID", "NAME", "STATE"]);
        t.push(vec!["a".into(), "long name".into(), "ACTIVE".into()]);
        t.push(vec!["bbbb".into(), "x".into(), "".into()]);
        assert_eq!(
            t.render(),
            "ID    NAME       STATE\n\
             a     long name  ACTIVE\n\
             bbbb  x\n"
        );
    }

    #[test]
    fn record_prints_field_colon_value() {
        let r = Record::new()
            .field("id", "v-1")
            .field("description", "")
            .optional("activated_at", None)
            .optional("state", Some("ACTIVE".into()));
        assert_eq!(r.render(), "id: v-1\ndescription:\nstate: ACTIVE\n");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let ts = Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        });
        assert_eq!(timestamp(&ts).as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(timestamp_json(&None), Value::Null);
    }

    #[test]
    fn enum_names_short_and_full() {
        assert_eq!(short_name::<KeyState>(2), "ACTIVE");
        assert_eq!(full_name::<KeyState>(2), Value::from("KEY_STATE_ACTIVE"));
        assert_eq!(short_name::<ConnectionState>(1), "CONNECTED");
        assert_eq!(short_name::<KeyState>(99), "99");
        assert_eq!(full_name::<KeyState>(99), Value::from(99));
    }

    #[test]
    fn base64_round_trip_is_lenient_on_input() {
        assert_eq!(b64(b"hello"), "aGVsbG8=");
        assert_eq!(b64_decode("aGVs\nbG8=\n").expect("decodes"), b"hello");
        assert_eq!(b64_decode("aGVsbG8").expect("decodes"), b"hello");
        assert!(b64_decode("not base64!").is_err());
    }
}
