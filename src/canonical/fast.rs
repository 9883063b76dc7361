//! The fast path of normalisation: one pass over the input bytes that
//! copies a document already in canonical form except for whitespace and
//! number literals, and gives up (`None`) on anything else, so that
//! `canonicalize` parses it in full. Producers send such documents almost
//! always; building a `serde_json::Value` for them was about 5 % of the
//! CPU of the delivery benchmark's (b), and for a multi-megabyte screenshot
//! it allocates and re-escapes every string.
//!
//! NB: `Some` must mean exactly what the full path would produce. It gives
//! up on: invalid JSON (the full path reports the error), `\u` and `\/`
//! escapes (JSON.stringify may write those differently), array-index and
//! repeated keys (they are reordered or merged), objects of more than
//! `MAX_KEYS` keys, numbers JavaScript cannot
//! carry (the full path refuses them), and nesting deeper than serde_json
//! accepts. Strings are compared raw: with only the seven short escapes
//! allowed, each string has one spelling, so equal bytes mean equal keys.

use super::{array_index, js_literal, MAX_DEPTH};

/// Past this many keys in one object the pairwise check for repeats would
/// grow quadratic; the full path's map handles any number.
const MAX_KEYS: usize = 64;

pub(super) fn compact(input: &[u8]) -> Option<Vec<u8>> {
    // Outside strings every accepted byte is ASCII, so this checks strings.
    std::str::from_utf8(input).ok()?;
    let mut scan = Scanner {
        input,
        at: 0,
        out: Vec::with_capacity(input.len()),
        keys: Vec::new(),
        depth: 0,
    };
    scan.value()?;
    scan.skip_whitespace();
    (scan.at == input.len()).then_some(scan.out)
}

struct Scanner<'a> {
    input: &'a [u8],
    at: usize,
    out: Vec<u8>,
    /// The keys of every open object, innermost last.
    keys: Vec<&'a [u8]>,
    depth: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Consumes `byte` (after whitespace) and writes it.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek()? == byte).then_some(())?;
        self.at += 1;
        self.out.push(byte);
        Some(())
    }

    fn value(&mut self) -> Option<()> {
        self.skip_whitespace();
        match self.peek()? {
            b'{' => self.nested(Self::object),
            b'[' => self.nested(Self::array),
            b'"' => self.string().map(|_| ()),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => None,
        }
    }

    fn nested(&mut self, body: fn(&mut Self) -> Option<()>) -> Option<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        body(self)?;
        self.depth -= 1;
        Some(())
    }

    fn object(&mut self) -> Option<()> {
        self.expect(b'{')?;
        let first_key = self.keys.len();
        self.skip_whitespace();
        if self.peek()? != b'}' {
            loop {
                self.skip_whitespace();
                let key = self.string()?;
                let is_index = std::str::from_utf8(key).ok().and_then(array_index);
                let seen = &self.keys[first_key..];
                if is_index.is_some() || seen.len() >= MAX_KEYS || seen.contains(&key) {
                    return None;
                }
                self.keys.push(key);
                self.expect(b':')?;
                self.value()?;
                self.skip_whitespace();
                if self.peek()? != b',' {
                    break;
                }
                self.expect(b',')?;
            }
        }
        self.keys.truncate(first_key);
        self.expect(b'}')
    }

    fn array(&mut self) -> Option<()> {
        self.expect(b'[')?;
        self.skip_whitespace();
        if self.peek()? != b']' {
            loop {
                self.value()?;
                self.skip_whitespace();
                if self.peek()? != b',' {
                    break;
                }
                self.expect(b',')?;
            }
        }
        self.expect(b']')
    }

    /// Copies a string whose escapes are all short ones; returns what lies
    /// between its quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        let input = self.input;
        let start = self.at;
        (input.get(start) == Some(&b'"')).then_some(())?;
        let mut at = start + 1;
        loop {
            at += plain_run(&input[at..]);
            match *input.get(at)? {
                b'"' => break,
                b'\\' => match input.get(at + 1)? {
                    b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => at += 1,
            }
        }
        self.at = at + 1;
        self.out.extend_from_slice(&input[start..self.at]);
        Some(&input[start + 1..at])
    }

    /// Checks JSON's number grammar, then writes the number as JavaScript
    /// prints it.
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        self.eat(b'-');
        if !self.eat(b'0') && self.digits() == 0 {
            return None;
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            if self.digits() == 0 {
                return None;
            }
        }
        let literal = std::str::from_utf8(&self.input[start..self.at]).ok()?;
        let mut buffer = ryu_js::Buffer::new();
        match js_literal(literal, &mut buffer).ok()? {
            None => self.out.extend_from_slice(literal.as_bytes()),
            Some(js) => self.out.extend_from_slice(js.as_bytes()),
        }
        Some(())
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.at += hit as usize;
        hit
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        self.input[self.at..].starts_with(word).then_some(())?;
        self.at += word.len();
        self.out.extend_from_slice(word);
        Some(())
    }
}

/// How many bytes at the start of `bytes` need no attention inside a
/// string: not a quote, a backslash or a control character. Eight bytes
/// at a time, as a multi-megabyte screenshot is almost all such bytes.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `w` is below `n` (exact for n <= 0x80).
    let any_below = |w: u64, n: u8| w.wrapping_sub(ONES * n as u64) & !w & HIGHS != 0;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let w = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
        let (quote, backslash) = (w ^ (ONES * b'"' as u64), w ^ (ONES * b'\\' as u64));
        if any_below(quote, 1) || any_below(backslash, 1) || any_below(w, 0x20) {
            break;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| matches!(b, b'"' | b'\\' | 0..=0x1f))
        .unwrap_or(bytes.len() - at)
}
