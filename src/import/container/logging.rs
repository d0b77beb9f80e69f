//! `logConfiguration`: the container's log driver. Separate because the
//! AWS drivers (awslogs, FireLens) have no counterpart and are replaced,
//! with a warning saying where the logs now go.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::import::fields::{show, string, string_map, Fields};
use crate::import::report::Ctx;
use crate::manifest::task_definition::{LogConfiguration, LogDriver};

pub(super) fn log_configuration(ctx: &mut Ctx, path: &str, v: Value) -> Option<LogConfiguration> {
    let mut l = Fields::of(ctx, path.to_string(), v)?;
    let driver = l.read(ctx, "logDriver", string);
    let options = l.read(ctx, "options", string_map).unwrap_or_default();
    if let Some(v) = l.take("secretOptions") {
        let names: Vec<String> = v
            .as_array()
            .map(|a| a.iter().filter_map(|o| o.get("name")).map(show).collect())
            .unwrap_or_default();
        ctx.warn(
            &l.at("secretOptions"),
            format!(
                "dropped log driver secret options ({}): they were read from AWS secret stores",
                names.join(", ")
            ),
            "configure the log driver's credentials on the nodes' Docker daemon instead",
        );
    }
    l.finish(ctx, "a log configuration");
    let Some(driver) = driver else {
        ctx.warn(
            path,
            "dropped a log configuration without logDriver",
            "Docker's default log driver is used",
        );
        return None;
    };
    match serde_json::from_value::<LogDriver>(Value::from(driver.clone())).ok() {
        Some(log_driver) => Some(LogConfiguration {
            log_driver,
            options,
        }),
        None => {
            let (what, help) = match driver.as_str() {
                "awslogs" => (
                    "log driver `awslogs` (CloudWatch Logs) became `json-file`: logs stay on the node, readable with `docker logs`".to_string(),
                    "to ship logs elsewhere, pick a driver such as fluentd, gelf, syslog or splunk and set its options",
                ),
                "awsfirelens" => (
                    "log driver `awsfirelens` (FireLens) became `json-file`: logs stay on the node, readable with `docker logs`".to_string(),
                    "run a Fluent Bit container and use the fluentd log driver to send logs to it",
                ),
                other => (
                    format!("log driver `{other}` is not available; it became `json-file`: logs stay on the node"),
                    "pick one of json-file, local, syslog, journald, gelf, fluentd, splunk or none",
                ),
            };
            let what = if options.is_empty() {
                what
            } else {
                let names: Vec<&str> = options.keys().map(String::as_str).collect();
                format!("{what}; its options ({}) were dropped", names.join(", "))
            };
            ctx.warn(path, what, help);
            Some(LogConfiguration {
                log_driver: LogDriver::JsonFile,
                options: BTreeMap::new(),
            })
        }
    }
}
