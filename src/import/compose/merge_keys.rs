//! YAML merge keys (`<<: *defaults`), which compose files use to share
//! settings through `x-` extension fields. The YAML loader keeps `<<` as a
//! plain key; here each mapping takes the keys of the mapping (or list of
//! mappings) under it that it does not set itself, the first mapping of a
//! list winning over the later ones, as YAML 1.1 defines them.

use serde_json::Value;

/// Resolve every merge key in `v`, innermost first.
pub fn resolve(v: &mut Value) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter_mut().try_for_each(resolve),
        Value::Object(map) => {
            for child in map.values_mut() {
                resolve(child)?;
            }
            let Some(merged) = map.remove("<<") else {
                return Ok(());
            };
            let sources = match merged {
                Value::Object(m) => vec![m],
                Value::Array(list) => list
                    .into_iter()
                    .map(|item| match item {
                        Value::Object(m) => Ok(m),
                        other => Err(format!(
                            "`<<` merges mappings, and one of its list is a {}",
                            kind(&other)
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(format!(
                        "`<<` merges a mapping or a list of mappings, not a {}",
                        kind(&other)
                    ))
                }
            };
            for source in sources {
                for (k, value) in source {
                    map.entry(k).or_insert(value);
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn own_keys_win_and_the_first_merged_mapping_wins_over_later_ones() {
        let mut v = json!({
            "x-base": {"restart": "always", "environment": {"A": "1"}},
            "services": {
                "web": {"<<": {"restart": "always", "image": "base"}, "image": "web:1"},
                "worker": {"<<": [{"image": "first", "user": "1000"}, {"image": "second", "init": true}]},
                "deep": {"logging": {"<<": {"driver": "json-file"}, "options": {"max-size": "1m"}}}
            }
        });
        resolve(&mut v).unwrap();
        assert_eq!(
            v["services"]["web"],
            json!({"restart": "always", "image": "web:1"})
        );
        assert_eq!(
            v["services"]["worker"],
            json!({"image": "first", "user": "1000", "init": true})
        );
        assert_eq!(
            v["services"]["deep"]["logging"],
            json!({"driver": "json-file", "options": {"max-size": "1m"}})
        );
    }

    #[test]
    fn merging_what_is_not_a_mapping_is_refused() {
        for bad in [json!({"<<": "text"}), json!({"<<": [{"a": 1}, 3]})] {
            let mut v = bad.clone();
            let e = resolve(&mut v).unwrap_err();
            assert!(e.contains("`<<` merges"), "{bad}: {e}");
        }
    }
}
