//! Authorization and the audit trail through the real daemon: a caller without a role
//! (another uid on the socket) is refused with PERMISSION_DENIED, changes nothing and is
//! audited; every mutating call appends a hash-chained event; altering or deleting a
//! stored event makes VerifyChain name that event.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use keyorch::domain::AuditEvent;
use keyorch::proto::v1::{KeyAlgorithm, ListEventsRequest, PageRequest, VerifyChainRequest};
use keyorch::store::{Batch, Store, Table};

const NOBODY: &str = "65534";

/// Runs the real CLI as uid/gid 65534 (no role anywhere) against `socket`.
fn cli_as_nobody(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            NOBODY,
            "--regid",
            NOBODY,
            "--clear-groups",
            TestDaemon::cli_binary(),
        ])
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("setpriv runs")
}

async fn events(c: &mut keyorch::client::Clients) -> Vec<keyorch::proto::v1::AuditEvent> {
    c.audit
        .list_events(ListEventsRequest {
            page: Some(PageRequest {
                page_size: 1000,
                page_token: String::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("list events")
        .into_inner()
        .events
}

#[tokio::test]
async fn a_caller_without_a_role_is_denied_changes_nothing_and_is_audited() {
    let d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "k1", KeyAlgorithm::Aes, 256, true).await;
    let before = snapshot(&c).await;
    // Let another local user reach the socket (the test's stand-in for socket_group):
    // the state folder is 0700 by design.
    for dir in [d.root().to_path_buf(), d.state_dir()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let tmp = d.root().join("nobody-plaintext");
    std::fs::write(&tmp, b"x").unwrap();

    for args in [
        vec!["vault", "create", "--name", "intruder"],
        vec!["key", "deactivate", key.id.as_str()],
        vec!["keystore", "disconnect", fx.keystore.id.as_str(), "--force"],
        vec!["encrypt", "--key", key.id.as_str(), "--plaintext", "x"],
    ] {
        let out = cli_as_nobody(&d.socket(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {stderr}");
        assert!(stderr.contains("PERMISSION_DENIED"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("AccessDeniedException"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("uid:65534"), "{args:?}: {stderr}");
    }
    assert_unchanged(&before, &snapshot(&c).await, "denied calls");
    // The nobody user sees no vaults at all.
    let out = cli_as_nobody(&d.socket(), &["--output", "json", "vault", "list"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        listed["vaults"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );

    let denied: Vec<_> = events(&mut c)
        .await
        .into_iter()
        .filter(|e| e.outcome == "denied")
        .collect();
    let actions: Vec<&str> = denied.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "CreateVault",
            "DeactivateKey",
            "DisconnectKeystore",
            "Encrypt"
        ],
        "{denied:?}"
    );
    assert!(
        denied.iter().all(|e| e.principal == "uid:65534/gid:65534"),
        "{denied:?}"
    );
    assert_eq!(denied[1].resource, key.id);
    assert_eq!(denied[1].vault_id, fx.vault.id);
}

#[tokio::test]
async fn every_mutation_is_chained_and_tampering_is_located() {
    let mut d = TestDaemon::start().await;
    let mut c = d.clients();
    let fx = Fixture::new(&mut c).await;
    let key = fx.key(&mut c, "k1", KeyAlgorithm::Aes, 256, false).await;
    ok(c.keys.activate_key(key_id(&key.id))).await;
    ok(c.keys.deactivate_key(key_id(&key.id))).await;
    // A failed mutation is audited too.
    fails(c.keys.deactivate_key(key_id(&key.id))).await;
    // Reads are not audited.
    get_key(&mut c, &key.id).await;

    let evs = events(&mut c).await;
    let summary: Vec<(String, String)> = evs
        .iter()
        .map(|e| (e.action.clone(), e.outcome.clone()))
        .collect();
    let expect = |a: &str, o: &str| (a.to_string(), o.to_string());
    assert_eq!(
        summary,
        vec![
            expect("CreateVault", "ok"),
            expect("CreateKeystore", "ok"),
            expect("CreateKey", "ok"),
            expect("ActivateKey", "ok"),
            expect("DeactivateKey", "ok"),
            expect("DeactivateKey", "error:FailedPrecondition"),
        ]
    );
    assert_eq!(evs[2].resource, key.id, "a create names what it created");
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        if i > 0 {
            assert_eq!(e.prev_hash, evs[i - 1].hash);
        }
        assert!(e.principal.starts_with("uid:"), "{e:?}");
    }
    let v = c
        .audit
        .verify_chain(VerifyChainRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.events_verified, 6);

    // Alter event 4 behind the daemon's back.
    d.stop().await;
    {
        let store = Store::open(&d.state_dir().join("db")).expect("open db");
        let id = format!("{:020}", 4);
        let mut e: AuditEvent = store.get(Table::Audit, &id).unwrap().expect("event 4");
        e.outcome = "error:PermissionDenied".into();
        let mut b = Batch::new();
        b.put(Table::Audit, &id, &e).unwrap();
        store.commit(b).unwrap();
    }
    d.restart().await;
    let mut c = d.clients();
    let v = c
        .audit
        .verify_chain(VerifyChainRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, 4, "{v:?}");

    // Delete event 2 instead (after restoring nothing): the chain breaks at 2 first.
    d.stop().await;
    {
        let store = Store::open(&d.state_dir().join("db")).expect("open db");
        let mut b = Batch::new();
        b.delete(Table::Audit, &format!("{:020}", 2));
        store.commit(b).unwrap();
    }
    d.restart().await;
    let mut c = d.clients();
    let v = c
        .audit
        .verify_chain(VerifyChainRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, 2, "{v:?}");
    assert!(v.message.contains("missing"), "{v:?}");
}
