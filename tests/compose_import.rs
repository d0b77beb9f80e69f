//! A three-service compose project, imported and applied with real Docker,
//! answers as it does under `docker compose`: `web` fetches from `api`
//! by name, which fetched from `db` by name once `db` was healthy; then
//! the plan is empty. The same file is brought up with docker-compose
//! beside it, and both answer alike.

#[path = "common/docker.rs"]
mod docker;
#[path = "common/prereq.rs"]
mod prereq;

use std::process::Command;
use std::time::{Duration, Instant};

use docker::{Source, SERIAL};

const COMPOSE: &str = r#"
services:
  db:
    image: busybox:stable
    command: sh -c 'mkdir -p /www && echo "db says $$GREETING" > /www/index.html && exec httpd -f -p 5432 -h /www'
    environment:
      GREETING: ${GREETING:-hello}
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://localhost:5432/"]
      interval: 2s
      timeout: 2s
      retries: 10
    stop_grace_period: 1s
  api:
    image: busybox:stable
    command: sh -c 'mkdir -p /www && wget -qO /www/index.html http://db:5432/ && exec httpd -f -p 8000 -h /www'
    depends_on:
      db: {condition: service_healthy}
    stop_grace_period: 1s
  web:
    image: busybox:stable
    command: sh -c 'mkdir -p /www && until wget -qO /www/index.html http://api:8000/; do sleep 1; done; exec httpd -f -p 80 -h /www'
    ports: ["${WEB_PORT}:80"]
    depends_on: [api]
    stop_grace_period: 1s
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What `port` answers on 127.0.0.1, waiting up to a minute for it.
fn answer(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("curl")
            .args(["-sf", "-m", "2", &format!("http://127.0.0.1:{port}/")])
            .output();
        if let Ok(o) = out {
            if o.status.success() && !o.stdout.is_empty() {
                return String::from_utf8_lossy(&o.stdout).trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "nothing answers on port {port}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn an_imported_compose_project_runs_as_under_compose_and_plans_nothing_more() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !prereq::satisfied(prereq::tools(&["docker-compose", "curl"])) {
        return;
    }
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("compose.yaml"), COMPOSE).unwrap();
    std::fs::write(project.path().join(".env"), "GREETING=from-dotenv\n").unwrap();
    let name = format!("ci{}", std::process::id());
    let ours = free_port();
    let theirs = free_port();

    // Imported into the source the guard destroys at the end.
    let s = Source::new(&[]);
    let out = Command::new(assert_cmd::cargo::cargo_bin("reconcile"))
        .current_dir(project.path())
        .args([
            "import",
            "compose",
            "--project-name",
            &name,
            "--force",
            "--out",
        ])
        .arg(s.path())
        .env("WEB_PORT", ours.to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("imported 1 task definition, 1 service, 1 cluster"),
        "{err}"
    );
    let td = std::fs::read_to_string(s.path().join(format!("{name}.yaml"))).unwrap();
    assert!(td.contains("condition: HEALTHY"), "{td}");
    assert!(td.contains(&format!("hostPort: {ours}")), "{td}");
    assert!(td.contains("from-dotenv"), ".env interpolated: {td}");

    s.apply();
    assert_eq!(answer(ours), "db says from-dotenv");
    let (code, plan) = s.plan();
    assert_eq!(code, 0, "nothing left to do:\n{plan}");

    // docker-compose on the same file answers the same.
    let compose = |args: &[&str]| {
        Command::new("docker-compose")
            .current_dir(project.path())
            .args(["-p", &format!("{name}c")])
            .args(args)
            .env("WEB_PORT", theirs.to_string())
            .output()
            .unwrap()
    };
    let up = compose(&["up", "-d"]);
    let said = answer_or_down(&up, theirs, &compose);
    assert_eq!(said, "db says from-dotenv");
}

/// What compose's `web` answers; compose's containers are removed whatever
/// happens.
fn answer_or_down(
    up: &std::process::Output,
    port: u16,
    compose: &dyn Fn(&[&str]) -> std::process::Output,
) -> String {
    struct Down<'a>(&'a dyn Fn(&[&str]) -> std::process::Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "-v", "-t", "1"]);
        }
    }
    let _down = Down(compose);
    assert!(
        up.status.success(),
        "docker-compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    answer(port)
}
