//! Rules on a ScheduledTask: its cluster and task definition exist, its
//! overrides name containers of that task definition (each once, each
//! variable once), and its placement is valid as a Service's is. Separate
//! because they concern one kind.

use std::collections::HashSet;

use super::placement::{fields, Fields};
use super::references::{cluster_ref, source_task_definition, task_definition_ref};
use super::{Finding, Index};
use crate::manifest::scheduled_task::TaskOverride;
use crate::manifest::ScheduledTaskSpec;
use crate::suggest;
use crate::validate::Entry;

pub(super) fn scheduled_task(
    i: usize,
    spec: &ScheduledTaskSpec,
    index: &Index,
    entries: &[Entry],
    out: &mut Vec<Finding>,
) {
    cluster_ref(i, &spec.cluster, index, out);
    task_definition_ref(i, "/spec/taskDefinition", &spec.task_definition, index, out);
    out.extend(schedule_syntax(i, &spec.schedule));
    if let Some(o) = &spec.overrides {
        overrides(i, o, &spec.task_definition, index, entries, out);
    }
    fields(
        i,
        Fields {
            strategy: &spec.placement_strategy,
            constraints: &spec.placement_constraints,
            providers: &spec.capacity_provider_strategy,
            cluster: &spec.cluster,
        },
        index,
        entries,
        out,
    );
}

/// The schedule expression beyond the schema's `cron(...)`/`rate(...)`
/// shape: the parser's error, at `/spec/schedule`, naming the character.
fn schedule_syntax(entry: usize, schedule: &str) -> Option<Finding> {
    let e = crate::schedule::parse(schedule).err()?;
    let before = schedule.get(..e.offset).unwrap_or(schedule);
    Some(
        Finding::error(
            "schedule",
            entry,
            "/spec/schedule",
            format!(
                "schedule `{schedule}`: {} (at character {})",
                e.message,
                before.chars().count() + 1
            ),
        )
        .help(
            "EventBridge syntax, in UTC: `rate(5 minutes)`, `cron(0 3 * * ? *)` (minutes hours day-of-month month day-of-week year; one of the day fields is `?`)",
        ),
    )
}

/// Container overrides: each names a container of the task definition,
/// when the source defines the revision run, and each container and each
/// variable of one override at most once (two would leave the value to
/// their order).
fn overrides(
    i: usize,
    o: &TaskOverride,
    reference: &str,
    index: &Index,
    entries: &[Entry],
    out: &mut Vec<Finding>,
) {
    let td = source_task_definition(reference, index, entries);
    let mut seen = HashSet::new();
    for (j, c) in o.container_overrides.iter().enumerate() {
        let base = format!("/spec/overrides/containerOverrides/{j}");
        if !seen.insert(c.name.as_str()) {
            out.push(
                Finding::error(
                    "override",
                    i,
                    format!("{base}/name"),
                    format!("container `{}` is overridden twice", c.name),
                )
                .help("merge the two overrides into one"),
            );
        }
        if let Some((_, td)) = td {
            if !td.container_definitions.iter().any(|d| d.name == c.name) {
                let names = td.container_definitions.iter().map(|d| d.name.as_str());
                let f = Finding::error(
                    "override",
                    i,
                    format!("{base}/name"),
                    format!(
                        "task definition `{reference}` has no container named `{}`",
                        c.name
                    ),
                );
                out.push(match suggest::closest(&c.name, names.clone()) {
                    Some(s) => f.help(format!("did you mean `{s}`?")),
                    None => f.help(format!(
                        "its containers: {}",
                        names.collect::<Vec<_>>().join(", ")
                    )),
                });
            }
        }
        let mut vars = HashSet::new();
        for (k, e) in c.environment.iter().enumerate() {
            if !vars.insert(e.name.as_str()) {
                out.push(Finding::error(
                    "override",
                    i,
                    format!("{base}/environment/{k}/name"),
                    format!("variable `{}` is set twice in this override", e.name),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::source::{Content, RawFile};
    use crate::validate::{validate, Severity};

    const BASE: &str = r#"apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {name: prod}
spec:
  capacityProviders: [on-demand]
---
apiVersion: reconcile/v1alpha1
kind: CapacityProvider
metadata: {name: on-demand}
spec: {}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {name: report}
spec:
  containerDefinitions:
    - {name: app, image: busybox:stable, memory: 64}
    - {name: sidecar, image: busybox:stable, memory: 64, essential: false}
---
apiVersion: reconcile/v1alpha1
kind: ScheduledTask
metadata: {name: nightly}
spec:
"#;

    /// (severity, line:column, pointer, message, help) of each diagnostic
    /// of the base source with the ScheduledTask's spec `spec`.
    fn check(spec: &str) -> Vec<(Severity, String, String, String, Option<String>)> {
        let text = format!("{BASE}{spec}");
        let v = validate(vec![RawFile {
            name: "s.yaml".into(),
            content: Content::Bytes(text.into_bytes()),
        }]);
        v.diagnostics
            .iter()
            .map(|d| {
                (
                    d.severity,
                    format!("{}:{}", d.span.line, d.span.column),
                    d.pointer.clone(),
                    d.message.clone(),
                    d.help.clone(),
                )
            })
            .collect()
    }

    const VALID: &str = "  cluster: prod
  taskDefinition: report
  schedule: cron(0 3 * * ? *)
  enabled: false
  count: 2
  whilePreviousRuns: ALLOW
  startedBy: nightly-report
  overrides:
    containerOverrides:
      - name: app
        command: [./report, --all]
        environment: [{name: MODE, value: full}]
  placementConstraints: [{type: memberOf, expression: \"attribute:zone in [a, b]\"}]
  placementStrategy: [{type: spread, field: \"attribute:zone\"}]
  capacityProviderStrategy: [{capacityProvider: on-demand, weight: 1}]
";

    #[test]
    fn a_full_scheduled_task_is_valid() {
        assert_eq!(check(VALID), []);
        let minimal = "  cluster: prod\n  taskDefinition: report\n  schedule: rate(5 minutes)\n";
        assert_eq!(check(minimal), []);
    }

    #[test]
    fn missing_cluster_and_family_are_reported_where_they_are_named() {
        let d = check("  cluster: prd\n  taskDefinition: reprt\n  schedule: rate(1 hour)\n");
        assert_eq!(
            d,
            [
                (
                    Severity::Error,
                    "24:12".into(),
                    "/spec/cluster".into(),
                    "no Cluster named `prd` in the source".into(),
                    Some("did you mean `prod`?".into())
                ),
                (
                    Severity::Error,
                    "25:19".into(),
                    "/spec/taskDefinition".into(),
                    "no TaskDefinition named `reprt` in the source".into(),
                    Some("did you mean `report`?".into())
                ),
            ]
        );
        // A pinned revision of a family not in the source may be
        // registered already: a warning, as for a Service.
        let d = check("  cluster: prod\n  taskDefinition: old:3\n  schedule: rate(1 hour)\n");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, Severity::Warning);
        assert_eq!(d[0].2, "/spec/taskDefinition");
    }

    #[test]
    fn overrides_name_containers_of_the_task_definition_once() {
        let d = check(
            "  cluster: prod
  taskDefinition: report
  schedule: rate(1 day)
  overrides:
    containerOverrides:
      - {name: ap, command: [x]}
      - name: app
        environment: [{name: A, value: '1'}, {name: A, value: '2'}]
      - {name: app}
",
        );
        assert_eq!(
            d,
            [
                (
                    Severity::Error,
                    "29:16".into(),
                    "/spec/overrides/containerOverrides/0/name".into(),
                    "task definition `report` has no container named `ap`".into(),
                    Some("did you mean `app`?".into())
                ),
                (
                    Severity::Error,
                    "31:53".into(),
                    "/spec/overrides/containerOverrides/1/environment/1/name".into(),
                    "variable `A` is set twice in this override".into(),
                    None
                ),
                (
                    Severity::Error,
                    "32:16".into(),
                    "/spec/overrides/containerOverrides/2/name".into(),
                    "container `app` is overridden twice".into(),
                    Some("merge the two overrides into one".into())
                ),
            ]
        );
    }

    #[test]
    fn placement_is_checked_as_a_service_s() {
        let d = check(
            "  cluster: prod
  taskDefinition: report
  schedule: rate(1 day)
  placementConstraints: [{type: memberOf}]
  placementStrategy: [{type: binpack, field: host}]
  capacityProviderStrategy: [{capacityProvider: spot, weight: 1}]
",
        );
        let got: Vec<(&str, &str, &str)> = d
            .iter()
            .map(|(_, at, p, m, _)| (at.as_str(), p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "27:26",
                    "/spec/placementConstraints/0",
                    "`memberOf` needs an expression"
                ),
                (
                    "28:23",
                    "/spec/placementStrategy/0",
                    "`binpack` needs field `cpu` or `memory`"
                ),
                (
                    "29:49",
                    "/spec/capacityProviderStrategy/0/capacityProvider",
                    "capacity provider `spot` is not attached to cluster `prod`"
                ),
            ]
        );
    }

    #[test]
    fn the_schema_bounds_count_schedule_and_started_by() {
        let d = check(
            "  cluster: prod
  taskDefinition: report
  schedule: every day
  count: 11
  whilePreviousRuns: QUEUE
  startedBy: a-tag-that-is-far-longer-than-thirty-six-characters
  extra: 1
",
        );
        let pointers: Vec<&str> = d.iter().map(|x| x.2.as_str()).collect();
        for p in [
            "/spec/schedule",
            "/spec/count",
            "/spec/whilePreviousRuns",
            "/spec/startedBy",
            "/spec/extra",
        ] {
            assert!(pointers.contains(&p), "{p} not in {d:#?}");
        }
    }
}
