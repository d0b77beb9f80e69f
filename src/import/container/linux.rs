//! `ulimits`, `systemControls` and `linuxParameters`: the kernel and
//! process settings of a container. Separate because they map onto Linux
//! features rather than onto the task.

use serde_json::{json, Value};

use crate::import::fields::{
    boolean, count, each_object, integer, show, string, strings, text, Fields,
};
use crate::import::render::Defaults;
use crate::import::report::{key, Ctx};
use crate::import::task_definition::clamp;
use crate::manifest::task_definition::{
    KernelCapabilities, LinuxParameters, SystemControl, Ulimit, UlimitName,
};

pub(super) fn ulimits(ctx: &mut Ctx, path: &str, v: Value) -> Vec<Ulimit> {
    let mut out = Vec::new();
    each_object(ctx, path, v, |ctx, _, ip, mut u| {
        let name = u.read(ctx, "name", string);
        let soft = u.read(ctx, "softLimit", integer);
        let hard = u.read(ctx, "hardLimit", integer);
        u.finish(ctx, "a ulimit");
        let parsed = name.as_deref().and_then(|n| {
            serde_json::from_value::<UlimitName>(Value::from(n.to_ascii_lowercase())).ok()
        });
        let (Some(ulimit), Some(soft), Some(hard)) = (parsed, soft, hard) else {
            ctx.warn(
                ip,
                format!(
                    "dropped ulimit {}: it needs a known name, softLimit and hardLimit",
                    name.as_deref().unwrap_or("without a name")
                ),
                "fix it in the manifest if the limit matters",
            );
            return;
        };
        if soft < 0 || hard < 0 {
            ctx.warn(
                ip,
                format!(
                    "dropped ulimit {}: a negative limit (unlimited) cannot be written here",
                    name.unwrap_or_default()
                ),
                "give the limit an explicit large value if you need it raised",
            );
            return;
        }
        let soft = if soft > hard {
            ctx.warn(
                &key(ip, "softLimit"),
                format!("softLimit {soft} is above hardLimit {hard}; lowered to {hard}"),
                "check the limits",
            );
            hard
        } else {
            soft
        };
        out.push(Ulimit {
            name: ulimit,
            soft_limit: soft,
            hard_limit: hard,
        });
    });
    out
}

pub(super) fn system_controls(ctx: &mut Ctx, path: &str, v: Value) -> Vec<SystemControl> {
    let mut out = Vec::new();
    each_object(ctx, path, v, |ctx, _, ip, mut e| {
        let namespace = e.read(ctx, "namespace", string);
        let value = e.read(ctx, "value", text).unwrap_or_default();
        e.finish(ctx, "a system control");
        match namespace {
            Some(namespace) => out.push(SystemControl { namespace, value }),
            None => ctx.warn(
                ip,
                "dropped a systemControls entry without namespace",
                "complete it if it matters",
            ),
        }
    });
    out
}

pub(super) fn linux_parameters(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    ptr: &str,
    d: &mut Defaults,
) -> Option<LinuxParameters> {
    let mut l = Fields::of(ctx, path.to_string(), v)?;
    let init_process_enabled = match l.take("initProcessEnabled") {
        Some(v) => boolean(ctx, &l.at("initProcessEnabled"), v).unwrap_or(false),
        None => {
            d.add(format!("{ptr}/initProcessEnabled"), json!(false));
            false
        }
    };
    let shared_memory_size = l.take("sharedMemorySize").and_then(|v| {
        let p = l.at("sharedMemorySize");
        count(ctx, &p, v).map(|n| clamp(ctx, &p, n, (1, u64::from(u32::MAX)), "MiB"))
    });
    let capabilities = l.take("capabilities").and_then(|v| {
        let mut c = Fields::of(ctx, l.at("capabilities"), v)?;
        let add = c.read(ctx, "add", strings).unwrap_or_default();
        let drop = c.read(ctx, "drop", strings).unwrap_or_default();
        c.finish(ctx, "linux capabilities");
        (!add.is_empty() || !drop.is_empty()).then_some(KernelCapabilities { add, drop })
    });
    for (k, what, help) in [
        ("devices", "host devices", "give the containers the devices through privileged mode or the nodes' Docker configuration"),
        ("tmpfs", "tmpfs mounts", "use a task-scoped volume (a volume with neither host nor dockerVolumeConfiguration) instead"),
        ("maxSwap", "the swap limit", "swap follows the nodes' Docker defaults"),
        ("swappiness", "swappiness", "swap follows the nodes' Docker defaults"),
    ] {
        if let Some(v) = l.take(k) {
            ctx.warn(&l.at(k), format!("dropped {what} ({}): not supported", show(&v)), help);
        }
    }
    l.finish(ctx, "linuxParameters");
    Some(LinuxParameters {
        init_process_enabled,
        shared_memory_size,
        capabilities,
    })
}
