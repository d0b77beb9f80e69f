//! Secrets in fleet mode, with a real controller (a watched directory
//! source) and one agent on the local Docker engine: what a committer may
//! not read, what the operator sets, what the node holds. Needs Docker and
//! `busybox:stable` (`scripts/docker-setup.sh`): without them the test fails
//! under CI and is skipped, saying so, elsewhere.

#[path = "common/controller.rs"]
mod controller;
#[path = "common/prereq.rs"]
mod prereq;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use controller::{bin, docker, outcome, ControllerArgs, Harness, API, JOIN};

const VALUE: &str = "db-value-never-shown-5d1c";
const NEW_VALUE: &str = "db-value-rotated-never-shown-93ab";
const NODE_VALUE: &str = "node-value-never-shown-e27f";
const LINKED_VALUE: &str = "linked-value-never-read-40c8";
const HINT: &str = "in fleet mode secrets come from `reconcile secret set NAME` \
     (then `valueFrom: NAME`) or from the node (`valueFrom: node:NAME`)";

/// A Cluster (in its own file), or a TaskDefinition and Service `name`
/// whose one container reads `secrets` (`ENV_NAME: valueFrom` pairs).
fn cluster(cluster: &str) -> String {
    format!("apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {{name: {cluster}}}\nspec: {{}}\n")
}

fn service(cluster: &str, name: &str, secrets: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: {name}}}
spec:
  networkMode: none
  containerDefinitions:
    - name: app
      image: busybox:stable
      command: [sleep, \"3600\"]
      memory: 32
      stopTimeout: 1
      secrets:
"
    );
    for (env, from) in secrets {
        s.push_str(&format!(
            "        - name: {env}\n          valueFrom: \"{from}\"\n"
        ));
    }
    s.push_str(&format!(
        "---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: {name}}}
spec:
  cluster: {cluster}
  taskDefinition: {name}
  desiredCount: 1
"
    ));
    s
}

/// `file:LINE:COL` of the value of `valueFrom: "{from}"` in `text`.
fn position(file: &str, text: &str, from: &str) -> String {
    let needle = format!("valueFrom: \"{from}\"");
    let (n, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(&needle))
        .expect("the reference is in the text");
    let col = line.find('"').unwrap() + 1;
    format!("{file}:{}:{col}", n + 1)
}

/// `reconcile ARGS --controller URL` with `input` on standard input.
fn cli_with_input(h: &Harness<()>, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .args(["--controller", &h.url()])
        .env("RECONCILE_API_TOKEN", API)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    outcome(child.wait_with_output().unwrap())
}

/// One raw HTTP/1.1 request to the controller: its status code.
fn request(h: &Harness<()>, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> u16 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(h.addr()).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The server may answer before reading a body it refuses.
    let _ = s.write_all(body);
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The environment of the running container of service `name`.
fn env_of(h: &Harness<()>, name: &str) -> Option<String> {
    let filter = format!("label=reconcile.io/cluster={}", h.cluster);
    let ids = docker(&["ps", "-q", "--filter", &filter]);
    ids.split_whitespace().find_map(|id| {
        let out = docker(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"reconcile.io/service\"}}\n{{range .Config.Env}}{{println .}}{{end}}",
            id,
        ]);
        let (service, env) = out.split_once('\n')?;
        (service == name).then(|| env.to_string())
    })
}

/// Every file under `dir`, as text.
fn files_under(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            let bytes = std::fs::read(&p).unwrap();
            out.push((
                p.display().to_string(),
                String::from_utf8_lossy(&bytes).into(),
            ));
        }
    }
}

#[test]
fn fleet_secrets_come_from_the_operator_or_the_node_never_the_controller() {
    if !prereq::satisfied(prereq::docker()) {
        return;
    }
    let mut h: Harness<()> = Harness::create(
        format!("sec{}", std::process::id()),
        [127, 0, 0, 1].into(),
        |_| (),
    );
    let d = h.dir.path().to_path_buf();
    let src = d.join("src");
    let node_dir = d.join("node-secrets");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&node_dir).unwrap();
    std::fs::write(node_dir.join("token"), format!("{NODE_VALUE}\n")).unwrap();
    std::fs::write(d.join("outside"), LINKED_VALUE).unwrap();
    std::os::unix::fs::symlink(d.join("outside"), node_dir.join("link")).unwrap();

    // (a) A committer asks for the controller's token, a file of its host
    // and a path out of the node's secrets directory: the source is
    // refused at each reference, and nothing runs.
    std::fs::write(src.join("cluster.yaml"), cluster(&h.cluster)).unwrap();
    let refused = [
        ("token.yaml", "token", "env:RECONCILE_API_TOKEN"),
        ("passwd.yaml", "passwd", "file:/etc/passwd"),
        ("escape.yaml", "escape", "node:../outside"),
    ];
    for (file, name, from) in refused {
        let text = service(&h.cluster, name, &[("S", from)]);
        std::fs::write(src.join(file), text).unwrap();
    }
    // A long interval: only the watcher, a sync or a secret change
    // reconciles.
    h.start_controller(ControllerArgs {
        source: vec![src.clone().into()],
        interval: 300,
        node_timeout: 10,
        env: Vec::new(),
    });
    let agent = h.spawn_agent(
        Command::new(bin()),
        "node0",
        &["--secrets-dir".into(), node_dir.display().to_string()],
    );
    h.agents.push(Some(agent));
    h.sync_and_wait();
    let error = h.status()["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for (file, name, from) in refused {
        let text = service(&h.cluster, name, &[("S", from)]);
        let at = position(file, &text, from);
        assert!(error.contains(&at), "{at} is not in the error: {error}");
    }
    assert_eq!(error.matches(HINT).count(), 2, "{error}");
    assert!(error.contains("secret name `../outside`"), "{error}");
    assert!(h.container_ids(true).is_empty(), "a container was created");
    for f in ["token.yaml", "passwd.yaml", "escape.yaml"] {
        std::fs::remove_file(src.join(f)).unwrap();
    }

    // (b) The operator sets `db`; the service reads it, and `node:token`
    // from the node.
    let (code, out, err) = cli_with_input(&h, &["secret", "set", "db"], &format!("{VALUE}\n"));
    assert_eq!(code, 0, "{out}{err}");
    std::fs::write(
        src.join("app.yaml"),
        service(
            &h.cluster,
            "app",
            &[("DB_PASSWORD", "db"), ("NODE_TOKEN", "node:token")],
        ),
    )
    .unwrap();
    h.sync_and_wait();
    h.wait_for("the app with its secrets", Duration::from_secs(60), |h| {
        env_of(h, "app").is_some()
    });
    let env = env_of(&h, "app").unwrap();
    assert!(
        env.lines().any(|l| l == format!("DB_PASSWORD={VALUE}")),
        "{env}"
    );
    assert!(
        env.lines().any(|l| l == format!("NODE_TOKEN={NODE_VALUE}")),
        "{env}"
    );
    let (code, listed, err) = h.cli(&["secret", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(listed.contains("db"), "{listed}");

    // A new value rolls the service that reads it, without a sync: the
    // change reconciles.
    let (code, out, err) = cli_with_input(&h, &["secret", "set", "db"], &format!("{NEW_VALUE}\n"));
    assert_eq!(code, 0, "{out}{err}");
    h.wait_for("the app with the new value", Duration::from_secs(60), |h| {
        env_of(h, "app").is_some_and(|e| e.contains(&format!("DB_PASSWORD={NEW_VALUE}")))
    });

    // (c) A symlink in the node's secrets directory is not followed: the
    // task stops, saying which reference and which directory.
    std::fs::write(
        src.join("linked.yaml"),
        service(&h.cluster, "linked", &[("LINKED", "node:link")]),
    )
    .unwrap();
    // The watcher picks it up (a sync would wait for the whole rollout,
    // which fails only at the step timeout).
    let stopped_for_symlink = |out: &str| {
        out.contains("secret `node:link`")
            && out.contains(&node_dir.display().to_string())
            && out.contains("symlink")
    };
    h.wait_for(
        "the linked task stopped for its symlink",
        Duration::from_secs(60),
        |h| stopped_for_symlink(&h.cli(&["history", "linked"]).1),
    );
    assert!(env_of(&h, "linked").is_none());

    // Nothing the controller and the agent say or keep holds a value.
    let mut seen: Vec<(String, String)> = h.logs();
    for args in [
        vec!["status", "--format", "json"],
        vec!["status"],
        vec!["plan", "--format", "json"],
        vec!["plan", "--detail"],
        vec!["history", "app", "--format", "json"],
        vec!["history", "linked"],
        vec!["nodes", "--format", "json"],
        vec!["secret", "list"],
        vec!["secret", "list", "--format", "json"],
    ] {
        let (code, out, err) = h.cli(&args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        seen.push((args.join(" "), out + &err));
    }
    files_under(&d.join("data"), &mut seen);
    assert!(
        seen.len() > 10,
        "{:?}",
        seen.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    for (what, text) in &seen {
        for v in [VALUE, NEW_VALUE, NODE_VALUE, LINKED_VALUE, API, JOIN] {
            assert!(!text.contains(v), "a secret value is in {what}");
        }
    }
    // The listing names the secret and when, never a fingerprint.
    let list = &seen
        .iter()
        .find(|s| s.0 == "secret list --format json")
        .unwrap()
        .1;
    assert!(list.contains("\"db\"") && !list.contains("hmac:"), "{list}");
    // Fingerprints in the plan are keyed; `node:` ones are a marker.
    let plan = &seen.iter().find(|s| s.0 == "plan --format json").unwrap().1;
    assert!(!plan.contains("sha256:"), "{plan}");

    // The routes want an operator's token (a join token is known, and
    // refused for its role), and a value of at most 64 KiB.
    assert_eq!(request(&h, "GET", "/v1/secrets", None, b""), 401);
    assert_eq!(request(&h, "PUT", "/v1/secrets/x", Some(JOIN), b"v"), 403);
    assert_eq!(request(&h, "DELETE", "/v1/secrets/db", None, b""), 401);
    let big = vec![b'x'; (64 << 10) + 1];
    assert_eq!(request(&h, "PUT", "/v1/secrets/big", Some(API), &big), 413);
    assert_eq!(
        request(&h, "PUT", "/v1/secrets/.hidden", Some(API), b"v"),
        400
    );
    let (_, listed, _) = h.cli(&["secret", "list"]);
    assert!(listed.contains("db") && !listed.contains("big"), "{listed}");

    // Removed, the secret no longer plans: the plan names it.
    let (code, out, err) = h.cli(&["secret", "rm", "db"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = h.cli(&["plan"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        (out.clone() + &err).contains("reconcile secret set db"),
        "{out}{err}"
    );
}
