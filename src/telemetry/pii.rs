//! Personal data masked from log lines when `llmux.logging.redact_pii` is on: e-mail
//! addresses, phone numbers, payment card numbers (Luhn-checked) and US social security
//! numbers, wherever they stand alone in a line (between non-alphanumerics, or after a JSON escape
//! such as `\n`: a logged upstream error echoing a prompt, say).
//!
//! The patterns are written not to hit what logs are full of: trace and span ids, UUIDs,
//! request ids and hex digests (letters and digits run together, so no digit-only group stands
//! alone), timestamps (`2026-12-05T04:48:43.836Z`: groups of 4-2-2, not 3-2-4), durations and
//! epoch numbers (a phone number needs its separators; a card number needs the Luhn check and
//! 13 to 19 digits with nothing alphanumeric around it).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::bytes::Regex;

const EMAIL_MASK: &str = "[EMAIL]";
const PHONE_MASK: &str = "[PHONE]";
const CARD_MASK: &str = "[CARD]";
const SSN_MASK: &str = "[SSN]";

/// One pattern per kind, matching the number alone; its boundaries are checked in code
/// ([`bounded`]), where a JSON escape (`\n123-45-6789` in a JSON log line) counts as one —
/// a regex's `\b` would not, and consuming the boundary characters would hide a second number
/// right after the first.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}")
        .expect("email pattern")
});
static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d{3})-(\d{2})-(\d{4})").expect("ssn pattern"));
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d(?:[ \-]?\d){12,18}").expect("card pattern"));
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d{1,3}[ .\-])?(?:\(\d{3}\) ?|\d{3}[ .\-])\d{3}[ .\-]\d{4}")
        .expect("phone pattern")
});

/// Whether `text[start..end]` stands alone: no letter, digit or `-` (nor the `extra` bytes)
/// right before or after it. A JSON escape before it (`\n`, `\t`, `\r`, `\"`, `\/`) is a
/// boundary; a `.` after it is one when no digit follows (the end of a sentence).
fn bounded(text: &[u8], start: usize, end: usize, extra: &[u8]) -> bool {
    let joins = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || extra.contains(&b);
    let before_ok = match start.checked_sub(1).map(|i| text[i]) {
        None => true,
        Some(b) if joins(b) => {
            // `\n123…`: an escaped control character or quote ends the word before.
            matches!(b, b'n' | b't' | b'r' | b'"' | b'/' | b'b' | b'f')
                && start >= 2
                && text[start - 2] == b'\\'
                && (start < 3 || text[start - 3] != b'\\')
        }
        Some(_) => true,
    };
    let after_ok = match text.get(end) {
        None => true,
        Some(b'.') => !text.get(end + 1).is_some_and(u8::is_ascii_alphanumeric),
        Some(&b) => !joins(b),
    };
    before_ok && after_ok
}

/// Replaces the matches of `re` for which `keep` says so by `mask`; `None` when none did.
fn mask_matches(
    text: &[u8],
    re: &Regex,
    mask: &str,
    mut keep: impl FnMut(&[u8], usize, usize) -> bool,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut last = 0;
    let mut pos = 0;
    while let Some(m) = re.find_at(text, pos) {
        let (start, mut end) = (m.start(), m.end());
        pos = end;
        let mut hit = keep(text, start, end);
        // A card number followed by more digits: try it without its trailing groups.
        while !hit && end > start {
            match text[start..end]
                .iter()
                .rposition(|b| *b == b' ' || *b == b'-')
            {
                Some(cut) if re.as_str() == CARD.as_str() => {
                    end = start + cut;
                    hit = keep(text, start, end);
                }
                _ => break,
            }
        }
        if hit {
            out.extend_from_slice(&text[last..start]);
            out.extend_from_slice(mask.as_bytes());
            last = end;
            // A trimmed card leaves its rest to be read again (it may be the next number).
            pos = end;
        }
    }
    (last > 0).then(|| {
        out.extend_from_slice(&text[last..]);
        out
    })
}

/// Masks personal data in `text`; borrows it back when there is none.
pub fn redact_pii(text: &[u8]) -> Cow<'_, [u8]> {
    let mut out = Cow::Borrowed(text);
    // Cheap gates first: most log lines have no `@` and no run of digits long enough.
    if memchr::memchr(b'@', &out).is_some() && EMAIL.is_match(&out) {
        out = Cow::Owned(EMAIL.replace_all(&out, EMAIL_MASK.as_bytes()).into_owned());
    }
    // The regular expressions run only on lines with the shape of what they look for: most
    // log lines have none, and a byte scan is a fraction of a regex search.
    let shapes = Shapes::of(&out);
    if shapes.ssn {
        let masked = mask_matches(&out, &SSN, SSN_MASK, |t, s, e| {
            bounded(t, s, e, b"") && valid_ssn(&t[s..s + 3], &t[s + 4..s + 6], &t[s + 7..e])
        });
        if let Some(m) = masked {
            out = Cow::Owned(m);
        }
    }
    if shapes.card {
        let masked = mask_matches(&out, &CARD, CARD_MASK, |t, s, e| {
            bounded(t, s, e, b".") && luhn(&t[s..e])
        });
        if let Some(m) = masked {
            out = Cow::Owned(m);
        }
    }
    if shapes.phone {
        let masked = mask_matches(&out, &PHONE, PHONE_MASK, |t, s, e| bounded(t, s, e, b".+"));
        if let Some(m) = masked {
            out = Cow::Owned(m);
        }
    }
    out
}

/// Which kinds a line could hold, from one pass over its bytes.
#[derive(Debug, Default, PartialEq)]
struct Shapes {
    /// `ddd-dd-dddd` somewhere.
    ssn: bool,
    /// 13 digits or more, with at most single spaces or dashes between them.
    card: bool,
    /// `ddd` then a space, dot or dash, then `dddd`.
    phone: bool,
}

impl Shapes {
    fn of(t: &[u8]) -> Self {
        let digit = |i: usize| t.get(i).is_some_and(u8::is_ascii_digit);
        let digits = |from: usize, n: usize| (from..from + n).all(digit);
        let mut s = Shapes::default();
        // Digits in the current run of digits and single separators, and whether the run
        // starts at a boundary (ids run letters and digits together: never a card).
        let mut run = 0usize;
        let mut bounded = false;
        for (i, &b) in t.iter().enumerate() {
            if !b.is_ascii_digit() {
                // Most bytes: one compare. A run goes on through a single space or dash
                // between digits.
                if run > 0 && !(matches!(b, b' ' | b'-') && digit(i + 1)) {
                    run = 0;
                }
                continue;
            }
            if run == 0 {
                bounded = i == 0 || !t[i - 1].is_ascii_alphanumeric();
            }
            run += 1;
            s.card |= bounded && run >= 13;
            // At the third digit of a group of three: what follows it?
            if i >= 2 && digit(i - 1) && digit(i - 2) && !digit(i + 1) {
                let sep = t.get(i + 1).copied();
                s.ssn |= sep == Some(b'-')
                    && digits(i + 2, 2)
                    && t.get(i + 4) == Some(&b'-')
                    && digits(i + 5, 4);
                s.phone |= matches!(sep, Some(b' ' | b'.' | b'-')) && digits(i + 2, 4);
            }
        }
        s
    }
}

/// The SSA's rules: no area 000, 666 or 900–999, no group 00, no serial 0000.
fn valid_ssn(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

/// A payment card number: 13 to 19 digits (separators skipped) whose first digit is one the
/// card networks issue (2–6: Mastercard, Visa, Amex, Discover, JCB, Diners, UnionPay; which
/// also keeps epoch timestamps in ms and µs, starting with 1, out) and whose Luhn checksum holds.
fn luhn(s: &[u8]) -> bool {
    let digits: Vec<u32> = s
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .collect();
    if !(13..=19).contains(&digits.len()) || !(2..=6).contains(&digits[0]) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        String::from_utf8(redact_pii(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn every_kind_is_masked() {
        let cases = [
            ("mail jane.doe+llm@example.co.uk now", "mail [EMAIL] now"),
            ("{\"user\":\"bob@corp.io\"}", "{\"user\":\"[EMAIL]\"}"),
            ("call 415-555-0132 today", "call [PHONE] today"),
            ("call (415) 555-0132", "call [PHONE]"),
            ("call +1 415.555.0132.", "call [PHONE]."),
            ("intl +44 207-946-0958", "intl [PHONE]"),
            ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
            ("card 4111-1111-1111-1111", "card [CARD]"),
            ("card=5500005555555559;", "card=[CARD];"),
            ("amex 378282246310005", "amex [CARD]"),
            ("ssn 123-45-6789.", "ssn [SSN]."),
            ("\"ssn\":\"078-05-1120\"", "\"ssn\":\"[SSN]\""),
            // Inside JSON log lines, after an escape.
            (r#""msg":"SSN:\n123-45-6789""#, r#""msg":"SSN:\n[SSN]""#),
            (r#""msg":"call\t415-555-0132""#, r#""msg":"call\t[PHONE]""#),
            (r#""card \"4111111111111111\"""#, r#""card \"[CARD]\"""#),
            // Two in a row, one space apart.
            ("123-45-6789 078-05-1120", "[SSN] [SSN]"),
            ("415-555-0132 415-555-0199", "[PHONE] [PHONE]"),
            ("4111111111111111 5500005555555559", "[CARD] [CARD]"),
            // A card followed by more digits.
            ("4111 1111 1111 1111 22", "[CARD] 22"),
        ];
        for (input, want) in cases {
            assert_eq!(r(input), want, "{input}");
        }
    }

    #[test]
    fn invalid_numbers_are_left_alone() {
        for text in [
            "card 4111 1111 1111 1112", // fails Luhn
            "ssn 000-12-3456",          // area 000
            "ssn 666-12-3456",          // area 666
            "ssn 912-12-3456",          // area 9xx
            "ssn 123-00-4567",          // group 00
            "order 123456789012", // 12 digits: too short for a card, no separators for a phone
        ] {
            assert_eq!(r(text), text);
        }
    }

    /// What log lines are full of must come out unchanged.
    #[test]
    fn no_false_positives_on_ordinary_log_text() {
        let corpus = [
            // trace and span ids, traceparent
            "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // UUIDs, including all-digit groups
            "id=123e4567-e89b-12d3-a456-426614174000 other=550e8400-e29b-41d4-a716-446655440000",
            "uuid 12345678-1234-1234-1234-123456789012",
            // request ids (LLMux's and OpenAI's)
            "request_id=3329dfec010000000001 x-request-id: req_8f3a2b1c9d4e5f6a7b8c9d0e1f2a3b4c",
            "chatcmpl-mock-5d21e58cca21e50d chatcmpl-AbCdEf1234567890",
            // timestamps and durations
            "2026-12-05T04:48:43.836548Z  INFO llmux::access: duration_ms=1234 ttft_ms=56",
            "at 2026-12-05 04:48:43,123 took 1.2345s (1796443138 epoch, 1796443138123 ms)",
            // epoch ms and µs whose digits happen to pass the Luhn check
            "created_ms=1796443138120 created_us=1796443138123458",
            // hex digests
            "sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "md5 d41d8cd98f00b204e9800998ecf8427e etag \"0123456789012345678\"",
            // numbers of a gateway's life
            "prompt_tokens=1234567 completion_tokens=89 cost_usd=0.00012345 port 127.0.0.1:4010",
            "version 1.22.1 build 20261205.1 ipv6 [2001:db8::1]:443",
            "status=429 retry_after_ms=1500 attempts=gpt-4o/0 500 3ms, gpt-4o/1 200 12ms",
            "user@host prompts are not emails without a dot-domain; neither is a@b",
        ];
        for line in corpus {
            assert_eq!(r(line), line, "false positive");
            assert!(
                matches!(redact_pii(line.as_bytes()), Cow::Borrowed(_)),
                "{line}"
            );
        }
    }

    #[test]
    fn shapes_gate_the_patterns() {
        let s = Shapes::of(b"ssn 123-45-6789 and 415 555 0132, card 4111-1111-1111-1111");
        assert_eq!(
            s,
            Shapes {
                ssn: true,
                card: true,
                phone: true
            }
        );
        let access = b"INFO llmux::access: request request_id=4515d887000000000001 model_group=m status=200 duration_ms=1 prompt_tokens=14 completion_tokens=5 attempts=m/0 200 0ms";
        // 20-character request ids hold long digit runs, but after letters: no shape at all.
        assert_eq!(Shapes::of(access), Shapes::default());
        assert_eq!(Shapes::of(b"no digits here"), Shapes::default());
    }

    #[test]
    fn luhn_checks() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"4111 1111 1111 1111"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"411111111111")); // 12 digits
    }
}
