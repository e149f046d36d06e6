//! Kubernetes resource quantities (`100m`, `256Mi`, `1.5`, `2e3`), enough to compare a request
//! with its limit.

/// The value of a quantity in base units (cores, bytes), or `None` if it is not a quantity.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty() || number.starts_with('.') && number.len() == 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    (value >= 0.0).then_some(value * factor)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_the_suffixes_kubernetes_accepts() {
        assert_eq!(parse("100m"), Some(0.1));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("256Mi"), Some(256.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("2e3"), Some(2000.0));
        assert!(parse("0.5").unwrap() > parse("499m").unwrap());
    }

    #[test]
    fn refuses_what_is_not_a_quantity() {
        for bad in ["", "lots", "1Xi", "-1", "m"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
