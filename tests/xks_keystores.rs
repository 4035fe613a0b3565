//! The `xks` keystore type against a real XKS proxy: keyorchd's own (DESIGN §8), run as a
//! second daemon on its own token. Daemon A serves `--xks-listen` (plain HTTP on loopback,
//! or HTTPS and mutual TLS from an `[xks]` config section); daemon B holds the xks keystore
//! that points at A. Connect and TestKeystoreConnection are a signed GetHealthStatus, and
//! each failure maps to AWS's XKS_PROXY_* connection error codes. A's secret access key is a
//! canary: it must never come back from B — not in answers, logs, audit events or files.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::aws::free_port;
use common::*;
use keyorch::proto::v1::{
    create_keystore_request, keystore, test_keystore_connection_request, ConnectKeystoreRequest,
    ConnectionErrorCode, ConnectionState, CreateKeystoreRequest, DeleteKeystoreRequest,
    DisconnectKeystoreRequest, HealthStatus, InstallKeyRequest, KeyAlgorithm, Keystore,
    KeystoreType, ListEventsRequest, TestKeystoreConnectionRequest, TestKeystoreConnectionResponse,
    UpdateKeystoreRequest, XksCredentials, XksKeystoreConfig,
};
use tonic::Code;

const PATH: &str = "/keyorch/kms/xks/v1";

/// A proxy's SigV4 credential as `xks-credentials` holds it.
#[derive(Clone)]
struct Proxy {
    endpoint: String,
    uri_path: String,
    access_key_id: String,
    secret: String,
}

fn read_dev_credentials(state: &Path, port: u16) -> Proxy {
    let text = std::fs::read_to_string(state.join("xks-credentials")).unwrap();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap_or_else(|| panic!("{k} in xks-credentials"))
            .to_string()
    };
    Proxy {
        endpoint: format!("http://127.0.0.1:{port}"),
        uri_path: get("uri_path"),
        access_key_id: get("access_key_id"),
        secret: get("secret_access_key"),
    }
}

/// Daemon A: keyorchd --dev serving its XKS proxy on a free loopback port.
async fn proxy_daemon() -> (TestDaemon, Proxy) {
    let port = free_port();
    let a = TestDaemon::start_with_args(&["--xks-listen", &format!("127.0.0.1:{port}")]).await;
    a.wait_for_stdout_line("  xks proxy: http://127.0.0.1:")
        .await;
    let p = read_dev_credentials(&a.state_dir(), port);
    assert_eq!(p.uri_path, PATH);
    (a, p)
}

fn xks_config(p: &Proxy) -> XksKeystoreConfig {
    XksKeystoreConfig {
        uri_endpoint: p.endpoint.clone(),
        uri_path: p.uri_path.clone(),
        ..Default::default()
    }
}

fn xks_credentials(p: &Proxy) -> XksCredentials {
    XksCredentials {
        access_key_id: p.access_key_id.clone(),
        secret_access_key: p.secret.clone(),
        client_key_pem: String::new(),
    }
}

fn xks_req(
    vault_id: &str,
    name: &str,
    config: XksKeystoreConfig,
    credentials: Option<XksCredentials>,
    connect: bool,
) -> CreateKeystoreRequest {
    CreateKeystoreRequest {
        vault_id: vault_id.into(),
        name: name.into(),
        description: String::new(),
        r#type: KeystoreType::Xks as i32,
        connect,
        config: Some(create_keystore_request::Config::Xks(config)),
        credentials: credentials.map(create_keystore_request::Credentials::XksCredentials),
    }
}

async fn test_candidate(
    c: &mut keyorch::client::Clients,
    req: CreateKeystoreRequest,
) -> TestKeystoreConnectionResponse {
    ok(c.keystores
        .test_keystore_connection(TestKeystoreConnectionRequest {
            subject: Some(test_keystore_connection_request::Subject::Candidate(req)),
        }))
    .await
}

async fn connect(c: &mut keyorch::client::Clients, id: &str) -> Keystore {
    ok(c.keystores
        .connect_keystore(ConnectKeystoreRequest { id: id.into() }))
    .await
}

async fn disconnect(c: &mut keyorch::client::Clients, id: &str) -> Keystore {
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: id.into(),
        ..Default::default()
    }))
    .await
}

#[track_caller]
fn assert_failed_with(ks: &Keystore, code: ConnectionErrorCode) {
    assert_eq!(
        ks.connection_state,
        ConnectionState::Failed as i32,
        "{ks:?}"
    );
    assert_eq!(ks.connection_error_code, code as i32, "{ks:?}");
    assert!(!ks.connection_error_message.is_empty(), "{ks:?}");
}

#[track_caller]
fn assert_test_fails(r: &TestKeystoreConnectionResponse, code: ConnectionErrorCode) {
    eprintln!("test connection: {:?}: {}", r.error_code, r.message);
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.error_code, code as i32, "{r:?}");
    assert!(!r.message.is_empty(), "{r:?}");
}

/// Everything of daemon B a secret could leak into: its logs, every file of its state
/// folder, and its audit events.
async fn assert_never_leaked(b: &TestDaemon, c: &mut keyorch::client::Clients, secret: &str) {
    assert!(!b.logs().contains(secret), "the secret is in B's logs");
    for file in walk_files(&b.state_dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !contains_bytes(&bytes, secret.as_bytes()),
            "the secret is in {}",
            file.display()
        );
    }
    let events = ok(c.audit.list_events(ListEventsRequest::default())).await;
    assert!(!events.events.is_empty());
    assert!(
        !format!("{events:?}").contains(secret),
        "the secret is in B's audit events"
    );
}

/// A loopback server that answers every connection with `answer` (None: accepts and
/// never answers), for the failures keyorchd's proxy never produces.
fn canned_server(answer: Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            match answer {
                Some(text) => {
                    let mut buf = [0u8; 8192];
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(text.as_bytes());
                }
                None => held.push(s),
            }
        }
    });
    port
}

/// A loopback server that answers every request with a healthy GetHealthStatus (the
/// spec's fields) and keeps each request's head, to see how keyorchd signed it.
fn recording_health_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        let body = r#"{"xksProxyFleetSize":1,"xksProxyVendor":"recorder","xksProxyModel":"test","ekmVendor":"none","ekmFleetDetails":[{"id":"ekm-1","model":"m","healthStatus":"ACTIVE"}]}"#;
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 16384];
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let n = s.read(&mut buf).unwrap_or(0);
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (port, seen)
}

/// The SigV4 credential scope keyorchd signed the last recorded request with.
fn last_scope(seen: &Mutex<Vec<String>>) -> String {
    let seen = seen.lock().unwrap();
    let head = seen.last().expect("a request reached the recorder");
    let auth = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Authorization header in {head}"));
    let credential = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split(',').next())
        .unwrap_or_else(|| panic!("no Credential in {auth}"));
    // AKID/date/region/service/aws4_request: keep region/service/aws4_request.
    credential.splitn(3, '/').nth(2).unwrap().to_string()
}

/// Requests are signed for the keystore's signing_region (us-east-1 when it names none),
/// as AWS KMS signs with its own region and a proxy may check it; an update changes it.
#[tokio::test]
async fn requests_are_signed_for_the_configured_region() {
    let (port, seen) = recording_health_server();
    let p = Proxy {
        endpoint: format!("http://127.0.0.1:{port}"),
        uri_path: PATH.into(),
        access_key_id: "ABCDEFGHIJKLMNOPQRST".into(),
        secret: "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U=".into(),
    };
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;

    let plain = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "default-region",
        xks_config(&p),
        Some(xks_credentials(&p)),
        true,
    )))
    .await;
    assert_connection(&plain, ConnectionState::Connected);
    assert_eq!(last_scope(&seen), "us-east-1/kms-xks-proxy/aws4_request");

    let mut config = xks_config(&p);
    config.signing_region = "eu-west-3".into();
    let ks = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "paris",
        config,
        Some(xks_credentials(&p)),
        true,
    )))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
    assert_eq!(last_scope(&seen), "eu-west-3/kms-xks-proxy/aws4_request");
    let Some(keystore::Config::Xks(shown)) = &ks.config else {
        panic!("{ks:?}")
    };
    assert_eq!(shown.signing_region, "eu-west-3");

    // An update: disconnect, new region, connect.
    disconnect(&mut c, &ks.id).await;
    ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        xks: Some(XksKeystoreConfig {
            signing_region: "ap-south-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    }))
    .await;
    assert_connection(&connect(&mut c, &ks.id).await, ConnectionState::Connected);
    assert_eq!(last_scope(&seen), "ap-south-1/kms-xks-proxy/aws4_request");

    // Not a region: refused, naming the field, and nothing is made.
    let before = seen.lock().unwrap().len();
    let mut bad = xks_config(&p);
    bad.signing_region = "Paris".into();
    let status = fails(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "bad-region",
        bad,
        Some(xks_credentials(&p)),
        true,
    )))
    .await;
    assert_invalid(&status, "xks.signing_region");
    assert_eq!(seen.lock().unwrap().len(), before, "a request was sent");
}

#[tokio::test]
async fn an_xks_keystore_connects_to_another_keyorchd_proxy() {
    let (_a, p) = proxy_daemon().await;
    let b = TestDaemon::start().await;
    let mut c = b.clients();
    let fx = Fixture::new(&mut c).await;

    // Unsaved configuration first (UKO's "Test connection").
    let r = test_candidate(
        &mut c,
        xks_req(
            &fx.vault.id,
            "dry",
            xks_config(&p),
            Some(xks_credentials(&p)),
            false,
        ),
    )
    .await;
    assert!(r.ok, "{r:?}");

    let ks = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "external",
        xks_config(&p),
        Some(xks_credentials(&p)),
        false,
    )))
    .await;
    assert_connection(&ks, ConnectionState::Disconnected);
    assert_eq!(ks.r#type, KeystoreType::Xks as i32);
    assert!(ks.has_credentials);
    let Some(keyorch::proto::v1::keystore::Config::Xks(shown)) = &ks.config else {
        panic!("no xks config: {ks:?}");
    };
    assert_eq!(shown.uri_endpoint, p.endpoint);
    assert_eq!(shown.uri_path, PATH);
    assert_eq!(shown.access_key_id, p.access_key_id);

    let stored = ok(c
        .keystores
        .test_keystore_connection(TestKeystoreConnectionRequest {
            subject: Some(test_keystore_connection_request::Subject::Id(ks.id.clone())),
        }))
    .await;
    assert!(stored.ok, "{stored:?}");
    assert_connection(
        &get_keystore(&mut c, &ks.id).await,
        ConnectionState::Disconnected,
    );

    let connected = connect(&mut c, &ks.id).await;
    assert_connection(&connected, ConnectionState::Connected);
    let h = connected.health.as_ref().expect("health after connect");
    assert_eq!(h.status, HealthStatus::Ok as i32);
    // Connect on CONNECTED is a no-op.
    assert_connection(&connect(&mut c, &ks.id).await, ConnectionState::Connected);

    // No copy of a keyorch key goes into an xks keystore: CreateKey without
    // external_key_id and InstallKey are refused as bad input and change nothing.
    let before = snapshot(&c).await;
    let s = fails(c.keys.create_key(key_req(
        &fx.vault.id,
        "external-key",
        KeyAlgorithm::Aes,
        256,
        &[&ks.id],
        true,
    )))
    .await;
    assert_invalid(&s, "target_keystore_ids");
    assert!(s.message().contains("external_key_id"), "{}", describe(&s));
    assert_unchanged(&before, &snapshot(&c).await, "CreateKey targeting xks");
    let key = fx
        .key(&mut c, "internal-key", KeyAlgorithm::Aes, 256, true)
        .await;
    let before = snapshot(&c).await;
    let s = fails(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks.id.clone(),
    }))
    .await;
    assert_invalid(&s, "keystore_id");
    assert!(s.message().contains("references"), "{}", describe(&s));
    assert_unchanged(&before, &snapshot(&c).await, "InstallKey into xks");

    // The proxy's identity is locked once connected, in every state (DISCONNECTED again
    // too).
    let other_path = UpdateKeystoreRequest {
        id: ks.id.clone(),
        xks: Some(XksKeystoreConfig {
            uri_path: "/other/kms/xks/v1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = fails(c.keystores.update_keystore(other_path.clone())).await;
    assert_invalid(&s, "xks.uri_path");
    assert_connection(
        &disconnect(&mut c, &ks.id).await,
        ConnectionState::Disconnected,
    );
    let s = fails(c.keystores.update_keystore(other_path)).await;
    assert_invalid(&s, "xks.uri_path");
    let s = fails(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        xks: Some(XksKeystoreConfig {
            uri_endpoint: "http://127.0.0.1:9".into(),
            ..Default::default()
        }),
        ..Default::default()
    }))
    .await;
    assert_invalid(&s, "xks.uri_endpoint");
    // Credentials change in any state, both halves together; the key id is shown back.
    let renamed = ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        name: Some("external-2".into()),
        xks_credentials: Some(xks_credentials(&p)),
        ..Default::default()
    }))
    .await;
    assert_eq!(renamed.name, "external-2");
    assert_connection(&connect(&mut c, &ks.id).await, ConnectionState::Connected);
    let s = fails(
        c.keystores
            .delete_keystore(DeleteKeystoreRequest { id: ks.id.clone() }),
    )
    .await;
    assert_status(
        &s,
        Code::FailedPrecondition,
        "CustomKeyStoreInvalidStateException",
    );
    disconnect(&mut c, &ks.id).await;
    ok(c.keystores
        .delete_keystore(DeleteKeystoreRequest { id: ks.id.clone() }))
    .await;

    // The CLI: the secret from a file, never on the command line nor in the output.
    let secret_file = b.root().join("xks-secret");
    std::fs::write(&secret_file, format!("{}\n", p.secret)).unwrap();
    let out = run_ok(
        std::process::Command::new(TestDaemon::cli_binary())
            .arg("--socket")
            .arg(b.socket())
            .args(["-o", "json", "keystore", "create", "--vault", &fx.vault.id])
            .args(["--name", "from-cli", "--type", "xks", "--connect"])
            .args(["--uri-endpoint", &p.endpoint, "--uri-path", &p.uri_path])
            .args([
                "--access-key-id",
                &p.access_key_id,
                "--secret-access-key-file",
            ])
            .arg(&secret_file),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(v["connection_state"], "CONNECTION_STATE_CONNECTED", "{out}");
    assert_eq!(
        v["config"]["xks"]["access_key_id"],
        p.access_key_id.as_str()
    );
    assert_eq!(v["has_credentials"], true, "{out}");
    assert!(!out.contains(&p.secret), "{out}");
    let cli_id = v["id"].as_str().unwrap().to_string();
    let cli = || {
        let mut cmd = std::process::Command::new(TestDaemon::cli_binary());
        cmd.arg("--socket").arg(b.socket());
        cmd
    };
    // A new secret alone keeps the stored access key id (credentials: any state).
    let out = run_ok(
        cli()
            .args(["-o", "json", "keystore", "update", &cli_id])
            .arg("--secret-access-key-file")
            .arg(&secret_file),
    );
    assert!(!out.contains(&p.secret), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(
        v["config"]["xks"]["access_key_id"],
        p.access_key_id.as_str()
    );
    let refused = run(cli().args(["keystore", "update", &cli_id, "--uri-path", "/x/kms/xks/v1"]));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("xks.uri_path"),
        "{err}"
    );
    let help = run_ok(
        std::process::Command::new(TestDaemon::cli_binary()).args(["keystore", "create", "--help"]),
    );
    for flag in [
        "--uri-endpoint",
        "--uri-path",
        "--ca-cert",
        "--client-cert",
        "--client-key-file",
        "--secret-access-key-file",
    ] {
        assert!(help.contains(flag), "{flag} not in --help:\n{help}");
    }

    let all = format!("{:?}", snapshot(&c).await);
    assert!(!all.contains(&p.secret));
    assert_never_leaked(&b, &mut c, &p.secret).await;
}

#[tokio::test]
async fn connection_failures_map_to_the_xks_proxy_codes() {
    let (_a, p) = proxy_daemon().await;
    let b = TestDaemon::start().await;
    let mut c = b.clients();
    let fx = Fixture::new(&mut c).await;

    // A wrong secret: the proxy answers 401 AuthenticationFailedException.
    let mut wrong = xks_credentials(&p);
    let canary = format!("Canary{}", &p.secret[6..]);
    wrong.secret_access_key = canary.clone();
    let ks = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "wrong-secret",
        xks_config(&p),
        Some(wrong),
        true,
    )))
    .await;
    assert_failed_with(&ks, ConnectionErrorCode::InvalidCredentials);
    let m = &ks.connection_error_message;
    assert!(
        m.contains("401") && m.contains("AuthenticationFailedException"),
        "{m}"
    );
    assert!(!m.contains(&canary) && !m.contains(&p.secret), "{m}");
    // FAILED is recovered by Disconnect, Update, Connect.
    disconnect(&mut c, &ks.id).await;
    ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        xks_credentials: Some(xks_credentials(&p)),
        ..Default::default()
    }))
    .await;
    assert_connection(&connect(&mut c, &ks.id).await, ConnectionState::Connected);

    // An unknown access key id: also INVALID_CREDENTIALS.
    let mut unknown = xks_credentials(&p);
    unknown.access_key_id = "ABCDEFGHIJKLMNOPQRST".into();
    let r = test_candidate(
        &mut c,
        xks_req(
            &fx.vault.id,
            "unknown-id",
            xks_config(&p),
            Some(unknown),
            false,
        ),
    )
    .await;
    assert_test_fails(&r, ConnectionErrorCode::InvalidCredentials);

    // A path the proxy does not serve: 404 InvalidUriPathException.
    let mut other = xks_config(&p);
    other.uri_path = "/nowhere/kms/xks/v1".into();
    let ks = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "wrong-path",
        other,
        Some(xks_credentials(&p)),
        true,
    )))
    .await;
    assert_failed_with(&ks, ConnectionErrorCode::XksProxyInvalidConfiguration);
    assert!(
        ks.connection_error_message.contains("404")
            && ks
                .connection_error_message
                .contains("InvalidUriPathException"),
        "{}",
        ks.connection_error_message
    );

    // Nothing listening.
    let mut nowhere = xks_config(&p);
    nowhere.uri_endpoint = format!("http://127.0.0.1:{}", free_port());
    let r = test_candidate(
        &mut c,
        xks_req(
            &fx.vault.id,
            "nowhere",
            nowhere.clone(),
            Some(xks_credentials(&p)),
            false,
        ),
    )
    .await;
    assert_test_fails(&r, ConnectionErrorCode::XksProxyNotReachable);
    let ks = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "nowhere",
        nowhere,
        Some(xks_credentials(&p)),
        true,
    )))
    .await;
    assert_failed_with(&ks, ConnectionErrorCode::XksProxyNotReachable);

    // An answer that is not the spec's: 200 with no JSON; and 200 JSON without the fields.
    for body in ["not json", "{\"status\":\"fine\"}"] {
        let answer: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let port = canned_server(Some(answer));
        let mut cfg = xks_config(&p);
        cfg.uri_endpoint = format!("http://127.0.0.1:{port}");
        let r = test_candidate(
            &mut c,
            xks_req(
                &fx.vault.id,
                "garbled",
                cfg,
                Some(xks_credentials(&p)),
                false,
            ),
        )
        .await;
        assert_test_fails(&r, ConnectionErrorCode::XksProxyInvalidResponse);
    }
    // A 403.
    let port = canned_server(Some(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: 64\r\nconnection: close\r\n\r\n{\"errorName\":\"AccessDeniedException\",\"errorMessage\":\"not you!!\"}",
    ));
    let mut cfg = xks_config(&p);
    cfg.uri_endpoint = format!("http://127.0.0.1:{port}");
    let r = test_candidate(
        &mut c,
        xks_req(
            &fx.vault.id,
            "denied",
            cfg,
            Some(xks_credentials(&p)),
            false,
        ),
    )
    .await;
    assert_test_fails(&r, ConnectionErrorCode::XksProxyAccessDenied);
    assert!(r.message.contains("AccessDeniedException"), "{r:?}");
    // No answer at all: timed out (keyorch waits 5 s).
    let port = canned_server(None);
    let mut cfg = xks_config(&p);
    cfg.uri_endpoint = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let r = test_candidate(
        &mut c,
        xks_req(
            &fx.vault.id,
            "silent",
            cfg,
            Some(xks_credentials(&p)),
            false,
        ),
    )
    .await;
    assert_test_fails(&r, ConnectionErrorCode::XksProxyTimedOut);
    assert!(t.elapsed() < Duration::from_secs(30));

    assert_never_leaked(&b, &mut c, &p.secret).await;
    assert_never_leaked(&b, &mut c, &canary).await;
}

#[tokio::test]
async fn https_with_a_ca_and_mutual_tls() {
    let mut a = TestDaemon::start().await;
    let dir = a.root().to_path_buf();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        p.display().to_string()
    };
    let server_ca = common::tls::ca("xks server ca");
    let (cert, key_pem) = common::tls::leaf(&server_ca, "localhost", "keyorch", true, 1);
    let client_ca = common::tls::ca("xks client ca");
    let cn = "cks.kms.us-east-1.amazonaws.com";
    let (client, client_key) = common::tls::leaf(&client_ca, cn, "keyorch", false, 2);
    let stranger_ca = common::tls::ca("another ca");
    let (stranger, stranger_key) = common::tls::leaf(&stranger_ca, cn, "keyorch", false, 3);
    let cert_file = write("server.pem", &cert);
    let key_file = write("server.key", &key_pem);
    let client_ca_file = write("client-ca.pem", &client_ca.pem);
    let id = "TLSTLSTLSTLSTLSTLSTLSTLS";
    let secret = "Q2FuYXJ5LXhrcy10bHMtc2VjcmV0LTAxMjM0NTY3ODlhYmNk";
    let secret_file = write("xks-secret", secret);
    let port = free_port();
    a.restart_with_config(&format!(
        "[xks]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = {cert_file:?}\ntls_key = {key_file:?}\n\
         client_ca = {client_ca_file:?}\nclient_common_name = \"{cn}\"\n\
         [[xks.endpoint]]\nuri_path = \"/tls/kms/xks/v1\"\n\
         [[xks.endpoint.credential]]\naccess_key_id = \"{id}\"\nsecret_file = {secret_file:?}\n\
         [[access.grant]]\naws_access_key_id = \"{id}\"\nvault = \"*\"\nroles = [\"auditor\"]\n",
    ))
    .await;

    let b = TestDaemon::start().await;
    let mut c = b.clients();
    let fx = Fixture::new(&mut c).await;
    let p = Proxy {
        endpoint: format!("https://localhost:{port}"),
        uri_path: "/tls/kms/xks/v1".into(),
        access_key_id: id.into(),
        secret: secret.into(),
    };
    let tls = |ca: &str, cert: &str| XksKeystoreConfig {
        ca_cert_pem: ca.into(),
        client_cert_pem: cert.into(),
        ..xks_config(&p)
    };
    let creds = |key: &str| XksCredentials {
        client_key_pem: key.into(),
        ..xks_credentials(&p)
    };

    // The right CA and client certificate: CONNECTED.
    let ks = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "mtls",
        tls(&server_ca.pem, &client),
        Some(creds(&client_key)),
        true,
    )))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
    let Some(keyorch::proto::v1::keystore::Config::Xks(shown)) = &ks.config else {
        panic!("{ks:?}");
    };
    assert_eq!(shown.ca_cert_pem, server_ca.pem);
    assert_eq!(shown.client_cert_pem, client);
    // By IP address too (the server certificate names 127.0.0.1).
    let mut by_ip = tls(&server_ca.pem, &client);
    by_ip.uri_endpoint = format!("https://127.0.0.1:{port}");
    let r = test_candidate(
        &mut c,
        xks_req(
            &fx.vault.id,
            "by-ip",
            by_ip,
            Some(creds(&client_key)),
            false,
        ),
    )
    .await;
    assert!(r.ok, "{r:?}");

    // Another CA than the one that signed the proxy's certificate.
    let r = test_candidate(
        &mut c,
        xks_req(
            &fx.vault.id,
            "wrong-ca",
            tls(&stranger_ca.pem, &client),
            Some(creds(&client_key)),
            false,
        ),
    )
    .await;
    assert_test_fails(&r, ConnectionErrorCode::XksProxyInvalidTlsConfiguration);
    // No CA given: the system's roots do not know this one.
    let r = test_candidate(
        &mut c,
        xks_req(
            &fx.vault.id,
            "system-roots",
            tls("", &client),
            Some(creds(&client_key)),
            false,
        ),
    )
    .await;
    assert_test_fails(&r, ConnectionErrorCode::XksProxyInvalidTlsConfiguration);
    // No client certificate, or one of another CA: the proxy closes the connection.
    let r = test_candidate(
        &mut c,
        xks_req(
            &fx.vault.id,
            "no-cert",
            tls(&server_ca.pem, ""),
            Some(creds("")),
            false,
        ),
    )
    .await;
    assert_test_fails(&r, ConnectionErrorCode::XksProxyInvalidTlsConfiguration);
    let ks2 = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "stranger",
        tls(&server_ca.pem, &stranger),
        Some(creds(&stranger_key)),
        true,
    )))
    .await;
    assert_failed_with(&ks2, ConnectionErrorCode::XksProxyInvalidTlsConfiguration);
    // Plain HTTP to a TLS listener is not an XKS answer.
    let mut plain = xks_config(&p);
    plain.uri_endpoint = format!("http://127.0.0.1:{port}");
    let r = test_candidate(
        &mut c,
        xks_req(
            &fx.vault.id,
            "plain",
            plain,
            Some(xks_credentials(&p)),
            false,
        ),
    )
    .await;
    assert!(!r.ok, "{r:?}");

    // A key that does not belong to the certificate is refused before anything is stored.
    let before = snapshot(&c).await;
    let s = fails(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "mismatch",
        tls(&server_ca.pem, &client),
        Some(creds(&stranger_key)),
        false,
    )))
    .await;
    assert_invalid(&s, "xks_credentials.client_key_pem");
    assert_unchanged(
        &before,
        &snapshot(&c).await,
        "a client key of another certificate",
    );

    // The client key is a credential: never shown, logged or stored in plaintext.
    let key_body: String = client_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!format!("{:?}", snapshot(&c).await).contains(&key_body[..40]));
    assert_never_leaked(&b, &mut c, &key_body[..40]).await;
    assert_never_leaked(&b, &mut c, secret).await;
}

/// The background health check (`interval_secs = 1`, the default `failed_after = 3`) keeps
/// the health fresh, and moves a keystore whose proxy went away to FAILED.
#[tokio::test]
async fn health_is_refreshed_in_the_background() {
    let (mut a, p) = proxy_daemon().await;
    let mut b = TestDaemon::start().await;
    b.restart_with_config("[health]\ninterval_secs = 1\n").await;
    let mut c = b.clients();
    let fx = Fixture::new(&mut c).await;
    let ks = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "watched",
        xks_config(&p),
        Some(xks_credentials(&p)),
        true,
    )))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
    let first = ks.health.clone().unwrap().last_heartbeat.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = get_keystore(&mut c, &ks.id).await.health.unwrap();
        let beat = h.last_heartbeat.unwrap();
        if (beat.seconds, beat.nanos) > (first.seconds, first.nanos) {
            assert_eq!(h.status, HealthStatus::Ok as i32, "{h:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat after connect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The proxy goes away: the health says so while the keystore is CONNECTED, and after
    // `failed_after` (3) failed checks in a row the keystore is FAILED with the check's code.
    a.stop().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw_not_responding = false;
    let failed = loop {
        let k = get_keystore(&mut c, &ks.id).await;
        if k.connection_state == ConnectionState::Failed as i32 {
            break k;
        }
        assert_connection(&k, ConnectionState::Connected);
        let h = k.health.clone().unwrap();
        if h.status == HealthStatus::NotResponding as i32 {
            assert!(h.message.contains("not reachable"), "{h:?}");
            saw_not_responding = true;
        }
        assert!(Instant::now() < deadline, "never FAILED: {k:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        saw_not_responding,
        "FAILED without a NOT_RESPONDING check before"
    );
    assert_eq!(
        failed.connection_error_code,
        ConnectionErrorCode::XksProxyNotReachable as i32,
        "{failed:?}"
    );
    assert!(failed.health.is_none(), "{failed:?}");
    assert_never_leaked(&b, &mut c, &p.secret).await;
}

#[tokio::test]
async fn bad_input_names_the_field_and_changes_nothing() {
    let b = TestDaemon::start().await;
    let mut c = b.clients();
    let fx = Fixture::new(&mut c).await;
    let p = Proxy {
        endpoint: "https://xks.example.com".into(),
        uri_path: PATH.into(),
        access_key_id: "ABCDEFGHIJKLMNOPQRST".into(),
        secret: "Q2FuYXJ5LXhrcy1iYWQtaW5wdXQtMDEyMzQ1Njc4OWFiY2Q=".into(),
    };
    let ca = common::tls::ca("some ca");
    let (cert, key) = common::tls::leaf(&ca, "client", "keyorch", false, 1);
    let cfg = |f: &dyn Fn(&mut XksKeystoreConfig)| {
        let mut x = xks_config(&p);
        f(&mut x);
        x
    };
    let cred = |f: &dyn Fn(&mut XksCredentials)| {
        let mut x = xks_credentials(&p);
        f(&mut x);
        Some(x)
    };
    let good = || cred(&|_| {});
    let cases: Vec<(&str, XksKeystoreConfig, Option<XksCredentials>)> = vec![
        (
            "xks.uri_endpoint",
            cfg(&|x| x.uri_endpoint = String::new()),
            good(),
        ),
        (
            "xks.uri_endpoint",
            cfg(&|x| x.uri_endpoint = "ftp://xks.example.com".into()),
            good(),
        ),
        (
            "xks.uri_endpoint",
            cfg(&|x| x.uri_endpoint = "http://xks.example.com".into()),
            good(),
        ),
        (
            "xks.uri_endpoint",
            cfg(&|x| x.uri_endpoint = "https://xks.example.com/kms".into()),
            good(),
        ),
        (
            "xks.uri_endpoint",
            cfg(&|x| x.uri_endpoint = "https://xks.example.com:0".into()),
            good(),
        ),
        (
            "xks.uri_endpoint",
            cfg(&|x| x.uri_endpoint = "https://xks.example.com:70000".into()),
            good(),
        ),
        (
            "xks.uri_endpoint",
            cfg(&|x| x.uri_endpoint = "https://u:p@xks.example.com".into()),
            good(),
        ),
        (
            "xks.uri_endpoint",
            cfg(&|x| x.uri_endpoint = "https://xks_example.com".into()),
            good(),
        ),
        (
            "xks.uri_endpoint",
            cfg(&|x| x.uri_endpoint = format!("https://{}.com", "a".repeat(130))),
            good(),
        ),
        ("xks.uri_path", cfg(&|x| x.uri_path = String::new()), good()),
        (
            "xks.uri_path",
            cfg(&|x| x.uri_path = "/keyorch/kms/xks/v2".into()),
            good(),
        ),
        (
            "xks.uri_path",
            cfg(&|x| x.uri_path = "keyorch/kms/xks/v1".into()),
            good(),
        ),
        (
            "xks.uri_path",
            cfg(&|x| x.uri_path = "/a.b/kms/xks/v1".into()),
            good(),
        ),
        (
            "xks.uri_path",
            cfg(&|x| x.uri_path = format!("/{}/kms/xks/v1", "a".repeat(120))),
            good(),
        ),
        (
            "xks.ca_cert_pem",
            cfg(&|x| x.ca_cert_pem = "not a certificate".into()),
            good(),
        ),
        (
            "xks.ca_cert_pem",
            cfg(&|x| x.ca_cert_pem = key.clone()),
            good(),
        ),
        (
            "xks.client_cert_pem",
            cfg(&|x| x.client_cert_pem = "garbage".into()),
            good(),
        ),
        (
            "xks_credentials.client_key_pem",
            cfg(&|x| x.client_cert_pem = cert.clone()),
            good(),
        ),
        (
            "xks_credentials.client_key_pem",
            cfg(&|_| {}),
            cred(&|c| c.client_key_pem = key.clone()),
        ),
        (
            "xks_credentials.client_key_pem",
            cfg(&|x| x.client_cert_pem = cert.clone()),
            cred(&|c| c.client_key_pem = "not a key".into()),
        ),
        (
            "xks.access_key_id",
            cfg(&|x| x.access_key_id = "ZZZZZZZZZZZZZZZZZZZZ".into()),
            good(),
        ),
        (
            "xks_credentials.access_key_id",
            cfg(&|_| {}),
            cred(&|c| c.access_key_id = "SHORT".into()),
        ),
        (
            "xks_credentials.access_key_id",
            cfg(&|_| {}),
            cred(&|c| c.access_key_id = "abcdefghijklmnopqrst".into()),
        ),
        (
            "xks_credentials.access_key_id",
            cfg(&|_| {}),
            cred(&|c| c.access_key_id = "ABCDEFGHIJKLMNOPQRS1".into()),
        ),
        (
            "xks_credentials.secret_access_key",
            cfg(&|_| {}),
            cred(&|c| c.secret_access_key = "short".into()),
        ),
        (
            "xks_credentials.secret_access_key",
            cfg(&|_| {}),
            cred(&|c| c.secret_access_key = format!("{}!", &p.secret[..45])),
        ),
        ("xks_credentials", cfg(&|_| {}), None),
    ];
    let before = snapshot(&c).await;
    for (field, config, credentials) in cases {
        let req = xks_req(&fx.vault.id, "bad", config, credentials, true);
        let s = fails(c.keystores.create_keystore(req.clone())).await;
        assert_invalid(&s, field);
        assert!(!s.message().contains(&p.secret), "{}", describe(&s));
        let s = fails(
            c.keystores
                .test_keystore_connection(TestKeystoreConnectionRequest {
                    subject: Some(test_keystore_connection_request::Subject::Candidate(req)),
                }),
        )
        .await;
        assert_invalid(&s, field);
    }
    // No configuration at all.
    let mut req = xks_req(&fx.vault.id, "bad", xks_config(&p), good(), false);
    req.config = None;
    assert_invalid(&fails(c.keystores.create_keystore(req)).await, "xks");
    // Credentials of another type.
    let mut req = xks_req(&fx.vault.id, "bad", xks_config(&p), None, false);
    req.credentials = Some(create_keystore_request::Credentials::Pkcs11Credentials(
        keyorch::proto::v1::Pkcs11Credentials {
            pin: "123456".into(),
        },
    ));
    let s = fails(c.keystores.create_keystore(req)).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{}", describe(&s));
    assert_unchanged(&before, &snapshot(&c).await, "bad xks create requests");

    // Updates: a new client certificate needs new credentials (its key is one).
    let ks = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "good",
        xks_config(&p),
        good(),
        false,
    )))
    .await;
    let before = snapshot(&c).await;
    let bad_updates = [
        (
            "xks.client_cert_pem",
            UpdateKeystoreRequest {
                xks: Some(XksKeystoreConfig {
                    client_cert_pem: cert.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "xks.uri_path",
            UpdateKeystoreRequest {
                xks: Some(XksKeystoreConfig {
                    uri_path: "/x/kms/xks/v3".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "xks.access_key_id",
            UpdateKeystoreRequest {
                xks: Some(XksKeystoreConfig {
                    access_key_id: "ZZZZZZZZZZZZZZZZZZZZ".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "xks_credentials.secret_access_key",
            UpdateKeystoreRequest {
                xks_credentials: cred(&|c| c.secret_access_key = "short".into()),
                ..Default::default()
            },
        ),
        (
            "xks.ca_cert_pem",
            UpdateKeystoreRequest {
                xks: Some(XksKeystoreConfig {
                    ca_cert_pem: "x".into(),
                    ..Default::default()
                }),
                xks_clear_ca_cert: true,
                ..Default::default()
            },
        ),
    ];
    for (field, mut u) in bad_updates {
        u.id = ks.id.clone();
        let s = fails(c.keystores.update_keystore(u)).await;
        assert_invalid(&s, field);
    }
    assert_unchanged(&before, &snapshot(&c).await, "bad xks updates");
    // Before the first connect the proxy's identity may still be corrected; the CA can be
    // set and cleared while DISCONNECTED.
    let u = ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        xks: Some(XksKeystoreConfig {
            uri_endpoint: "https://xks2.example.com:8443".into(),
            uri_path: "/other/kms/xks/v1".into(),
            ca_cert_pem: ca.pem.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }))
    .await;
    let Some(keyorch::proto::v1::keystore::Config::Xks(x)) = &u.config else {
        panic!("{u:?}");
    };
    assert_eq!(x.uri_endpoint, "https://xks2.example.com:8443");
    assert_eq!(x.ca_cert_pem, ca.pem);
    let u = ok(c.keystores.update_keystore(UpdateKeystoreRequest {
        id: ks.id.clone(),
        xks_clear_ca_cert: true,
        ..Default::default()
    }))
    .await;
    let Some(keyorch::proto::v1::keystore::Config::Xks(x)) = &u.config else {
        panic!("{u:?}");
    };
    assert!(x.ca_cert_pem.is_empty());
    assert_never_leaked(&b, &mut c, &p.secret).await;
}

/// Keys of an xks keystore are references to keys of the proxy's external key manager
/// (AWS KMS's keys with Origin EXTERNAL_KEY_STORE): daemon B's key names a key of daemon A
/// by its external key id, holds no material of it, and encrypts, decrypts and makes data
/// keys through A's proxy. The proof that A's key did the work: B's ciphertext opens with A's
/// own Decrypt under the spec's AAD construction. Also: every refusal of CreateKey, drift
/// when A disables the key, the keystore's disconnect cutting use, and the lifecycle.
#[tokio::test]
async fn external_keys_encrypt_and_decrypt_through_the_proxy() {
    use keyorch::domain::xks::gcm_aad;
    use keyorch::proto::v1::{
        DecryptRequest, EncryptRequest, GenerateDataKeyRequest, InstanceState, KeyState,
        SyncStatus, TargetKeyStatus,
    };

    let (a, p) = proxy_daemon().await;
    let mut ca = a.clients();
    let fa = Fixture::new(&mut ca).await;
    let served = fa
        .key(&mut ca, "served", KeyAlgorithm::Aes, 256, true)
        .await;
    let aes128 = fa
        .key(&mut ca, "aes-128", KeyAlgorithm::Aes, 128, true)
        .await;

    let b = TestDaemon::start().await;
    let mut c = b.clients();
    let fx = Fixture::new(&mut c).await;
    let ks = ok(c.keystores.create_keystore(xks_req(
        &fx.vault.id,
        "external",
        xks_config(&p),
        Some(xks_credentials(&p)),
        true,
    )))
    .await;
    assert_connection(&ks, ConnectionState::Connected);
    let external = |name: &str, id: &str, activate: bool| {
        let mut r = key_req(
            &fx.vault.id,
            name,
            KeyAlgorithm::Aes,
            256,
            &[&ks.id],
            activate,
        );
        r.external_key_id = id.to_string();
        r
    };

    // Refusals: nothing is created by any of them.
    let before = snapshot(&c).await;
    let s = fails(c.keys.create_key(external("bad-id", "a/b", true))).await;
    assert_invalid(&s, "external_key_id");
    let mut r = external("aes-128", &served.id, true);
    r.key_size_bits = 128;
    assert_invalid(&fails(c.keys.create_key(r)).await, "algorithm");
    let mut r = external("two", &served.id, true);
    r.target_keystore_ids.push(fx.keystore.id.clone());
    assert_invalid(&fails(c.keys.create_key(r)).await, "target_keystore_ids");
    let mut r = external("internal", &served.id, true);
    r.target_keystore_ids = vec![fx.keystore.id.clone()];
    assert_invalid(&fails(c.keys.create_key(r)).await, "external_key_id");
    let s = fails(c.keys.create_key(external("missing", "no-such-key", true))).await;
    let info = assert_status(&s, Code::FailedPrecondition, "XksKeyNotFoundException");
    assert_eq!(info.metadata.get("keystore_id"), Some(&ks.id));
    assert!(
        s.message().contains("KeyNotFoundException"),
        "{}",
        describe(&s)
    );
    let s = fails(c.keys.create_key(external("small", &aes128.id, true))).await;
    assert_status(
        &s,
        Code::FailedPrecondition,
        "XksKeyInvalidConfigurationException",
    );
    assert!(s.message().contains("AES_128"), "{}", describe(&s));
    assert_unchanged(&before, &snapshot(&c).await, "refused external CreateKey");

    // The reference: ACTIVE, its one instance INSTALLED and naming the external key, no
    // check value (keyorch holds no material).
    let key = ok(c.keys.create_key(external("ext", &served.id, true))).await;
    assert_eq!(key_state(&key), KeyState::Active);
    assert_eq!(key.external_key_id, served.id);
    assert_eq!(key.key_check_value, "");
    assert_eq!(key.instances.len(), 1);
    assert_eq!(key.instances[0].state, InstanceState::Installed as i32);
    assert_eq!(key.instances[0].remote_id, served.id);
    let s = fails(c.keys.create_key(external("again", &served.id, true))).await;
    let info = assert_status(&s, Code::AlreadyExists, "XksKeyAlreadyInUseException");
    assert_eq!(
        info.metadata.get("field").map(String::as_str),
        Some("external_key_id")
    );
    assert!(s.message().contains(&key.id), "{}", describe(&s));

    // Encrypt in B; A's key opens it with the spec's AAD binding (no ciphertext metadata).
    let enc = |aad: &[u8]| EncryptRequest {
        key_id: key.id.clone(),
        plaintext: b"external secret".to_vec(),
        aad: aad.to_vec(),
    };
    let sealed = ok(c.crypto.encrypt(enc(b"ctx"))).await.ciphertext;
    assert_eq!(sealed[0], b'X');
    assert_eq!(sealed[1], 12, "IV length");
    let iv = &sealed[2..14];
    assert_eq!(sealed[14], 0, "no ciphertext metadata");
    let mut a_blob = iv.to_vec();
    a_blob.extend_from_slice(&sealed[15..]);
    let opened_by_a = ok(ca.crypto.decrypt(DecryptRequest {
        key_id: served.id.clone(),
        ciphertext: a_blob,
        aad: gcm_aad(b"ctx", b"").unwrap(),
    }))
    .await;
    assert_eq!(opened_by_a.plaintext, b"external secret");
    let dec = |ciphertext: Vec<u8>, aad: &[u8]| DecryptRequest {
        key_id: key.id.clone(),
        ciphertext,
        aad: aad.to_vec(),
    };
    let opened = ok(c.crypto.decrypt(dec(sealed.clone(), b"ctx"))).await;
    assert_eq!(opened.plaintext, b"external secret");
    // Wrong AAD, a flipped byte, a ciphertext of keyorch's own format: refused.
    let s = fails(c.crypto.decrypt(dec(sealed.clone(), b"other"))).await;
    assert_status(&s, Code::InvalidArgument, "InvalidCiphertextException");
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let s = fails(c.crypto.decrypt(dec(flipped, b"ctx"))).await;
    assert_status(&s, Code::InvalidArgument, "InvalidCiphertextException");
    let s = fails(c.crypto.decrypt(dec(sealed[1..].to_vec(), b"ctx"))).await;
    assert_status(&s, Code::InvalidArgument, "InvalidCiphertextException");
    // More than the XKS limit of 4,300 bytes is refused before the proxy is asked.
    let mut big = enc(b"");
    big.plaintext = vec![7; 4301];
    assert_invalid(&fails(c.crypto.encrypt(big)).await, "plaintext");
    let dk = ok(c.crypto.generate_data_key(GenerateDataKeyRequest {
        key_id: key.id.clone(),
        number_of_bytes: 32,
        aad: Vec::new(),
    }))
    .await;
    assert_eq!(dk.plaintext.len(), 32);
    let opened = ok(c.crypto.decrypt(dec(dk.ciphertext.clone(), b""))).await;
    assert_eq!(opened.plaintext, dk.plaintext);

    // An external key stays in its keystore.
    let s = fails(c.keys.install_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: fx.keystore.id.clone(),
    }))
    .await;
    assert_status(
        &s,
        Code::FailedPrecondition,
        "UnsupportedOperationException",
    );
    let s = fails(c.keys.uninstall_key(InstallKeyRequest {
        id: key.id.clone(),
        keystore_id: ks.id.clone(),
    }))
    .await;
    assert_status(
        &s,
        Code::FailedPrecondition,
        "UnsupportedOperationException",
    );

    // Status: in sync; A deactivates its key behind B's back: drift, and B's Encrypt fails
    // with AWS's error for a misconfigured external key; SyncKey cannot repair it (it is
    // A's), A's reactivation does.
    let st = ok(c.keys.get_key_status_in_keystores(key_id(&key.id))).await;
    assert_eq!(
        st.keystores[0].status,
        TargetKeyStatus::Active as i32,
        "{st:?}"
    );
    assert_eq!(st.keystores[0].sync, SyncStatus::Ok as i32, "{st:?}");
    ok(ca.keys.deactivate_key(key_id(&served.id))).await;
    let st = ok(c.keys.get_key_status_in_keystores(key_id(&key.id))).await;
    assert_eq!(
        st.keystores[0].status,
        TargetKeyStatus::NotActive as i32,
        "{st:?}"
    );
    assert_ne!(st.keystores[0].sync, SyncStatus::Ok as i32, "{st:?}");
    assert!(st.keystores[0].message.contains("DISABLED"), "{st:?}");
    let s = fails(c.crypto.encrypt(enc(b"ctx"))).await;
    assert_status(
        &s,
        Code::FailedPrecondition,
        "XksKeyInvalidConfigurationException",
    );
    let synced = ok(c.keys.sync_key(key_id(&key.id))).await;
    assert_ne!(synced.keystores[0].sync, SyncStatus::Ok as i32);
    ok(ca.keys.activate_key(key_id(&served.id))).await;
    ok(c.crypto.encrypt(enc(b"ctx"))).await;

    // Disconnecting B's keystore cuts every use; connecting brings it back. The permanent
    // form (uninstall_keys) leaves the external key where it is: it cannot leave the
    // keystore that holds it.
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: ks.id.clone(),
        uninstall_keys: true,
        ..Default::default()
    }))
    .await;
    let kept = get_key(&mut c, &key.id).await;
    assert_eq!(kept.target_keystore_ids, vec![ks.id.clone()]);
    assert_eq!(kept.external_key_id, served.id);
    let s = fails(c.crypto.decrypt(dec(sealed.clone(), b"ctx"))).await;
    assert_eq!(s.code(), Code::FailedPrecondition, "{}", describe(&s));
    assert_eq!(
        get_key(&mut c, &key.id).await.instances[0].state,
        InstanceState::Unavailable as i32
    );
    connect(&mut c, &ks.id).await;
    ok(c.crypto.decrypt(dec(sealed.clone(), b"ctx"))).await;

    // Lifecycle: deactivation sends nothing to the proxy, so it works while the keystore is
    // DISCONNECTED; DEACTIVATED decrypts but does not encrypt; destroyed, it does neither;
    // once deleted, the external key may be referenced again. A's key is untouched.
    ok(c.keystores.disconnect_keystore(DisconnectKeystoreRequest {
        id: ks.id.clone(),
        force: true,
        ..Default::default()
    }))
    .await;
    let k = ok(c.keys.deactivate_key(key_id(&key.id))).await;
    assert_eq!(key_state(&k), KeyState::Deactivated);
    // A keyorch key aimed at the disconnected xks keystore is bad input, not "connect first".
    let s = fails(c.keys.create_key(key_req(
        &fx.vault.id,
        "copy",
        KeyAlgorithm::Aes,
        256,
        &[&ks.id],
        false,
    )))
    .await;
    assert_invalid(&s, "target_keystore_ids");
    connect(&mut c, &ks.id).await;
    let k = get_key(&mut c, &key.id).await;
    assert_eq!(k.instances[0].state, InstanceState::NotInstalled as i32);
    assert_status(
        &fails(c.crypto.encrypt(enc(b"ctx"))).await,
        Code::FailedPrecondition,
        "KMSInvalidStateException",
    );
    ok(c.crypto.decrypt(dec(sealed.clone(), b"ctx"))).await;
    ok(c.keys.destroy_key(key_id(&key.id))).await;
    assert_eq!(
        fails(c.crypto.decrypt(dec(sealed.clone(), b"ctx")))
            .await
            .code(),
        Code::FailedPrecondition
    );
    ok(c.keys.delete_key(key_id(&key.id))).await;
    let again = ok(c.keys.create_key(external("again", &served.id, false))).await;
    assert_eq!(key_state(&again), KeyState::PreActive);
    assert_eq!(again.instances[0].state, InstanceState::NotInstalled as i32);
    let again = ok(c.keys.activate_key(key_id(&again.id))).await;
    assert_eq!(again.instances[0].state, InstanceState::Installed as i32);
    let opened = ok(c.crypto.decrypt(DecryptRequest {
        key_id: again.id.clone(),
        ciphertext: sealed.clone(),
        aad: b"ctx".to_vec(),
    }))
    .await;
    assert_eq!(opened.plaintext, b"external secret");
    assert_eq!(
        key_state(&get_key(&mut ca, &served.id).await),
        KeyState::Active
    );

    // The CLI creates one too.
    let mine = fa
        .key(&mut ca, "for-cli", KeyAlgorithm::Aes, 256, true)
        .await;
    let out = run_ok(
        std::process::Command::new(TestDaemon::cli_binary())
            .arg("--socket")
            .arg(b.socket())
            .args(["-o", "json", "key", "create", "--vault", &fx.vault.id])
            .args(["--name", "from-cli", "--algorithm", "aes", "--size", "256"])
            .args([
                "--target",
                &ks.id,
                "--activate",
                "--external-key-id",
                &mine.id,
            ]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(v["external_key_id"], mine.id.as_str(), "{out}");
    assert_eq!(v["state"], "KEY_STATE_ACTIVE", "{out}");

    assert_never_leaked(&b, &mut c, &p.secret).await;
}
