//! The crash matrix of DESIGN §5 for installs into and uninstalls from a pkcs11 keystore.
//!
//! keyorchd aborts (like SIGKILL: no flush, no clean-up) at the step named by the environment
//! variable `KEYORCH_FAILPOINT`: `install.intent_recorded`, `install.target_done`,
//! `install.outcome_recorded`, `uninstall.intent_recorded`, `uninstall.target_done`,
//! `uninstall.outcome_recorded`. For each step, each of the two calls that reach it
//! (ActivateKey and InstallKey for install; DeactivateKey and UninstallKey for uninstall) is
//! made on a daemon started with the failpoint (DeactivateKey also for a key whose only
//! target is the pkcs11 keystore); the call fails (the connection drops); the
//! daemon is started again without it, and then:
//!
//! - no instance is left INSTALLING, UNINSTALLING or FAILED (the start-up reconciler settled
//!   every intent);
//! - the target agrees with the store: an object `keyorch-<key id>` is in the target token iff
//!   the key's instance there is INSTALLED, and GetKeyStatusInKeystores reports nothing out of
//!   sync (so an INSTALLED copy has the right check value);
//! - the key's state agrees with its instances (PRE_ACTIVE and DEACTIVATED keys are installed
//!   nowhere, DESIGN §3; an ACTIVE key is installed somewhere);
//! - nothing acknowledged before the crash is lost (every other record is unchanged, and the
//!   key in flight is in its state from before or after the call);
//! - the interrupted call, made again, completes, and then everything agrees.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::*;
use keyorch::client::Clients;
use keyorch::proto::v1::{
    InstallKeyRequest, InstanceState, Key, KeyAlgorithm, KeyState, Keystore, ListKeysRequest,
    SyncStatus, TargetKeyStatus, Vault,
};

const TOKEN: &str = "target";
const PIN: &str = "Crash-pin-4417";
const FAILPOINT: &str = "KEYORCH_FAILPOINT";

/// A daemon with a target token, a vault, a CONNECTED internal keystore and a CONNECTED
/// pkcs11 keystore on the target token.
struct World {
    d: TestDaemon,
    c: Clients,
    vault: Vault,
    internal: Keystore,
    target: Keystore,
}

async fn world() -> World {
    let d = TestDaemon::start_with_target(TOKEN, PIN).await;
    let mut c = d.clients();
    let vault = create_vault(&mut c, "v").await;
    let internal = create_keystore(&mut c, &vault.id, "own", true).await;
    let target = ok(c.keystores.create_keystore(pkcs11_keystore_req(
        &vault.id,
        "target",
        SOFTHSM_MODULE,
        TOKEN,
        PIN,
        true,
    )))
    .await;
    assert_connection(&target, keyorch::proto::v1::ConnectionState::Connected);
    World {
        d,
        c,
        vault,
        internal,
        target,
    }
}

/// The call interrupted by the failpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Activate,
    Install,
    Deactivate,
    Uninstall,
}

impl World {
    async fn key(&mut self, name: &str, targets: &[&str], activate: bool) -> Key {
        create_key(
            &mut self.c,
            &self.vault.id,
            name,
            KeyAlgorithm::Aes,
            256,
            targets,
            activate,
        )
        .await
    }

    /// Makes `call` on `key` with a daemon started with the failpoint `step`; the call must
    /// fail because keyorchd aborted. Then starts keyorchd again without the failpoint.
    async fn crash(&mut self, step: &str, call: Call, key: &str) {
        let reached = |d: &TestDaemon| d.logs().matches("failpoint reached").count();
        let before = reached(&self.d);
        self.d.restart_with_env(&[(FAILPOINT, step)]).await;
        let mut c = self.d.clients();
        let result = self.send(&mut c, call, key).await;
        if let Ok(k) = result {
            panic!("{call:?} succeeded although keyorchd should have aborted at {step}: {k:?}");
        }
        let status = self.d.wait_for_exit(Duration::from_secs(20)).await;
        assert_eq!(
            status.signal(),
            Some(libc::SIGABRT),
            "keyorchd did not abort at {step} ({status})"
        );
        assert_eq!(
            reached(&self.d),
            before + 1,
            "no failpoint log line for {step}"
        );
        self.d.restart_with_env(&[]).await;
        self.c = self.d.clients();
    }

    async fn send(&self, c: &mut Clients, call: Call, key: &str) -> Result<Key, tonic::Status> {
        let install = InstallKeyRequest {
            id: key.into(),
            keystore_id: self.target.id.clone(),
        };
        let r = match call {
            Call::Activate => c.keys.activate_key(key_id(key)).await,
            Call::Install => c.keys.install_key(install).await,
            Call::Deactivate => c.keys.deactivate_key(key_id(key)).await,
            Call::Uninstall => c.keys.uninstall_key(install).await,
        };
        r.map(|r| r.into_inner())
    }

    /// Does the target token hold an object labelled like `key_id`'s copy?
    fn in_target(&self, key_id: &str) -> bool {
        !self
            .d
            .token_objects_labelled(TOKEN, PIN, &target_label(key_id))
            .is_empty()
    }

    /// Every way store and target disagree about the keys `watch` (all keys when empty),
    /// and every object of keyorch's in the target that no key accounts for, as readable
    /// lines (empty: they agree).
    async fn disagreements(&mut self, watch: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let keys = list_all_keys(&mut self.c, ListKeysRequest::default(), 0).await;
        let tid = self.target.id.clone();
        let watched = keys
            .iter()
            .filter(|k| watch.is_empty() || watch.contains(&k.id.as_str()));
        for k in watched {
            let state = key_state(k);
            for i in &k.instances {
                let s = InstanceState::try_from(i.state).unwrap_or(InstanceState::Unspecified);
                if !matches!(s, InstanceState::Installed | InstanceState::NotInstalled) {
                    out.push(format!(
                        "key {} ({state:?}): instance in {} is {s:?} ({})",
                        k.id, i.keystore_id, i.error
                    ));
                }
            }
            let installed: Vec<&str> = k
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Installed as i32)
                .map(|i| i.keystore_id.as_str())
                .collect();
            match state {
                KeyState::PreActive | KeyState::Deactivated if !installed.is_empty() => out.push(
                    format!("key {} is {state:?} but INSTALLED in {installed:?}", k.id),
                ),
                KeyState::Active if installed.is_empty() => {
                    out.push(format!("key {} is ACTIVE but installed nowhere", k.id))
                }
                _ => {}
            }
            let record = instance_state(k, &tid) == Some(InstanceState::Installed);
            let object = self.in_target(&k.id);
            if record != object {
                out.push(format!(
                    "key {} ({state:?}): instance in the target is {:?} but the object {} is {}",
                    k.id,
                    instance_state(k, &tid),
                    target_label(&k.id),
                    if object { "there" } else { "missing" }
                ));
            }
            let st = ok(self.c.keys.get_key_status_in_keystores(key_id(&k.id))).await;
            for e in &st.keystores {
                let status = TargetKeyStatus::try_from(e.status).ok();
                let sync = SyncStatus::try_from(e.sync).ok();
                if sync != Some(SyncStatus::Ok)
                    || matches!(
                        status,
                        Some(TargetKeyStatus::WrongKey | TargetKeyStatus::Error)
                    )
                {
                    out.push(format!(
                        "key {} ({state:?}): GetKeyStatusInKeystores in {} says {status:?}/{sync:?} {}",
                        k.id, e.keystore_id, e.message
                    ));
                }
            }
        }
        // No object of keyorch's in the target that no record accounts for.
        let known: Vec<String> = keys.iter().map(|k| target_label(&k.id)).collect();
        for o in self.d.token_objects(TOKEN, PIN) {
            if o.label.starts_with("keyorch-") && !known.contains(&o.label) {
                out.push(format!("orphan object {} in the target", o.label));
            }
        }
        out
    }
}

/// The acknowledged records other than `key_id` are as before, and `key_id` kept its
/// identity and is in state `before` or `after`.
fn assert_nothing_lost(
    before: &Snapshot,
    after: &Snapshot,
    key_id: &str,
    states: &[KeyState],
    ctx: &str,
) {
    assert_eq!(before.vaults, after.vaults, "{ctx}: vaults changed");
    assert_eq!(
        before.keystores, after.keystores,
        "{ctx}: keystores changed"
    );
    let others =
        |s: &Snapshot| -> Vec<Key> { s.keys.iter().filter(|k| k.id != key_id).cloned().collect() };
    assert_eq!(others(before), others(after), "{ctx}: other keys changed");
    let old = before
        .keys
        .iter()
        .find(|k| k.id == key_id)
        .expect("key before");
    let new = after
        .keys
        .iter()
        .find(|k| k.id == key_id)
        .unwrap_or_else(|| panic!("{ctx}: key {key_id} lost"));
    assert_eq!(
        (
            &old.name,
            &old.key_check_value,
            old.algorithm,
            &old.vault_id
        ),
        (
            &new.name,
            &new.key_check_value,
            new.algorithm,
            &new.vault_id
        ),
        "{ctx}: the key's identity changed"
    );
    assert!(
        states.contains(&key_state(new)),
        "{ctx}: key in state {:?}, expected one of {states:?}: {new:?}",
        key_state(new)
    );
}

/// One crash of `call` at `step`, then the checks; then the call again, and the checks.
/// Returns every disagreement found, after the restart and after the call was made again.
/// `bystander` is a key installed in both keystores that no call touches.
async fn crash_case(
    w: &mut World,
    step: &str,
    call: Call,
    key: &Key,
    bystander: &Key,
) -> Vec<String> {
    let watch = [key.id.as_str(), bystander.id.as_str()];
    let ctx = format!("{call:?} crashed at {step}");
    let before = snapshot(&w.c).await;
    w.crash(step, call, &key.id).await;
    let after = snapshot(&w.c).await;
    let (from, to) = match call {
        Call::Activate => (KeyState::PreActive, KeyState::Active),
        Call::Install | Call::Uninstall => (KeyState::Active, KeyState::Active),
        Call::Deactivate => (KeyState::Active, KeyState::Deactivated),
    };
    assert_nothing_lost(&before, &after, &key.id, &[from, to], &ctx);
    let problems: Vec<String> = w
        .disagreements(&watch)
        .await
        .into_iter()
        .map(|p| format!("{ctx}: {p}"))
        .collect();

    // The interrupted call, made again (where it is still needed), completes.
    let mut problems = problems;
    let current = get_key(&mut w.c, &key.id).await;
    let tid = w.target.id.clone();
    // InstallKey (into a keystore the key did not target) and UninstallKey change the target
    // list: after the restart it is the one before the call or the one after it, never the
    // keystore listed with nothing installed there.
    if matches!(call, Call::Install | Call::Uninstall) {
        let listed = current.target_keystore_ids.contains(&tid);
        let installed = instance_state(&current, &tid) == Some(InstanceState::Installed);
        if listed != installed {
            problems.push(format!(
                "{ctx}: the pkcs11 keystore is {} the key's targets with its instance {:?}",
                if listed { "among" } else { "not among" },
                instance_state(&current, &tid)
            ));
        }
    }
    let needed = match call {
        Call::Activate => key_state(&current) != KeyState::Active,
        Call::Install => instance_state(&current, &tid) != Some(InstanceState::Installed),
        Call::Deactivate => key_state(&current) != KeyState::Deactivated,
        Call::Uninstall => instance_state(&current, &tid).is_some(),
    };
    let mut c = w.c.clone();
    if needed {
        if let Err(s) = w.send(&mut c, call, &key.id).await {
            problems.push(format!(
                "{ctx}: the call made again after the restart failed: {}",
                describe(&s)
            ));
            return problems;
        }
    }
    let done = get_key(&mut w.c, &key.id).await;
    let object = w.in_target(&key.id);
    let mut expect = |ok: bool, what: &str| {
        if !ok {
            problems.push(format!("{ctx}: after the call was made again, {what}"));
        }
    };
    match call {
        Call::Activate | Call::Install => {
            expect(
                key_state(&done) == KeyState::Active,
                "the key is not ACTIVE",
            );
            expect(
                instance_state(&done, &tid) == Some(InstanceState::Installed),
                "the instance in the target is not INSTALLED",
            );
            expect(object, "the object is not in the target");
        }
        Call::Deactivate => {
            expect(
                key_state(&done) == KeyState::Deactivated,
                "the key is not DEACTIVATED",
            );
            expect(!object, "the object is still in the target");
        }
        Call::Uninstall => {
            expect(
                instance_state(&done, &tid).is_none() && !done.target_keystore_ids.contains(&tid),
                "the key still lists the target",
            );
            expect(!object, "the object is still in the target");
        }
    }
    for p in w.disagreements(&watch).await {
        problems.push(format!("{ctx}: after the call was made again: {p}"));
    }
    problems
}

/// Both install paths through `step`: ActivateKey of a PRE_ACTIVE key targeting both
/// keystores, and InstallKey of an ACTIVE internal key into the pkcs11 keystore.
async fn install_matrix(step: &str) {
    let mut w = world().await;
    let (iid, tid) = (w.internal.id.clone(), w.target.id.clone());
    let a = w.key("activated", &[&iid, &tid], false).await;
    let b = w.key("installed", &[&iid], true).await;
    // Acknowledged work that must survive the crashes.
    let bystander = w.key("bystander", &[&iid, &tid], true).await;
    assert!(w.in_target(&bystander.id));
    let mut problems = crash_case(&mut w, step, Call::Activate, &a, &bystander).await;
    problems.extend(crash_case(&mut w, step, Call::Install, &b, &bystander).await);
    assert!(
        problems.is_empty(),
        "store and target disagree after the restart: {problems:#?}"
    );
}

/// Both uninstall paths through `step`: DeactivateKey of an ACTIVE key installed in both
/// keystores and of one installed only in the pkcs11 keystore, and UninstallKey of an ACTIVE
/// key installed in both.
async fn uninstall_matrix(step: &str) {
    let mut w = world().await;
    let (iid, tid) = (w.internal.id.clone(), w.target.id.clone());
    let a = w.key("deactivated", &[&iid, &tid], true).await;
    let solo = w.key("deactivated-solo", &[&tid], true).await;
    let b = w.key("uninstalled", &[&iid, &tid], true).await;
    let bystander = w.key("bystander", &[&iid, &tid], true).await;
    for k in [&a, &solo, &b, &bystander] {
        assert!(w.in_target(&k.id));
    }
    let mut problems = crash_case(&mut w, step, Call::Deactivate, &a, &bystander).await;
    problems.extend(crash_case(&mut w, step, Call::Deactivate, &solo, &bystander).await);
    problems.extend(crash_case(&mut w, step, Call::Uninstall, &b, &bystander).await);
    assert!(
        problems.is_empty(),
        "store and target disagree after the restart: {problems:#?}"
    );
}

#[tokio::test]
async fn crash_after_the_install_intent_is_recorded() {
    install_matrix("install.intent_recorded").await;
}

#[tokio::test]
async fn crash_after_the_target_installed_the_key() {
    install_matrix("install.target_done").await;
}

#[tokio::test]
async fn crash_after_the_install_outcome_is_recorded() {
    install_matrix("install.outcome_recorded").await;
}

#[tokio::test]
async fn crash_after_the_uninstall_intent_is_recorded() {
    uninstall_matrix("uninstall.intent_recorded").await;
}

#[tokio::test]
async fn crash_after_the_target_removed_the_key() {
    uninstall_matrix("uninstall.target_done").await;
}

#[tokio::test]
async fn crash_after_the_uninstall_outcome_is_recorded() {
    uninstall_matrix("uninstall.outcome_recorded").await;
}

/// Without a failpoint the same calls complete and leave store and target in agreement
/// (the baseline of the matrix).
#[tokio::test]
async fn without_a_crash_store_and_target_agree() {
    let mut w = world().await;
    let (iid, tid) = (w.internal.id.clone(), w.target.id.clone());
    let a = w.key("a", &[&iid, &tid], false).await;
    let b = w.key("b", &[&iid], true).await;
    let mut c = w.c.clone();
    for (call, key) in [
        (Call::Activate, &a),
        (Call::Install, &b),
        (Call::Uninstall, &b),
        (Call::Deactivate, &a),
    ] {
        if let Err(s) = w.send(&mut c, call, &key.id).await {
            panic!("{call:?}: {}", describe(&s));
        }
        let problems = w.disagreements(&[]).await;
        assert!(problems.is_empty(), "after {call:?}: {problems:#?}");
    }
    // A restart changes nothing.
    let before = snapshot(&w.c).await;
    w.d.restart().await;
    w.c = w.d.clients();
    assert_eq!(before, snapshot(&w.c).await);
}

/// A reactivation (ActivateKey of a DEACTIVATED key) cut short at each install step, with
/// the internal keystore first or the pkcs11 keystore first among the targets: the key is
/// DEACTIVATED and installed nowhere (the reconciler rolled the activation back) or ACTIVE
/// and installed everywhere, and store and target agree. (Found by
/// tests/crash_consistency.rs: the reconciler rolled back the copies of PRE_ACTIVE keys only,
/// and left a DEACTIVATED key INSTALLED, in the target token too.)
#[tokio::test]
async fn crash_during_a_reactivation_leaves_the_key_installed_nowhere() {
    let mut w = world().await;
    let (iid, tid) = (w.internal.id.clone(), w.target.id.clone());
    let mut problems = Vec::new();
    for step in [
        "install.intent_recorded",
        "install.target_done",
        "install.outcome_recorded",
    ] {
        for (order, targets) in [
            ("internal-first", [iid.as_str(), tid.as_str()]),
            ("target-first", [tid.as_str(), iid.as_str()]),
        ] {
            let key = w.key(&format!("{order} {step}"), &targets, true).await;
            ok(w.c.keys.deactivate_key(key_id(&key.id))).await;
            w.crash(step, Call::Activate, &key.id).await;
            let after = get_key(&mut w.c, &key.id).await;
            let ctx = format!("reactivation ({order}) crashed at {step}");
            let state = key_state(&after);
            assert!(
                matches!(state, KeyState::Deactivated | KeyState::Active),
                "{ctx}: key in state {state:?}: {after:?}"
            );
            problems.extend(
                w.disagreements(&[&key.id])
                    .await
                    .into_iter()
                    .map(|p| format!("{ctx}: {p}")),
            );
        }
    }
    assert!(
        problems.is_empty(),
        "store and target disagree after the restart: {problems:#?}"
    );
}

/// An install into the pkcs11 keystore cut short between the two halves of a key pair (the
/// private key unwrapped in the target, its public key not made yet) leaves one half there;
/// the reconciler removes it when it rolls the install back. (Found by
/// tests/crash_consistency.rs: the rollback removed only whole copies, so the lone private
/// key stayed in the target under the key's label while the instance read NOT_INSTALLED.)
#[tokio::test]
async fn an_install_cut_short_between_the_halves_of_a_key_pair_leaves_no_half_behind() {
    let mut w = world().await;
    let iid = w.internal.id.clone();
    // An EC key (a key pair in the target), ACTIVE in the internal keystore only.
    let key = create_key(
        &mut w.c,
        &w.vault.id,
        "ec-pair",
        KeyAlgorithm::Ec,
        256,
        &[&iid],
        true,
    )
    .await;
    // InstallKey records INSTALLING, then keyorchd dies before it touches the target...
    w.d.restart_with_env(&[(FAILPOINT, "install.intent_recorded")])
        .await;
    let mut c = w.d.clients();
    let result = w.send(&mut c, Call::Install, &key.id).await;
    assert!(
        result.is_err(),
        "InstallKey should have aborted: {result:?}"
    );
    let status = w.d.wait_for_exit(Duration::from_secs(20)).await;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
    // ...and the target holds what a death between the halves leaves: a private key only.
    let label = target_label(&key.id);
    w.d.pkcs11_tool_ok(
        TOKEN,
        PIN,
        &[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            &label,
        ],
    );
    w.d.pkcs11_tool_ok(
        TOKEN,
        PIN,
        &["--delete-object", "--type", "pubkey", "--label", &label],
    );
    let half = w.d.token_objects_labelled(TOKEN, PIN, &label);
    assert!(
        half.len() == 1 && half[0].is_private_key(),
        "set-up: {half:?}"
    );

    w.d.restart_with_env(&[]).await;
    w.c = w.d.clients();
    let after = get_key(&mut w.c, &key.id).await;
    assert_key_state(&after, KeyState::Active);
    assert_ne!(
        instance_state(&after, &w.target.id),
        Some(InstanceState::Installed),
        "{after:?}"
    );
    let problems = w.disagreements(&[&key.id]).await;
    assert!(
        problems.is_empty(),
        "store and target disagree after the restart: {problems:#?}"
    );
    assert_eq!(
        w.d.token_objects_labelled(TOKEN, PIN, &label),
        Vec::<TokenObject>::new(),
        "the half key pair is still in the target"
    );
}

/// A deactivation of a key whose first target is the pkcs11 keystore, cut short at each
/// uninstall step, is finished by the reconciler: the key is DEACTIVATED and installed
/// nowhere. (Found by tests/crash_consistency.rs: the pkcs11 copy was removed and recorded
/// before the internal copy was, so a crash in between left the key ACTIVE with only its
/// internal copy: neither as before the call nor as after it.)
#[tokio::test]
async fn crash_during_a_deactivation_target_first_is_finished() {
    let mut w = world().await;
    let (iid, tid) = (w.internal.id.clone(), w.target.id.clone());
    let mut problems = Vec::new();
    for step in [
        "uninstall.intent_recorded",
        "uninstall.target_done",
        "uninstall.outcome_recorded",
    ] {
        let key = w
            .key(&format!("target-first {step}"), &[&tid, &iid], true)
            .await;
        assert!(w.in_target(&key.id));
        w.crash(step, Call::Deactivate, &key.id).await;
        let after = get_key(&mut w.c, &key.id).await;
        if key_state(&after) != KeyState::Deactivated {
            problems.push(format!(
                "deactivation crashed at {step}: the key is {:?}, not DEACTIVATED: {after:?}",
                key_state(&after)
            ));
        }
        problems.extend(
            w.disagreements(&[&key.id])
                .await
                .into_iter()
                .map(|p| format!("deactivation crashed at {step}: {p}")),
        );
    }
    assert!(
        problems.is_empty(),
        "the interrupted deactivations were not finished: {problems:#?}"
    );
}
