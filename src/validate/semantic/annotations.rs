//! Rules on the `reconcile.io/` annotations the program reads: known keys
//! with valid values only. Separate because they apply to every kind.

use super::Finding;
use crate::manifest::{Kind, Manifest};

/// Annotations under `reconcile.io/` the program reads: known keys with
/// valid values only, so a typo never silently changes nothing.
pub const SELF_HEAL: &str = "reconcile.io/self-heal";

pub(super) fn annotations(i: usize, m: &Manifest, out: &mut Vec<Finding>) {
    for (k, v) in &m.metadata().annotations {
        let Some(_) = k.strip_prefix("reconcile.io/") else {
            continue;
        };
        let pointer = format!(
            "/metadata/annotations/{}",
            k.replace('~', "~0").replace('/', "~1")
        );
        if k == SELF_HEAL {
            if m.kind() != Kind::Service {
                out.push(Finding::error(
                    "annotation",
                    i,
                    pointer,
                    format!("`{SELF_HEAL}` applies to a Service only"),
                ));
            } else if v != "true" && v != "false" {
                out.push(
                    Finding::error(
                        "annotation",
                        i,
                        pointer,
                        format!("`{SELF_HEAL}` is `{v}`; expected \"true\" or \"false\""),
                    )
                    .help("\"false\" reports drift without repairing it"),
                );
            }
        } else {
            out.push(
                Finding::error(
                    "annotation",
                    i,
                    pointer,
                    format!("unknown annotation `{k}`: the `reconcile.io/` prefix is reserved"),
                )
                .help(format!("known: `{SELF_HEAL}`"))
                .at_key(),
            );
        }
    }
}
