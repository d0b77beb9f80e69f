//! Properties of the auto scaling decision (`reconcile::autoscaling`), for
//! random bounds, policies, metric samples and scaling history:
//! - the count never leaves [minCapacity, maxCapacity];
//! - a scale-out goes to the largest want of the policies out of their
//!   scale-out cooldown (bounded by maxCapacity), and happens only when one
//!   of them wants more;
//! - a scale-in happens only when every policy has a sample, wants fewer,
//!   allows scale-in and is out of its scale-in cooldown, and goes to the
//!   largest of their wants;
//! - the same inputs give the same decision.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use reconcile::autoscaling::{decide, Direction, LastScaled, Metrics};
use reconcile::manifest::auto_scaling::{AutoScaling, PredefinedMetric, TargetTracking};

fn policy() -> impl Strategy<Value = TargetTracking> {
    (
        prop::sample::select(vec![
            PredefinedMetric::CpuUtilization,
            PredefinedMetric::MemoryUtilization,
            PredefinedMetric::RequestCountPerTarget,
        ]),
        1u32..200,
        0u32..120,
        0u32..120,
        any::<bool>(),
    )
        .prop_map(|(m, t, out, inn, disable)| TargetTracking {
            predefined_metric: m,
            target_value: f64::from(t),
            scale_out_cooldown: out,
            scale_in_cooldown: inn,
            disable_scale_in: disable,
        })
}

fn sample() -> impl Strategy<Value = Option<f64>> {
    prop::option::weighted(0.85, (0u32..4000).prop_map(|v| f64::from(v) / 10.0))
}

#[derive(Debug, Clone)]
struct Case {
    cfg: AutoScaling,
    count: u32,
    metrics: Metrics,
    last: LastScaled,
    now: i64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0u32..6,
        0u32..20,
        prop::collection::vec(policy(), 0..4),
        0u32..30,
        (sample(), sample(), sample()),
        (
            prop::option::of(0i64..800),
            prop::option::of(0i64..800),
            0i64..400,
        ),
    )
        .prop_map(
            |(min, span, policies, count, (c, m, r), (o, i, now))| Case {
                cfg: AutoScaling {
                    min_capacity: min,
                    max_capacity: min + span,
                    target_tracking: policies,
                },
                count,
                metrics: Metrics {
                    cpu: c,
                    memory: m,
                    requests_per_target: r,
                },
                last: LastScaled {
                    scale_out: o,
                    scale_in: i,
                },
                now: now + 400,
            },
        )
}

fn want(p: &TargetTracking, count: u32, m: &Metrics) -> Option<u32> {
    m.get(p.predefined_metric)
        .map(|v| (f64::from(count) * v / p.target_value).ceil() as u32)
}

fn cooled(since: Option<i64>, now: i64, cooldown: u32) -> bool {
    since.is_none_or(|t| now - t >= i64::from(cooldown))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn decisions_follow_application_auto_scaling(c in case()) {
        let (min, max) = (c.cfg.min_capacity, c.cfg.max_capacity);
        let d = decide(&c.cfg, c.count, &c.metrics, c.last, c.now);
        prop_assert_eq!(&d, &decide(&c.cfg, c.count, &c.metrics, c.last, c.now));
        let outside = c.count < min || c.count > max;
        let Some(d) = d else {
            prop_assert!(!outside, "a count outside the bounds was kept");
            return Ok(());
        };
        prop_assert!(d.count >= min && d.count <= max, "{} outside [{min}, {max}]", d.count);
        prop_assert_ne!(d.count, c.count);
        if outside {
            prop_assert_eq!(d.count, c.count.clamp(min, max));
            return Ok(());
        }
        let policies = &c.cfg.target_tracking;
        match d.direction {
            Direction::Out => {
                prop_assert!(d.count > c.count);
                let largest = policies
                    .iter()
                    .filter(|p| cooled(c.last.scale_out, c.now, p.scale_out_cooldown))
                    .filter_map(|p| want(p, c.count, &c.metrics))
                    .max()
                    .unwrap_or(0);
                prop_assert_eq!(d.count, largest.min(max));
                for p in policies {
                    prop_assert!(c.metrics.get(p.predefined_metric).is_none() || d.cause.contains(p.predefined_metric.as_str()));
                }
            }
            Direction::In => {
                prop_assert!(d.count < c.count);
                let last = c.last.scale_out.max(c.last.scale_in);
                let mut largest = 0;
                for p in policies {
                    let w = want(p, c.count, &c.metrics);
                    prop_assert!(w.is_some_and(|w| w < c.count), "{:?} did not agree", p);
                    prop_assert!(!p.disable_scale_in);
                    prop_assert!(cooled(last, c.now, p.scale_in_cooldown));
                    largest = largest.max(w.unwrap_or(0));
                }
                prop_assert!(!policies.is_empty());
                prop_assert_eq!(d.count, largest.max(min));
            }
        }
    }

    #[test]
    fn repeated_decisions_converge_inside_the_bounds(c in case(), steps in 1usize..20) {
        // Applying decisions over time with the same metrics never leaves
        // the bounds and never flips direction without a new sample.
        let (mut count, mut last, mut now) = (c.count.clamp(c.cfg.min_capacity, c.cfg.max_capacity), c.last, c.now);
        let mut first: Option<Direction> = None;
        for _ in 0..steps {
            now += 30;
            if let Some(d) = decide(&c.cfg, count, &c.metrics, last, now) {
                prop_assert!(d.count >= c.cfg.min_capacity && d.count <= c.cfg.max_capacity);
                match d.direction {
                    Direction::Out => last.scale_out = Some(now),
                    Direction::In => last.scale_in = Some(now),
                }
                if let Some(f) = first {
                    // The metric is per task and did not change, so the
                    // wants only grow with the count: never back again.
                    prop_assert_eq!(f, d.direction);
                }
                first = Some(d.direction);
                count = d.count;
            }
        }
    }
}
