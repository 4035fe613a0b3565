//! Durable state in sled: one tree per resource, a name index tree and a meta tree
//! holding the schema version. Records are generic serde values; the service owns types.

pub(crate) mod codec;
mod error;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub use error::StoreError;

/// The record layout this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Vaults,
    Keystores,
    Keys,
    /// Audit events, keyed by zero-padded sequence number.
    Audit,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Vaults, Table::Keystores, Table::Keys, Table::Audit];

    pub fn name(self) -> &'static str {
        match self {
            Table::Vaults => "vaults",
            Table::Keystores => "keystores",
            Table::Keys => "keys",
            Table::Audit => "audit",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Table::Vaults => b'v',
            Table::Keystores => b's',
            Table::Keys => b'k',
            Table::Audit => b'a',
        }
    }
}

/// The sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// sled's log file. sled 0.34's flush ends in `sync_file_range` on Linux, which neither
    /// flushes the disk's write cache nor the file's size; an `fdatasync` of the file after
    /// each flush does, so an acknowledged write survives a power cut, not only a crash.
    log_file: std::sync::Arc<std::fs::File>,
    vaults: sled::Tree,
    keystores: sled::Tree,
    keys: sled::Tree,
    audit: sled::Tree,
    names: sled::Tree,
    meta: sled::Tree,
}

enum Op {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
    ClaimName(Table, String, String, String),
    ReleaseName(Table, String, String),
    SetMeta(String, Vec<u8>),
    DeleteMeta(String),
}

/// Writes applied atomically by [`Store::commit`].
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put<T: Serialize>(
        &mut self,
        table: Table,
        id: &str,
        record: &T,
    ) -> Result<&mut Self, StoreError> {
        let bytes = codec::encode(record).map_err(|e| StoreError::Encode {
            table: table.name(),
            id: id.to_string(),
            detail: e.to_string(),
        })?;
        self.ops.push(Op::Put(table, id.to_string(), bytes));
        Ok(self)
    }

    pub fn delete(&mut self, table: Table, id: &str) -> &mut Self {
        self.ops.push(Op::Delete(table, id.to_string()));
        self
    }

    /// Points the unique name `name` within `scope` (a vault id, or "" for vaults) at `id`.
    pub fn claim_name(&mut self, table: Table, scope: &str, name: &str, id: &str) -> &mut Self {
        self.ops.push(Op::ClaimName(
            table,
            scope.to_string(),
            name.to_string(),
            id.to_string(),
        ));
        self
    }

    pub fn release_name(&mut self, table: Table, scope: &str, name: &str) -> &mut Self {
        self.ops
            .push(Op::ReleaseName(table, scope.to_string(), name.to_string()));
        self
    }

    pub fn set_meta(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.ops.push(Op::SetMeta(key.to_string(), value.to_vec()));
        self
    }

    pub fn delete_meta(&mut self, key: &str) -> &mut Self {
        self.ops.push(Op::DeleteMeta(key.to_string()));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The records of `table` this batch writes, in order, decoded as `T`: `(id, Some(..))`
    /// for a put, `(id, None)` for a delete.
    pub fn writes<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Vec<(String, Option<Result<T, String>>)> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Put(t, id, bytes) if *t == table => {
                    Some((id.clone(), Some(codec::decode(bytes))))
                }
                Op::Delete(t, id) if *t == table => Some((id.clone(), None)),
                _ => None,
            })
            .collect()
    }
}

/// Decodes the record stored under `id`; an error names the table and the id.
fn decode_record<T: DeserializeOwned>(
    table: Table,
    id: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|e| StoreError::Corrupt {
        table: table.name(),
        id: String::from_utf8_lossy(id).into_owned(),
        detail: e,
    })
}

fn name_key(table: Table, scope: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope.len() + name.len() + 3);
    k.push(table.tag());
    k.extend_from_slice(scope.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// sled's page cache, in bytes, of [`Store::open`] (sled's default is 1 GiB). Reads beyond it
/// go to the page cache of the kernel. At 1 M keys 64, 16 and 4 MiB gave the same speed and
/// 565, 458 and 416 MiB resident after a walk through every key (docs/benchmarks.md, "Scale").
pub const DEFAULT_CACHE_CAPACITY: u64 = 16 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the database with the default page cache. Refuses a database
    /// written by a newer schema and one whose meta is unreadable; never rewrites either.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_CAPACITY)
    }

    /// [`Store::open`] with sled's page cache capped at `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        remove_unfinished_snapshots(path)?;
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        let log_path = path.join("db");
        let log_file = std::fs::File::open(&log_path).map_err(|e| StoreError::Open {
            path: log_path.clone(),
            detail: e.to_string(),
        })?;
        let store = Store {
            log_file: std::sync::Arc::new(log_file),
            vaults: db.open_tree("vaults")?,
            keystores: db.open_tree("keystores")?,
            keys: db.open_tree("keys")?,
            audit: db.open_tree("audit")?,
            names: db.open_tree("names")?,
            meta: db.open_tree("meta")?,
            db,
        };
        match store.meta.get(SCHEMA_KEY)? {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        table: "meta",
                        id: "schema_version".into(),
                        detail: format!("expected 4 bytes, found {}", v.len()),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if found < SCHEMA_VERSION {
                    return Err(StoreError::OlderSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                let empty =
                    store.vaults.is_empty() && store.keystores.is_empty() && store.keys.is_empty();
                if !empty {
                    return Err(StoreError::Corrupt {
                        table: "meta",
                        id: "schema_version".into(),
                        detail: "records exist but no schema version is recorded".into(),
                    });
                }
                store
                    .meta
                    .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                store.sync()?;
            }
        }
        Ok(store)
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        match table {
            Table::Vaults => &self.vaults,
            Table::Keystores => &self.keystores,
            Table::Keys => &self.keys,
            Table::Audit => &self.audit,
        }
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.tree(table).get(id.as_bytes())? {
            Some(bytes) => decode_record(table, id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Records in id order after `after`, keeping those `keep` accepts, at most `limit`.
    /// Returns them and whether more matching records follow.
    pub fn list<T: DeserializeOwned>(
        &self,
        table: Table,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<(Vec<T>, bool), StoreError> {
        let tree = self.tree(table);
        let iter = match after {
            Some(a) => tree.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => tree.iter(),
        };
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            let record: T = decode_record(table, &k, &v)?;
            if keep(&record) {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(record);
            }
        }
        Ok((out, false))
    }

    /// Every record of a table (used for small scans and start-up checks).
    pub fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        Ok(self.list(table, None, usize::MAX, |_: &T| true)?.0)
    }

    pub fn len(&self, table: Table) -> usize {
        self.tree(table).len()
    }

    pub fn name_owner(
        &self,
        table: Table,
        scope: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .names
            .get(name_key(table, scope, name))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The meta keys starting with `prefix`, without it, in order.
    pub fn meta_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for item in self.meta.scan_prefix(prefix.as_bytes()) {
            let (k, _) = item?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }

    /// Whether `table` holds any record (cheap, unlike `len`, which counts them all).
    pub fn has_records(&self, table: Table) -> Result<bool, StoreError> {
        Ok(self.tree(table).first()?.is_some())
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Applies every write of `batch` atomically, then flushes to disk. Returns only
    /// once the batch is durable: callers acknowledge after this.
    pub fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        (
            &self.vaults,
            &self.keystores,
            &self.keys,
            &self.audit,
            &self.names,
            &self.meta,
        )
            .transaction(|(vaults, keystores, keys, audit, names, meta)| {
                let tree = |t: Table| match t {
                    Table::Vaults => vaults,
                    Table::Keystores => keystores,
                    Table::Keys => keys,
                    Table::Audit => audit,
                };
                for op in &batch.ops {
                    match op {
                        Op::Put(t, id, bytes) => {
                            tree(*t).insert(id.as_bytes(), bytes.as_slice())?;
                        }
                        Op::Delete(t, id) => {
                            tree(*t).remove(id.as_bytes())?;
                        }
                        Op::ClaimName(t, scope, name, id) => {
                            names.insert(name_key(*t, scope, name), id.as_bytes())?;
                        }
                        Op::ReleaseName(t, scope, name) => {
                            names.remove(name_key(*t, scope, name))?;
                        }
                        Op::SetMeta(k, v) => {
                            meta.insert(k.as_bytes(), v.as_slice())?;
                        }
                        Op::DeleteMeta(k) => {
                            meta.remove(k.as_bytes())?;
                        }
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Io(e),
                TransactionError::Abort(()) => {
                    StoreError::Io(sled::Error::Unsupported("aborted".into()))
                }
            })?;
        self.sync()
    }

    /// sled's flush, then `fdatasync` of its log file (see `log_file`).
    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.log_file
            .sync_data()
            .map_err(|e| StoreError::Io(sled::Error::Io(e)))
    }

    /// Decodes every record of `table` as `T`: a start-up check that refuses a
    /// database this build cannot read, naming the first bad record.
    pub fn check_decodes<T: DeserializeOwned>(&self, table: Table) -> Result<usize, StoreError> {
        let mut n = 0;
        self.scan::<T>(table, |_| n += 1)?;
        Ok(n)
    }

    /// Decodes every record of `table` in id order and hands each to `f`, holding one at a
    /// time (tables may hold millions). Stops at the first record that does not decode,
    /// naming it. Returns how many were read.
    pub fn scan<T: DeserializeOwned>(
        &self,
        table: Table,
        mut f: impl FnMut(T),
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.tree(table).iter() {
            let (k, v) = item?;
            let record: T = decode_record(table, &k, &v)?;
            f(record);
            n += 1;
        }
        Ok(n)
    }

    /// Flushes outstanding writes (at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.sync()
    }
}

/// sled writes a snapshot to `snap.<lsn>.generating` and renames it when complete; a crash
/// in between leaves that file behind (empty or partial), and sled 0.34 then refuses to open
/// the database ("Read corrupted data"). Such a file is never a finished snapshot: removing
/// it makes sled recover from its log, as after any crash.
fn remove_unfinished_snapshots(path: &Path) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %entry.path().display(), "removing a database snapshot a crash left unfinished");
            std::fs::remove_file(entry.path()).map_err(|e| StoreError::Open {
                path: entry.path(),
                detail: format!("cannot remove an unfinished snapshot: {e}"),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Rec {
        id: String,
        n: u32,
    }

    /// SIGKILL while sled writes a snapshot leaves an empty `snap.<lsn>.generating` file;
    /// sled 0.34 then refused to open the database ("Read corrupted data"). Found by
    /// tests/crash_consistency.rs (a kill while keyorchd was starting).
    #[test]
    fn a_snapshot_cut_short_does_not_stop_the_store_from_opening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut b = Batch::new();
            b.put(
                Table::Vaults,
                "a",
                &Rec {
                    id: "a".into(),
                    n: 7,
                },
            )
            .unwrap();
            s.commit(b).unwrap();
        }
        std::fs::write(dir.path().join("snap.7FFFFFFFFFFFFFFF.generating"), b"").unwrap();
        let s = Store::open(dir.path()).expect("open after a snapshot cut short");
        assert_eq!(s.get::<Rec>(Table::Vaults, "a").unwrap().unwrap().n, 7);
    }

    #[test]
    fn batches_are_atomic_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut b = Batch::new();
            b.put(
                Table::Vaults,
                "a",
                &Rec {
                    id: "a".into(),
                    n: 1,
                },
            )
            .unwrap();
            b.claim_name(Table::Vaults, "", "alpha", "a");
            s.commit(b).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get::<Rec>(Table::Vaults, "a").unwrap().unwrap().n, 1);
        assert_eq!(
            s.name_owner(Table::Vaults, "", "alpha").unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(s.name_owner(Table::Keys, "", "alpha").unwrap(), None);
    }

    #[test]
    fn paging_in_id_order_with_filter() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut b = Batch::new();
        for i in 0..10u32 {
            b.put(
                Table::Keys,
                &format!("k{i}"),
                &Rec {
                    id: format!("k{i}"),
                    n: i,
                },
            )
            .unwrap();
        }
        s.commit(b).unwrap();
        let (page, more) = s
            .list::<Rec>(Table::Keys, None, 3, |r| r.n % 2 == 0)
            .unwrap();
        assert_eq!(page.iter().map(|r| r.n).collect::<Vec<_>>(), vec![0, 2, 4]);
        assert!(more);
        let (page, more) = s
            .list::<Rec>(Table::Keys, Some("k4"), 3, |r| r.n % 2 == 0)
            .unwrap();
        assert_eq!(page.iter().map(|r| r.n).collect::<Vec<_>>(), vec![6, 8]);
        assert!(!more);
    }

    #[test]
    fn newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut b = Batch::new();
            b.set_meta("schema_version", &(SCHEMA_VERSION + 1).to_be_bytes());
            s.commit(b).unwrap();
        }
        let err = Store::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
        // Still refused: nothing was rewritten.
        assert!(matches!(
            Store::open(dir.path()).err().unwrap(),
            StoreError::NewerSchema { .. }
        ));
    }

    #[test]
    fn undecodable_records_are_reported_with_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.vaults.insert("bad", &b"\x01{not json"[..]).unwrap();
        let err = s.check_decodes::<Rec>(Table::Vaults).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { ref id, .. } if id == "bad"),
            "{err}"
        );
        s.vaults.insert("bad2", &b"\x09{}"[..]).unwrap();
        s.vaults.remove("bad").unwrap();
        assert!(s.check_decodes::<Rec>(Table::Vaults).is_err());
    }
}
