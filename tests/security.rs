//! Nobody gets more than their role, with a real controller and agents
//! over HTTP: the join token only joins, a node speaks for itself alone,
//! forged or absurd reports are refused, tokens have roles and expire,
//! removed and long-lost nodes are gone, and every change is audited.
//! The source defines a cluster and no service, so no task runs: what is
//! under test is who may say what.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/prereq.rs"]
mod prereq;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use controller::{bin, request, wait_until, ControllerArgs, Harness, API, JOIN};

/// A raw request with `auth` (header lines, any scheme spelling) and a
/// JSON body: status code and body. Over TLS through curl, trusting only
/// the CA the controller made.
fn call(h: &Harness<()>, method: &str, path: &str, auth: &str, body: &str) -> (u16, String) {
    let headers = format!("Content-Type: application/json\r\n{auth}");
    if h.url().starts_with("http://") {
        let (code, reply) = request(h.addr(), method, path, &headers, body.as_bytes());
        let body = reply
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        return (code, body);
    }
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "--cacert"])
        .arg(h.dir.path().join("data/tls/ca.pem"))
        .args(["-w", "\n%{http_code}", "--data-binary", "@-"]);
    for line in headers.split("\r\n").filter(|l| !l.is_empty()) {
        cmd.args(["-H", line]);
    }
    let mut child = cmd
        .arg(format!("{}{path}", h.url()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

fn heartbeat(cluster: &str, cpu: u64) -> String {
    format!(r#"{{"cluster":"{cluster}","cpu":{cpu},"memory":512,"agentVersion":"0","tasks":[]}}"#)
}

/// The credential an agent of the harness received, from its file.
fn credential_of(h: &Harness<()>, node: &str) -> String {
    let path = h.dir.path().join(format!("credentials/{node}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn node_names(h: &Harness<()>) -> Vec<String> {
    let (code, out, err) = h.cli(&["nodes", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let nodes: Vec<Value> = serde_json::from_str(&out).unwrap();
    nodes
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn nobody_gets_more_than_their_role_over_http() {
    nobody_gets_more_than_their_role(false);
}

/// The same over the controller's own TLS, as a user runs it.
#[test]
fn nobody_gets_more_than_their_role_over_tls() {
    nobody_gets_more_than_their_role(true);
}

fn nobody_gets_more_than_their_role(tls: bool) {
    if !prereq::satisfied(prereq::docker().into_iter().chain(prereq::tools(&["curl"]))) {
        return;
    }
    let cluster = format!("sec{}{}", std::process::id(), if tls { "t" } else { "p" });
    let mut h = Harness::create(cluster.clone(), [127, 0, 0, 1].into(), |_| ());
    if tls {
        h.use_default_tls();
    }
    let src = h.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("cluster.yaml"),
        format!("apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {{name: {cluster}}}\nspec: {{}}\n"),
    )
    .unwrap();
    h.start_controller(ControllerArgs {
        source: vec![src.into(), "--forget-lost-after".into(), "4".into()],
        interval: 2,
        node_timeout: 3,
        env: Vec::new(),
    });
    for name in ["s1", "s2"] {
        let agent = h.spawn_agent(Command::new(bin()), name, &[]);
        h.agents.push(Some(agent));
    }
    wait_until(
        "both agents to join",
        Duration::from_secs(30),
        || node_names(&h).len() == 2,
        || h.tail("controller"),
    );
    let s1 = credential_of(&h, "s1");
    let s2 = credential_of(&h, "s2");
    assert_ne!(s1, s2, "each node has a credential of its own");

    // Authentication comes before the body is read: junk without a token
    // is a 401, not a 400 or 415.
    let (code, _) = call(&h, "POST", "/v1/nodes/s2/heartbeat", "", "{not json");
    assert_eq!(code, 401);
    let (code, _) = call(&h, "POST", "/v1/sync", "", "");
    assert_eq!(code, 401);

    // The join token only joins: it cannot report for any node.
    let (code, body) = call(
        &h,
        "POST",
        "/v1/nodes/s2/heartbeat",
        &bearer(JOIN),
        &heartbeat(&cluster, 1024),
    );
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("a join token only joins"), "{body}");
    // A node cannot speak for another: s1's credential on s2's routes.
    let (code, body) = call(
        &h,
        "POST",
        "/v1/nodes/s2/heartbeat",
        &bearer(&s1),
        &heartbeat(&cluster, 1024),
    );
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("not the credential of node `s2`"), "{body}");
    let (code, _) = call(
        &h,
        "GET",
        "/v1/nodes/s2/changes?after=0&timeoutMillis=1",
        &bearer(&s1),
        "",
    );
    assert_eq!(code, 401, "nor read its assignments");
    // Nor use it on the operator's routes.
    let (code, _) = call(&h, "GET", "/v1/status", &bearer(&s2), "");
    assert_eq!(code, 401);

    // A live node's name cannot be taken; a foreign cluster is refused;
    // the API token is not a join token.
    let join = |name: &str, cl: &str, token: &str| {
        call(
            &h,
            "POST",
            "/v1/join",
            &bearer(token),
            &format!(r#"{{"name":"{name}","cluster":"{cl}"}}"#),
        )
    };
    let (code, body) = join("s2", &cluster, JOIN);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("is live"), "{body}");
    let (code, body) = join("intruder", "elsewhere", JOIN);
    assert_eq!(code, 403, "{body}");
    let (code, _) = join("intruder", &cluster, API);
    assert_eq!(code, 403, "an operator token does not join nodes");

    // A node that joins gets a credential for itself; an absurd capacity
    // is refused, a sane one registers it.
    let (code, body) = join("fake", &cluster, JOIN);
    assert_eq!(code, 200, "{body}");
    let fake = serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, body) = call(
        &h,
        "POST",
        "/v1/nodes/fake/heartbeat",
        &bearer(&fake),
        &heartbeat(&cluster, 4_294_967_295),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("at most"), "{body}");
    let (code, body) = call(
        &h,
        "POST",
        "/v1/nodes/fake/heartbeat",
        &bearer(&fake),
        &heartbeat("elsewhere", 1024),
    );
    assert_eq!(code, 403, "bound to the cluster it joined: {body}");
    let (code, body) = call(
        &h,
        "POST",
        "/v1/nodes/fake/heartbeat",
        &bearer(&fake),
        &heartbeat(&cluster, 1024),
    );
    assert_eq!(code, 200, "{body}");
    assert!(node_names(&h).contains(&"fake".to_string()));

    // Roles: a reader reads and changes nothing; `bearer` in any case.
    let (code, out, err) = h.cli(&["token", "create", "ci", "--role", "reader"]);
    assert_eq!(code, 0, "{err}");
    let reader = out.trim().to_string();
    assert!(reader.starts_with("rct_"), "{out}");
    let (code, _) = call(&h, "GET", "/v1/status", &bearer(&reader), "");
    assert_eq!(code, 200);
    let (code, body) = call(&h, "POST", "/v1/sync", &bearer(&reader), "");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("needs an operator token"), "{body}");
    let (code, _) = call(&h, "GET", "/v1/tokens", &bearer(&reader), "");
    assert_eq!(code, 403, "token names are for operators");
    // Tasks outside services: a reader lists them, never runs or stops one.
    let (code, body) = call(&h, "GET", "/v1/tasks", &bearer(&reader), "");
    assert_eq!((code, body.trim()), (200, "[]"));
    let run = r#"{"cluster":"c","taskDefinition":"app"}"#;
    let (code, body) = call(&h, "POST", "/v1/tasks", &bearer(&reader), run);
    assert_eq!(code, 403, "{body}");
    let (code, body) = call(
        &h,
        "POST",
        "/v1/tasks/0123456789abcdef/stop",
        &bearer(&reader),
        "",
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = call(
        &h,
        "POST",
        "/v1/tasks/0123456789abcdef/stop",
        &bearer(API),
        "",
    );
    assert_eq!(code, 404, "{body}");
    let (code, _) = call(
        &h,
        "POST",
        "/v1/sync",
        &format!("Authorization: bearer {API}\r\n"),
        "",
    );
    assert_eq!(code, 202, "the scheme is case-insensitive");
    // Listed without the token; removed, it is refused.
    let (code, out, _) = h.cli(&["token", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("ci") && out.contains("reader") && !out.contains(&reader),
        "{out}"
    );
    let (code, _, err) = h.cli(&["token", "rm", "ci"]);
    assert_eq!(code, 0, "{err}");
    let (code, _) = call(&h, "GET", "/v1/status", &bearer(&reader), "");
    assert_eq!(code, 401, "a removed token is refused");
    // Tokens expire.
    let (code, out, err) = h.cli(&[
        "token", "create", "brief", "--role", "operator", "--ttl", "1s",
    ]);
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_millis(2100));
    let (code, body) = call(&h, "GET", "/v1/status", &bearer(out.trim()), "");
    assert_eq!(code, 401);
    assert!(body.contains("expired"), "{body}");

    // Joins are rate-limited: a join-token holder cannot flood the
    // registry (those that got in are forgotten unused, below).
    // Ten at a time, so the flood outruns the refill whatever a request
    // costs (over TLS each is a process and a handshake).
    let codes: Vec<u16> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..10)
            .map(|w| {
                let join = &join;
                let cluster = &cluster;
                scope.spawn(move || {
                    (0..15)
                        .map(|i| join(&format!("flood{w}x{i}"), cluster, JOIN).0)
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(codes.contains(&429), "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");

    // A removed node's credential is revoked. The node heartbeats first:
    // the flood above can outlast its node timeout plus
    // --forget-lost-after (over TLS each join is a process and a
    // handshake), and a forgotten node is not there to remove.
    let (code, body) = call(
        &h,
        "POST",
        "/v1/nodes/fake/heartbeat",
        &bearer(&fake),
        &heartbeat(&cluster, 1024),
    );
    assert_eq!(code, 200, "{body}");
    let (code, out, err) = h.cli(&["node", "remove", "fake"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"), "{out}");
    let (code, _) = call(
        &h,
        "POST",
        "/v1/nodes/fake/heartbeat",
        &bearer(&fake),
        &heartbeat(&cluster, 1024),
    );
    assert_eq!(code, 401);
    assert!(!node_names(&h).contains(&"fake".to_string()));

    // A node that goes silent is LOST, then forgotten; its name is free.
    let mut s2_agent = h.agents[1].take().unwrap();
    s2_agent.kill().unwrap();
    s2_agent.wait().unwrap();
    wait_until(
        "the silent node to be forgotten",
        Duration::from_secs(30),
        || !node_names(&h).contains(&"s2".to_string()),
        || h.tail("controller"),
    );
    let (code, _) = call(
        &h,
        "POST",
        "/v1/nodes/s2/heartbeat",
        &bearer(&s2),
        &heartbeat(&cluster, 1024),
    );
    assert_eq!(code, 401, "a forgotten node's credential is gone too");
    // Restarted with its credential file, it joins again as itself.
    let again = h.spawn_agent(Command::new(bin()), "s2", &[]);
    h.agents[1] = Some(again);
    wait_until(
        "s2 to join again",
        Duration::from_secs(30),
        || node_names(&h).contains(&"s2".to_string()),
        || h.tail("agent-s2"),
    );

    // The audit log: changes, who made them, and refusals; no token.
    let audit = std::fs::read_to_string(h.dir.path().join("data/audit.log")).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |action: &str, caller: &str, status: u64| {
        lines.iter().any(|l| {
            l["action"] == action && l["caller"] == caller && l["status"].as_u64() == Some(status)
        })
    };
    assert!(has("POST /v1/tokens", "api-token", 201), "{audit}");
    assert!(has("POST /v1/sync", "ci", 403), "{audit}");
    assert!(has("DELETE /v1/nodes/{name}", "api-token", 200), "{audit}");
    assert!(has("POST /v1/join", "join-token", 200), "{audit}");
    for secret in [API, JOIN, &s1, &s2, &fake, &reader] {
        assert!(!audit.contains(secret), "a token in the audit log");
        for (name, text) in h.logs() {
            assert!(!text.contains(secret), "a token in the log of {name}");
        }
    }
}
