//! `mountPoints` and `volumesFrom`: the volumes a container mounts.
//! Separate because both record the input index of each kept item for the
//! fixes made once all containers are read.

use serde_json::{json, Value};

use crate::import::fields::{array, boolean, string, Fields};
use crate::import::render::Defaults;
use crate::import::report::{index, key, Ctx};
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
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut m) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let source_volume = m
            .take("sourceVolume")
            .and_then(|v| string(ctx, &key(&ip, "sourceVolume"), v));
        let container_path = m
            .take("containerPath")
            .and_then(|v| string(ctx, &key(&ip, "containerPath"), v));
        let read_only = m
            .take("readOnly")
            .and_then(|v| boolean(ctx, &key(&ip, "readOnly"), v));
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
                &key(&ip, "containerPath"),
                format!("dropped the mount at `{p}`: a container path must be absolute (Windows paths are not supported)"),
                "mount the volume at an absolute Linux path",
            ),
            _ => ctx.warn(&ip, "dropped a mount point without sourceVolume or containerPath", "complete it in the input if it matters"),
        }
    }
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
    let Some(items) = array(ctx, path, v) else {
        return out;
    };
    for (k, item) in items.into_iter().enumerate() {
        let ip = index(path, k);
        let Some(mut m) = Fields::of(ctx, ip.clone(), item) else {
            continue;
        };
        let source_container = m
            .take("sourceContainer")
            .and_then(|v| string(ctx, &key(&ip, "sourceContainer"), v));
        let read_only = m
            .take("readOnly")
            .and_then(|v| boolean(ctx, &key(&ip, "readOnly"), v));
        m.finish(ctx, "a volumesFrom entry");
        let Some(source_container) = source_container else {
            ctx.warn(
                &ip,
                "dropped a volumesFrom entry without sourceContainer",
                "complete it in the input if it matters",
            );
            continue;
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
    }
    out
}
