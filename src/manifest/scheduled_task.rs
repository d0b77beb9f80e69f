//! ScheduledTask: runs tasks of a task definition on a cluster on a
//! schedule, as an EventBridge rule with an ECS target does. Also the task
//! overrides (ECS `TaskOverride`) a run may carry, shared with one-off runs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::service::PlacementStrategy;
use super::task_definition::KeyValuePair;
use super::{default_true, CapacityProviderStrategyItem, PlacementConstraint, TaskDefinitionSpec};

/// Most characters of ECS `startedBy`.
pub const STARTED_BY_MAX: usize = 36;

/// Spec of a ScheduledTask.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduledTaskSpec {
    /// Name of the Cluster the tasks run in.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,255}$"), example = &"prod")]
    pub cluster: String,
    /// Task definition each run starts: `family` (the revision the source
    /// defines) or `family:revision` (a revision registered earlier).
    #[schemars(
        pattern(r"^[A-Za-z0-9_-]{1,255}(:[1-9][0-9]{0,8})?$"),
        example = &"report"
    )]
    pub task_definition: String,
    /// When runs start, in EventBridge schedule syntax, in UTC:
    /// `cron(MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR)` or
    /// `rate(VALUE UNIT)` with a unit of minutes, hours or days.
    #[schemars(
        pattern(r"^(cron|rate)\(.*\)$"),
        length(max = 256),
        example = &"cron(0 3 * * ? *)"
    )]
    pub schedule: String,
    /// Whether runs start (EventBridge rule state ENABLED or DISABLED). A
    /// disabled scheduled task starts nothing and stops nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Tasks each run starts (ECS RunTask `count`, EventBridge
    /// `TaskCount`).
    #[serde(default = "default_count")]
    #[schemars(range(min = 1, max = 10))]
    pub count: u32,
    /// What a run does when the tasks of the previous run still run.
    #[serde(default)]
    pub while_previous_runs: WhilePreviousRuns,
    /// Tag on the tasks of each run (ECS `startedBy`): letters, digits,
    /// `-`, `_` and `/`, at most 36. Default `schedule/NAME`, cut to 36
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9/_-]{1,36}$"), example = &"schedule/nightly-report")]
    pub started_by: Option<String>,
    /// Changes to the task definition for the tasks of every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TaskOverride>,
    /// Hard placement rules, added to those of the task definition. At most
    /// 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub placement_constraints: Vec<PlacementConstraint>,
    /// How the tasks of a run are spread over nodes, applied in order
    /// (later strategies break ties of earlier ones). At most 5.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub placement_strategy: Vec<PlacementStrategy>,
    /// Which capacity providers the tasks run on; default: the cluster's
    /// defaultCapacityProviderStrategy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
}

fn default_count() -> u32 {
    1
}

impl ScheduledTaskSpec {
    /// The `startedBy` of the tasks of scheduled task `name`: the one set,
    /// else `schedule/NAME` cut to [`STARTED_BY_MAX`] characters.
    pub fn effective_started_by(&self, name: &str) -> String {
        match &self.started_by {
            Some(s) => s.clone(),
            None => format!("schedule/{name}")
                .chars()
                .take(STARTED_BY_MAX)
                .collect(),
        }
    }
}

/// What a run does when tasks of the previous run of the same scheduled
/// task still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WhilePreviousRuns {
    /// Start nothing: the run is skipped.
    #[default]
    Skip,
    /// Start the run's tasks anyway, beside the previous ones.
    Allow,
}

/// Changes to a task definition for the tasks of one run (the part of ECS
/// `TaskOverride` that reconcile applies).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskOverride {
    /// Changes per container, by name. At most one per container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub container_overrides: Vec<ContainerOverride>,
}

/// Changes to one container of the task definition (ECS
/// `ContainerOverride`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerOverride {
    /// Name of a container of the task definition.
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,255}$"), example = &"app")]
    pub name: String,
    /// Replaces the container's command (its `command`, or the image's CMD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables set on the container: one of the container's
    /// with the same name gets this value, others are added. Each name at
    /// most once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValuePair>,
}

/// An override names a container the task definition does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the task definition has no container named `{0}`")]
pub struct UnknownContainer(pub String);

impl TaskOverride {
    pub fn is_empty(&self) -> bool {
        self.container_overrides.is_empty()
    }

    /// `spec` with these overrides applied: each named container's command
    /// replaced when the override has one, and its environment variables
    /// set by name. Pure; the spec given is left alone.
    pub fn apply_to(
        &self,
        spec: &TaskDefinitionSpec,
    ) -> Result<TaskDefinitionSpec, UnknownContainer> {
        let mut out = spec.clone();
        for o in &self.container_overrides {
            let c = out
                .container_definitions
                .iter_mut()
                .find(|c| c.name == o.name)
                .ok_or_else(|| UnknownContainer(o.name.clone()))?;
            if let Some(cmd) = &o.command {
                c.command = Some(cmd.clone());
            }
            for kv in &o.environment {
                c.environment.retain(|e| e.name != kv.name);
                c.environment.push(kv.clone());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskDefinitionSpec {
        serde_json::from_value(serde_json::json!({
            "containerDefinitions": [
                {"name": "app", "image": "busybox:stable", "command": ["./serve"],
                 "environment": [{"name": "MODE", "value": "light"}, {"name": "KEEP", "value": "1"}]},
                {"name": "sidecar", "image": "busybox:stable"}
            ]
        }))
        .unwrap()
    }

    fn kv(name: &str, value: &str) -> KeyValuePair {
        KeyValuePair {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn overrides_replace_the_command_and_set_variables_by_name() {
        let o = TaskOverride {
            container_overrides: vec![ContainerOverride {
                name: "app".into(),
                command: Some(vec!["./report".into(), "--all".into()]),
                environment: vec![kv("MODE", "full"), kv("NEW", "x")],
            }],
        };
        let before = spec();
        let after = o.apply_to(&before).unwrap();
        let app = &after.container_definitions[0];
        assert_eq!(
            app.command.as_deref(),
            Some(&["./report".to_string(), "--all".to_string()][..])
        );
        let mut env: Vec<(&str, &str)> = app
            .environment
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        env.sort();
        assert_eq!(env, [("KEEP", "1"), ("MODE", "full"), ("NEW", "x")]);
        // Containers not named, and the spec given, are untouched.
        assert_eq!(
            after.container_definitions[1],
            before.container_definitions[1]
        );
        assert_eq!(before, spec());
    }

    #[test]
    fn an_override_without_a_command_keeps_the_container_s() {
        let o = TaskOverride {
            container_overrides: vec![ContainerOverride {
                name: "app".into(),
                command: None,
                environment: vec![kv("MODE", "full")],
            }],
        };
        let after = o.apply_to(&spec()).unwrap();
        assert_eq!(
            after.container_definitions[0].command.as_deref(),
            Some(&["./serve".to_string()][..])
        );
        assert_eq!(TaskOverride::default().apply_to(&spec()).unwrap(), spec());
    }

    #[test]
    fn an_unknown_container_is_an_error() {
        let o = TaskOverride {
            container_overrides: vec![ContainerOverride {
                name: "ap".into(),
                command: None,
                environment: Vec::new(),
            }],
        };
        assert_eq!(o.apply_to(&spec()), Err(UnknownContainer("ap".into())));
    }

    #[test]
    fn started_by_defaults_to_the_schedule_name_within_36_characters() {
        let mut s: ScheduledTaskSpec = serde_json::from_value(serde_json::json!({
            "cluster": "c", "taskDefinition": "f", "schedule": "rate(5 minutes)"
        }))
        .unwrap();
        assert!(s.enabled);
        assert_eq!(s.count, 1);
        assert_eq!(s.while_previous_runs, WhilePreviousRuns::Skip);
        assert_eq!(s.effective_started_by("nightly"), "schedule/nightly");
        let long = "n".repeat(40);
        assert_eq!(
            s.effective_started_by(&long).chars().count(),
            STARTED_BY_MAX
        );
        s.started_by = Some("cron".into());
        assert_eq!(s.effective_started_by("nightly"), "cron");
    }
}
