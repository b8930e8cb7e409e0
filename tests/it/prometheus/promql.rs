//! Just enough PromQL reading for the monitoring tests: the metric
//! selectors in an expression (name and the label names they match on) and
//! the label names it groups or joins by. Prometheus 2.42 offers no parse
//! endpoint, and the tests only need names, not the syntax tree.

/// A metric named in an expression, with the label names its matchers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub labels: Vec<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub selectors: Vec<Selector>,
    /// Labels in `by`, `without`, `on`, `ignoring` and `group_*` clauses.
    pub grouping: Vec<String>,
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "offset", "bool", "atan2", "inf", "nan",
];

pub fn parse(expr: &str) -> Parsed {
    let chars: Vec<char> = expr.chars().collect();
    let mut parsed = Parsed::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_quote(c) {
            i = after_string(&chars, i);
        } else if c == '[' {
            i = after(&chars, i, ']');
        } else if c == '{' {
            // A selector without a metric name: nothing to look up.
            i = after(&chars, i, '}');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            i = word(&chars, i, &mut parsed);
        } else {
            i += 1;
        }
    }
    parsed
}

/// Reads the identifier at `start` and what it introduces; returns where
/// reading goes on.
fn word(chars: &[char], start: usize, parsed: &mut Parsed) -> usize {
    let mut end = start;
    while end < chars.len() && (chars[end].is_ascii_alphanumeric() || "_:".contains(chars[end])) {
        end += 1;
    }
    let word: String = chars[start..end].iter().collect();
    let mut next = end;
    while next < chars.len() && chars[next].is_whitespace() {
        next += 1;
    }
    let opens = |bracket| chars.get(next) == Some(&bracket);
    if GROUPING.contains(&word.as_str()) {
        if opens('(') {
            let close = after(chars, next, ')');
            parsed.grouping.extend(identifiers(&chars[next..close]));
            return close;
        }
        return end;
    }
    if AGGREGATIONS.contains(&word.as_str()) || KEYWORDS.contains(&word.as_str()) || opens('(') {
        return end;
    }
    let mut labels = Vec::new();
    if opens('{') {
        let close = after(chars, next, '}');
        labels = identifiers(&chars[next..close]);
        end = close;
    }
    parsed.selectors.push(Selector {
        metric: word,
        labels,
    });
    end
}

/// Bare identifiers in `chars`, skipping string literals: label names in a
/// matcher list or a grouping clause.
fn identifiers(chars: &[char]) -> Vec<String> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if is_quote(chars[i]) {
            i = after_string(chars, i);
        } else if chars[i].is_ascii_alphabetic() || chars[i] == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            found.push(chars[start..i].iter().collect());
        } else {
            i += 1;
        }
    }
    found
}

fn is_quote(c: char) -> bool {
    c == '"' || c == '\'' || c == '`'
}

/// The index after the string literal opening at `start`.
fn after_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The index after the first `close` from `start`, skipping strings.
fn after(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        i = if is_quote(chars[i]) {
            after_string(chars, i)
        } else {
            i + 1
        };
    }
    (i + 1).min(chars.len())
}

#[test]
fn parse_finds_selectors_labels_and_grouping() {
    let parsed = parse(
        r#"histogram_quantile(0.99, sum by (provider, le) (rate(kvitto_webhook_ack_duration_seconds_bucket{provider=~"a|b}", outcome!="x"}[5m] offset 1h))) / on (provider) group_left provider:kvitto_x:rate5m > 0.5 unless kvitto_y"#,
    );
    let metrics: Vec<&str> = parsed.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "kvitto_webhook_ack_duration_seconds_bucket",
            "provider:kvitto_x:rate5m",
            "kvitto_y"
        ]
    );
    assert_eq!(parsed.selectors[0].labels, ["provider", "outcome"]);
    assert!(parsed.selectors[1].labels.is_empty());
    assert_eq!(parsed.grouping, ["provider", "le", "provider"]);
}

#[test]
fn parse_skips_functions_keywords_and_numbers() {
    let parsed = parse(
        r#"time() - max(process_start_time_seconds and on (instance, job) kvitto_build_info) or vector(1e3)"#,
    );
    let metrics: Vec<&str> = parsed.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(metrics, ["process_start_time_seconds", "kvitto_build_info"]);
    assert_eq!(parsed.grouping, ["instance", "job"]);
}
