//! A reader for the Prometheus text exposition format, as Envoy's `/stats/prometheus` writes it.
//!
//! Only samples are read (`name{labels} value [timestamp]`); comments and lines that do not
//! parse are skipped, so one odd line never hides the rest.

/// One sample line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample whose name `keep` accepts.
pub fn parse(text: &str, keep: impl Fn(&str) -> bool) -> Vec<Sample> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            if !keep(name) {
                return None;
            }
            let rest = &line[name_end..];
            let (labels, rest) = if let Some(r) = rest.strip_prefix('{') {
                let close = closing_brace(r)?;
                (parse_labels(&r[..close])?, &r[close + 1..])
            } else {
                (Vec::new(), rest)
            };
            let value = parse_value(rest.split_whitespace().next()?)?;
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

/// `a="x",b="y"` (a trailing comma allowed), with `\"`, `\\` and `\n` escapes.
pub fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => return None,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        out.push((key.to_owned(), value));
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

/// A float as Prometheus writes it, `+Inf`, `-Inf` and `NaN` included.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

/// The index of the `}` that closes a label list, skipping braces inside quoted values.
fn closing_brace(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => quoted = !quoted,
            (false, _, '}') => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_labels_and_special_values() {
        let text = r#"# TYPE linnet_responses_total counter
linnet_responses_total{rollout="checkout",variant="canary",class="5xx"} 7
linnet_response_time_ms_bucket{rollout="checkout",variant="canary",le="+Inf"} 12
odd_value{a="x \"q\" {}"} NaN
envoy_cluster_upstream_rq_total{envoy_cluster_name="c-shadow"} 3 1700000000
broken{a="x" 5
no_labels 4.5
"#;
        let all = parse(text, |_| true);
        assert_eq!(all.len(), 5, "{all:?}");
        assert_eq!(all[0].labels[2], ("class".into(), "5xx".into()));
        assert_eq!(all[0].value, 7.0);
        assert_eq!(all[1].labels[2].1, "+Inf");
        assert_eq!(all[2].labels[0].1, "x \"q\" {}");
        assert!(all[2].value.is_nan());
        assert_eq!(all[3].value, 3.0);
        assert_eq!(all[4].value, 4.5);
        let only = parse(text, |n| n.starts_with("linnet_"));
        assert_eq!(only.len(), 2);
    }

    #[test]
    fn bad_label_lists_are_refused() {
        assert!(parse_labels(r#"a="x",b="y","#).is_some());
        assert!(parse_labels(r#"a=x"#).is_none());
        assert!(parse_labels(r#"="x""#).is_none());
        assert!(parse_labels(r#"a="x"#).is_none());
    }
}
