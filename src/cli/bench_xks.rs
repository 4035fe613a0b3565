//! `keyorch bench xks`: Encrypt with a ciphertext integrity value through keyorchd's XKS
//! proxy, over loopback HTTP/1.1 with keep-alive connections and every request signed with
//! SigV4 by AWS's own signer (the `aws-sigv4` crate), as AWS KMS calls a proxy — beside raw
//! in-process AES-256-GCM on the same token in the same run. Closed-loop levels (each
//! connection sends its next request when the last is answered), and an optional open-loop
//! run at a fixed request rate whose latencies count from each request's scheduled time, so
//! a proxy that falls behind shows it in p99 rather than in a quietly lower rate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::bench::{
    close_raw, create_aes_fixture, open_raw, parse_secs, DEFAULT_MODULE, DEFAULT_TOKEN_LABEL,
};
use super::bench_cpu::{CpuClock, CpuPerOp};
use super::bench_fixture::Fixture;
use super::bench_raw::RawToken;
use super::bench_stats::{micros, millis, throughput_ratio, Summary, WorkerSample};
use super::output::{self, OutputFormat, Table};
use super::{CliError, Context, Outcome};

/// The XKS proxy's SigV4 service name.
const SERVICE: &str = "kms-xks-proxy";
/// The region the requests are signed for (the proxy accepts any).
const REGION: &str = "us-east-1";

#[derive(Debug, Clone, PartialEq, Args)]
pub struct BenchXksArgs {
    /// Concurrency levels: keep-alive HTTP/1.1 connections, one request in flight on each
    /// (keyorchd); threads (raw).
    #[arg(
        long,
        value_name = "N,N,..",
        value_delimiter = ',',
        default_value = "1,4,16",
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub concurrency: Vec<u32>,
    /// Measured seconds per level (and of the --rate run).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub duration: Duration,
    /// Unmeasured seconds before each level.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = super::bench::parse_warmup_secs)]
    pub warmup: Duration,
    /// Plaintext size in bytes (the XKS API takes at most 4,300).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 32,
        value_parser = clap::value_parser!(u32).range(1..=4300)
    )]
    pub payload: u32,
    /// After the levels, an open-loop run: this many requests per second for --duration,
    /// over as many connections as the largest --concurrency level, latency counted from
    /// each request's scheduled send time.
    #[arg(long, value_name = "REQ_PER_SEC", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: Option<u32>,
    /// The proxy's address (plain HTTP on loopback, as `keyorchd --dev --xks-listen`).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:4600")]
    pub proxy: SocketAddr,
    /// File with the endpoint's `uri_path`, `access_key_id` and `secret_access_key`
    /// [default: DIR/xks-credentials, written by `keyorchd --dev --xks-listen`].
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// keyorchd's dev-mode state folder (xks-credentials, softhsm2.conf, user-pin).
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

/// An XKS endpoint's SigV4 credential, as `xks-credentials` holds it.
struct XksCredential {
    uri_path: String,
    access_key_id: String,
    secret: SecretString,
}

fn read_credentials(path: &Path) -> Result<XksCredential, CliError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        CliError::Io {
            what: format!(
                "cannot read the XKS credentials {} (see --credentials, --state-dir; `keyorchd --dev --xks-listen` writes it)",
                path.display()
            ),
            source,
        }
    })?);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim_start().strip_prefix('='))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| CliError::Local(format!("{}: no {k} line", path.display())))
    };
    Ok(XksCredential {
        uri_path: get("uri_path")?,
        access_key_id: get("access_key_id")?,
        secret: SecretString::from(get("secret_access_key")?),
    })
}

/// What every request needs: where, who, and the body's plaintext.
struct Target {
    proxy: SocketAddr,
    path: String,
    credential: XksCredential,
    payload: Vec<u8>,
}

impl Target {
    /// An Encrypt request with CDIV, signed now.
    fn request(&self) -> Result<http::Request<Full<Bytes>>, CliError> {
        let body = json!({
            "requestMetadata": {
                "awsPrincipalArn": "arn:aws:iam::123456789012:user/bench",
                "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/bench",
                "kmsOperation": "Encrypt",
                "kmsRequestId": uuid::Uuid::new_v4().to_string(),
            },
            "plaintext": B64.encode(&self.payload),
            "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
        })
        .to_string();
        let host = self.proxy.to_string();
        let uri = format!("http://{host}{}", self.path);
        let mut req = http::Request::builder()
            .method("POST")
            .uri(&uri)
            .header("host", &host)
            .header("content-type", "application/json")
            .body(body.clone().into_bytes())
            .map_err(|e| CliError::Local(format!("bench request: {e}")))?;
        let identity = Credentials::new(
            &self.credential.access_key_id,
            self.credential.secret.expose_secret(),
            None,
            None,
            "keyorch-bench",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| CliError::Local(format!("SigV4 parameters: {e}")))?
            .into();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            &uri,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| CliError::Local(format!("SigV4: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| CliError::Local(format!("SigV4: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut req);
        Ok(req.map(|b| Full::new(Bytes::from(b))))
    }
}

/// One keep-alive HTTP/1.1 connection to the proxy.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(proxy: SocketAddr) -> Result<Connection, CliError> {
        let stream = tokio::net::TcpStream::connect(proxy)
            .await
            .map_err(|source| CliError::Io {
                what: format!("cannot connect to the XKS proxy at {proxy} (see --proxy)"),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CliError::Local(format!("HTTP/1.1 handshake with {proxy}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection { sender })
    }

    /// Sends one Encrypt and returns the answer's JSON; anything but 200 is an error naming
    /// the proxy's errorName and errorMessage.
    async fn encrypt(&mut self, target: &Target) -> Result<Value, CliError> {
        let req = target.request()?;
        self.sender
            .ready()
            .await
            .map_err(|e| CliError::Local(format!("XKS connection: {e}")))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| CliError::Local(format!("XKS request: {e}")))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::Local(format!("XKS answer: {e}")))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != http::StatusCode::OK {
            return Err(CliError::Local(format!(
                "the XKS proxy answered {status}: {} {}",
                v["errorName"].as_str().unwrap_or("?"),
                v["errorMessage"].as_str().unwrap_or("")
            )));
        }
        Ok(v)
    }
}

/// Checks one answer the way KMS does (Appendix C of the spec): the integrity value is
/// SHA-256 over iv || ciphertext || tag (no AAD, no metadata here).
fn check_answer(v: &Value, payload_len: usize) -> Result<(), CliError> {
    let field = |n: &str| {
        v[n].as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| CliError::Local(format!("the XKS answer has no base64 {n}: {v}")))
    };
    let (ct, iv, tag, cdiv) = (
        field("ciphertext")?,
        field("initializationVector")?,
        field("authenticationTag")?,
        field("ciphertextDataIntegrityValue")?,
    );
    let mut h = Sha256::new();
    h.update(&iv);
    h.update(&ct);
    h.update(&tag);
    if ct.len() != payload_len || cdiv != h.finalize().to_vec() {
        return Err(CliError::Local(
            "the XKS answer's ciphertext length or ciphertextDataIntegrityValue is wrong".into(),
        ));
    }
    Ok(())
}

/// One closed-loop level, or the open-loop run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct XksLevel {
    pub concurrency: u32,
    pub keyorchd: Summary,
    pub cpu: CpuPerOp,
    pub raw: Option<Summary>,
}

/// The open-loop run's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateRun {
    pub rate: u32,
    pub connections: u32,
    pub summary: Summary,
    pub max: Duration,
    pub cpu: CpuPerOp,
}

pub async fn xks(args: BenchXksArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let credential = read_credentials(
        &args
            .credentials
            .clone()
            .unwrap_or_else(|| args.state_dir.join("xks-credentials")),
    )?;
    let mut payload = vec![0u8; args.payload as usize];
    getrandom::fill(&mut payload)
        .map_err(|e| CliError::Local(format!("cannot draw a random payload: {e}")))?;

    let mut raw = open_raw(
        args.no_raw,
        &args.module,
        &args.token_label,
        args.pin_file.as_deref(),
        &args.state_dir,
    )
    .await?;

    let clients = match ctx.clients().await {
        Ok(c) => c,
        Err(e) => {
            close_raw(raw).await;
            return Err(e);
        }
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut fixture = Fixture::default();
    let measured = match create_aes_fixture(&mut fixture, &clients, &suffix, "xks").await {
        Ok(key_id) => {
            let target = Arc::new(Target {
                proxy: args.proxy,
                path: format!("{}/keys/{key_id}/encrypt", credential.uri_path),
                credential,
                payload,
            });
            tokio::select! {
                result = async {
                    let clock = CpuClock::for_daemon(&ctx.socket).await;
                    measure(&args, &target, &clock, &mut raw).await
                } => result,
                _ = tokio::signal::ctrl_c() => Err(CliError::Local("interrupted".into())),
            }
        }
        Err(e) => Err(e),
    };
    let warnings = fixture.remove(&clients).await;
    close_raw(raw).await;
    for w in &warnings {
        eprintln!("warning: bench cleanup: {w}");
    }
    let (levels, rate) = measured?;
    output::print(&render(ctx.output, &args, &levels, rate.as_ref()))?;
    if warnings.is_empty() {
        return Ok(Outcome::Success);
    }
    Err(CliError::Local(format!(
        "bench cleanup incomplete: remove vault bench-{suffix} and its contents by hand"
    )))
}

type Measured = (Vec<XksLevel>, Option<RateRun>);

async fn measure(
    args: &BenchXksArgs,
    target: &Arc<Target>,
    clock: &CpuClock,
    raw: &mut Option<RawToken>,
) -> Result<Measured, CliError> {
    // One checked round trip first: a wrong credential or path fails before any level.
    let mut probe = Connection::open(target.proxy).await?;
    check_answer(&probe.encrypt(target).await?, target.payload.len())?;
    drop(probe);

    let mut levels = Vec::with_capacity(args.concurrency.len());
    for &concurrency in &args.concurrency {
        let (keyorchd, cpu) = closed_level(
            target,
            clock,
            concurrency as usize,
            args.warmup,
            args.duration,
        )
        .await?;
        let raw_summary = match raw.take() {
            Some(token) => {
                let payload = target.payload.clone();
                let (warmup, duration) = (args.warmup, args.duration);
                let (token, result) = tokio::task::spawn_blocking(move || {
                    let r = token.measure(concurrency as usize, &payload, warmup, duration);
                    (token, r)
                })
                .await
                .map_err(|e| CliError::Local(format!("raw baseline did not finish: {e}")))?;
                *raw = Some(token);
                Some(result?)
            }
            None => None,
        };
        eprintln!(
            "bench xks: concurrency {concurrency}: keyorchd {:.0} req/s{}",
            keyorchd.ops_per_sec,
            raw_summary.map_or(String::new(), |r| format!(
                ", raw {:.0} ops/s",
                r.ops_per_sec
            ))
        );
        levels.push(XksLevel {
            concurrency,
            keyorchd,
            cpu,
            raw: raw_summary,
        });
    }
    let rate = match args.rate {
        Some(rate) => {
            let connections = args.concurrency.iter().copied().max().unwrap_or(16);
            let run = open_loop(target, clock, rate, connections, args.duration).await?;
            eprintln!(
                "bench xks: {rate} req/s scheduled: {:.0} req/s served, p99 {}",
                run.summary.ops_per_sec,
                millis(run.summary.p99)
            );
            Some(run)
        }
        None => None,
    };
    Ok((levels, rate))
}

/// `connections` connections, each sending Encrypt back to back.
async fn closed_level(
    target: &Arc<Target>,
    clock: &CpuClock,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<(Summary, CpuPerOp), CliError> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Connection::open(target.proxy).await?);
    }
    let measure_from = Instant::now() + warmup;
    let measure_until = measure_from + duration;
    let mut set = tokio::task::JoinSet::new();
    for mut conn in conns {
        let target = Arc::clone(target);
        set.spawn(async move {
            while Instant::now() < measure_from {
                conn.encrypt(&target).await?;
            }
            let started = Instant::now();
            let mut latencies_ns = Vec::with_capacity(1 << 14);
            loop {
                let t0 = Instant::now();
                if t0 >= measure_until {
                    break;
                }
                conn.encrypt(&target).await?;
                latencies_ns.push(t0.elapsed().as_nanos() as u64);
            }
            Ok::<_, CliError>(WorkerSample {
                latencies_ns,
                started,
                finished: Instant::now(),
            })
        });
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = clock.sample();
    tokio::time::sleep_until(measure_until.into()).await;
    let cpu_until = clock.sample();
    let mut samples = Vec::with_capacity(connections);
    while let Some(joined) = set.join_next().await {
        samples.push(
            joined.map_err(|e| CliError::Local(format!("a bench task did not finish: {e}")))??,
        );
    }
    let summary = Summary::from_workers(samples);
    Ok((summary, cpu_from.per_op(&cpu_until, summary.ops)))
}

/// `rate` requests per second for `duration`, spread over `connections` connections; each
/// request's latency counts from when it was due, so queueing behind a slow proxy counts.
async fn open_loop(
    target: &Arc<Target>,
    clock: &CpuClock,
    rate: u32,
    connections: u32,
    duration: Duration,
) -> Result<RateRun, CliError> {
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<Instant>(total.clamp(1, 1 << 20) as usize);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let mut conn = Connection::open(target.proxy).await?;
        let target = Arc::clone(target);
        let rx = Arc::clone(&rx);
        set.spawn(async move {
            let mut latencies_ns = Vec::new();
            loop {
                let due = { rx.lock().await.recv().await };
                let Some(due) = due else { break };
                conn.encrypt(&target).await?;
                latencies_ns.push(due.elapsed().as_nanos() as u64);
            }
            Ok::<_, CliError>(latencies_ns)
        });
    }
    let start = Instant::now() + Duration::from_millis(50);
    let cpu_from = {
        tokio::time::sleep_until(start.into()).await;
        clock.sample()
    };
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        if tx.send(due).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut all = Vec::with_capacity(total as usize);
    while let Some(joined) = set.join_next().await {
        all.extend(
            joined.map_err(|e| CliError::Local(format!("a bench task did not finish: {e}")))??,
        );
    }
    let finished = Instant::now();
    let cpu_until = clock.sample();
    let max = Duration::from_nanos(all.iter().copied().max().unwrap_or(0));
    let summary = Summary::from_workers(vec![WorkerSample {
        latencies_ns: all,
        started: start,
        finished,
    }]);
    Ok(RateRun {
        rate,
        connections,
        summary,
        max,
        cpu: cpu_from.per_op(&cpu_until, summary.ops),
    })
}

fn cpu_cell(cpu: Option<Duration>) -> String {
    cpu.map_or_else(|| "-".to_string(), |d| format!("{:.1} µs", micros(d)))
}

pub fn render(
    format: OutputFormat,
    args: &BenchXksArgs,
    levels: &[XksLevel],
    rate: Option<&RateRun>,
) -> String {
    let ratio = |l: &XksLevel| {
        l.raw
            .as_ref()
            .and_then(|r| throughput_ratio(&l.keyorchd, r))
    };
    match format {
        OutputFormat::Table => {
            let mut t = Table::new(vec![
                "connections",
                "keyorchd req/s",
                "p50",
                "p99",
                "cpu/req keyorchd",
                "cpu/req client",
                "raw ops/s",
                "p50",
                "p99",
                "ratio",
            ]);
            for l in levels {
                t.push(vec![
                    l.concurrency.to_string(),
                    format!("{:.0}", l.keyorchd.ops_per_sec),
                    millis(l.keyorchd.p50),
                    millis(l.keyorchd.p99),
                    cpu_cell(l.cpu.daemon),
                    cpu_cell(l.cpu.client),
                    super::bench::optional_cell(l.raw, |r| format!("{:.0}", r.ops_per_sec)),
                    super::bench::optional_cell(l.raw, |r| millis(r.p50)),
                    super::bench::optional_cell(l.raw, |r| millis(r.p99)),
                    ratio(l).map_or_else(|| "-".to_string(), |r| format!("{r:.3}")),
                ]);
            }
            let mut text = format!(
                "xks encrypt with CDIV, {} B plaintext, {} s warmup + {} s per level\n{}",
                args.payload,
                args.warmup.as_secs_f64(),
                args.duration.as_secs_f64(),
                t.render()
            );
            if let Some(r) = rate {
                text.push_str(&format!(
                    "\nopen loop: {} req/s scheduled over {} connections for {} s: {:.0} req/s served, \
                     p50 {}, p99 {}, max {} (from each request's due time), cpu/req keyorchd {}, client {}\n",
                    r.rate,
                    r.connections,
                    args.duration.as_secs_f64(),
                    r.summary.ops_per_sec,
                    millis(r.summary.p50),
                    millis(r.summary.p99),
                    millis(r.max),
                    cpu_cell(r.cpu.daemon),
                    cpu_cell(r.cpu.client),
                ));
            }
            text
        }
        OutputFormat::Json => {
            let side = |s: Summary| {
                json!({
                    "ops": s.ops,
                    "elapsed_secs": s.elapsed.as_secs_f64(),
                    "ops_per_sec": s.ops_per_sec,
                    "p50_us": micros(s.p50),
                    "p99_us": micros(s.p99),
                })
            };
            let levels: Vec<Value> = levels
                .iter()
                .map(|l| {
                    json!({
                        "concurrency": l.concurrency,
                        "keyorchd": side(l.keyorchd),
                        "cpu_per_op_us": {
                            "keyorchd": l.cpu.daemon.map(micros),
                            "client": l.cpu.client.map(micros),
                        },
                        "raw": l.raw.map_or(Value::Null, side),
                        "ratio": ratio(l),
                    })
                })
                .collect();
            output::render_json(&json!({
                "operation": "xks-encrypt-cdiv",
                "payload_bytes": args.payload,
                "warmup_secs": args.warmup.as_secs_f64(),
                "duration_secs": args.duration.as_secs_f64(),
                "levels": levels,
                "open_loop": rate.map(|r| json!({
                    "rate": r.rate,
                    "connections": r.connections,
                    "served": side(r.summary),
                    "max_us": micros(r.max),
                    "cpu_per_op_us": {
                        "keyorchd": r.cpu.daemon.map(micros),
                        "client": r.cpu.client.map(micros),
                    },
                })),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dev_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("xks-credentials");
        std::fs::write(
            &p,
            "uri_path = /keyorch/kms/xks/v1\naccess_key_id = ABCDEFGHIJKLMNOPQRSTUVWXYZ\nsecret_access_key = c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U=\n",
        )
        .unwrap();
        let c = read_credentials(&p).unwrap();
        assert_eq!(c.uri_path, "/keyorch/kms/xks/v1");
        assert_eq!(c.access_key_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        assert!(c.secret.expose_secret().ends_with("c2U="));
        std::fs::write(&p, "uri_path = /x/kms/xks/v1\n").unwrap();
        let e = read_credentials(&p).err().unwrap().to_string();
        assert!(e.contains("access_key_id"), "{e}");
    }

    #[test]
    fn an_answer_is_checked_as_kms_checks_it() {
        let (iv, ct, tag) = ([1u8; 12], [2u8; 5], [3u8; 16]);
        let mut h = Sha256::new();
        h.update(iv);
        h.update(ct);
        h.update(tag);
        let good = json!({
            "ciphertext": B64.encode(ct),
            "initializationVector": B64.encode(iv),
            "authenticationTag": B64.encode(tag),
            "ciphertextDataIntegrityValue": B64.encode(h.finalize()),
        });
        check_answer(&good, 5).unwrap();
        assert!(check_answer(&good, 6).is_err());
        let mut bad = good.clone();
        bad["authenticationTag"] = B64.encode([4u8; 16]).into();
        assert!(check_answer(&bad, 5).is_err());
        let mut missing = good;
        missing
            .as_object_mut()
            .unwrap()
            .remove("ciphertextDataIntegrityValue");
        assert!(check_answer(&missing, 5).is_err());
    }
}
