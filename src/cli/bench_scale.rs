//! `keyorch bench scale`: reads and writes against a store holding many keys (issue 16's
//! scale figures). The keys are made beforehand by `keyorchd --fill-keys N` (real keys,
//! generated in the HSM); this command pages through every key of the vault with ListKeys,
//! then times GetKey on keys drawn at random from all of them, at concurrency 1 and 16, and
//! CreateKey (ACTIVE, one internal target) one at a time, beside the same key generation and
//! wrap straight through cryptoki in this process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use serde_json::{json, Value};

use super::bench::{open_raw, DEFAULT_MODULE, DEFAULT_TOKEN_LABEL};
use super::bench_raw::RawToken;
use super::bench_soak::rss_kib;
use super::bench_stats::{millis, percentile};
use super::output::{self, OutputFormat, Table};
use super::{CliError, Context, Outcome};
use crate::proto::v1::{
    CreateKeyRequest, GetKeyRequest, KeyAlgorithm, KeyIdRequest, ListKeysRequest, PageRequest,
};

#[derive(Debug, Clone, PartialEq, Args)]
pub struct BenchScaleArgs {
    /// The vault holding the keys (`keyorchd --fill-keys` prints its id).
    #[arg(long, value_name = "ID")]
    pub vault_id: String,
    /// GetKey calls per concurrency level, on keys drawn at random from the whole vault.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub gets: u32,
    /// CreateKey calls, one at a time; the keys are destroyed and deleted afterwards.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub creates: u32,
    /// ListKeys page size for the walk through every key.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// keyorchd's dev-mode state folder (softhsm2.conf, user-pin), for the baseline.
    #[arg(long, value_name = "DIR", default_value_os_t = crate::paths::default_state_dir())]
    pub state_dir: PathBuf,
    /// PKCS#11 module for the baseline.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODULE)]
    pub module: PathBuf,
    /// Label of the token for the baseline.
    #[arg(long, value_name = "LABEL", default_value = DEFAULT_TOKEN_LABEL)]
    pub token_label: String,
    /// File holding the user PIN [default: DIR/user-pin].
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Skip the raw PKCS#11 baseline.
    #[arg(long)]
    pub no_raw: bool,
}

/// Latencies of one measured operation.
struct Timed {
    op: String,
    count: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

impl Timed {
    fn new(op: impl Into<String>, mut ns: Vec<u64>, elapsed: Duration) -> Timed {
        ns.sort_unstable();
        Timed {
            op: op.into(),
            count: ns.len(),
            per_sec: ns.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50: Duration::from_nanos(percentile(&ns, 50.0)),
            p99: Duration::from_nanos(percentile(&ns, 99.0)),
        }
    }
}

fn since(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

pub async fn scale(args: BenchScaleArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let clients = ctx.clients().await?;
    let pid = match tokio::net::UnixStream::connect(&ctx.socket).await {
        Ok(s) => s.peer_cred().ok().and_then(|c| c.pid()),
        Err(_) => None,
    };
    let rss_start = rss_kib(pid);

    // 1. Every key of the vault, page by page.
    let mut ids = Vec::new();
    let mut page_ns = Vec::new();
    let mut token = String::new();
    let walk = Instant::now();
    loop {
        let t = Instant::now();
        let page = clients
            .keys
            .clone()
            .list_keys(ListKeysRequest {
                vault_id: args.vault_id.clone(),
                page: Some(PageRequest {
                    page_size: args.page_size,
                    page_token: token.clone(),
                }),
                ..Default::default()
            })
            .await?
            .into_inner();
        page_ns.push(since(t));
        ids.extend(page.keys.into_iter().map(|k| k.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let walk_time = walk.elapsed();
    if ids.is_empty() {
        return Err(CliError::Local(format!(
            "vault {} holds no keys: fill it first with keyorchd --fill-keys N",
            args.vault_id
        )));
    }
    let keystore_id = clients
        .keys
        .clone()
        .get_key(GetKeyRequest { id: ids[0].clone() })
        .await?
        .into_inner()
        .target_keystore_ids
        .first()
        .cloned()
        .ok_or_else(|| CliError::Local(format!("key {} has no target keystore", ids[0])))?;
    let listed = ids.len();
    let mut figures = vec![Timed::new(
        format!("ListKeys page of {}", args.page_size),
        page_ns,
        walk_time,
    )];

    // 2. GetKey on random keys, at concurrency 1 and 16.
    let ids = Arc::new(ids);
    for level in [1usize, 16] {
        let per_task = (args.gets as usize).div_ceil(level);
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for task in 0..level {
            let (c, ids) = (ctx.clients().await?, ids.clone());
            set.spawn(async move {
                // xorshift64: a fixed, spread-out draw per task (no cryptographic need).
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (task as u64 + 1);
                let mut ns = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = ids[(x % ids.len() as u64) as usize].clone();
                    let t = Instant::now();
                    c.keys.clone().get_key(GetKeyRequest { id }).await?;
                    ns.push(since(t));
                }
                Ok::<_, CliError>(ns)
            });
        }
        let mut all = Vec::new();
        while let Some(j) = set.join_next().await {
            all.extend(j.map_err(|e| CliError::Local(format!("a GetKey task failed: {e}")))??);
        }
        figures.push(Timed::new(
            format!("GetKey, {level} concurrent"),
            all,
            started.elapsed(),
        ));
    }

    // 3. CreateKey, one at a time; then the new keys go again (not timed).
    let mut made = Vec::new();
    let mut ns = Vec::new();
    let started = Instant::now();
    let create = async {
        for i in 0..args.creates {
            let t = Instant::now();
            let key = clients
                .keys
                .clone()
                .create_key(CreateKeyRequest {
                    vault_id: args.vault_id.clone(),
                    name: format!(
                        "scale-{}-{i}",
                        &uuid::Uuid::new_v4().simple().to_string()[..8]
                    ),
                    description: "temporary, made by keyorch bench scale".into(),
                    algorithm: KeyAlgorithm::Aes as i32,
                    key_size_bits: 256,
                    target_keystore_ids: vec![keystore_id.clone()],
                    activate: true,
                    tags: Default::default(),
                    external_key_id: String::new(),
                })
                .await?
                .into_inner();
            ns.push(since(t));
            made.push(key.id);
        }
        Ok::<_, CliError>(())
    };
    let created = create.await;
    let create_time = started.elapsed();
    let mut warnings = Vec::new();
    for id in &made {
        for step in ["deactivate", "destroy", "delete"] {
            let req = KeyIdRequest { id: id.clone() };
            let mut k = clients.keys.clone();
            let r = match step {
                "deactivate" => k.deactivate_key(req).await.map(|_| ()),
                "destroy" => k.destroy_key(req).await.map(|_| ()),
                _ => k.delete_key(req).await.map(|_| ()),
            };
            if let Err(e) = r {
                warnings.push(format!("{step} {id}: {}", e.message()));
                break;
            }
        }
    }
    for w in &warnings {
        eprintln!("warning: bench cleanup: {w}");
    }
    created?;
    figures.push(Timed::new(
        "CreateKey (ACTIVE), 1 at a time",
        ns,
        create_time,
    ));

    // 4. The same generation and wrap straight through cryptoki: CreateKey's HSM work.
    let raw = open_raw(
        args.no_raw,
        &args.module,
        &args.token_label,
        args.pin_file.as_deref(),
        &args.state_dir,
    )
    .await?;
    if let Some(raw) = raw {
        let creates = args.creates;
        let timed = tokio::task::spawn_blocking(move || {
            let timed = raw_generate_and_wrap(&raw, creates);
            raw.close();
            timed
        })
        .await
        .map_err(|e| CliError::Local(format!("the raw baseline did not finish: {e}")))??;
        figures.push(timed);
    }
    let rss_end = rss_kib(pid);
    output::print(&render(
        ctx.output, &args, listed, &figures, rss_start, rss_end,
    ))?;
    Ok(Outcome::Success)
}

/// C_GenerateKey (AES-256, session object) + C_WrapKey (CKM_AES_KEY_WRAP_PAD under a session
/// AES-256 KEK) + C_DestroyObject, `creates` times: what CreateKey asks of the HSM. The caller
/// closes `raw`.
fn raw_generate_and_wrap(raw: &RawToken, creates: u32) -> Result<Timed, CliError> {
    let fail = |what: &str, e: cryptoki::error::Error| {
        CliError::Local(format!("raw PKCS#11 baseline: {what}: {e}"))
    };
    {
        let session = raw.session()?;
        let aes = |wrap: bool| {
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(!wrap),
                Attribute::Wrap(wrap),
            ]
        };
        let kek = session
            .generate_key(&Mechanism::AesKeyGen, &aes(true))
            .map_err(|e| fail("C_GenerateKey (KEK)", e))?;
        let mut ns = Vec::with_capacity(creates as usize);
        let started = Instant::now();
        for _ in 0..creates {
            let t = Instant::now();
            let key = session
                .generate_key(&Mechanism::AesKeyGen, &aes(false))
                .map_err(|e| fail("C_GenerateKey", e))?;
            session
                .wrap_key(&Mechanism::AesKeyWrapPad, kek, key)
                .map_err(|e| fail("C_WrapKey", e))?;
            session
                .destroy_object(key)
                .map_err(|e| fail("C_DestroyObject", e))?;
            ns.push(since(t));
        }
        Ok(Timed::new(
            "raw: generate + wrap (cryptoki)",
            ns,
            started.elapsed(),
        ))
    }
}

fn render(
    format: OutputFormat,
    args: &BenchScaleArgs,
    listed: usize,
    figures: &[Timed],
    rss_start: Option<u64>,
    rss_end: Option<u64>,
) -> String {
    let mib = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
    match format {
        OutputFormat::Json => {
            let ops: Vec<Value> = figures
                .iter()
                .map(|f| {
                    json!({
                        "op": f.op,
                        "count": f.count,
                        "per_sec": f.per_sec,
                        "p50_ms": f.p50.as_secs_f64() * 1e3,
                        "p99_ms": f.p99.as_secs_f64() * 1e3,
                    })
                })
                .collect();
            output::render_json(&json!({
                "vault_id": args.vault_id,
                "keys_listed": listed,
                "operations": ops,
                "rss_mib_start": mib(rss_start),
                "rss_mib_end": mib(rss_end),
            }))
        }
        OutputFormat::Table => {
            let mut t = Table::new(vec!["operation", "count", "per s", "p50", "p99"]);
            for f in figures {
                t.push(vec![
                    f.op.clone(),
                    f.count.to_string(),
                    format!("{:.0}", f.per_sec),
                    millis(f.p50),
                    millis(f.p99),
                ]);
            }
            let fmt =
                |k: Option<u64>| mib(k).map_or("unknown".to_string(), |m| format!("{m:.1} MiB"));
            format!(
                "{} keys listed in vault {}\n{}\nkeyorchd RSS: {} at the start, {} at the end\n",
                listed,
                args.vault_id,
                t.render(),
                fmt(rss_start),
                fmt(rss_end)
            )
        }
    }
}
