//! CPU and memory amounts as ECS accepts them.
//!
//! RegisterTaskDefinition takes task-level `cpu` and `memory` as strings:
//! `"256"` (CPU units) or `"1 vCPU"`, `"512"` (MiB) or `"2 GB"`. ECS reads
//! `GB` as GiB (1 GB = 1024 MiB), so this does too. Container-level values
//! are numbers in the API, but hand-written files often quote them, so the
//! same parser reads both.

use serde_json::Value;

/// CPU units (1024 = 1 vCPU) from a number or a string such as `"256"`,
/// `"1 vCPU"` or `"0.5 vcpu"`.
pub(crate) fn cpu_units(v: &Value) -> Result<u64, String> {
    let (n, unit) = amount(v)?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "unit" | "units" => 1.0,
        "vcpu" | "vcpus" | "cpu" | "cpus" => 1024.0,
        other => return Err(format!("unknown CPU unit `{other}`; use CPU units or vCPU")),
    };
    whole(n * factor)
}

/// MiB from a number or a string such as `"512"`, `"512 MiB"` or `"2 GB"`.
pub(crate) fn memory_mib(v: &Value) -> Result<u64, String> {
    let (n, unit) = amount(v)?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1.0,
        "g" | "gb" | "gib" => 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0,
        other => return Err(format!("unknown memory unit `{other}`; use MiB or GB")),
    };
    whole(n * factor)
}

/// A non-negative number and the unit written after it.
fn amount(v: &Value) -> Result<(f64, String), String> {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().ok_or_else(|| format!("{n} is not a number"))?;
            if f < 0.0 {
                return Err(format!("{n} is negative"));
            }
            Ok((f, String::new()))
        }
        Value::String(s) => {
            let t = s.trim();
            let split = t
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
                .map_or(t.len(), |(i, _)| i);
            let (num, unit) = t.split_at(split);
            let n: f64 = num.parse().map_err(|_| {
                format!("`{s}` is not an amount (a number, optionally followed by a unit)")
            })?;
            Ok((n, unit.trim().to_string()))
        }
        other => Err(format!(
            "expected a number or a string, found {}",
            super::fields::type_name(other)
        )),
    }
}

fn whole(f: f64) -> Result<u64, String> {
    if !f.is_finite() || f > 1e15 {
        return Err("the amount is too large".into());
    }
    Ok(f.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_strings_and_numbers() {
        for (input, units) in [
            (json!("256"), 256),
            (json!(512), 512),
            (json!("1 vCPU"), 1024),
            (json!("0.5 vcpu"), 512),
            (json!(".25 vCPU"), 256),
            (json!("2vCPU"), 2048),
            (json!(" 1024 "), 1024),
        ] {
            assert_eq!(cpu_units(&input), Ok(units), "{input}");
        }
        assert!(cpu_units(&json!("__TASK_CPU__")).is_err());
        assert!(cpu_units(&json!("2 GHz")).is_err());
        assert!(cpu_units(&json!(-1)).is_err());
    }

    #[test]
    fn memory_strings_and_numbers() {
        for (input, mib) in [
            (json!("512"), 512),
            (json!(1024), 1024),
            (json!("2 GB"), 2048),
            (json!("2GB"), 2048),
            (json!("0.5 GB"), 512),
            (json!("512 MiB"), 512),
            (json!("1 GiB"), 1024),
            (json!("30720"), 30720),
        ] {
            assert_eq!(memory_mib(&input), Ok(mib), "{input}");
        }
        assert!(memory_mib(&json!("lots")).is_err());
        assert!(memory_mib(&json!("2 KB")).is_err());
        assert!(memory_mib(&json!(true)).is_err());
    }
}
