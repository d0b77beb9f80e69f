//! ECS rolling-update arithmetic. Each step stops old tasks while at least
//! ceil(desired x minimumHealthyPercent / 100) healthy tasks remain, then
//! starts new ones up to floor(desired x maximumPercent / 100) running plus
//! pending, then waits for the new ones to become healthy.

use serde::{Deserialize, Serialize};

/// One step of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub stop_old: u32,
    pub start_new: u32,
}

/// Bounds of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bounds {
    /// Healthy tasks that must remain: ceil(desired x min / 100).
    pub min_healthy: u32,
    /// Running plus pending tasks allowed: floor(desired x max / 100).
    pub max_running: u32,
}

impl Bounds {
    pub fn new(desired: u32, min_percent: u32, max_percent: u32) -> Bounds {
        let d = u64::from(desired);
        Bounds {
            min_healthy: (d * u64::from(min_percent)).div_ceil(100) as u32,
            max_running: (d * u64::from(max_percent) / 100) as u32,
        }
    }
}

/// One step from a state of `new_healthy` new tasks and `old` old ones
/// (all healthy): how many old to stop and new to start. None when no
/// progress is possible.
pub fn next_step(desired: u32, new_healthy: u32, old: u32, b: Bounds) -> Option<Step> {
    let healthy = new_healthy + old;
    // Old tasks beyond what keeps the floor may go; once enough new tasks
    // run, every old one may go.
    let stop_old = old.min(healthy.saturating_sub(b.min_healthy.min(desired)));
    let running = healthy - stop_old;
    let room = b.max_running.saturating_sub(running);
    let start_new = desired.saturating_sub(new_healthy).min(room);
    (stop_old + start_new > 0).then_some(Step {
        stop_old,
        start_new,
    })
}

/// Every step of a rollout from `new` tasks of the new revision and `old`
/// ones of the previous revisions to `desired` tasks of the new one, or Err
/// with the step count reached when the bounds forbid progress.
pub fn plan(desired: u32, new: u32, old: u32, b: Bounds) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let (mut new, mut old) = (new, old);
    while new < desired || old > 0 {
        match next_step(desired, new, old, b) {
            Some(s) => {
                new += s.start_new;
                old -= s.stop_old;
                steps.push(s);
            }
            None => {
                return Err(format!(
                    "the rollout cannot progress past {new} new and {old} old tasks: minimumHealthyPercent keeps {} healthy and maximumPercent allows {} running",
                    b.min_healthy, b.max_running
                ))
            }
        }
        if steps.len() > 10_000 {
            return Err("the rollout does not converge".into());
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(stop_old: u32, start_new: u32) -> Step {
        Step {
            stop_old,
            start_new,
        }
    }

    #[test]
    fn ecs_examples() {
        // D=4, 100/200: 4 new, then 4 old stopped.
        assert_eq!(
            plan(4, 0, 4, Bounds::new(4, 100, 200)).unwrap(),
            vec![s(0, 4), s(4, 0)]
        );
        // D=4, 50/100: stop 2, start 2, repeat.
        assert_eq!(
            plan(4, 0, 4, Bounds::new(4, 50, 100)).unwrap(),
            vec![s(2, 2), s(2, 2)]
        );
        // 100/100 can never progress.
        assert!(plan(4, 0, 4, Bounds::new(4, 100, 100)).is_err());
        // Fresh service: everything starts at once within max.
        assert_eq!(
            plan(3, 0, 0, Bounds::new(3, 100, 200)).unwrap(),
            vec![s(0, 3)]
        );
        // Scale down while rolling: 4 old, 2 desired, 100/200.
        assert_eq!(
            plan(2, 0, 4, Bounds::new(2, 100, 200)).unwrap(),
            vec![s(2, 2), s(2, 0)]
        );
        // 0/100 stops everything first.
        assert_eq!(
            plan(3, 0, 3, Bounds::new(3, 0, 100)).unwrap(),
            vec![s(3, 3)]
        );
        // Resuming 50/100 after the first step: 2 new already run.
        assert_eq!(
            plan(4, 2, 2, Bounds::new(4, 50, 100)).unwrap(),
            vec![s(2, 2)]
        );
        // Removing a service: desired 0.
        assert_eq!(
            plan(0, 0, 3, Bounds::new(0, 100, 200)).unwrap(),
            vec![s(3, 0)]
        );
    }

    #[test]
    fn bounds_hold_at_every_step() {
        for d in 0..12u32 {
            for old in 0..12u32 {
                for min in [0u32, 25, 50, 75, 100] {
                    for max in [100u32, 125, 150, 200, 300] {
                        let b = Bounds::new(d, min, max);
                        let Ok(steps) = plan(d, 0, old, b) else {
                            continue;
                        };
                        let (mut new, mut o) = (0, old);
                        for st in steps {
                            let healthy = new + o;
                            o -= st.stop_old;
                            assert!(
                                new + o >= b.min_healthy.min(d).min(healthy),
                                "floor {d} {old} {min} {max}"
                            );
                            new += st.start_new;
                            assert!(
                                st.start_new == 0 || new + o <= b.max_running,
                                "cap {d} {old} {min} {max}"
                            );
                        }
                        assert_eq!((new, o), (d, 0));
                    }
                }
            }
        }
    }
}
