//! One contract, every store: the standalone file store, the controller's
//! redb store and its etcd store (a real single-member etcd) must behave
//! alike. The reconcile core's view (the applied state) is checked over
//! all three; the controller's records over redb and etcd, which also
//! copy into each other whole. etcd's writes are fenced: a leader whose
//! lease is gone writes nothing.

#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/prereq.rs"]
mod prereq;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use reconcile::controller::store::etcd::{EtcdBackend, EtcdConfig, Fence};
use reconcile::controller::store::redb::RedbBackend;
use reconcile::controller::store::{copy, Backend, Db, EVENTS_KEPT};
use reconcile::reconcile::Store;
use reconcile::store::{FileStore, Stored};
use serde_json::json;

static PREFIXES: AtomicU32 = AtomicU32::new(0);

/// A fresh etcd store: its own prefix on a shared member.
fn etcd_backend(cluster: &etcd::Etcd) -> EtcdBackend {
    let n = PREFIXES.fetch_add(1, Ordering::Relaxed);
    let config = EtcdConfig::parse(&cluster.url(), &format!("/contract/{n}")).unwrap();
    EtcdBackend::connect(config).unwrap()
}

fn stored(families: &[(&str, u32)]) -> Stored {
    let mut st = Stored::default();
    for (f, r) in families {
        st.task_definitions.insert(f.to_string(), *r);
        st.deployments.insert(format!("c/{f}"), Default::default());
        st.clusters.insert(
            format!("c{r}"),
            serde_json::from_value(json!({"capacityProviders": []})).unwrap(),
        );
    }
    st
}

/// What the core relies on: a new store is empty; what is saved is what
/// is loaded, by the same store and by another opened on the same place;
/// a save that removes a resource removes it.
fn core_contract(open: &dyn Fn() -> Box<dyn Store>) {
    let a = open();
    assert_eq!(a.load().unwrap(), Stored::default());
    let first = stored(&[("web", 1), ("api", 2), ("batch", 3)]);
    a.save(&first).unwrap();
    assert_eq!(a.load().unwrap(), first);
    let second = stored(&[("web", 2), ("api", 2)]);
    a.save(&second).unwrap();
    assert_eq!(a.load().unwrap(), second);
    drop(a);
    let b = open();
    assert_eq!(b.load().unwrap(), second, "a store opened again reads it");
    b.save(&Stored::default()).unwrap();
    assert_eq!(b.load().unwrap(), Stored::default());
}

fn node(name: &str) -> reconcile::controller::store::NodeRecord {
    serde_json::from_value(json!({
        "info": {"name": name, "cluster": "c", "attributes": {}, "cpu": 1024, "memory": 512,
                 "reservedPorts": []},
        "status": "ACTIVE", "agentVersion": "1"
    }))
    .unwrap()
}

fn assignment(id: &str) -> reconcile::controller::store::AssignmentRecord {
    serde_json::from_value(json!({
        "node": "n1",
        "task": {
            "id": id, "cluster": "c", "service": "web", "family": "web",
            "revision": 1, "configHash": "h",
            "spec": {"containerDefinitions": [{"name": "a", "image": "busybox:stable"}]},
            "secrets": {"DB": "hunter2"}
        }
    }))
    .unwrap()
}

/// The controller's records: each kind written, changed and removed
/// reads back the same from a store opened again.
fn records_contract(open: &dyn Fn() -> Db) {
    let db = open();
    let empty = db.load().unwrap();
    assert!(empty.nodes.is_empty() && empty.assignments.is_empty() && empty.events.is_empty());
    db.save_stored(&stored(&[("web", 1)])).unwrap();
    db.put_node(&node("n1")).unwrap();
    db.put_node(&node("n2")).unwrap();
    let cred =
        serde_json::from_value(json!({"cluster": "c", "hash": "ab", "issuedAt": 1})).unwrap();
    db.put_credential("n1", &cred).unwrap();
    db.put_credential("n2", &cred).unwrap();
    db.delete_node("n2").unwrap();
    db.assign(&[&assignment("t1"), &assignment("t2")], &[])
        .unwrap();
    db.assign(&[], &["t1"]).unwrap();
    for i in 0..(EVENTS_KEPT + 15) {
        let e = serde_json::from_value(json!({"at": i, "message": format!("e{i}")})).unwrap();
        db.push_event(i, &e).unwrap();
    }
    let token = serde_json::from_value(json!({
        "name": "ci", "role": "operator", "createdAt": 1, "expiresAt": null, "hash": "cd"
    }))
    .unwrap();
    db.put_token(&token).unwrap();
    db.save_suspended(true).unwrap();
    db.save_torn_down(false).unwrap();
    db.save_commits(&BTreeMap::from([("Service/c/web".into(), "abc".into())]))
        .unwrap();
    db.put_secret_row("db-password", b"sealed-1").unwrap();
    db.put_secret_row("api-key", b"sealed-2").unwrap();
    assert!(db.delete_secret_row("api-key").unwrap());
    assert!(!db.delete_secret_row("api-key").unwrap(), "already gone");
    let sched =
        serde_json::from_value(json!({"expression": "rate(1 minute)", "anchor": 5, "cursor": 65}))
            .unwrap();
    db.put_schedule("nightly", &sched).unwrap();
    db.put_schedule("hourly", &sched).unwrap();
    db.delete_schedule("hourly").unwrap();
    let scaled = serde_json::from_value(json!({"desiredCount": 4})).unwrap();
    db.put_scaled("c/web", &scaled).unwrap();
    db.put_scaled("c/api", &scaled).unwrap();
    db.delete_scaled("c/api").unwrap();
    drop(db);

    let db = open();
    let l = db.load().unwrap();
    assert_eq!(l.stored, stored(&[("web", 1)]));
    let names: Vec<&str> = l.nodes.iter().map(|n| n.info.name.as_str()).collect();
    assert_eq!(names, ["n1"]);
    assert_eq!(
        l.credentials.keys().collect::<Vec<_>>(),
        ["n1"],
        "a deleted node's credential goes"
    );
    let ids: Vec<&str> = l
        .assignments
        .iter()
        .map(|a| a.task.identity.id.as_str())
        .collect();
    assert_eq!(ids, ["t2"]);
    assert!(
        l.assignments[0].task.secrets.is_empty(),
        "secret values are never stored"
    );
    assert_eq!(l.events.len() as u64, EVENTS_KEPT);
    let seqs: Vec<u64> = l.events.iter().map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (15..EVENTS_KEPT + 15).collect::<Vec<_>>(),
        "oldest dropped, in order"
    );
    assert_eq!(l.tokens.len(), 1);
    assert!(l.suspended && !l.torn_down);
    assert_eq!(l.commits["Service/c/web"], "abc");
    assert_eq!(
        db.secret_row("db-password").unwrap().as_deref(),
        Some(&b"sealed-1"[..])
    );
    assert_eq!(db.secret_rows().unwrap().len(), 1);
    assert_eq!(l.schedules.keys().collect::<Vec<_>>(), ["nightly"]);
    assert_eq!(l.scaling.keys().collect::<Vec<_>>(), ["c/web"]);
    let raw = format!("{:?}", db.backend().read_all().unwrap());
    assert!(!raw.contains("hunter2"));
}

/// Whether two stores hold the same rows (in any order).
fn same_rows(a: &dyn Backend, b: &dyn Backend) -> bool {
    let sorted = |s: &dyn Backend| {
        let mut rows = s.read_all().unwrap();
        rows.sort();
        rows
    };
    sorted(a) == sorted(b)
}

#[test]
fn the_file_store_keeps_the_core_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    core_contract(&|| Box::new(FileStore::open(&path).unwrap()));
}

#[test]
fn redb_keeps_the_core_and_records_contracts() {
    let dir = tempfile::tempdir().unwrap();
    core_contract(&|| Box::new(Db::open(dir.path()).unwrap()));
    let dir = tempfile::tempdir().unwrap();
    records_contract(&|| Db::open(dir.path()).unwrap());
}

#[test]
fn etcd_keeps_the_contracts_copies_both_ways_and_fences_writes() {
    if !prereq::satisfied(etcd::unavailable()) {
        return;
    }
    let cluster = etcd::Etcd::start(1);
    let n = PREFIXES.fetch_add(1, Ordering::Relaxed);
    let config = EtcdConfig::parse(&cluster.url(), &format!("/core/{n}")).unwrap();
    core_contract(&|| {
        Box::new(Db::over(Box::new(
            EtcdBackend::connect(config.clone()).unwrap(),
        )))
    });
    let config = EtcdConfig::parse(&cluster.url(), &format!("/records/{n}")).unwrap();
    records_contract(&|| Db::over(Box::new(EtcdBackend::connect(config.clone()).unwrap())));

    // Keys are PREFIX/TABLE/KEY; events sort as numbers.
    let keys = cluster.ctl(&[
        "get",
        &format!("/records/{n}/events/"),
        "--prefix",
        "--keys-only",
        "--limit=1",
    ]);
    assert_eq!(keys.trim(), format!("/records/{n}/events/{:020}", 15));

    // redb -> etcd -> redb: the same rows.
    let dir = tempfile::tempdir().unwrap();
    records_contract(&|| Db::open(dir.path()).unwrap());
    let src = RedbBackend::open(dir.path()).unwrap();
    let mid = etcd_backend(&cluster);
    let copied = copy::copy(&src, &mid).unwrap();
    assert_eq!(copied, src.read_all().unwrap().len());
    assert!(same_rows(&mid, &src), "redb copied into etcd");
    let back_dir = tempfile::tempdir().unwrap();
    let back = RedbBackend::open(back_dir.path()).unwrap();
    copy::copy(&mid, &back).unwrap();
    assert!(same_rows(&back, &src), "etcd copied back into redb");
    let err = copy::copy(&src, &mid).unwrap_err();
    assert!(err.contains("already holds"), "{err}");

    // The same through `reconcile store copy`, as an operator moves an
    // installation over: redb -> etcd -> a new data directory.
    let copy_cmd = |from: &str, to: &str, prefix: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconcile"))
            .args([
                "store",
                "copy",
                "--from",
                from,
                "--to",
                to,
                "--store-prefix",
                prefix,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let prefix = format!("/cli/{n}");
    let from = dir.path().to_str().unwrap().to_string();
    let rows = src.read_all().unwrap().len();
    // A store a controller holds open is refused, naming why.
    let (code, text) = copy_cmd(&from, &cluster.url(), &prefix);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is a controller running on it?"), "{text}");
    drop(src);
    let (code, text) = copy_cmd(&from, &cluster.url(), &prefix);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("copied {rows} rows")), "{text}");
    assert!(text.contains("secrets.key"), "{text}");
    let (code, text) = copy_cmd(&from, &cluster.url(), &prefix);
    assert_eq!(code, Some(1), "an etcd prefix in use is refused: {text}");
    assert!(text.contains("already holds"), "{text}");
    let out_dir = tempfile::tempdir().unwrap();
    let to = out_dir.path().join("controller");
    let (code, text) = copy_cmd(&cluster.url(), to.to_str().unwrap(), &prefix);
    assert_eq!(code, Some(0), "{text}");
    let copied = RedbBackend::open(&to).unwrap();
    assert!(
        same_rows(&copied, &RedbBackend::open(dir.path()).unwrap()),
        "round trip through the CLI"
    );
    let (code, text) = copy_cmd("/nonexistent", &cluster.url(), "/other");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("neither etcd://"), "{text}");

    // Fencing: writes hold only while the leader key lives on its lease.
    let fenced = etcd_backend(&cluster);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = fenced.client();
    let (lease, revision) = rt.block_on(async {
        let lease = client.lease_grant(30, None).await.unwrap().id();
        let put = etcd_client::PutOptions::new().with_lease(lease);
        let r = client
            .put("/fence-test/leader", "me", Some(put))
            .await
            .unwrap();
        (lease, r.header().unwrap().revision())
    });
    fenced.set_fence(Fence::Leader {
        key: b"/fence-test/leader".to_vec(),
        revision,
    });
    let db = Db::over(Box::new(fenced));
    db.save_suspended(true).unwrap();
    rt.block_on(async { client.lease_revoke(lease).await.unwrap() });
    let before = cluster.revision();
    let err = db.save_suspended(false).unwrap_err();
    assert!(err.not_leader(), "{err}");
    assert_eq!(cluster.revision(), before, "a fenced write changes nothing");
    let err = db.save_suspended(false).unwrap_err();
    assert!(
        err.not_leader() && err.to_string().contains("stands by"),
        "{err}"
    );
    assert!(
        db.load().unwrap().suspended,
        "the last write of the leader stands"
    );

    // A store prefix is a key path; an address names its ports.
    assert!(EtcdConfig::parse("etcd://a:1", "relative").is_err());
    let err = EtcdConfig::parse("etcd://host", "/p").unwrap_err();
    assert!(err.contains("HOST:PORT"), "{err}");
    assert!(EtcdConfig::parse("http://a:1", "/p").is_err());
}

#[test]
fn etcd_over_tls_with_client_certificates_and_as_a_user_limited_to_its_prefix() {
    if !prereq::satisfied(etcd::unavailable()) {
        return;
    }
    // TLS: the members require a client certificate of their CA.
    let secure = etcd::Etcd::start_tls();
    let (ca, cert, key) = secure.tls.clone().unwrap();
    let config = |ca: Option<&std::path::Path>, with_cert: bool| {
        let mut c = EtcdConfig::parse(&secure.url(), "/tls").unwrap();
        c.ca = ca.map(Into::into);
        if with_cert {
            c.cert = Some(cert.clone());
            c.key = Some(key.clone());
        }
        c
    };
    let tls = config(Some(&ca), true);
    core_contract(&|| {
        Box::new(Db::over(Box::new(
            EtcdBackend::connect(tls.clone()).unwrap(),
        )))
    });
    let err = EtcdBackend::connect(config(Some(&ca), false))
        .err()
        .expect("no client certificate");
    assert!(err.contains("etcd://"), "{err}");
    let err = EtcdBackend::connect(config(None, false))
        .err()
        .expect("plain HTTP to a TLS member");
    assert!(err.contains("etcd://"), "{err}");

    // A user and password, with a role that may only touch /auth/.
    let plain = etcd::Etcd::start(1);
    plain.ctl(&["user", "add", "root", "--new-user-password=rootpw"]);
    plain.ctl(&["user", "grant-role", "root", "root"]);
    plain.ctl(&["auth", "enable"]);
    for args in [
        vec!["role", "add", "ctl"],
        vec![
            "role",
            "grant-permission",
            "ctl",
            "--prefix=true",
            "readwrite",
            "/auth/",
        ],
        vec!["user", "add", "ctl", "--new-user-password=ctlpw"],
        vec!["user", "grant-role", "ctl", "ctl"],
    ] {
        let mut a = vec!["--user", "root:rootpw"];
        a.extend(args);
        plain.ctl(&a);
    }
    let as_user = |prefix: &str, password: &str| {
        let mut c = EtcdConfig::parse(&plain.url(), prefix).unwrap();
        c.user = Some(("ctl".into(), password.into()));
        c
    };
    let granted = as_user("/auth/prod", "ctlpw");
    core_contract(&|| {
        Box::new(Db::over(Box::new(
            EtcdBackend::connect(granted.clone()).unwrap(),
        )))
    });
    let err = EtcdBackend::connect(as_user("/auth/prod", "wrong"))
        .err()
        .expect("a wrong password");
    assert!(
        err.to_lowercase().contains("authentication failed"),
        "{err}"
    );
    let outside = Db::over(Box::new(
        EtcdBackend::connect(as_user("/elsewhere", "ctlpw")).unwrap(),
    ));
    let err = outside.save_suspended(true).unwrap_err().to_string();
    assert!(err.contains("permission denied"), "{err}");

    // The same options on the command line: --etcd-user and a password file.
    let dir = tempfile::tempdir().unwrap();
    records_contract(&|| Db::open(dir.path()).unwrap());
    let password = dir.path().join("etcd-password");
    std::fs::write(&password, "ctlpw\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconcile"))
        .args(["store", "copy", "--from"])
        .arg(dir.path())
        .args([
            "--to",
            &plain.url(),
            "--store-prefix",
            "/auth/copied",
            "--etcd-user",
            "ctl",
        ])
        .arg("--etcd-password-file")
        .arg(&password)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("copied"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconcile"))
        .args(["store", "copy", "--from", &secure.url(), "--to"])
        .arg(dir.path().join("back"))
        .args(["--store-prefix", "/tls", "--etcd-cacert"])
        .arg(&ca)
        .arg("--etcd-cert")
        .arg(&cert)
        .arg("--etcd-key")
        .arg(&key)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "over TLS with a client certificate: {text}"
    );
}
