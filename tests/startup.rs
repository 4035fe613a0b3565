//! Start-up refusals through the real binary: a database written by a newer schema, a
//! record that does not decode, and a token whose master KEK was deleted while the
//! database holds keys each stop keyorchd with a clear message and rewrite nothing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use keyorch::proto::v1::KeyAlgorithm;
use keyorch::store::{Batch, Store, Table, SCHEMA_VERSION};

/// Runs `keyorchd --dev` on `state` and expects it to exit non-zero within 30 s.
fn start_fails(state: &std::path::Path) -> String {
    let mut child = Command::new(TestDaemon::daemon_binary())
        .args(["--dev", "--state-dir"])
        .arg(state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn keyorchd");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let out = child.wait_with_output().expect("output");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                !status.success(),
                "keyorchd started although it should refuse: {stderr}"
            );
            return stderr;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("keyorchd neither served nor exited: it should refuse to start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_as_it_is() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    create_vault(&mut c, "kept").await;
    d.stop().await;
    let db = d.state_dir().join("db");
    {
        let store = Store::open(&db).expect("open");
        let mut b = Batch::new();
        b.set_meta("schema_version", &(SCHEMA_VERSION + 1).to_be_bytes());
        store.commit(b).expect("commit");
    }
    let stderr = start_fails(&d.state_dir());
    assert!(stderr.contains("newer"), "{stderr}");
    // Nothing was rewritten: the newer version is still recorded.
    let err = Store::open(&db).err().expect("still refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn an_undecodable_record_is_refused_naming_it() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let v = create_vault(&mut c, "kept").await;
    d.stop().await;
    {
        let store = Store::open(&d.state_dir().join("db")).expect("open");
        let mut b = Batch::new();
        // A record of the wrong shape under the vault's id.
        b.put(Table::Vaults, &v.id, &serde_json::json!({"not": "a vault"}))
            .unwrap();
        store.commit(b).expect("commit");
    }
    let stderr = start_fails(&d.state_dir());
    assert!(
        stderr.contains(&v.id),
        "the message names the record: {stderr}"
    );
    assert!(stderr.contains("cannot be decoded"), "{stderr}");
}

#[tokio::test]
async fn a_missing_master_kek_with_keys_is_a_loud_error_not_a_new_kek() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    fx.key(&mut c, "k", KeyAlgorithm::Aes, 256, true).await;
    d.stop().await;
    // Delete the KEK from the token with a tool nobody here wrote.
    let out = Command::new("pkcs11-tool")
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            "keyorch-dev",
            "--login",
            "--pin",
        ])
        .arg(d.user_pin())
        .args([
            "--delete-object",
            "--type",
            "secrkey",
            "--label",
            "keyorch-master-kek",
        ])
        .env("SOFTHSM2_CONF", d.softhsm_conf())
        .output()
        .expect("pkcs11-tool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = start_fails(&d.state_dir());
    assert!(stderr.contains("master KEK"), "{stderr}");
    assert!(stderr.contains("missing"), "{stderr}");
    // It did not create a new one.
    let out = Command::new("pkcs11-tool")
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            "keyorch-dev",
            "--login",
            "--pin",
        ])
        .arg(d.user_pin())
        .args(["--list-objects", "--type", "secrkey"])
        .env("SOFTHSM2_CONF", d.softhsm_conf())
        .output()
        .expect("pkcs11-tool");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listing.contains("keyorch-master-kek"),
        "a new KEK was created: {listing}"
    );
}

/// A database from before the unsettled-key index (no `unsettled_index_v1` marker) is
/// scanned once at its first start: a key a crash left unsettled is still settled (here an
/// ACTIVE key whose only copy was left INSTALLING, whose install is rolled back and the
/// deactivation finished), the index is written, and an undecodable key record does not stop
/// start-up but is reported, naming it, by the call that reads it.
#[tokio::test]
async fn a_database_without_the_unsettled_index_is_scanned_once_and_settled() {
    use keyorch::domain::{InstanceState, Key};
    use keyorch::proto::v1::KeyState;
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx
        .key(&mut c, "cut-short", KeyAlgorithm::Aes, 256, true)
        .await;
    let other = fx
        .key(&mut c, "garbled", KeyAlgorithm::Aes, 256, true)
        .await;
    d.stop().await;
    {
        let store = Store::open(&d.state_dir().join("db")).expect("open");
        assert!(store.meta("unsettled_index_v1").unwrap().is_some());
        let mut k: Key = store.get(Table::Keys, &key.id).unwrap().expect("the key");
        k.instances[0].state = InstanceState::Installing;
        let mut b = Batch::new();
        b.put(Table::Keys, &k.id, &k).unwrap();
        b.put(
            Table::Keys,
            &other.id,
            &serde_json::json!({"id": other.id, "state": "ACTIVE", "instances": []}),
        )
        .unwrap();
        b.delete_meta("unsettled_index_v1");
        store.commit(b).expect("commit");
    }
    d.restart().await;
    let mut c = d.clients();
    assert_key_state(&get_key(&mut c, &key.id).await, KeyState::Deactivated);
    let status = fails(c.keys.get_key(keyorch::proto::v1::GetKeyRequest {
        id: other.id.clone(),
    }))
    .await;
    assert!(
        status.message().contains(&other.id),
        "the error names the record: {}",
        describe(&status)
    );
    d.stop().await;
    let store = Store::open(&d.state_dir().join("db")).expect("open");
    assert!(
        store.meta("unsettled_index_v1").unwrap().is_some(),
        "the index marker is written again"
    );
    assert_eq!(
        store.meta_keys("unsettled_key/").unwrap(),
        Vec::<String>::new(),
        "nothing left unsettled"
    );
}
