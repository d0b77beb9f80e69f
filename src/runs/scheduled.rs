//! When a scheduled task runs: its state between fires (the schedule's
//! anchor and how far fires are done), the decision to fire, and the runs
//! it remembers for `history`. Pure; the controller calls [`due`] every
//! second and stores the state.
//!
//! Rules:
//! - a new scheduled task, or one whose schedule changed, starts counting
//!   from that moment (a rate fires one period later; a cron at its next
//!   match);
//! - fire times that passed while the controller was down are not all
//!   made up: at most one run starts, for the latest of them, and the run
//!   says how many it stands for;
//! - a disabled scheduled task lets its fire times pass: enabling it
//!   starts nothing for the past;
//! - the state is saved before a run's tasks start, so a controller that
//!   dies in between never starts the run twice.

use serde::{Deserialize, Serialize};

use crate::manifest::scheduled_task::ScheduledTaskSpec;
use crate::schedule::Schedule;

/// Runs remembered per scheduled task (the oldest go).
pub const RUNS_KEPT: usize = 50;

/// Fire times a late fire looks back over at most (a year of minutes
/// would be half a million): beyond it they are counted as "many".
const MISSED_COUNTED: u32 = 10_000;

/// A scheduled task's state between fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleState {
    /// The schedule expression the anchor belongs to.
    pub expression: String,
    /// When that schedule took effect (unix seconds): rates count from it.
    pub anchor: i64,
    /// Fire times at or before this are done: fired, skipped or missed.
    pub cursor: i64,
    /// Runs, oldest first.
    #[serde(default)]
    pub runs: Vec<ScheduledRun>,
}

/// One fire of a scheduled task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledRun {
    /// The fire time it is for (unix seconds).
    pub scheduled_at: i64,
    /// When the controller acted on it.
    pub fired_at: i64,
    pub outcome: RunOutcome,
    /// Why it was skipped or failed; placement failures of a partial run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Earlier fire times this one stands for (the controller was down).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missed: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<RunTask>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunOutcome {
    /// Its tasks were started (all, or some: see the message).
    Started,
    /// Nothing started: the previous run still ran (`whilePreviousRuns:
    /// SKIP`).
    Skipped,
    /// Nothing started: the task definition or placement failed.
    Failed,
}

/// A task of a run, as far as it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunTask {
    pub id: String,
    pub last_status: crate::model::TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
}

/// A fire that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fire {
    pub scheduled_at: i64,
    pub missed: u32,
}

/// Whether `spec` fires now, bringing `state` up to date (created when
/// None; restarted when the schedule changed; its cursor moved past every
/// fire time it decides about). The caller saves `state` before it starts
/// the run.
pub fn due(spec: &ScheduledTaskSpec, state: &mut Option<ScheduleState>, now: i64) -> Option<Fire> {
    let st = match state {
        Some(s) if s.expression == spec.schedule => s,
        _ => {
            // New, or a new schedule: it counts from now; the runs of the
            // old one stay in the history.
            let runs = state.take().map(|s| s.runs).unwrap_or_default();
            state.insert(ScheduleState {
                expression: spec.schedule.clone(),
                anchor: now,
                cursor: now,
                runs,
            })
        }
    };
    if !spec.enabled {
        st.cursor = st.cursor.max(now);
        return None;
    }
    // Validation refused a schedule that does not parse.
    let schedule: Schedule = crate::schedule::parse(&spec.schedule).ok()?;
    let first = schedule.next_after(st.cursor, st.anchor)?;
    if first > now {
        return None;
    }
    let (mut latest, mut missed) = (first, 0);
    while let Some(t) = schedule.next_after(latest, st.anchor) {
        if t > now || missed >= MISSED_COUNTED {
            break;
        }
        latest = t;
        missed += 1;
    }
    st.cursor = latest.max(st.cursor);
    Some(Fire {
        scheduled_at: latest,
        missed,
    })
}

/// The next fire time after `now`, for display.
pub fn next(spec: &ScheduledTaskSpec, state: Option<&ScheduleState>, now: i64) -> Option<i64> {
    if !spec.enabled {
        return None;
    }
    let schedule = crate::schedule::parse(&spec.schedule).ok()?;
    let (anchor, cursor) = match state {
        Some(s) if s.expression == spec.schedule => (s.anchor, s.cursor.max(now)),
        _ => (now, now),
    };
    schedule.next_after(cursor, anchor)
}

impl ScheduleState {
    /// Remember a run; the oldest go beyond [`RUNS_KEPT`].
    pub fn push(&mut self, run: ScheduledRun) {
        self.runs.push(run);
        if self.runs.len() > RUNS_KEPT {
            let extra = self.runs.len() - RUNS_KEPT;
            self.runs.drain(..extra);
        }
    }

    /// The tasks of the latest run that started any, which have not
    /// stopped (as far as `is_stopped` knows them).
    pub fn still_running(&self, is_stopped: impl Fn(&str) -> bool) -> Vec<String> {
        self.runs
            .iter()
            .rev()
            .find(|r| r.outcome == RunOutcome::Started)
            .map(|r| {
                r.tasks
                    .iter()
                    .filter(|t| !is_stopped(&t.id))
                    .map(|t| t.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Update the tasks of its runs from their records; true when any
    /// changed.
    pub fn update_tasks(&mut self, record: impl Fn(&str) -> Option<RunTask>) -> bool {
        let mut changed = false;
        for run in &mut self.runs {
            for t in &mut run.tasks {
                if t.last_status == crate::model::TaskStatus::Stopped {
                    continue;
                }
                if let Some(now) = record(&t.id) {
                    if now != *t {
                        *t = now;
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}

/// A scheduled task as `status` and `history` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledView {
    pub name: String,
    pub cluster: String,
    pub task_definition: String,
    pub schedule: String,
    /// The schedule in words.
    pub description: String,
    pub enabled: bool,
    pub count: u32,
    /// Unix seconds; None when disabled or never again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<i64>,
    /// Newest first.
    #[serde(default)]
    pub runs: Vec<ScheduledRun>,
}

impl ScheduledView {
    pub fn of(
        name: &str,
        spec: &ScheduledTaskSpec,
        state: Option<&ScheduleState>,
        now: i64,
    ) -> ScheduledView {
        ScheduledView {
            name: name.to_string(),
            cluster: spec.cluster.clone(),
            task_definition: spec.task_definition.clone(),
            schedule: spec.schedule.clone(),
            description: crate::schedule::parse(&spec.schedule)
                .map(|s| s.describe())
                .unwrap_or_default(),
            enabled: spec.enabled,
            count: spec.count,
            next_run: next(spec, state, now),
            runs: state
                .map(|s| s.runs.iter().rev().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

impl RunTask {
    pub fn of(r: &super::RunRecord) -> RunTask {
        RunTask {
            id: r.id.clone(),
            last_status: r.last_status,
            exit_code: r.exit_code(),
            stopped_reason: r.stopped_reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: &str) -> ScheduledTaskSpec {
        serde_json::from_value(serde_json::json!({
            "cluster": "c", "taskDefinition": "job", "schedule": schedule
        }))
        .unwrap()
    }

    #[test]
    fn a_rate_fires_one_period_after_it_was_applied_then_every_period() {
        let s = spec("rate(1 minute)");
        let mut st = None;
        assert_eq!(due(&s, &mut st, 1000), None);
        assert_eq!(st.as_ref().unwrap().anchor, 1000);
        assert_eq!(due(&s, &mut st, 1059), None);
        assert_eq!(
            due(&s, &mut st, 1060),
            Some(Fire {
                scheduled_at: 1060,
                missed: 0
            })
        );
        // Asked again within the same minute: done already.
        assert_eq!(due(&s, &mut st, 1061), None);
        assert_eq!(
            due(&s, &mut st, 1121),
            Some(Fire {
                scheduled_at: 1120,
                missed: 0
            })
        );
        assert_eq!(next(&s, st.as_ref(), 1121), Some(1180));
    }

    #[test]
    fn after_an_outage_at_most_one_run_starts_for_the_latest_missed_time() {
        let s = spec("rate(1 minute)");
        let mut st = None;
        due(&s, &mut st, 0);
        assert_eq!(
            due(&s, &mut st, 60),
            Some(Fire {
                scheduled_at: 60,
                missed: 0
            })
        );
        // Down from 61 to 400: fires at 120..=360 were missed.
        assert_eq!(
            due(&s, &mut st, 400),
            Some(Fire {
                scheduled_at: 360,
                missed: 4
            })
        );
        assert_eq!(due(&s, &mut st, 401), None);
        assert_eq!(
            due(&s, &mut st, 420),
            Some(Fire {
                scheduled_at: 420,
                missed: 0
            })
        );
    }

    #[test]
    fn a_state_saved_before_a_restart_starts_no_extra_run() {
        let s = spec("cron(0/5 * * * ? *)");
        let mut st = None;
        due(&s, &mut st, 1_000_000);
        let f = due(&s, &mut st, 1_000_200).unwrap();
        assert_eq!(f.scheduled_at % 300, 0);
        // The state as stored, read back by a new controller a moment later.
        let mut again: Option<ScheduleState> =
            serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(due(&s, &mut again, 1_000_210), None);
        assert_eq!(
            due(&s, &mut again, f.scheduled_at + 300).map(|f| f.missed),
            Some(0)
        );
    }

    #[test]
    fn a_disabled_or_changed_schedule_starts_nothing_for_the_past() {
        let mut s = spec("rate(1 minute)");
        let mut st = None;
        due(&s, &mut st, 0);
        s.enabled = false;
        assert_eq!(due(&s, &mut st, 500), None);
        assert_eq!(next(&s, st.as_ref(), 500), None);
        s.enabled = true;
        assert_eq!(due(&s, &mut st, 501), None, "nothing for the disabled time");
        assert_eq!(
            due(&s, &mut st, 540),
            Some(Fire {
                scheduled_at: 540,
                missed: 0
            })
        );
        st.as_mut().unwrap().push(ScheduledRun {
            scheduled_at: 540,
            fired_at: 540,
            outcome: RunOutcome::Started,
            message: String::new(),
            missed: 0,
            tasks: Vec::new(),
        });
        let changed = spec("rate(5 minutes)");
        assert_eq!(due(&changed, &mut st, 600), None);
        let st_now = st.as_ref().unwrap();
        assert_eq!((st_now.anchor, st_now.runs.len()), (600, 1), "history kept");
        assert_eq!(
            due(&changed, &mut st, 900).map(|f| f.scheduled_at),
            Some(900)
        );
    }

    #[test]
    fn the_previous_run_is_running_while_any_of_its_tasks_has_not_stopped() {
        let mut st = ScheduleState {
            expression: "rate(1 minute)".into(),
            anchor: 0,
            cursor: 0,
            runs: Vec::new(),
        };
        assert!(st.still_running(|_| false).is_empty());
        let task = |id: &str| RunTask {
            id: id.into(),
            last_status: crate::model::TaskStatus::Running,
            exit_code: None,
            stopped_reason: None,
        };
        for i in 0..(RUNS_KEPT + 3) {
            st.push(ScheduledRun {
                scheduled_at: i as i64,
                fired_at: i as i64,
                outcome: RunOutcome::Started,
                message: String::new(),
                missed: 0,
                tasks: vec![task(&format!("t{i}a")), task(&format!("t{i}b"))],
            });
        }
        assert_eq!(st.runs.len(), RUNS_KEPT);
        let last = RUNS_KEPT + 2;
        let a = format!("t{last}a");
        assert_eq!(st.still_running(|id| id == a), [format!("t{last}b")]);
    }
}
