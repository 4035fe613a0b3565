//! keyorchd's AWS KMS-compatible endpoint (issue 7, DESIGN §9), driven by the real AWS
//! clients: awscli v1 and boto3 from PyPI, pinned in scripts/aws-clients-requirements.lock and
//! installed on first use into target/aws-clients-venv by scripts/aws-clients.sh
//! (`KEYORCH_AWS_CLIENTS_VENV` picks another folder). The Python scenarios are in
//! tests/aws_endpoint/driver.py; the seeds' examples run verbatim (only --endpoint-url and
//! endpoint_url added). The custom key stores are pkcs11 keystores on a second SoftHSM2
//! token of the daemon's token folder (`TestDaemon::start_with_target`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use keyorch::proto::v1::{ListEventsRequest, ListVaultsRequest};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The token that plays the AWS CloudHSM cluster (CloudHsmClusterId: 19–24 characters).
const CLUSTER: &str = "cluster-1234567890abc";
/// Its user PIN: the KeyStorePassword (7–32 characters). Planted as a canary.
const PASSWORD: &str = "kmsuser-Pw-7391";
const LISTEN: &str = "127.0.0.1:0";

fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = std::env::var_os("KEYORCH_AWS_CLIENTS_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/aws-clients-venv")
            });
        let t = Instant::now();
        let out =
            Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/aws-clients.sh"))
                .arg("install")
                .arg(&venv)
                .output()
                .expect("run scripts/aws-clients.sh");
        assert!(
            out.status.success(),
            "scripts/aws-clients.sh install failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("aws clients ready in {:?}", t.elapsed());
        venv
    })
    .clone()
}

/// The URL keyorchd printed for its AWS endpoint (the current run's stdout).
async fn endpoint(d: &TestDaemon) -> String {
    let out = d.wait_for_stdout_line("  aws kms endpoint: ").await;
    out.lines()
        .find_map(|l| l.strip_prefix("  aws kms endpoint: "))
        .expect("endpoint line")
        .trim()
        .to_string()
}

/// Environment of every AWS client run: nothing from the caller's own AWS setup; the
/// `--dev` credentials file and its profile when there is one.
fn aws_env(cmd: &mut Command, d: &TestDaemon, url: &str) {
    let creds = d.state_dir().join("aws-credentials");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", d.root())
        .env("AWS_CONFIG_FILE", d.root().join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("KEYORCH_AWS_ENDPOINT", url);
    if creds.exists() {
        cmd.env("AWS_PROFILE", "keyorch");
    }
}

fn trust_anchor(dir: &Path) -> PathBuf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "customer CA of the HSM");
    let path = dir.join("customerCA.crt");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

/// Runs a driver scenario; it must succeed. Returns stdout and the results (last line).
fn driver(
    d: &TestDaemon,
    url: &str,
    scenario: &str,
    env: &[(&str, &str)],
) -> (String, serde_json::Value) {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws_endpoint/driver.py"))
        .arg(scenario);
    aws_env(&mut cmd, d, url);
    cmd.env("KEYORCH_CLUSTER", CLUSTER)
        .env("KEYORCH_PASSWORD", PASSWORD)
        .env("KEYORCH_TRUST_ANCHOR", trust_anchor(d.root()))
        .envs(env.iter().copied());
    let t = Instant::now();
    let out = cmd.output().expect("run the driver");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "driver {scenario} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("driver {scenario}: {:?}", t.elapsed());
    let results = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no results line:\n{stdout}"));
    (stdout, results)
}

/// `aws kms ARGS --endpoint-url URL`, with the dev credentials file and profile.
fn aws(d: &TestDaemon, url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(venv().join("bin/aws"));
    cmd.arg("kms").args(args).arg("--endpoint-url").arg(url);
    aws_env(&mut cmd, d, url);
    cmd.output().expect("run aws")
}

#[track_caller]
fn assert_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn connection_state_via_cli(d: &TestDaemon, url: &str, id: &str) -> String {
    let out = assert_ok(
        &aws(
            d,
            url,
            &["describe-custom-key-stores", "--custom-key-store-id", id],
        ),
        "describe-custom-key-stores",
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON from the CLI");
    v["CustomKeyStores"][0]["ConnectionState"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The password (and its case variants) appears in no log line, no file of the state
/// folder, no audit event and nothing the clients printed.
async fn assert_password_nowhere(d: &TestDaemon, printed: &[&str]) {
    for form in [
        PASSWORD.to_string(),
        PASSWORD.to_lowercase(),
        PASSWORD.to_uppercase(),
    ] {
        assert_secret_nowhere(d, &form, printed).await;
    }
}

#[tokio::test]
async fn the_seed_examples_and_the_whole_custom_key_store_story() {
    let d =
        TestDaemon::start_with_targets_and_args(&[(CLUSTER, PASSWORD)], &["--aws-listen", LISTEN])
            .await;
    let url = endpoint(&d).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let creds = d.state_dir().join("aws-credentials");
    assert_eq!(mode(&creds), 0o600);

    // boto3: create → connect → key → crypto → the seed's disconnect → Unavailable.
    let (story_out, r) = driver(&d, &url, "story", &[]);
    let store = r["store"].as_str().unwrap().to_string();
    let key = r["key"].as_str().unwrap().to_string();

    // The gRPC view of the same things: a pkcs11 keystore on the token, the key installed there.
    let mut c = d.clients();
    let ks = get_keystore(&mut c, &store).await;
    let Some(keyorch::proto::v1::keystore::Config::Pkcs11(p11)) = &ks.config else {
        panic!("not a pkcs11 keystore: {ks:?}")
    };
    assert_eq!(p11.token_label, CLUSTER);
    assert_eq!(p11.module_path, SOFTHSM_MODULE);
    assert_eq!(
        d.token_objects_labelled(CLUSTER, PASSWORD, &target_label(&key))
            .len(),
        1,
        "the key's copy is in the token"
    );

    // The aws CLI, as the seed shows it: prints nothing, exits 0.
    let out = aws(
        &d,
        &url,
        &["connect-custom-key-store", "--custom-key-store-id", &store],
    );
    assert_eq!(assert_ok(&out, "connect-custom-key-store"), "");
    let deadline = Instant::now() + Duration::from_secs(60);
    while connection_state_via_cli(&d, &url, &store) != "CONNECTED" {
        assert!(Instant::now() < deadline, "never CONNECTED");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = aws(
        &d,
        &url,
        &[
            "disconnect-custom-key-store",
            "--custom-key-store-id",
            &store,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "the CLI printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.stderr.is_empty(),
        "the CLI printed {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(connection_state_via_cli(&d, &url, &store), "DISCONNECTED");
    // The seed's own example id: a store that does not exist.
    let out = aws(
        &d,
        &url,
        &[
            "disconnect-custom-key-store",
            "--custom-key-store-id",
            "cks-1234567890abcdef0",
        ],
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(CustomKeyStoreNotFoundException)"),
        "{out:?}"
    );
    let out = aws(
        &d,
        &url,
        &["connect-custom-key-store", "--custom-key-store-id", &store],
    );
    assert_eq!(assert_ok(&out, "connect-custom-key-store"), "");
    let deadline = Instant::now() + Duration::from_secs(60);
    while connection_state_via_cli(&d, &url, &store) != "CONNECTED" {
        assert!(Instant::now() < deadline, "never CONNECTED again");
        std::thread::sleep(Duration::from_millis(200));
    }

    // boto3: decrypt again, schedule deletion, disconnect, delete.
    let (finish_out, _) = driver(
        &d,
        &url,
        "finish",
        &[
            ("KEYORCH_STORE", &store),
            ("KEYORCH_KEY", &key),
            ("KEYORCH_CIPHERTEXT", r["ciphertext"].as_str().unwrap()),
        ],
    );
    assert!(
        d.token_objects_labelled(CLUSTER, PASSWORD, &target_label(&key))
            .is_empty(),
        "ScheduleKeyDeletion removed the key's copy from the token"
    );

    // Every mutating call is audited under the access key's principal.
    let akid = std::fs::read_to_string(&creds)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("aws_access_key_id = ").map(str::to_string))
        .unwrap();
    let events = ok(c.audit.list_events(ListEventsRequest {
        principal: format!("aws:{akid}"),
        page: Some(keyorch::proto::v1::PageRequest {
            page_size: 1000,
            page_token: String::new(),
        }),
        ..Default::default()
    }))
    .await
    .events;
    let actions: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.action.clone(), e.outcome.clone()))
        .collect();
    for want in [
        "CreateVault",
        "CreateKeystore",
        "ConnectKeystore",
        "DisconnectKeystore",
        "CreateKey",
        "DeactivateKey",
        "DestroyKey",
        "DeleteKeystore",
    ] {
        assert!(
            actions.iter().any(|(a, o)| a == want && o == "ok"),
            "no ok {want} event for aws:{akid}: {actions:?}"
        );
    }
    assert!(
        actions
            .iter()
            .any(|(a, o)| a == "DeleteKeystore" && o == "error:FailedPrecondition"),
        "the refused delete is audited: {actions:?}"
    );
    assert_password_nowhere(&d, &[&story_out, &finish_out]).await;
}

#[tokio::test]
async fn every_state_and_field_rule_answers_its_aws_exception() {
    let d =
        TestDaemon::start_with_targets_and_args(&[(CLUSTER, PASSWORD)], &["--aws-listen", LISTEN])
            .await;
    let url = endpoint(&d).await;
    let (out, _) = driver(&d, &url, "exceptions", &[]);
    assert_password_nowhere(&d, &[&out]).await;
}

#[tokio::test]
async fn sigv4_is_verified_on_every_request_and_dev_credentials_are_stable() {
    let mut d = TestDaemon::start_with_args(&["--aws-listen", LISTEN]).await;
    let url = endpoint(&d).await;
    let (_, r) = driver(&d, &url, "signatures", &[]);
    let creds = d.state_dir().join("aws-credentials");
    let before = std::fs::read(&creds).unwrap();
    assert!(String::from_utf8_lossy(&before).contains(r["access_key_id"].as_str().unwrap()));
    // A restart keeps the credentials; the same profile works on the new port.
    d.restart().await;
    let url = endpoint(&d).await;
    assert_eq!(std::fs::read(&creds).unwrap(), before);
    assert_eq!(mode(&creds), 0o600);
    let out = assert_ok(&aws(&d, &url, &["list-keys"]), "list-keys");
    assert!(out.contains("\"Keys\": []"), "{out}");
    // Refused signatures are logged without the secret.
    let secret = String::from_utf8_lossy(&before)
        .lines()
        .find_map(|l| {
            l.strip_prefix("aws_secret_access_key = ")
                .map(str::to_string)
        })
        .unwrap();
    assert!(d.logs().contains("signature refused"));
    assert!(
        !d.logs().contains(&secret),
        "the secret access key is in the logs"
    );
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

#[tokio::test]
async fn configured_access_keys_hold_vault_roles_over_https() {
    const ADMIN: (&str, &str) = (
        "AKIAKEYORCHADMIN0001",
        "admin-secret/abcdefghijklmnopqrstuvwxyz0",
    );
    const USER: (&str, &str) = (
        "AKIAKEYORCHUSER00002",
        "user-secret/abcdefghijklmnopqrstuvwxyz01",
    );
    const LOST: (&str, &str) = (
        "AKIAKEYORCHLOST00003",
        "lost-secret/abcdefghijklmnopqrstuvwxyz01",
    );
    let mut d = TestDaemon::start().await;
    let root = d.root().to_path_buf();
    // --aws-listen needs an [aws] section in production.
    d.restart_with_config("").await;
    d.stop().await;
    let out = Command::new(TestDaemon::daemon_binary())
        .arg("--config")
        .arg(root.join("keyorchd.toml"))
        .args(["--aws-listen", LISTEN])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--aws-listen needs an [aws] section"),
        "{out:?}"
    );

    let ca = ca();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca.issuer)
        .unwrap();
    let write = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = root.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let cert = write("aws.crt", &server.pem());
    let key = write("aws.key", &server_key.serialize_pem());
    let ca_file = write("ca.crt", &ca.pem);
    let mut extra = String::new();
    for (id, roles) in [
        (ADMIN.0, "\"admin\", \"auditor\""),
        (USER.0, "\"user\""),
        (LOST.0, "\"admin\""),
    ] {
        extra.push_str(&format!(
            "[[access.grant]]\naws_access_key_id = \"{id}\"\nvault = \"*\"\nroles = [{roles}]\n\n"
        ));
    }
    extra.push_str(&format!(
        "[aws]\nlisten = \"{LISTEN}\"\ntls_cert = {cert:?}\ntls_key = {key:?}\nregions = [\"eu-west-1\"]\npkcs11_module = {SOFTHSM_MODULE:?}\n\n"
    ));
    for ((id, secret), vault, create) in [
        (ADMIN, "payments", true),
        (USER, "payments", false),
        (LOST, "nowhere", false),
    ] {
        let file = write(&format!("{id}.secret"), &format!("{secret}\n"));
        extra.push_str(&format!(
            "[[aws.access_key]]\naccess_key_id = \"{id}\"\nsecret_file = {file:?}\nvault = \"{vault}\"\ncreate_vault = {create}\n\n"
        ));
    }
    d.restart_with_config(&extra).await;
    let url = endpoint(&d).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let keys = serde_json::json!({"admin": ADMIN, "user": USER, "lost": LOST}).to_string();
    let (out, r) = driver(
        &d,
        &url,
        "configured",
        &[
            ("KEYORCH_AWS_KEYS", &keys),
            ("KEYORCH_CA_BUNDLE", ca_file.to_str().unwrap()),
        ],
    );
    let store = r["store"].as_str().unwrap();

    // The vault was created on demand, by the admin key, and holds the store.
    let mut c = d.clients();
    let vaults = ok(c.vaults.list_vaults(ListVaultsRequest::default()))
        .await
        .vaults;
    let payments = vaults
        .iter()
        .find(|v| v.name == "payments")
        .expect("vault payments");
    assert!(!vaults.iter().any(|v| v.name == "nowhere"));
    assert_eq!(get_keystore(&mut c, store).await.vault_id, payments.id);
    // Denials are audited under the access key's principal.
    let events = ok(c.audit.list_events(ListEventsRequest {
        principal: format!("aws:{}", USER.0),
        ..Default::default()
    }))
    .await
    .events;
    assert!(
        events
            .iter()
            .any(|e| e.action == "CreateKeystore" && e.outcome == "denied"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == "DisconnectKeystore" && e.outcome == "denied"),
        "{events:?}"
    );
    for (_, secret) in [ADMIN, USER, LOST] {
        assert!(
            !d.logs().contains(secret),
            "a secret access key is in the logs"
        );
        assert!(!out.contains(secret));
    }
}

/// EXTERNAL_KEY_STORE through the AWS endpoint, driven by boto3 and the aws CLI: daemon B's
/// endpoint makes a custom key store on daemon A's XKS proxy (keyorchd's own, on its own
/// token), a key with Origin EXTERNAL_KEY_STORE on one of A's keys, encrypts and decrypts
/// through it; the seed's `aws kms disconnect-custom-key-store` cuts every use, a reconnect
/// restores it. A's secret access key is a canary: nothing of B's may hold it.
#[tokio::test]
async fn external_key_stores_through_boto3_and_the_aws_cli() {
    let port = common::aws::free_port();
    let a = TestDaemon::start_with_args(&["--xks-listen", &format!("127.0.0.1:{port}")]).await;
    a.wait_for_stdout_line("  xks proxy: http://127.0.0.1:")
        .await;
    let creds = std::fs::read_to_string(a.state_dir().join("xks-credentials")).unwrap();
    let get = |k: &str| {
        creds
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap_or_else(|| panic!("{k} in xks-credentials"))
            .to_string()
    };
    let (path, key_id, secret) = (
        get("uri_path"),
        get("access_key_id"),
        get("secret_access_key"),
    );
    let mut ca = a.clients();
    let fa = Fixture::new(&mut ca).await;
    let served = fa
        .key(
            &mut ca,
            "served",
            keyorch::proto::v1::KeyAlgorithm::Aes,
            256,
            true,
        )
        .await;
    let small = fa
        .key(
            &mut ca,
            "small",
            keyorch::proto::v1::KeyAlgorithm::Aes,
            128,
            true,
        )
        .await;

    let b = TestDaemon::start_with_args(&["--aws-listen", LISTEN]).await;
    let url = endpoint(&b).await;
    let proxy = format!("http://127.0.0.1:{port}");
    let env = [
        ("KEYORCH_XKS_ENDPOINT", proxy.as_str()),
        ("KEYORCH_XKS_PATH", path.as_str()),
        ("KEYORCH_XKS_ACCESS_KEY_ID", key_id.as_str()),
        ("KEYORCH_XKS_SECRET", secret.as_str()),
        ("KEYORCH_XKS_KEY_ID", served.id.as_str()),
        ("KEYORCH_XKS_SMALL_KEY_ID", small.id.as_str()),
    ];
    let (first, r) = driver(&b, &url, "external", &env);
    let store = r["store"].as_str().unwrap().to_string();
    let key = r["key"].as_str().unwrap().to_string();
    let ciphertext = r["ciphertext"].as_str().unwrap().to_string();

    // The seed's example, with only --endpoint-url added.
    let out = assert_ok(
        &aws(
            &b,
            &url,
            &[
                "disconnect-custom-key-store",
                "--custom-key-store-id",
                &store,
            ],
        ),
        "aws kms disconnect-custom-key-store",
    );
    assert_eq!(connection_state_via_cli(&b, &url, &store), "DISCONNECTED");
    let described = assert_ok(
        &aws(
            &b,
            &url,
            &[
                "describe-custom-key-stores",
                "--custom-key-store-id",
                &store,
            ],
        ),
        "aws kms describe-custom-key-stores",
    );
    assert!(described.contains("EXTERNAL_KEY_STORE"), "{described}");

    let mut env2 = env.to_vec();
    env2.extend([
        ("KEYORCH_XKS_STORE", store.as_str()),
        ("KEYORCH_XKS_KEY", key.as_str()),
        ("KEYORCH_XKS_CIPHERTEXT", ciphertext.as_str()),
    ]);
    let (second, _) = driver(&b, &url, "external_after", &env2);
    // A's key served B's calls and is untouched by B's deletion.
    assert_eq!(
        key_state(&get_key(&mut ca, &served.id).await),
        keyorch::proto::v1::KeyState::Active
    );

    // The canary: B's logs, state files, audit events and every answer it gave.
    assert_secret_nowhere(&b, &secret, &[&first, &second, &out, &described]).await;
}
