//! `mountPoints` and `volumesFrom`: the volumes a container mounts.
//! Separate because both record the input index of each kept item for the
//! fixes made once all containers are read.

use serde_json::{json, Value};

use crate::import::fields::{boolean, each_object, string};
use crate::import::render::Defaults;
use crate::import::report::{key, Ctx};
use crate::manifest::task_definition::{MountPoint, VolumeFrom};

pub(super) fn mount_points(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    base: &str,
    d: &mut Defaults,
    origin: &mut Vec<usize>,
) -> Vec<MountPoint> {
    let mut out = Vec::new();
    each_object(ctx, path, v, |ctx, k, ip, mut m| {
        let source_volume = m.read(ctx, "sourceVolume", string);
        let container_path = m.read(ctx, "containerPath", string);
        let read_only = m.read(ctx, "readOnly", boolean);
        m.finish(ctx, "a mount point");
        match (source_volume, container_path) {
            (Some(source_volume), Some(container_path)) if container_path.starts_with('/') => {
                if read_only.is_none() {
                    d.add(format!("{base}/mountPoints/{}/readOnly", out.len()), json!(false));
                }
                origin.push(k);
                out.push(MountPoint {
                    source_volume,
                    container_path,
                    read_only: read_only.unwrap_or(false),
                });
            }
            (Some(_), Some(p)) => ctx.warn(
                &key(ip, "containerPath"),
                format!("dropped the mount at `{p}`: a container path must be absolute (Windows paths are not supported)"),
                "mount the volume at an absolute Linux path",
            ),
            _ => ctx.warn(ip, "dropped a mount point without sourceVolume or containerPath", "complete it in the input if it matters"),
        }
    });
    out
}

pub(super) fn volumes_from(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    base: &str,
    d: &mut Defaults,
    origin: &mut Vec<usize>,
) -> Vec<VolumeFrom> {
    let mut out = Vec::new();
    each_object(ctx, path, v, |ctx, k, ip, mut m| {
        let source_container = m.read(ctx, "sourceContainer", string);
        let read_only = m.read(ctx, "readOnly", boolean);
        m.finish(ctx, "a volumesFrom entry");
        let Some(source_container) = source_container else {
            ctx.warn(
                ip,
                "dropped a volumesFrom entry without sourceContainer",
                "complete it in the input if it matters",
            );
            return;
        };
        if read_only.is_none() {
            d.add(
                format!("{base}/volumesFrom/{}/readOnly", out.len()),
                json!(false),
            );
        }
        origin.push(k);
        out.push(VolumeFrom {
            source_container,
            read_only: read_only.unwrap_or(false),
        });
    });
    out
}
