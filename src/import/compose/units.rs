//! Compose's durations (`1m30s`, `500ms`, `2h`) and sizes (`512m`, `1g`,
//! `1024`), in the units ECS fields take: whole seconds and MiB.

/// A duration in whole seconds, rounded up (a `500ms` timeout is not 0).
pub fn seconds(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<f64>() {
        // A bare number: seconds, as compose reads stop_grace_period.
        return Ok(n.max(0.0).ceil() as u64);
    }
    let bad = || format!("`{text}` is not a duration (such as 30s, 1m30s, 500ms, 2h)");
    let mut total_ms: u128 = 0;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let per_ms: f64 = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return Err(bad()),
        };
        total_ms += (n * per_ms).ceil() as u128;
        rest = &rest[unit_len..];
    }
    Ok(total_ms.div_ceil(1000) as u64)
}

/// A size in MiB, rounded up: a number of bytes, or a number with `b`,
/// `k`, `m` or `g` (optionally followed by `b`), as compose reads
/// `mem_limit` and `shm_size`.
pub fn mebibytes(v: &serde_json::Value) -> Result<u64, String> {
    let text = match v {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.trim().to_ascii_lowercase(),
        other => return Err(format!("`{other}` is not a size")),
    };
    let bad = || format!("`{text}` is not a size (such as 512m, 1g or a number of bytes)");
    let t = text.strip_suffix('b').unwrap_or(&text);
    let (number, unit): (&str, u64) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some(c) if c.is_ascii_digit() => (t, 1),
        _ => return Err(bad()),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    if n < 0.0 {
        return Err(bad());
    }
    let bytes = (n * unit as f64).ceil() as u64;
    Ok(bytes.div_ceil(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_in_seconds_rounded_up() {
        for (text, secs) in [
            ("30s", 30),
            ("1m30s", 90),
            ("2h", 7200),
            ("500ms", 1),
            ("1.5s", 2),
            ("1m0.5s", 61),
            ("10", 10),
            ("0s", 0),
        ] {
            assert_eq!(seconds(text), Ok(secs), "{text}");
        }
        for bad in ["", "s", "10x", "1m30", "ten seconds"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_in_mebibytes_rounded_up() {
        for (v, mib) in [
            (json!("512m"), 512),
            (json!("1g"), 1024),
            (json!("1GB"), 1024),
            (json!("64k"), 1),
            (json!(1_048_576), 1),
            (json!("1048577"), 2),
            (json!("0.5g"), 512),
        ] {
            assert_eq!(mebibytes(&v), Ok(mib), "{v}");
        }
        for bad in [json!("lots"), json!("12q"), json!(true), json!("-1m")] {
            assert!(mebibytes(&bad).is_err(), "{bad}");
        }
    }
}
