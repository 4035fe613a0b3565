//! The README tour through the real `keyorch` binary against a real daemon: vault →
//! internal keystore → key → activate → encrypt → decrypt round trip; `--output json`
//! records parse with proto field names; the socket can come from `KEYORCH_SOCKET`; a
//! server error exits non-zero with the server's message on stderr; `keyorch bench install`
//! reports both sides and leaves nothing behind, into a pkcs11, an ibm_hpcs and an
//! azure_key_vault keystore (against the IBM and Azure fakes); `keystore create` and
//! `update` reach every IBM and Azure setting and refuse flags of another type.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use common::*;
use keyorch::proto::v1::{KeyAlgorithm, KeyState};
use serde_json::{json, Map, Value};

/// `keyorch` with a clean environment, talking to `socket`.
fn keyorch(socket: &Path) -> Command {
    let mut cmd = Command::new(TestDaemon::cli_binary());
    cmd.env_remove("KEYORCH_SOCKET")
        .env_remove("KEYORCH_OUTPUT")
        .env_remove("KEYORCH_STATE_DIR")
        .arg("--socket")
        .arg(socket);
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn succeed(cmd: &mut Command) -> String {
    let out: Output = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} exited with {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Parses JSON output: one document, or one document per line.
fn parse_json(stdout: &str) -> Vec<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(stdout) {
        return vec![v];
    }
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\nwhole output:\n{stdout}"))
        })
        .collect()
}

/// Every JSON object with an `id` field, wherever it sits (a bare record, an array of
/// records, or a response object holding a list).
fn records(values: &[Value]) -> Vec<Map<String, Value>> {
    fn walk(v: &Value, out: &mut Vec<Map<String, Value>>) {
        match v {
            Value::Object(m) if m.contains_key("id") => out.push(m.clone()),
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    values.iter().for_each(|v| walk(v, &mut out));
    out
}

/// The single record a create/get-style command printed with `--output json`.
#[track_caller]
fn one_record(stdout: &str) -> Map<String, Value> {
    let recs = records(&parse_json(stdout));
    assert_eq!(recs.len(), 1, "expected one JSON record, got:\n{stdout}");
    recs.into_iter().next().unwrap()
}

fn field<'a>(rec: &'a Map<String, Value>, name: &str) -> &'a str {
    rec.get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string field {name:?} in {rec:?}"))
}

#[tokio::test]
async fn readme_tour_round_trip() {
    let d = TestDaemon::start().await;
    let sock = d.socket();

    let vault = one_record(&succeed(
        keyorch(&sock).args(["--output", "json", "vault", "create", "--name", "tour"]),
    ));
    let vault_id = field(&vault, "id").to_string();
    assert_eq!(field(&vault, "name"), "tour");

    let ks = one_record(&succeed(keyorch(&sock).args([
        "--output",
        "json",
        "keystore",
        "create",
        "--vault",
        &vault_id,
        "--name",
        "hsm",
        "--type",
        "internal",
        "--connect",
    ])));
    let ks_id = field(&ks, "id").to_string();
    assert_eq!(field(&ks, "vault_id"), vault_id);
    assert_eq!(field(&ks, "connection_state"), "CONNECTION_STATE_CONNECTED");

    let key = one_record(&succeed(keyorch(&sock).args([
        "--output",
        "json",
        "key",
        "create",
        "--vault",
        &vault_id,
        "--name",
        "tour-key",
        "--algorithm",
        "aes",
        "--size",
        "256",
        "--target",
        &ks_id,
    ])));
    let key_id = field(&key, "id").to_string();
    assert_eq!(field(&key, "state"), "KEY_STATE_PRE_ACTIVE");

    let active = one_record(&succeed(
        keyorch(&sock).args(["--output", "json", "key", "activate", &key_id]),
    ));
    assert_eq!(field(&active, "id"), key_id);
    assert_eq!(field(&active, "state"), "KEY_STATE_ACTIVE");

    let plaintext = "hello from the tour";
    let out = succeed(keyorch(&sock).args(["encrypt", "--key", &key_id, "--plaintext", plaintext]));
    let b64 = out.trim().to_string();
    let ciphertext = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap_or_else(|e| panic!("encrypt did not print base64 ({e}): {out:?}"));
    assert_eq!(ciphertext.len(), 12 + plaintext.len() + 16);

    let out = succeed(keyorch(&sock).args(["decrypt", "--key", &key_id, "--ciphertext", &b64]));
    assert_eq!(out.trim_end_matches('\n'), plaintext);

    // What the CLI did is what the API sees.
    let mut c = d.clients();
    let k = get_key(&mut c, &key_id).await;
    assert_key_state(&k, KeyState::Active);
    assert_eq!(k.target_keystore_ids, vec![ks_id]);
    assert_eq!(
        decrypt(&mut c, &key_id, &ciphertext, b"").await,
        plaintext.as_bytes()
    );
}

#[tokio::test]
async fn json_output_uses_proto_field_names() {
    let d = TestDaemon::start().await;
    let sock = d.socket();
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let other = create_vault(&mut c, "second").await;

    let listed = records(&parse_json(&succeed(
        keyorch(&sock).args(["--output", "json", "vault", "list"]),
    )));
    let mut ids: Vec<&str> = listed.iter().map(|r| field(r, "id")).collect();
    ids.sort();
    let mut expected = vec![fx.vault.id.as_str(), other.id.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(listed.iter().any(|r| field(r, "name") == "vault-1"));

    let key = one_record(&succeed(keyorch(&sock).args([
        "--output",
        "json",
        "key",
        "create",
        "--vault",
        &fx.vault.id,
        "--name",
        "cli-key",
        "--algorithm",
        "aes",
        "--size",
        "256",
        "--target",
        &fx.keystore.id,
        "--activate",
    ])));
    assert_eq!(field(&key, "state"), "KEY_STATE_ACTIVE");
    assert_eq!(field(&key, "vault_id"), fx.vault.id);
    assert_eq!(field(&key, "name"), "cli-key");
    let api = get_key(&mut c, field(&key, "id")).await;
    assert_key_state(&api, KeyState::Active);
    assert_eq!(api.algorithm, KeyAlgorithm::Aes as i32);

    // Table output is not JSON, but names the vault.
    let table = succeed(keyorch(&sock).args(["vault", "list"]));
    assert!(table.contains("vault-1"), "{table}");
}

#[tokio::test]
async fn the_socket_can_come_from_the_environment() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "from-env").await;
    let out = succeed(
        Command::new(TestDaemon::cli_binary())
            .env_remove("KEYORCH_OUTPUT")
            .env("KEYORCH_SOCKET", d.socket())
            .args(["--output", "json", "vault", "list"]),
    );
    let recs = records(&parse_json(&out));
    assert_eq!(recs.len(), 1, "{out}");
    assert_eq!(field(&recs[0], "id"), v.id);
}

#[tokio::test]
async fn server_errors_exit_non_zero_with_the_servers_message() {
    let d = TestDaemon::start().await;
    let sock = d.socket();
    let mut c = d.clients();

    // The server's message for an invalid name, asked through the API.
    let s = fails(c.vaults.create_vault(vault_req("bad/char"))).await;
    let message = s.message().to_string();
    let out = run(keyorch(&sock).args(["vault", "create", "--name", "bad/char"]));
    assert!(!out.status.success(), "invalid name accepted by the CLI");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&message),
        "stderr does not carry the server's message {message:?}:\n{stderr}"
    );
    assert!(snapshot(&c).await.vaults.is_empty());

    // A refused disconnect names the stranded key.
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "k", KeyAlgorithm::Aes, 256, true).await;
    let out = run(keyorch(&sock).args(["keystore", "disconnect", &fx.keystore.id]));
    assert!(!out.status.success(), "a stranding disconnect was accepted");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&key.id),
        "stderr does not name the key:\n{stderr}"
    );

    // A tampered ciphertext.
    let mut ct = encrypt(&mut c, &key.id, b"x", b"").await;
    ct[14] ^= 1;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&ct);
    let out = run(keyorch(&sock).args(["decrypt", "--key", &key.id, "--ciphertext", &b64]));
    assert!(!out.status.success(), "tampered ciphertext decrypted");
    assert!(!text(&out.stderr).trim().is_empty());

    // A key that does not exist.
    let missing = unknown_id();
    let out = run(keyorch(&sock).args(["--output", "json", "key", "activate", &missing]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&missing),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn an_unreachable_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nobody-here.sock");
    let out = run(keyorch(&sock).args(["vault", "list"]));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("nobody-here.sock"),
        "the error does not say which socket: {stderr}"
    );
}

/// `keyorch bench encrypt`, briefly, against a real daemon: both sides ran at each level, the
/// ratio is theirs, keyorchd's CPU per call was read (its pid learnt from the socket) and
/// so was the client's, the table names the columns, and the bench's vault is gone.
#[tokio::test]
async fn bench_encrypt_reports_both_sides_and_cpu_per_call_and_cleans_up() {
    let d = TestDaemon::start().await;
    let bench = |extra: &[&str]| {
        let mut cmd = keyorch(&d.socket());
        cmd.args(extra)
            .args(["bench", "encrypt", "--state-dir"])
            .arg(d.state_dir())
            .args(["--concurrency", "1,2", "--duration", "0.5", "--warmup", "0"]);
        cmd
    };
    let out = run(&mut bench(&["--output", "json"]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {}:\n{stdout}\n{stderr}",
        out.status
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["operation"], "encrypt", "{v}");
    let levels = v["levels"].as_array().unwrap_or_else(|| panic!("{v}"));
    let concurrency: Vec<u64> = levels
        .iter()
        .filter_map(|l| l["concurrency"].as_u64())
        .collect();
    assert_eq!(concurrency, [1, 2], "{v}");
    let number = |x: &Value| x.as_f64().filter(|f| f.is_finite() && *f > 0.0);
    for level in levels {
        let (ours, raw) = (&level["keyorchd"], &level["raw"]);
        for side in [ours, raw] {
            assert!(side["ops"].as_u64().is_some_and(|n| n > 0), "{level}");
            assert!(number(&side["ops_per_sec"]).is_some(), "{level}");
        }
        let ratio = number(&level["ratio"]).unwrap_or_else(|| panic!("ratio in {level}"));
        let expected = number(&ours["ops_per_sec"]).unwrap() / number(&raw["ops_per_sec"]).unwrap();
        assert!((ratio - expected).abs() < 1e-9, "{level}");
        // Both processes did work for every call: more than nothing, less than 50 ms each.
        for side in ["keyorchd", "client"] {
            let cpu = number(&level["cpu_per_op_us"][side])
                .unwrap_or_else(|| panic!("no {side} CPU per call in {level}"));
            assert!(cpu < 50_000.0, "{side}: {cpu} µs per call in {level}");
        }
    }
    let out = run(&mut bench(&[]));
    let table = text(&out.stdout);
    assert!(out.status.success(), "{table}\n{}", text(&out.stderr));
    let header = table.lines().nth(1).unwrap_or_default();
    for column in [
        "keyorchd ops/s",
        "cpu/op keyorchd",
        "cpu/op client",
        "raw ops/s",
        "ratio",
    ] {
        assert!(header.contains(column), "{column}: {table}");
    }
    let c = d.clients();
    assert!(snapshot(&c).await.vaults.is_empty(), "a bench vault stayed");
}

/// `keyorch bench xks`, briefly, against a real daemon serving the XKS proxy: both sides ran
/// at each level with the ratio theirs, the open-loop run served requests at about the
/// asked rate, the secret access key is printed nowhere, and the bench's vault is gone.
#[tokio::test]
async fn bench_xks_reports_both_sides_and_the_open_loop_run_and_cleans_up() {
    let port = common::aws::free_port();
    let d = TestDaemon::start_with_args(&["--xks-listen", &format!("127.0.0.1:{port}")]).await;
    d.wait_for_stdout_line("  xks proxy: http://127.0.0.1:")
        .await;
    let out = run(keyorch(&d.socket())
        .args(["--output", "json", "bench", "xks", "--state-dir"])
        .arg(d.state_dir())
        .args(["--proxy", &format!("127.0.0.1:{port}")])
        .args(["--concurrency", "1,2", "--duration", "0.5", "--warmup", "0"])
        .args(["--rate", "100"]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {}:\n{stdout}\n{stderr}",
        out.status
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["operation"], "xks-encrypt-cdiv", "{v}");
    let number = |x: &Value| x.as_f64().filter(|f| f.is_finite() && *f > 0.0);
    let levels = v["levels"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(levels.len(), 2, "{v}");
    for level in levels {
        let (ours, raw) = (&level["keyorchd"], &level["raw"]);
        for side in [ours, raw] {
            assert!(side["ops"].as_u64().is_some_and(|n| n > 0), "{level}");
        }
        let ratio = number(&level["ratio"]).unwrap_or_else(|| panic!("ratio in {level}"));
        let expected = number(&ours["ops_per_sec"]).unwrap() / number(&raw["ops_per_sec"]).unwrap();
        assert!((ratio - expected).abs() < 1e-9, "{level}");
        assert!(
            number(&level["cpu_per_op_us"]["keyorchd"]).is_some(),
            "{level}"
        );
    }
    let open = &v["open_loop"];
    assert_eq!(open["rate"], 100, "{v}");
    // 100 req/s for 0.5 s: 50 requests, all served.
    assert_eq!(open["served"]["ops"], 50, "{v}");
    let secret = std::fs::read_to_string(d.state_dir().join("xks-credentials")).unwrap();
    let secret = secret
        .lines()
        .find_map(|l| l.strip_prefix("secret_access_key = "))
        .unwrap()
        .to_string();
    assert!(!stdout.contains(&secret) && !stderr.contains(&secret));
    assert!(
        !d.logs().contains(&secret),
        "the secret access key is in the logs"
    );
    let c = d.clients();
    assert!(snapshot(&c).await.vaults.is_empty(), "a bench vault stayed");

    // A wrong credential fails before any level, saying what the proxy answered.
    let creds = d.root().join("wrong-xks-credentials");
    std::fs::write(
        &creds,
        "uri_path = /keyorch/kms/xks/v1\naccess_key_id = AAAAAAAAAAAAAAAAAAAAAAAAAA\nsecret_access_key = c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U=\n",
    )
    .unwrap();
    let out = run(keyorch(&d.socket())
        .args(["bench", "xks", "--no-raw", "--credentials"])
        .arg(&creds)
        .args(["--proxy", &format!("127.0.0.1:{port}"), "--duration", "0.2"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("AuthenticationFailedException"),
        "{}",
        text(&out.stderr)
    );
    assert!(snapshot(&c).await.vaults.is_empty(), "a bench vault stayed");
}

/// `keyorch bench soak`, briefly: every operation of the mix ran, none failed, keyorchd's
/// memory was read, and the bench's vault and its keys are gone.
#[tokio::test]
async fn bench_soak_runs_the_mix_without_errors_and_cleans_up() {
    let d = TestDaemon::start().await;
    let out = run(keyorch(&d.socket()).args([
        "--output",
        "json",
        "bench",
        "soak",
        "--duration",
        "2",
        "--clients",
        "2",
        "--keys",
        "2",
    ]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {}:\n{stdout}\n{stderr}",
        out.status
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["errors"], json!([]), "{v}");
    let ops = v["operations"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(ops.len(), 8, "{v}");
    for op in ops {
        assert!(op["count"].as_u64().is_some_and(|n| n > 0), "{op}");
    }
    assert!(
        v["rss_mib"]["start"].as_f64().is_some_and(|m| m > 1.0),
        "{v}"
    );
    let c = d.clients();
    let s = snapshot(&c).await;
    assert!(
        s.vaults.is_empty() && s.keys.is_empty(),
        "the soak left {s:?}"
    );
}

/// `keyorch bench install` with a tiny count against a real daemon and a second token: the
/// report has both steps for both sides with positive ratios, the table names its columns,
/// nothing the bench made stays (vault, keys in the target), and neither PIN is printed.
#[tokio::test]
async fn bench_install_reports_both_sides_and_cleans_up() {
    const TOKEN: &str = "bench-target";
    const PIN: &str = "Bench-pin-81Kq2z";
    let d = TestDaemon::start_with_target(TOKEN, PIN).await;
    let pin_file = d.root().join("target.pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let bench = |extra: &[&str]| {
        let mut cmd = keyorch(&d.socket());
        cmd.args(extra)
            .args(["bench", "install", "--state-dir"])
            .arg(d.state_dir())
            .args(["--target-token-label", TOKEN, "--target-pin-file"])
            .arg(&pin_file);
        cmd
    };

    let out = run(bench(&["--output", "json"]).args(["--count", "3", "--warmup", "1"]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {}:\n{stdout}\n{stderr}",
        out.status
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["operation"], "install", "{v}");
    assert_eq!(v["rounds"], 3, "{v}");
    assert_eq!(v["warmup_rounds"], 1, "{v}");
    assert_eq!(v["target_token"]["label"], TOKEN, "{v}");
    let steps = v["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps: {v}"));
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(names, ["install", "uninstall"], "{v}");
    let positive = |x: &Value| x.as_f64().is_some_and(|f| f.is_finite() && f > 0.0);
    for step in steps {
        for side in ["keyorchd", "raw"] {
            let s = &step[side];
            assert_eq!(s["ops"], 3, "{side} in {step}");
            for number in ["ops_per_sec", "p50_us", "p99_us", "busy_secs"] {
                assert!(positive(&s[number]), "{side}.{number} in {step}");
            }
        }
        assert!(positive(&step["ratio"]), "ratio in {step}");
        assert!(positive(&step["p50_ratio"]), "p50_ratio in {step}");
    }
    assert!(stderr.contains("bench: install: keyorchd"), "{stderr}");

    let out = run(bench(&[]).args(["--count", "1", "--warmup", "0"]));
    let (table, table_err) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {}:\n{table}\n{table_err}",
        out.status
    );
    let header = table.lines().nth(1).unwrap_or_default();
    assert!(
        header.starts_with("step") && header.contains("ratio") && header.contains("p50 ratio"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("install ")), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("uninstall ")),
        "{table}"
    );

    // A wrong target PIN stops the bench before it creates anything, and says why.
    let wrong = d.root().join("wrong.pin");
    std::fs::write(&wrong, "Wrong-pin-0000\n").unwrap();
    let out = run(keyorch(&d.socket())
        .args(["bench", "install", "--state-dir"])
        .arg(d.state_dir())
        .args(["--target-token-label", TOKEN, "--target-pin-file"])
        .arg(&wrong));
    let wrong_err = text(&out.stderr);
    assert!(!out.status.success(), "a wrong PIN was accepted");
    assert!(
        wrong_err.contains("target token") && wrong_err.contains("C_Login"),
        "{wrong_err}"
    );
    assert!(!wrong_err.contains("Wrong-pin-0000"), "{wrong_err}");

    // Nothing stays: no vault, no key in the target, only the import KEK there.
    let c = d.clients();
    assert!(snapshot(&c).await.vaults.is_empty(), "a bench vault stayed");
    let objects = d.token_objects(TOKEN, PIN);
    assert!(
        objects.iter().all(|o| o.label == IMPORT_KEK),
        "objects left in the target: {objects:?}"
    );
    // Neither PIN is printed or logged.
    let own_pin = d.user_pin();
    for (what, output) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("table", &table),
        ("table stderr", &table_err),
        ("daemon logs", &d.logs()),
    ] {
        assert!(!output.contains(PIN), "the target PIN is in the {what}");
        assert!(
            !output.contains(&own_pin),
            "the daemon's PIN is in the {what}"
        );
    }
}

/// The one service ID API key the IBM fake's IAM accepts: a canary that must never come back.
const IBM_API_KEY: &str = "Canary-IBM-cli-apikey-Wq3Zt8Lm1Xc5Rv7Nb";
const IBM_INSTANCE: &str = "7d2e9f14-3a5b-4c6d-8e9f-0a1b2c3d4e5f";

/// The IBM fake (tests/ibm_kms/fake.py) of `flavor` over http on 127.0.0.1 (the domain allows
/// http:// to loopback), with the API key in a file beside it.
fn ibm_fake(flavor: &str) -> (common::ibm::Fake, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("ibm-api-key");
    std::fs::write(&key_file, format!("{IBM_API_KEY}\n")).unwrap();
    let fake =
        common::ibm::Fake::start(dir.path(), flavor, (IBM_API_KEY, IBM_INSTANCE), &[], false);
    (fake, dir, key_file)
}

/// `keyorch keystore create` and `update` of an ibm_hpcs keystore: every IBM flag reaches
/// the API (the record and JSON show them), --clear-ca-cert goes back to the system's roots,
/// a new API key is taken in any state and connects, the instance is locked after the first
/// connect (the server's refusal, so the CLI sent it), flags of another type are refused by
/// the CLI before anything is sent, and the API key is never printed.
#[tokio::test]
async fn keystore_update_changes_ibm_hpcs_settings_and_refuses_other_types() {
    let (fake, dir, key_file) = ibm_fake("hpcs");
    let d = TestDaemon::start().await;
    let sock = d.socket();
    let ca = common::tls::ca("keyorch CLI test CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let vault = one_record(&succeed(
        keyorch(&sock).args(["-o", "json", "vault", "create", "--name", "ibm"]),
    ));
    let vault_id = field(&vault, "id").to_string();
    let mut outputs = Vec::new();

    let out = succeed(
        keyorch(&sock)
            .args(["-o", "json", "keystore", "create", "--vault", &vault_id])
            .args(["--name", "hpcs", "--type", "ibm-hpcs", "--connect"])
            .args(["--instance-id", IBM_INSTANCE, "--api-endpoint", &fake.url])
            .args(["--iam-endpoint", &fake.url, "--api-key-file"])
            .arg(&key_file),
    );
    let ks = one_record(&out);
    outputs.push(out.clone());
    let id = field(&ks, "id").to_string();
    assert_eq!(
        field(&ks, "connection_state"),
        "CONNECTION_STATE_CONNECTED",
        "{out}"
    );
    assert_eq!(ks["has_credentials"], json!(true), "{out}");

    // The API key again, while CONNECTED (credentials change in any state).
    let out = succeed(
        keyorch(&sock)
            .args(["-o", "json", "keystore", "update", &id, "--api-key-file"])
            .arg(&key_file),
    );
    outputs.push(out.clone());
    assert_eq!(
        field(&one_record(&out), "connection_state"),
        "CONNECTION_STATE_CONNECTED",
        "{out}"
    );

    // Connection settings while DISCONNECTED: the IAM endpoint and a CA, in the text record.
    succeed(keyorch(&sock).args(["keystore", "disconnect", &id]));
    let other_iam = fake.url.replace("127.0.0.1", "localhost");
    let out = succeed(
        keyorch(&sock)
            .args([
                "keystore",
                "update",
                &id,
                "--iam-endpoint",
                &other_iam,
                "--ca-cert",
            ])
            .arg(&ca_file),
    );
    outputs.push(out.clone());
    assert!(
        out.contains(&format!("ibm_kms.iam_endpoint: {other_iam}\n"))
            && out.contains("ibm_kms.ca_cert_pem: 1 certificate(s)\n")
            && out.contains(&format!("ibm_kms.api_endpoint: {}\n", fake.url)),
        "{out}"
    );
    let out = succeed(keyorch(&sock).args([
        "-o",
        "json",
        "keystore",
        "update",
        &id,
        "--clear-ca-cert",
        "--iam-endpoint",
        &fake.url,
    ]));
    outputs.push(out.clone());
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["config"]["ibm_kms"]["ca_cert_pem"], "", "{out}");
    assert_eq!(
        v["config"]["ibm_kms"]["iam_endpoint"],
        fake.url.as_str(),
        "{out}"
    );
    assert_eq!(v["config"]["ibm_kms"]["instance_id"], IBM_INSTANCE, "{out}");
    let out = succeed(keyorch(&sock).args(["-o", "json", "keystore", "connect", &id]));
    assert_eq!(
        field(&one_record(&out), "connection_state"),
        "CONNECTION_STATE_CONNECTED",
        "{out}"
    );

    // The instance is locked after the first connect: the server says so.
    succeed(keyorch(&sock).args(["keystore", "disconnect", &id]));
    let out = run(keyorch(&sock).args([
        "keystore",
        "update",
        &id,
        "--instance-id",
        "0e0e0e0e-1111-2222-3333-444444444444",
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("ibm_kms.instance_id"),
        "{err}"
    );

    // Flags of another type: a usage error (exit 2) naming the flag and the type.
    let before = snapshot(&d.clients()).await;
    for (flags, names) in [
        (
            &["--region", "eu-de"][..],
            "--region is for aws_kms keystores, not ibm_hpcs",
        ),
        (
            &["--clear-endpoints"][..],
            "--clear-endpoints is for azure_key_vault keystores, not ibm_hpcs",
        ),
        (
            &["--pin-file", "/nonexistent"][..],
            "--pin-file is for pkcs11 keystores, not ibm_hpcs",
        ),
    ] {
        let out = run(keyorch(&sock).args(["keystore", "update", &id]).args(flags));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(names), "{flags:?}: {err}");
        assert!(
            err.contains("an ibm_hpcs keystore takes --instance-id"),
            "{err}"
        );
    }
    assert_unchanged(&before, &snapshot(&d.clients()).await, "refused updates");

    // `keystore update --help` lists the IBM and Azure flags.
    let help = succeed(keyorch(&sock).args(["keystore", "update", "--help"]));
    for flag in [
        "--instance-id",
        "--key-ring-id",
        "--api-endpoint",
        "--iam-endpoint",
        "--api-key-file",
        "--clear-ca-cert",
        "--vault-name",
        "--client-secret-file",
        "--clear-endpoints",
    ] {
        assert!(help.contains(flag), "{flag} not in --help:\n{help}");
    }

    outputs.push(d.logs());
    outputs.push(fake.logged());
    for o in &outputs {
        assert!(!o.contains(IBM_API_KEY), "the API key was printed:\n{o}");
    }
}

/// `keyorch bench install --keystore-type ibm-hpcs` with a tiny count against the IBM fake:
/// both steps timed through keyorchd, the raw HPCS wrap beside the install (and no raw
/// uninstall, which sends nothing), every key the rounds imported deleted again, nothing the
/// bench made left in keyorchd, and the API key never printed. A wrong API key stops it
/// before any round, saying why, and leaves nothing either.
#[tokio::test]
async fn bench_install_into_ibm_hpcs_reports_the_wrap_baseline_and_cleans_up() {
    let (fake, dir, key_file) = ibm_fake("hpcs");
    let d = TestDaemon::start().await;
    let bench = |key_file: &Path| {
        let mut cmd = keyorch(&d.socket());
        cmd.args(["-o", "json", "bench", "install", "--state-dir"])
            .arg(d.state_dir())
            .args(["--keystore-type", "ibm-hpcs", "--instance-id", IBM_INSTANCE])
            .args(["--api-endpoint", &fake.url, "--iam-endpoint", &fake.url])
            .arg("--api-key-file")
            .arg(key_file);
        cmd
    };

    let out = run(bench(&key_file).args(["--count", "3", "--warmup", "1"]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {}:\n{stdout}\n{stderr}",
        out.status
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["keystore_type"], "ibm_hpcs", "{v}");
    assert_eq!(v["key"], "AES-256", "{v}");
    assert_eq!(v["target"]["instance_id"], IBM_INSTANCE, "{v}");
    assert_eq!(v["rounds"], 3, "{v}");
    let positive = |x: &Value| x.as_f64().is_some_and(|f| f.is_finite() && f > 0.0);
    let steps = v["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps: {v}"));
    assert_eq!(steps.len(), 2, "{v}");
    for step in steps {
        let k = &step["keyorchd"];
        assert_eq!(k["ops"], 3, "{step}");
        for number in ["ops_per_sec", "p50_us", "p90_us", "p99_us"] {
            assert!(positive(&k[number]), "keyorchd.{number} in {step}");
        }
    }
    let install = &steps[0];
    assert_eq!(install["step"], "install");
    assert_eq!(install["raw"]["ops"], 3, "{install}");
    assert!(positive(&install["raw"]["p50_us"]), "{install}");
    assert!(positive(&install["ratio"]), "{install}");
    assert_eq!(steps[1]["step"], "uninstall");
    assert_eq!(steps[1]["raw"], Value::Null, "{v}");
    assert!(
        v["raw_wrap"]
            .as_str()
            .is_some_and(|w| w.contains("RSA-OAEP-SHA1") && w.contains("AES-CBC-PAD")),
        "{v}"
    );

    // Four imports (one warm-up round) and as many deletes reached the fake.
    let log = fake.logged();
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("POST /api/v2/keys ->"), 4, "{log}");
    assert_eq!(count("DELETE /api/v2/keys/"), 4, "{log}");
    assert!(
        snapshot(&d.clients()).await.vaults.is_empty(),
        "a bench vault stayed"
    );

    // A wrong API key: the keystore does not connect, the bench says so and cleans up.
    let wrong = dir.path().join("wrong-key");
    std::fs::write(&wrong, "Wrong-IBM-apikey-0000000000000000\n").unwrap();
    let out = run(&mut bench(&wrong));
    let wrong_err = text(&out.stderr);
    assert!(!out.status.success(), "a wrong API key was accepted");
    assert!(wrong_err.contains("not CONNECTED"), "{wrong_err}");
    assert!(
        snapshot(&d.clients()).await.vaults.is_empty(),
        "a bench vault stayed"
    );

    for (what, o) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("wrong-key stderr", &wrong_err),
        ("daemon logs", &d.logs()),
        ("fake log", &fake.logged()),
    ] {
        assert!(!o.contains(IBM_API_KEY), "the API key is in the {what}");
    }
}

/// The Azure fake (tests/azure_kv/fake.py) over https with a CA of its own, the client
/// secret in a file and the CA in `dir/ca.pem`; the flags of a keystore on it.
fn azure_fake() -> (common::azure::Fake, tempfile::TempDir, Vec<String>) {
    use common::azure::{CLIENT_ID, CLIENT_SECRET, LOCATION, TENANT_ID, VAULT_NAME};
    let dir = tempfile::tempdir().unwrap();
    common::azure::write_tls(dir.path());
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let fake =
        common::azure::Fake::start(dir.path(), (TENANT_ID, CLIENT_ID, CLIENT_SECRET), &[], true);
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let flags = [
        "--vault-name",
        VAULT_NAME,
        "--resource-group",
        "rg-cli",
        "--location",
        LOCATION,
        "--subscription-id",
        "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "--tenant-id",
        TENANT_ID,
        "--client-id",
        CLIENT_ID,
        "--vault-url",
        &fake.url,
        "--authority-host",
        &fake.url,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--ca-cert".to_string(),
        path(&fake.ca),
        "--client-secret-file".to_string(),
        path(&secret_file),
    ])
    .collect();
    (fake, dir, flags)
}

/// `keyorch keystore create` and `update` of an azure_key_vault keystore against the Azure
/// fake: every flag reaches the API (the text record shows the settings, the CA as a count
/// of certificates), it connects, a new client secret is taken while CONNECTED,
/// --clear-endpoints and --clear-ca-cert go back to the environment's defaults, flags of
/// another type are refused before anything is sent, and the secret is never printed.
#[tokio::test]
async fn keystore_create_and_update_of_an_azure_key_vault_keystore() {
    use common::azure::{CLIENT_SECRET, TENANT_ID, VAULT_NAME};
    let (fake, dir, flags) = azure_fake();
    let d = TestDaemon::start().await;
    let sock = d.socket();
    let vault = one_record(&succeed(
        keyorch(&sock).args(["-o", "json", "vault", "create", "--name", "azure"]),
    ));
    let vault_id = field(&vault, "id").to_string();
    let mut outputs = Vec::new();

    let out = succeed(
        keyorch(&sock)
            .args(["keystore", "create", "--vault", &vault_id, "--name", "kv"])
            .args(["--type", "azure-key-vault", "--connect"])
            .args(&flags),
    );
    outputs.push(out.clone());
    for line in [
        "type: AZURE_KEY_VAULT\n".to_string(),
        "connection_state: CONNECTED\n".to_string(),
        format!("azure_key_vault.vault_name: {VAULT_NAME}\n"),
        "azure_key_vault.resource_group: rg-cli\n".to_string(),
        "azure_key_vault.environment: AzureCloud\n".to_string(),
        format!("azure_key_vault.tenant_id: {TENANT_ID}\n"),
        format!("azure_key_vault.vault_url: {}\n", fake.url),
        format!("azure_key_vault.authority_host: {}\n", fake.url),
        "azure_key_vault.ca_cert_pem: 1 certificate(s)\n".to_string(),
        "has_credentials: true\n".to_string(),
    ] {
        assert!(out.contains(&line), "{line:?} not in:\n{out}");
    }
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id in:\n{out}"))
        .to_string();

    // A new secret while CONNECTED.
    let secret_file = dir.path().join("client-secret");
    let out = succeed(
        keyorch(&sock)
            .args([
                "-o",
                "json",
                "keystore",
                "update",
                &id,
                "--client-secret-file",
            ])
            .arg(&secret_file),
    );
    outputs.push(out.clone());
    assert_eq!(
        field(&one_record(&out), "connection_state"),
        "CONNECTION_STATE_CONNECTED",
        "{out}"
    );

    // While DISCONNECTED: back to the environment's endpoints and the system's roots.
    succeed(keyorch(&sock).args(["keystore", "disconnect", &id]));
    let out = succeed(keyorch(&sock).args([
        "-o",
        "json",
        "keystore",
        "update",
        &id,
        "--clear-endpoints",
        "--clear-ca-cert",
        "--client-id",
        "0f0f0f0f-1111-2222-3333-444444444444",
    ]));
    outputs.push(out.clone());
    let v: Value = serde_json::from_str(&out).unwrap();
    let c = &v["config"]["azure_key_vault"];
    assert_eq!(
        (&c["vault_url"], &c["authority_host"], &c["ca_cert_pem"]),
        (&json!(""), &json!(""), &json!("")),
        "{out}"
    );
    assert_eq!(
        c["client_id"], "0f0f0f0f-1111-2222-3333-444444444444",
        "{out}"
    );
    assert_eq!(c["vault_name"], VAULT_NAME, "{out}");

    // The vault is locked after the first connect: the server says so.
    let out = run(keyorch(&sock).args(["keystore", "update", &id, "--vault-name", "other-kv"]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("azure_key_vault.vault_name"), "{err}");

    // Flags of another type.
    let before = snapshot(&d.clients()).await;
    for (flag, value, owner) in [
        (
            "--api-key-file",
            "/nonexistent",
            "ibm_key_protect, ibm_hpcs",
        ),
        ("--region", "eu-west-1", "aws_kms"),
        ("--uri-path", "/kms/xks/v1", "xks"),
    ] {
        let out = run(keyorch(&sock).args(["keystore", "update", &id, flag, value]));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(
            err.contains(&format!("{flag} is for {owner} keystores, not azure_key_vault; an azure_key_vault keystore takes --vault-name")),
            "{flag}: {err}"
        );
    }
    assert_unchanged(&before, &snapshot(&d.clients()).await, "refused updates");

    outputs.push(d.logs());
    outputs.push(fake.logged());
    for o in &outputs {
        assert!(
            !o.contains(CLIENT_SECRET),
            "the client secret was printed:\n{o}"
        );
    }
}

/// `keyorch bench install --keystore-type azure-key-vault` with a tiny count against the
/// Azure fake, for an RSA-2048 and an EC P-256 key: both steps timed through keyorchd, the
/// raw RSA-AES wrap beside the install, every key the rounds imported deleted and purged
/// again (only the import KEK stays in the vault), nothing left in keyorchd, the secret never
/// printed.
#[tokio::test]
async fn bench_install_into_azure_key_vault_reports_the_wrap_baseline_and_cleans_up() {
    use common::azure::CLIENT_SECRET;
    let (fake, _dir, flags) = azure_fake();
    let d = TestDaemon::start().await;
    let positive = |x: &Value| x.as_f64().is_some_and(|f| f.is_finite() && f > 0.0);
    let mut outputs = Vec::new();
    for (key, label) in [("rsa-2048", "RSA-2048"), ("ec-p256", "EC P-256")] {
        let out = run(keyorch(&d.socket())
            .args(["-o", "json", "bench", "install", "--state-dir"])
            .arg(d.state_dir())
            .args(["--keystore-type", "azure-key-vault", "--key", key])
            .args(["--count", "2", "--warmup", "1"])
            .args(&flags));
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "{key}: exit {}:\n{stdout}\n{stderr}",
            out.status
        );
        let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(v["keystore_type"], "azure_key_vault", "{v}");
        assert_eq!(v["key"], label, "{v}");
        assert_eq!(v["target"]["vault_url"], fake.url.as_str(), "{v}");
        let install = &v["steps"][0];
        assert_eq!(install["keyorchd"]["ops"], 2, "{v}");
        assert_eq!(install["raw"]["ops"], 2, "{v}");
        for number in ["p50_us", "p90_us", "p99_us", "ops_per_sec"] {
            assert!(positive(&install["keyorchd"][number]), "{number}: {v}");
            assert!(positive(&install["raw"][number]), "{number}: {v}");
        }
        assert!(positive(&install["ratio"]), "{v}");
        assert_eq!(v["steps"][1]["keyorchd"]["ops"], 2, "{v}");
        assert_eq!(v["steps"][1]["raw"], Value::Null, "{v}");
        assert!(
            v["raw_wrap"]
                .as_str()
                .is_some_and(|w| w.contains("CKM_RSA_AES_KEY_WRAP")),
            "{v}"
        );
        outputs.extend([stdout, stderr]);
    }
    // Three imports per key (one warm-up round), each deleted and purged.
    let log = fake.logged();
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("PUT /keys/keyorch-key-"), 6, "{log}");
    assert_eq!(count("DELETE /keys/keyorch-key-"), 6, "{log}");
    assert_eq!(count("DELETE /deletedkeys/keyorch-key-"), 6, "{log}");
    assert!(
        snapshot(&d.clients()).await.vaults.is_empty(),
        "a bench vault stayed"
    );
    outputs.extend([d.logs(), log]);
    for o in &outputs {
        assert!(
            !o.contains(CLIENT_SECRET),
            "the client secret was printed:\n{o}"
        );
    }
}
