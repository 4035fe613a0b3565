//! `keyorch bench soak`: many clients doing mixed operations for minutes (issue 16's soak):
//! every error is reported (none is expected), with p50/p99 per operation and keyorchd's
//! resident memory at the start, the end and its highest sample.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use super::bench::parse_secs;
use super::bench_fixture::Fixture;
use super::bench_stats::{micros, millis, percentile};
use super::output::{self, OutputFormat, Table};
use super::{CliError, Context, Outcome};
use crate::client::Clients;
use crate::proto::v1::{
    create_keystore_request, CreateKeyRequest, CreateKeystoreRequest, DecryptRequest,
    EncryptRequest, GetKeyRequest, InternalKeystoreConfig, KeyAlgorithm, KeyIdRequest,
    KeystoreType, ListKeysRequest, PageRequest,
};

#[derive(Debug, Clone, PartialEq, Args)]
pub struct BenchSoakArgs {
    /// Concurrent clients: tokio tasks, each with its own channel to the socket.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub clients: u32,
    /// How long the soak runs.
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = parse_secs)]
    pub duration: Duration,
    /// Keys made before the run, shared by every client for encrypt, decrypt and reads.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub keys: u32,
    /// Plaintext bytes per Encrypt.
    #[arg(long, value_name = "BYTES", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub payload: u32,
}

/// The operations of the mix, in the order the report lists them.
const OPS: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "GetKey",
    "ListKeys",
    "CreateKey",
    "DeactivateKey",
    "DestroyKey",
    "DeleteKey",
];

/// What one client saw: latencies per operation, and every error.
#[derive(Default)]
struct Tally {
    latencies_ns: BTreeMap<&'static str, Vec<u64>>,
    errors: Vec<String>,
}

impl Tally {
    fn record<T>(
        &mut self,
        op: &'static str,
        started: Instant,
        r: Result<T, tonic::Status>,
    ) -> Option<T> {
        let ns = started.elapsed().as_nanos() as u64;
        match r {
            Ok(v) => {
                self.latencies_ns.entry(op).or_default().push(ns);
                Some(v)
            }
            Err(s) => {
                self.errors.push(format!("{op}: {}", CliError::from(s)));
                None
            }
        }
    }
}

/// keyorchd's VmRSS, in KiB.
pub(super) fn rss_kib(pid: Option<i32>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One operation's figures over the whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpFigures {
    pub op: &'static str,
    pub count: u64,
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

pub async fn soak(args: BenchSoakArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let clients = ctx.clients().await?;
    let pid = match tokio::net::UnixStream::connect(&ctx.socket).await {
        Ok(s) => s.peer_cred().ok().and_then(|c| c.pid()),
        Err(_) => None,
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut fixture = Fixture::default();
    let name = format!("bench-{suffix}");
    let description = "temporary, made by keyorch bench soak";
    let run = async {
        let vault_id = fixture.vault(&clients, &name, description).await?;
        let keystore = fixture
            .keystore(
                &clients,
                CreateKeystoreRequest {
                    vault_id: vault_id.clone(),
                    name: name.clone(),
                    description: description.into(),
                    r#type: KeystoreType::Internal as i32,
                    connect: true,
                    config: Some(create_keystore_request::Config::Internal(
                        InternalKeystoreConfig {},
                    )),
                    credentials: None,
                },
            )
            .await?;
        let mut shared = Vec::with_capacity(args.keys as usize);
        for i in 0..args.keys {
            let key = clients
                .keys
                .clone()
                .create_key(new_key(&vault_id, &format!("shared-{i}"), &keystore.id))
                .await?
                .into_inner();
            shared.push(key.id);
        }
        let shared = Arc::new(shared);
        let rss_start = rss_kib(pid);
        let started = Instant::now();
        let until = started + args.duration;
        let mut set = tokio::task::JoinSet::new();
        for client in 0..args.clients {
            let channel = ctx.clients().await?;
            let (shared, vault_id, ks) = (shared.clone(), vault_id.clone(), keystore.id.clone());
            let payload = vec![client as u8; args.payload as usize];
            set.spawn(async move {
                worker(channel, client, shared, vault_id, ks, payload, until).await
            });
        }
        // keyorchd's memory every 5 s while the clients work.
        let mut rss_max = rss_start.unwrap_or(0);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(5).min(until - Instant::now())).await;
            rss_max = rss_max.max(rss_kib(pid).unwrap_or(0));
        }
        let mut tally = Tally::default();
        while let Some(joined) = set.join_next().await {
            let t = joined
                .map_err(|e| CliError::Local(format!("a soak client did not finish: {e}")))?;
            for (op, mut l) in t.latencies_ns {
                tally.latencies_ns.entry(op).or_default().append(&mut l);
            }
            tally.errors.extend(t.errors);
        }
        let elapsed = started.elapsed();
        let rss_end = rss_kib(pid);
        Ok::<_, CliError>((tally, elapsed, rss_start, rss_end, rss_max))
    };
    let result = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Err(CliError::Local("interrupted".into())),
    };
    // The shared keys and whatever a client left go with the vault: destroy and delete them.
    let mut warnings = remove_keys(&clients, &fixture).await;
    warnings.extend(fixture.remove(&clients).await);
    for w in &warnings {
        eprintln!("warning: bench cleanup: {w}");
    }
    let (mut tally, elapsed, rss_start, rss_end, rss_max) = result?;
    let figures: Vec<OpFigures> = OPS
        .iter()
        .map(|op| {
            let mut l = tally.latencies_ns.remove(op).unwrap_or_default();
            l.sort_unstable();
            OpFigures {
                op,
                count: l.len() as u64,
                per_sec: l.len() as f64 / elapsed.as_secs_f64(),
                p50: Duration::from_nanos(percentile(&l, 50.0)),
                p99: Duration::from_nanos(percentile(&l, 99.0)),
            }
        })
        .collect();
    output::print(&render(
        ctx.output,
        &args,
        elapsed,
        &figures,
        &tally.errors,
        (rss_start, rss_end, Some(rss_max)),
    ))?;
    if !tally.errors.is_empty() {
        return Err(CliError::Local(format!(
            "{} operations failed during the soak (the first: {})",
            tally.errors.len(),
            tally.errors[0]
        )));
    }
    if warnings.is_empty() {
        Ok(Outcome::Success)
    } else {
        Err(CliError::Local(format!(
            "bench cleanup incomplete: remove vault {name} and its contents by hand"
        )))
    }
}

fn new_key(vault_id: &str, name: &str, keystore_id: &str) -> CreateKeyRequest {
    CreateKeyRequest {
        vault_id: vault_id.to_string(),
        name: name.to_string(),
        description: "temporary, made by keyorch bench soak".into(),
        algorithm: KeyAlgorithm::Aes as i32,
        key_size_bits: 256,
        target_keystore_ids: vec![keystore_id.to_string()],
        activate: true,
        tags: Default::default(),
        external_key_id: String::new(),
    }
}

/// One client: a fixed mix drawn by a per-client counter — per 10 iterations, 4 encrypt +
/// decrypt round trips (the plaintext checked), 3 GetKey, 2 ListKeys pages, and one whole
/// lifecycle of a key of its own (create ACTIVE, deactivate, destroy, delete).
async fn worker(
    c: Clients,
    client: u32,
    shared: Arc<Vec<String>>,
    vault_id: String,
    keystore_id: String,
    payload: Vec<u8>,
    until: Instant,
) -> Tally {
    let mut t = Tally::default();
    let mut i: u64 = 0;
    while Instant::now() < until {
        let key = &shared[(i as usize + client as usize) % shared.len()];
        match i % 10 {
            0..=3 => {
                let s = Instant::now();
                let r = c
                    .crypto
                    .clone()
                    .encrypt(EncryptRequest {
                        key_id: key.clone(),
                        plaintext: payload.clone(),
                        aad: Vec::new(),
                    })
                    .await;
                if let Some(enc) = t.record("Encrypt", s, r) {
                    let s = Instant::now();
                    let r = c
                        .crypto
                        .clone()
                        .decrypt(DecryptRequest {
                            key_id: key.clone(),
                            ciphertext: enc.into_inner().ciphertext,
                            aad: Vec::new(),
                        })
                        .await;
                    if let Some(dec) = t.record("Decrypt", s, r) {
                        if dec.into_inner().plaintext != payload {
                            t.errors
                                .push("Decrypt: the plaintext came back different".into());
                        }
                    }
                }
            }
            4..=6 => {
                let s = Instant::now();
                let r = c
                    .keys
                    .clone()
                    .get_key(GetKeyRequest { id: key.clone() })
                    .await;
                t.record("GetKey", s, r);
            }
            7 | 8 => {
                let s = Instant::now();
                let r = c
                    .keys
                    .clone()
                    .list_keys(ListKeysRequest {
                        vault_id: vault_id.clone(),
                        page: Some(PageRequest {
                            page_size: 20,
                            page_token: String::new(),
                        }),
                        ..Default::default()
                    })
                    .await;
                t.record("ListKeys", s, r);
            }
            _ => {
                let s = Instant::now();
                let name = format!("c{client}-{i}");
                let r = c
                    .keys
                    .clone()
                    .create_key(new_key(&vault_id, &name, &keystore_id))
                    .await;
                if let Some(k) = t.record("CreateKey", s, r) {
                    let id = k.into_inner().id;
                    for op in ["DeactivateKey", "DestroyKey", "DeleteKey"] {
                        let req = KeyIdRequest { id: id.clone() };
                        let mut keys = c.keys.clone();
                        let s = Instant::now();
                        let ok = match op {
                            "DeactivateKey" => {
                                let r = keys.deactivate_key(req).await;
                                t.record(op, s, r).is_some()
                            }
                            "DestroyKey" => {
                                let r = keys.destroy_key(req).await;
                                t.record(op, s, r).is_some()
                            }
                            _ => {
                                let r = keys.delete_key(req).await;
                                t.record(op, s, r).is_some()
                            }
                        };
                        if !ok {
                            break;
                        }
                    }
                }
            }
        }
        i += 1;
    }
    t
}

/// Destroys and deletes every key left in the fixture's vault (the shared ones, and any a
/// failed lifecycle left behind).
async fn remove_keys(clients: &Clients, fixture: &Fixture) -> Vec<String> {
    let Some(vault_id) = fixture.vault_id() else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    let mut keys = clients.keys.clone();
    let mut token = String::new();
    let mut ids = Vec::new();
    loop {
        match keys
            .list_keys(ListKeysRequest {
                vault_id: vault_id.to_string(),
                page: Some(PageRequest {
                    page_size: 500,
                    page_token: token.clone(),
                }),
                ..Default::default()
            })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                ids.extend(r.keys.into_iter().map(|k| (k.id, k.state)));
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            Err(s) => {
                warnings.push(format!("list keys: {}", CliError::from(s)));
                break;
            }
        }
    }
    for (id, state) in ids {
        let req = || KeyIdRequest { id: id.clone() };
        if state == crate::proto::v1::KeyState::Active as i32 {
            let _ = keys.deactivate_key(req()).await;
        }
        let _ = keys.destroy_key(req()).await;
        if let Err(s) = keys.delete_key(req()).await {
            warnings.push(format!("delete key {id}: {}", CliError::from(s)));
        }
    }
    warnings
}

fn render(
    format: OutputFormat,
    args: &BenchSoakArgs,
    elapsed: Duration,
    figures: &[OpFigures],
    errors: &[String],
    (start, end, max): (Option<u64>, Option<u64>, Option<u64>),
) -> String {
    let mib = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
    match format {
        OutputFormat::Table => {
            let mut t = Table::new(vec!["operation", "count", "per s", "p50", "p99"]);
            for f in figures {
                t.push(vec![
                    f.op.to_string(),
                    f.count.to_string(),
                    format!("{:.0}", f.per_sec),
                    millis(f.p50),
                    millis(f.p99),
                ]);
            }
            let cell =
                |k: Option<u64>| mib(k).map_or_else(|| "-".to_string(), |m| format!("{m:.1} MiB"));
            format!(
                "soak: {} clients, {} keys shared, {} B plaintext, {:.0} s\n{}\nerrors: {}\n\
                 keyorchd RSS: start {}, end {}, highest sample {}\n",
                args.clients,
                args.keys,
                args.payload,
                elapsed.as_secs_f64(),
                t.render(),
                errors.len(),
                cell(start),
                cell(end),
                cell(max),
            )
        }
        OutputFormat::Json => {
            let ops: Vec<Value> = figures
                .iter()
                .map(|f| {
                    json!({
                        "operation": f.op,
                        "count": f.count,
                        "per_sec": f.per_sec,
                        "p50_us": micros(f.p50),
                        "p99_us": micros(f.p99),
                    })
                })
                .collect();
            output::render_json(&json!({
                "operation": "soak",
                "clients": args.clients,
                "keys": args.keys,
                "payload_bytes": args.payload,
                "elapsed_secs": elapsed.as_secs_f64(),
                "operations": ops,
                "errors": errors,
                "rss_mib": { "start": mib(start), "end": mib(end), "max": mib(max) },
            }))
        }
    }
}
