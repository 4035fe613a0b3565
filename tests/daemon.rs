//! The daemon as a process: `keyorchd --dev --state-dir DIR` creates the documented state
//! folder (SoftHSM2 config, token, PIN files, sled database, socket) with the documented
//! modes, says `keyorchd ready` on stdout, answers gRPC health and server reflection, stops
//! cleanly on SIGTERM, and on restart reuses its token, PINs and database.

mod common;

use common::*;
use keyorch::proto::v1::{ConnectionState, KeyAlgorithm, KeyState};
use prost::Message as _;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

#[tokio::test]
async fn prints_ready_and_serves_health() {
    let d = TestDaemon::start().await;
    d.wait_for_stdout_line("keyorchd ready").await;
    let status = health_status(d.channel(), "").await.expect("health check");
    assert_eq!(status, ServingStatus::Serving as i32);
}

async fn reflect(d: &TestDaemon, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(d.channel());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = ok(client.server_reflection_info(tokio_stream::once(req))).await;
    let resp = stream
        .message()
        .await
        .expect("reflection stream")
        .expect("a reflection answer");
    resp.message_response.expect("a reflection response body")
}

#[tokio::test]
async fn reflection_lists_every_service_and_describes_them() {
    let d = TestDaemon::start().await;
    let services = match reflect(&d, MessageRequest::ListServices(String::new())).await {
        MessageResponse::ListServicesResponse(l) => {
            l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    };
    for expected in [
        "keyorch.v1.VaultService",
        "keyorch.v1.KeystoreService",
        "keyorch.v1.KeyService",
        "keyorch.v1.CryptoService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} not listed by reflection: {services:?}"
        );
    }

    // The descriptor of KeyService is served, with its methods.
    let files = match reflect(
        &d,
        MessageRequest::FileContainingSymbol("keyorch.v1.KeyService".into()),
    )
    .await
    {
        MessageResponse::FileDescriptorResponse(f) => f.file_descriptor_proto,
        other => panic!("unexpected reflection answer: {other:?}"),
    };
    let methods: Vec<String> = files
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .flat_map(|f| f.service)
        .filter(|s| s.name() == "KeyService")
        .flat_map(|s| s.method)
        .map(|m| m.name().to_string())
        .collect();
    for m in ["CreateKey", "ActivateKey", "DestroyKey", "InstallKey"] {
        assert!(
            methods.iter().any(|x| x == m),
            "{m} missing from {methods:?}"
        );
    }
}

#[tokio::test]
async fn dev_state_folder_has_the_documented_layout_and_modes() {
    let d = TestDaemon::start().await;
    let dir = d.state_dir();
    assert_eq!(mode(&dir), 0o700, "state folder mode");
    assert_eq!(mode(&d.socket()), 0o660, "socket mode");
    assert_eq!(mode(&dir.join("user-pin")), 0o600, "user-pin mode");
    assert_eq!(mode(&dir.join("so-pin")), 0o600, "so-pin mode");
    assert!(dir.join("tokens").is_dir(), "no tokens/ folder");
    assert!(dir.join("db").is_dir(), "no db/ folder");

    let conf = std::fs::read_to_string(d.softhsm_conf()).expect("softhsm2.conf");
    let tokendir = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("directories.tokendir"))
        .map(|rest| rest.trim_start().trim_start_matches('=').trim().to_string())
        .unwrap_or_else(|| panic!("no directories.tokendir in softhsm2.conf:\n{conf}"));
    assert_eq!(
        std::fs::canonicalize(&tokendir).ok(),
        std::fs::canonicalize(dir.join("tokens")).ok(),
        "tokendir {tokendir} is not DIR/tokens"
    );
    assert!(
        std::fs::read_dir(dir.join("tokens"))
            .unwrap()
            .next()
            .is_some(),
        "the token folder is empty"
    );

    // PINs: random, different, the PIN text only.
    let user = d.user_pin();
    let so = d.so_pin();
    assert_ne!(user, so, "user and SO PIN are the same");
    assert!(
        user.len() >= 8,
        "user PIN too short to be random: {} chars",
        user.len()
    );
    assert!(
        so.len() >= 8,
        "SO PIN too short to be random: {} chars",
        so.len()
    );
    for pin in [&user, &so] {
        assert!(
            pin.chars().all(|c| c.is_ascii_graphic()),
            "PIN file holds more than the PIN text"
        );
    }

    // Two daemons get two different tokens and PINs.
    let other = TestDaemon::start().await;
    assert_ne!(other.user_pin(), user, "PINs are not random");
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_restart_reuses_everything() {
    let mut d = TestDaemon::start().await;
    let user_pin = d.user_pin();
    let so_pin = d.so_pin();
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "k", KeyAlgorithm::Aes, 256, true).await;
    let ct = encrypt(&mut c, &key.id, b"kept across restarts", b"").await;
    let before = snapshot(&c).await;
    drop(c);

    let status = d.stop().await;
    assert!(status.success(), "keyorchd exited with {status} on SIGTERM");

    d.restart().await;
    let mut c = d.clients();
    assert_eq!(d.user_pin(), user_pin, "user PIN changed on restart");
    assert_eq!(d.so_pin(), so_pin, "SO PIN changed on restart");
    assert_eq!(
        snapshot(&c).await,
        before,
        "the store changed across a restart"
    );
    assert_eq!(
        decrypt(&mut c, &key.id, &ct, b"").await,
        b"kept across restarts",
        "old ciphertext no longer decrypts: the token or KEK was replaced"
    );
    assert_key_state(&get_key(&mut c, &key.id).await, KeyState::Active);
    assert_connection(
        &get_keystore(&mut c, &fx.keystore.id).await,
        ConnectionState::Connected,
    );
    // A restarted daemon still says it is ready.
    d.wait_for_stdout_line("keyorchd ready").await;
}

/// `keyorchd --fill-keys N` (the scale benchmark's fixture) makes N real, usable ACTIVE keys
/// in the vault "bench-scale" with one durable batch per 1,000, records one audit event, and
/// exits without serving; a second fill adds to the same vault and keystore.
#[tokio::test]
async fn fill_keys_makes_usable_active_keys_then_exits() {
    let mut d = TestDaemon::start().await;
    let status = d.stop().await;
    assert!(status.success(), "keyorchd exited with {status} on SIGTERM");
    for n in ["1200", "5"] {
        let out = std::process::Command::new(TestDaemon::daemon_binary())
            .args(["--dev", "--state-dir"])
            .arg(d.state_dir())
            .args(["--fill-keys", n])
            .env_remove("SOFTHSM2_CONF")
            .env_remove("KEYORCH_STATE_DIR")
            .output()
            .expect("run keyorchd --fill-keys");
        assert!(
            out.status.success(),
            "--fill-keys {n} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "fill output: {line:?}");
        assert!(fields[0].starts_with("vault-"), "fill output: {line:?}");
        assert_eq!(fields[1], n, "fill output: {line:?}");
    }
    d.restart().await;
    let mut c = d.clients();
    let vaults = list_all_vaults(&mut c, 100).await;
    let vault = vaults
        .iter()
        .find(|v| v.name == "bench-scale")
        .expect("the fill's vault");
    assert_eq!(vaults.len(), 1, "one vault for both fills: {vaults:?}");
    let keys = list_all_keys(
        &mut c,
        keyorch::proto::v1::ListKeysRequest {
            vault_id: vault.id.clone(),
            ..Default::default()
        },
        1000,
    )
    .await;
    assert_eq!(keys.len(), 1205);
    let keystores: std::collections::BTreeSet<&String> =
        keys.iter().flat_map(|k| &k.target_keystore_ids).collect();
    assert_eq!(keystores.len(), 1, "one internal keystore for both fills");
    for k in &keys {
        assert_key_state(k, KeyState::Active);
    }
    let mut kcvs: Vec<&String> = keys.iter().map(|k| &k.key_check_value).collect();
    kcvs.sort();
    kcvs.dedup();
    assert_eq!(kcvs.len(), keys.len(), "every key is its own");
    for k in [&keys[0], &keys[1204]] {
        let ct = encrypt(&mut c, &k.id, b"filled", b"").await;
        assert_eq!(decrypt(&mut c, &k.id, &ct, b"").await, b"filled");
    }
    let events = c
        .audit
        .list_events(keyorch::proto::v1::ListEventsRequest {
            principal: "keyorchd --fill-keys".into(),
            ..Default::default()
        })
        .await
        .expect("list events")
        .into_inner()
        .events;
    assert_eq!(events.len(), 2, "one audit event per fill: {events:?}");
}
