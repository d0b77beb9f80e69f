//! `environment` and `secrets`: the variables a container sees. Separate
//! because secrets are renamed to files of the secrets directory, and both
//! lists keep each entry's input index for the check that a variable is
//! not set both ways.

use serde_json::Value;

use crate::import::fields::{each_object, string, text};
use crate::import::report::{index, key, Ctx};
use crate::import::secrets::SecretNames;
use crate::manifest::task_definition::{KeyValuePair, Secret};

/// `environment`, with each entry's input index.
pub(super) fn environment(ctx: &mut Ctx, path: &str, v: Value) -> Vec<(KeyValuePair, usize)> {
    let mut out: Vec<(KeyValuePair, usize)> = Vec::new();
    each_object(ctx, path, v, |ctx, i, ip, mut e| {
        let name = e.read(ctx, "name", text);
        let value = e.read(ctx, "value", text).unwrap_or_default();
        e.finish(ctx, "an environment variable");
        let Some(name) = name else {
            ctx.warn(
                ip,
                "dropped an environment variable without `name`",
                "give it a name in the input if it matters",
            );
            return;
        };
        // Docker keeps the last value of a variable set twice.
        if let Some(pos) = out.iter().position(|(kv, _)| kv.name == name) {
            let (_, first) = out.remove(pos);
            ctx.warn(
                &index(path, first),
                format!("dropped the first value of `{name}`, which is set again at {ip}; Docker used the last one"),
                "remove the duplicate from the input",
            );
        }
        out.push((KeyValuePair { name, value }, i));
    });
    out
}

pub(super) fn secrets(
    ctx: &mut Ctx,
    path: &str,
    v: Value,
    names: &mut SecretNames,
) -> Vec<(Secret, usize)> {
    let mut out: Vec<(Secret, usize)> = Vec::new();
    each_object(ctx, path, v, |ctx, i, ip, mut s| {
        let name = s.read(ctx, "name", string);
        let value_from = s.read(ctx, "valueFrom", string);
        s.finish(ctx, "a secret");
        let (Some(name), Some(value_from)) = (name, value_from) else {
            ctx.warn(
                ip,
                "dropped a secret without `name` or `valueFrom`",
                "complete it in the input if the container needs the variable",
            );
            return;
        };
        let (store, file) = names.name_for(&value_from, &name);
        ctx.warn(
            &key(ip, "valueFrom"),
            format!(
                "secret `{name}` came from {} (`{value_from}`); valueFrom is now `{file}`, a file in the secrets directory",
                store.describe()
            ),
            format!(
                "put the value in the file `{file}` of the secrets directory (RECONCILE_SECRETS_DIR, default .reconcile/secrets under the source); keep it out of git"
            ),
        );
        if let Some(pos) = out.iter().position(|(s, _)| s.name == name) {
            let (_, first) = out.remove(pos);
            ctx.warn(
                &index(path, first),
                format!("dropped the first secret `{name}`, which is set again at {ip}"),
                "remove the duplicate from the input",
            );
        }
        out.push((
            Secret {
                name,
                value_from: file,
            },
            i,
        ));
    });
    out
}
