//! JSON normalised so that `body === JSON.stringify(JSON.parse(body))` in
//! JavaScript (SPEC §5): compact; keys in the order JavaScript keeps them
//! (array-index keys first, ascending, then the rest in insertion order);
//! a repeated key keeps its first place and its last value; numbers in
//! ECMAScript's shortest round-trip form; strings escaped as JSON.stringify
//! escapes them. What JavaScript cannot carry faithfully is refused.

use serde_json::{Map, Value};

mod fast;

/// serde_json refuses documents nested deeper than this (its recursion
/// limit, which keeps a hostile document from overflowing the stack).
pub const MAX_DEPTH: usize = 128;

/// The largest integer a JavaScript number holds exactly (2^53 − 1).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CanonicalError {
    #[error("body is not valid JSON: {0}")]
    Syntax(String),
    #[error("number {0} cannot be carried exactly by JavaScript (beyond ±(2^53−1)); send it as a string")]
    UnsafeInteger(String),
    #[error("number {0} is out of range for JavaScript")]
    OutOfRange(String),
    #[error(
        "the JSON nests arrays and objects {0} levels deep; hookrelay accepts at most {MAX_DEPTH}"
    )]
    TooDeep(usize),
    #[error("the escape {0} is an unpaired UTF-16 surrogate, which hookrelay cannot carry as text; send well-formed Unicode (U+FFFD in its place, say)")]
    UnpairedSurrogate(String),
}

impl CanonicalError {
    /// The SPEC §4 error code: a syntax error is malformed input (400),
    /// the rest well-formed but not carried faithfully (422).
    pub fn code(&self) -> &'static str {
        match self {
            CanonicalError::Syntax(_) => "invalid_json",
            CanonicalError::UnsafeInteger(_) | CanonicalError::OutOfRange(_) => {
                "unrepresentable_number"
            }
            CanonicalError::UnpairedSurrogate(_) => "unrepresentable_string",
            CanonicalError::TooDeep(_) => "nesting_too_deep",
        }
    }
}

/// A normalised JSON document and its bytes.
#[derive(Debug, Clone)]
pub struct Canonical {
    pub value: Value,
    pub bytes: Vec<u8>,
}

/// `input` in canonical form: copied in one pass when it nearly is
/// already (see `fast.rs`), otherwise parsed and rewritten.
pub fn canonicalize(input: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    match fast::compact(input) {
        Some(bytes) => Ok(bytes),
        None => canonicalize_fully(input),
    }
}

fn canonicalize_fully(input: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let mut value: Value = serde_json::from_slice(input).map_err(|e| syntax_error(input, &e))?;
    normalise(&mut value)?;
    // About the input's length: canonical output only drops whitespace and
    // escapes, and seldom grows (`1e21` becomes `1e+21`).
    let mut bytes = Vec::with_capacity(input.len());
    serde_json::to_writer(&mut bytes, &value).expect("a Value always serialises");
    Ok(bytes)
}

/// Why `input` did not parse. JSON allows an unpaired surrogate escape
/// (JavaScript producers that cut a string mid-emoji send one), but a Rust
/// string cannot hold it, so serde refuses it with a message about hex
/// escapes; name it for what it is instead. Likewise a document nested
/// past serde_json's limit is valid JSON, not a syntax error.
pub fn syntax_error(input: &[u8], e: &serde_json::Error) -> CanonicalError {
    if !e.is_syntax() {
        return CanonicalError::Syntax(e.to_string());
    }
    if let Some(escape) = unpaired_surrogate(input) {
        return CanonicalError::UnpairedSurrogate(escape);
    }
    match nesting_depth(input) {
        depth if depth > MAX_DEPTH => CanonicalError::TooDeep(depth),
        _ => CanonicalError::Syntax(e.to_string()),
    }
}

/// How deep `input` nests arrays and objects, brackets in strings aside.
fn nesting_depth(input: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in input {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The first `\uXXXX` escape in `input` that is a UTF-16 surrogate
/// without its other half. Backslashes occur only inside strings in JSON,
/// so no string tracking is needed.
fn unpaired_surrogate(input: &[u8]) -> Option<String> {
    let unit_at = |at: usize| -> Option<u16> {
        let hex = input.get(at..at + 6)?.strip_prefix(b"\\u")?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let mut at = 0;
    while let Some(offset) = input.get(at..)?.iter().position(|&b| b == b'\\') {
        at += offset;
        match unit_at(at) {
            Some(0xD800..=0xDBFF) if matches!(unit_at(at + 6), Some(0xDC00..=0xDFFF)) => at += 12,
            Some(unit @ 0xD800..=0xDFFF) => return Some(format!("\\u{unit:04x}")),
            _ => at += 2,
        }
    }
    None
}

/// Normalises an already parsed value (for example a sample payload).
pub fn canonicalize_value(mut value: Value) -> Result<Canonical, CanonicalError> {
    normalise(&mut value)?;
    let bytes = serde_json::to_vec(&value).expect("a Value always serialises");
    Ok(Canonical { value, bytes })
}

/// In place: rebuilding every map and number cost as much as parsing.
fn normalise(value: &mut Value) -> Result<(), CanonicalError> {
    match value {
        Value::Number(n) => {
            let mut buffer = ryu_js::Buffer::new();
            if let Some(js) = js_literal(n.as_str(), &mut buffer)? {
                *n = js.parse().expect("ryu-js writes valid JSON numbers");
            }
        }
        Value::Array(items) => items.iter_mut().try_for_each(normalise)?,
        Value::Object(map) => {
            map.values_mut().try_for_each(normalise)?;
            // serde_json's map already keeps a repeated key in its first
            // place with its last value, as JavaScript does.
            if map.keys().any(|k| array_index(k).is_some()) {
                js_key_order(map);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Array-index keys first in ascending numeric order, then the others as
/// they came: the order of JavaScript's [[OwnPropertyKeys]].
fn js_key_order(map: &mut Map<String, Value>) {
    let mut indexed: Vec<(u32, String, Value)> = Vec::new();
    let mut named: Vec<(String, Value)> = Vec::with_capacity(map.len());
    for (k, v) in std::mem::take(map) {
        match array_index(&k) {
            Some(i) => indexed.push((i, k, v)),
            None => named.push((k, v)),
        }
    }
    indexed.sort_by_key(|(i, _, _)| *i);
    map.extend(indexed.into_iter().map(|(_, k, v)| (k, v)));
    map.extend(named);
}

/// `Some(n)` when `key` is a canonical array index: "0" or a decimal
/// without leading zero, at most 2^32 − 2.
fn array_index(key: &str) -> Option<u32> {
    let b = key.as_bytes();
    if b.is_empty()
        || b.len() > 10
        || !b.iter().all(u8::is_ascii_digit)
        || (b[0] == b'0' && b.len() > 1)
    {
        return None;
    }
    let n: u64 = key.parse().ok()?;
    (n <= 4_294_967_294).then_some(n as u32)
}

/// The number as JavaScript prints it after parsing its literal, or
/// `None` when that is the literal itself.
fn js_literal<'b>(
    literal: &str,
    buffer: &'b mut ryu_js::Buffer,
) -> Result<Option<&'b str>, CanonicalError> {
    if is_plain_safe_integer(literal) {
        return Ok(None);
    }
    let looks_integral = !literal.contains(['e', 'E']);
    let f: f64 = literal
        .parse()
        .map_err(|_| CanonicalError::OutOfRange(literal.to_string()))?;
    if !f.is_finite() {
        return Err(CanonicalError::OutOfRange(literal.to_string()));
    }
    if looks_integral && f.fract() == 0.0 && f.abs() > MAX_SAFE_INTEGER {
        return Err(CanonicalError::UnsafeInteger(literal.to_string()));
    }
    Ok(Some(if f == 0.0 {
        "0" // JavaScript prints -0 as 0
    } else {
        buffer.format_finite(f)
    }))
}

/// The common case, which JavaScript prints as written: an integer of at
/// most 15 digits (below 2^53) other than -0. JSON forbids leading zeros.
fn is_plain_safe_integer(literal: &str) -> bool {
    let digits = literal.strip_prefix('-').unwrap_or(literal);
    !digits.is_empty()
        && digits.len() <= 15
        && digits.bytes().all(|b| b.is_ascii_digit())
        && literal != "-0"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        String::from_utf8(canonicalize(s.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn unpaired_surrogates_are_named_and_pairs_are_kept() {
        for (input, escape) in [
            (r#"["\ud800"]"#, r"\ud800"),
            (r#"["a\uDC00b"]"#, r"\udc00"),
            (r#"["\ud83d\u0041"]"#, r"\ud83d"),
            (r#"["ok \ud83d\ude00", "\udbff"]"#, r"\udbff"),
        ] {
            assert_eq!(
                canonicalize(input.as_bytes()),
                Err(CanonicalError::UnpairedSurrogate(escape.into())),
                "{input}"
            );
        }
        // A pair is one character; an escaped backslash starts no escape.
        assert_eq!(canon(r#"["\ud83d\ude00"]"#), "[\"\u{1f600}\"]");
        assert_eq!(canon(r#"["\\ud800"]"#), r#"["\\ud800"]"#);
        // Broken JSON stays a syntax error.
        for broken in [&br#"["\u12"]"#[..], br#"["a\"#, br#"["\"#] {
            assert!(matches!(
                canonicalize(broken),
                Err(CanonicalError::Syntax(_))
            ));
        }
    }

    #[test]
    fn numbers_as_javascript_prints_them() {
        assert_eq!(
            canon("[1.0, 1e21, 1e-7, 0.000001, -0, -0.0, 1.5e3, 1.2345678901234568e20, 0.1]"),
            "[1,1e+21,1e-7,0.000001,0,0,1500,123456789012345680000,0.1]"
        );
        assert_eq!(
            canon("[9007199254740991, -9007199254740991, 1E2, 2.5E-3]"),
            "[9007199254740991,-9007199254740991,100,0.0025]"
        );
        assert_eq!(
            canon("[999999999999999, -999999999999999, 1000000000000000, 0, -0, 7]"),
            "[999999999999999,-999999999999999,1000000000000000,0,0,7]",
            "integers either side of the 15-digit fast path"
        );
        assert_eq!(
            canon("[5e-324, 1.7976931348623157e308, 0.30000000000000004]"),
            "[5e-324,1.7976931348623157e+308,0.30000000000000004]"
        );
    }

    #[test]
    fn unsafe_numbers_are_refused() {
        assert!(matches!(
            canonicalize(b"[9007199254740992]"),
            Err(CanonicalError::UnsafeInteger(_))
        ));
        assert!(matches!(
            canonicalize(b"[-18446744073709551616]"),
            Err(CanonicalError::UnsafeInteger(_))
        ));
        assert!(matches!(
            canonicalize(b"[9007199254740993.0]"),
            Err(CanonicalError::UnsafeInteger(_))
        ));
        assert!(matches!(
            canonicalize(b"[1e400]"),
            Err(CanonicalError::OutOfRange(_))
        ));
        assert!(matches!(
            canonicalize(b"{\"a\":"),
            Err(CanonicalError::Syntax(_))
        ));
    }

    #[test]
    fn keys_in_javascript_order() {
        assert_eq!(
            canon(
                r#"{"b":1,"2":1,"a":1,"10":1,"01":1,"-1":1,"4294967295":1,"4294967294":1,"0":1}"#
            ),
            r#"{"0":1,"2":1,"10":1,"4294967294":1,"b":1,"a":1,"01":1,"-1":1,"4294967295":1}"#
        );
        assert_eq!(
            canon(r#"{"a":1,"b":2,"a":3}"#),
            r#"{"a":3,"b":2}"#,
            "first place, last value"
        );
        assert_eq!(
            canon(r#"{"x":{"1":{"z":0,"0":[]}}}"#),
            r#"{"x":{"1":{"0":[],"z":0}}}"#
        );
    }

    #[test]
    fn strings_escaped_as_json_stringify() {
        assert_eq!(
            canon("[\"\\u0001\\b\\f\\n\\r\\t\\\"\\\\\\/\\u007f\\u2028é😀\"]"),
            "[\"\\u0001\\b\\f\\n\\r\\t\\\"\\\\/\u{7f}\u{2028}é😀\"]"
        );
        assert_eq!(canon("[\"\\u001F\"]"), "[\"\\u001f\"]");
    }

    #[test]
    fn compact_and_idempotent() {
        let once = canon(" { \"a\" : [ 1 , 2.50 , { } , [ ] , null , true ] } ");
        assert_eq!(once, r#"{"a":[1,2.5,{},[],null,true]}"#);
        assert_eq!(canon(&once), once);
    }

    /// Documents the fast path must copy, and ones it must leave to the
    /// full parse; either way the result is the full parse's.
    const CORPUS: &[&str] = &[
        r#"{"event":"a.b","data":[{"organisation":{"organisationId":"x"},"n":-12,"f":0.5}]}"#,
        " { \"a\" : [ 1 , 2.50 , { } , [ ] , null , true, false ] } ",
        r#"["\"\\\b\f\n\r\t", "é😀 ", "a/b"]"#,
        r#"[1.0, 1e21, 1E2, -0, -0.0, 5e-324, 0.1, 999999999999999, 1000000000000000]"#,
        r#"{"a\"b":1,"a\\b":2,"a":{"a":{"a":[]}}}"#,
        "[\"\u{2028}\u{7f}\"]  ",
        r#"["\u0041", "\/"]"#,
        r#"{"1":1,"a":2}"#,
        r#"{"a":1,"b":2,"a":3}"#,
        r#"[9007199254740992]"#,
        r#"[1e400]"#,
        r#"[01]"#,
        r#"[1.]"#,
        r#"[.5]"#,
        r#"[-]"#,
        r#"[1e]"#,
        r#"[1,]"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"[tru]"#,
        "[\"\t\"]",
        "[1] x",
        "",
        "\u{feff}[]",
    ];

    #[test]
    fn fast_path_agrees_with_the_full_parse() {
        let mut copied = 0;
        for doc in CORPUS {
            let full = canonicalize_fully(doc.as_bytes());
            if let Some(fast) = fast::compact(doc.as_bytes()) {
                copied += 1;
                assert_eq!(Ok(fast), full, "{doc}");
            }
        }
        assert_eq!(copied, 6, "the first six documents take the fast path");
    }

    #[test]
    fn fast_path_gives_up_on_deep_nesting_and_many_keys() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(fast::compact(deep.as_bytes()).is_none());
        assert_eq!(
            canonicalize(deep.as_bytes()),
            Err(CanonicalError::TooDeep(200)),
            "serde_json's limit"
        );
        let at_limit = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(canonicalize(at_limit.as_bytes()).is_ok());
        // Brackets inside strings do not count, escaped quotes included.
        let quoted = format!(r#"{{"a":"\"{}"}}"#, "[".repeat(300));
        assert_eq!(canonicalize(quoted.as_bytes()).unwrap(), quoted.as_bytes());
        let broken = "[".repeat(300) + "x";
        assert!(
            matches!(
                canonicalize(broken.as_bytes()),
                Err(CanonicalError::TooDeep(300))
            ),
            "refused either way; the depth is the clearer reason"
        );
        let keys: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        let wide = format!("{{{}}}", keys.join(","));
        assert!(fast::compact(wide.as_bytes()).is_none());
        assert_eq!(canon(&wide), wide);
    }

    /// Random edits of the corpus: whatever the fast path copies, the full
    /// parse must produce byte for byte.
    #[test]
    fn fast_path_agrees_on_mutated_documents() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"{}[]\",:\\ .-+eE0123456789aux/ntfr\x01";
        let (mut copied, mut tried) = (0, 0);
        for doc in CORPUS.iter().cycle().take(20_000) {
            let mut bytes = doc.as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..=bytes.len());
                let byte = alphabet[rng.gen_range(0..alphabet.len())];
                match rng.gen_range(0..3) {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => bytes[at] = byte,
                    _ if at < bytes.len() => drop(bytes.remove(at)),
                    _ => {}
                }
            }
            tried += 1;
            if let Some(fast) = fast::compact(&bytes) {
                copied += 1;
                let full = canonicalize_fully(&bytes);
                assert_eq!(Ok(fast), full, "{:?}", String::from_utf8_lossy(&bytes));
            }
        }
        assert!(
            copied > tried / 20,
            "only {copied} of {tried} took the fast path"
        );
    }
}
