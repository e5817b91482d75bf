//! The structural check of relayed JSON: one pass, nothing built. See [`check_structure`].
//!
//! Two implementations of one contract: a scalar one (a table lookup per byte), which is the
//! reference and the fallback, and on x86_64 one that classifies 64 bytes at a time with SSE2
//! (always present on x86_64) and then visits only the brackets outside strings, the way
//! simdjson's first stage finds structure. A fuzz target checks that both agree.

use super::{validate, JsonError};

/// Checks that `bytes` is one complete JSON object or array in structure, in one pass and
/// without building anything: brackets nest and match within `max_depth` (at most
/// [`MAX_STRUCTURE_DEPTH`]), strings are closed, nothing but whitespace follows the value,
/// nothing but whitespace, literals and numbers' characters appear between tokens (no stray
/// backslash or non-ASCII byte), and the text is valid UTF-8. The tokens between the brackets
/// (`{"a" 1}`) are not checked: this catches what breaks a relayed stream in practice (a cut
/// or spliced event, garbage, bad bytes) at a fraction of a full parse's cost, for text the
/// gateway forwards without parsing. A document that is not an object or array gets the full
/// check ([`validate`]).
pub fn check_structure(bytes: &[u8], max_depth: usize) -> Result<(), JsonError> {
    check_structure_members(bytes, max_depth, &[]).map(|_: [Option<usize>; 0]| ())
}

/// [`check_structure`], and in the same pass where the top-level object's members of the
/// given `names` are: for each name, the index of the opening quote of the last member so
/// named (`None` when there is none, or the document is not an object). A relay reads an
/// event's `usage`, `error` and `model` this way instead of searching for each. A name is
/// matched as written (no escapes) and must hold no quote or backslash; a member is one when
/// its name is followed by a colon at the object's own level. Pass `names` as a constant: the
/// check is then specialised to them (names known only at run time cost about 200
/// instructions more an event, measured on a 22-event stream).
pub fn check_structure_members<const N: usize>(
    bytes: &[u8],
    max_depth: usize,
    names: &[&[u8]; N],
) -> Result<[Option<usize>; N], JsonError> {
    check_members_in::<(), N>(bytes, max_depth, names)
}

/// A set of member names fixed at compile time, for [`check_structure_of`].
pub trait MemberNames<const N: usize> {
    const NAMES: [&'static [u8]; N];
}

/// [`check_structure_members`] for the names of `M`: each set of names gets its own copy of the
/// check, specialised to its names. Two callers sharing one copy (the same `N`) would each
/// pay the names read at run time (about 200 instructions an event on a 22-event stream).
pub fn check_structure_of<M: MemberNames<N>, const N: usize>(
    bytes: &[u8],
    max_depth: usize,
) -> Result<[Option<usize>; N], JsonError> {
    check_members_in::<M, N>(bytes, max_depth, &M::NAMES)
}

/// The check, instantiated once per `S` (a set of names, or `()` for names given at run time).
#[inline(always)]
fn check_members_in<S, const N: usize>(
    bytes: &[u8],
    max_depth: usize,
    names: &[&[u8]; N],
) -> Result<[Option<usize>; N], JsonError> {
    debug_assert!(names
        .iter()
        .all(|n| !n.is_empty() && !n.contains(&b'"') && !n.contains(&b'\\')));
    #[cfg(target_arch = "x86_64")]
    {
        blocks::check::<S, N>(bytes, max_depth, names)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        check_structure_members_scalar(bytes, max_depth, names)
    }
}

/// [`check_structure`] one byte at a time: the reference the block version is fuzzed
/// against, and the implementation where SSE2 is not available.
pub fn check_structure_scalar(bytes: &[u8], max_depth: usize) -> Result<(), JsonError> {
    check_structure_members_scalar(bytes, max_depth, &[]).map(|_: [Option<usize>; 0]| ())
}

/// [`check_structure_members`] one byte at a time (the reference, as for
/// [`check_structure_scalar`]).
pub fn check_structure_members_scalar<const N: usize>(
    bytes: &[u8],
    max_depth: usize,
    names: &[&[u8]; N],
) -> Result<[Option<usize>; N], JsonError> {
    let mut found = [None; N];
    let max = max_depth.min(MAX_STRUCTURE_DEPTH);
    let n = bytes.len();
    let mut i = skip_ws(bytes, 0);
    if !matches!(bytes.get(i), Some(b'{' | b'[')) {
        return validate(bytes, max_depth).map(|()| found);
    }
    // One bit per open level: set for `{`, clear for `[`.
    let mut open = [0u64; MAX_STRUCTURE_DEPTH / 64];
    let mut depth = 0usize;
    let mut in_string = false;
    let invalid = |what: &str, at: usize| Err(JsonError::Invalid(format!("{what} at byte {at}")));
    // One table lookup per byte; strings are skipped eight bytes at a time where they hold
    // nothing of interest. This runs on every relayed event, so it is kept to a few
    // instructions per byte.
    while i < n {
        if in_string {
            // Whole words of plain string bytes at a time, then the word that stopped the run
            // byte by byte (without testing it again as a word).
            let mut word_end = i;
            while i + 8 <= n {
                let mut word = [0u8; 8];
                word.copy_from_slice(&bytes[i..i + 8]);
                if string_word_is_plain(u64::from_le_bytes(word)) {
                    i += 8;
                } else {
                    word_end = i + 8;
                    break;
                }
            }
            let stop = word_end.max(i + 1).min(n);
            while i < stop {
                match CLASS[usize::from(bytes[i])] {
                    QUOTE => {
                        in_string = false;
                        i += 1;
                        break;
                    }
                    BACKSLASH => i += 2,
                    _ => i += 1,
                }
            }
            continue;
        }
        match CLASS[usize::from(bytes[i])] {
            PLAIN => {}
            QUOTE => {
                in_string = true;
                if N > 0 && depth == 1 && open[0] & 1 != 0 {
                    member_name(bytes, i, names, &mut found);
                }
            }
            c @ (OPEN_OBJECT | OPEN_ARRAY) => {
                if depth == max {
                    return Err(JsonError::TooDeep {
                        max: max_depth,
                        offset: i,
                    });
                }
                let (word, bit) = (depth / 64, 1u64 << (depth % 64));
                if c == OPEN_OBJECT {
                    open[word] |= bit;
                } else {
                    open[word] &= !bit;
                }
                depth += 1;
            }
            c @ (CLOSE_OBJECT | CLOSE_ARRAY) => {
                if depth == 0 {
                    return invalid("unbalanced bracket", i);
                }
                depth -= 1;
                let is_object = open[depth / 64] & (1u64 << (depth % 64)) != 0;
                if is_object != (c == CLOSE_OBJECT) {
                    return invalid("mismatched bracket", i);
                }
                if depth == 0 {
                    let end = skip_ws(bytes, i + 1);
                    if end != n {
                        return invalid("trailing characters after the value", end);
                    }
                    return std::str::from_utf8(bytes)
                        .map(|_| found)
                        .map_err(|e| JsonError::Invalid(format!("invalid UTF-8 ({e})")));
                }
            }
            // A backslash or a byte ≥ 0x80 outside a string is never JSON.
            _ => return invalid("unexpected byte outside a string", i),
        }
        i += 1;
    }
    if in_string {
        return invalid("unterminated string", n);
    }
    invalid("document ends inside a value", n)
}

/// The string that opens at `bytes[quote]` (inside the top-level object): when it is one of
/// `names` followed by a colon, that name's member is here. Inlined into each copy of the
/// check, where the names are constants (a shared copy compares them with `memcmp`).
#[inline(always)]
fn member_name<const N: usize>(
    bytes: &[u8],
    quote: usize,
    names: &[&[u8]; N],
    found: &mut [Option<usize>; N],
) {
    let text = &bytes[quote + 1..];
    for (name, slot) in names.iter().zip(found.iter_mut()) {
        if text.first() == name.first()
            && text.starts_with(name)
            && text.get(name.len()) == Some(&b'"')
            && bytes.get(skip_ws(bytes, quote + name.len() + 2)) == Some(&b':')
        {
            *slot = Some(quote);
            return;
        }
    }
}

const PLAIN: u8 = 0;
const QUOTE: u8 = 1;
const BACKSLASH: u8 = 2;
const OPEN_OBJECT: u8 = 3;
const OPEN_ARRAY: u8 = 4;
const CLOSE_OBJECT: u8 = 5;
const CLOSE_ARRAY: u8 = 6;
const HIGH: u8 = 7;

/// What each byte means to [`check_structure`].
static CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    t[b'"' as usize] = QUOTE;
    t[b'\\' as usize] = BACKSLASH;
    t[b'{' as usize] = OPEN_OBJECT;
    t[b'[' as usize] = OPEN_ARRAY;
    t[b'}' as usize] = CLOSE_OBJECT;
    t[b']' as usize] = CLOSE_ARRAY;
    let mut i = 0x80;
    while i < 256 {
        t[i] = HIGH;
        i += 1;
    }
    t
};

/// True when none of the eight bytes ends a string, escapes, or starts a UTF-8 sequence.
fn string_word_is_plain(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    (has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\'))) | (w & HIGHS))
        == 0
}

/// The deepest nesting [`check_structure`] tracks (the config's `max_json_depth` is at most
/// this).
pub const MAX_STRUCTURE_DEPTH: usize = 1024;

pub(super) fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

#[cfg(target_arch = "x86_64")]
mod blocks {
    //! 64 bytes at a time: SSE2 compares turn each block into bit masks (quotes, backslashes,
    //! brackets, high bytes), carries between blocks track escapes and strings, and only the
    //! brackets outside strings are visited one by one.
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    use super::{member_name, skip_ws, validate, JsonError, MAX_STRUCTURE_DEPTH};

    const EVEN_BITS: u64 = 0x5555_5555_5555_5555;

    /// Bit masks of one 64-byte block (bit i = byte i).
    struct Masks {
        quote: u64,
        backslash: u64,
        bracket: u64,
        high: u64,
        /// Bytes equal to the first letter of a member name looked for.
        first: u64,
    }

    /// The masks of 64 bytes with AVX2 (two 32-byte halves).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn masks_avx2<const N: usize>(
        block: &[u8],
        letters: &[std::arch::x86_64::__m256i; N],
    ) -> Masks {
        use std::arch::x86_64::{
            __m256i, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
            _mm256_or_si256, _mm256_set1_epi8,
        };
        debug_assert!(block.len() >= 64);
        let quote = _mm256_set1_epi8(b'"' as i8);
        let backslash = _mm256_set1_epi8(b'\\' as i8);
        let (case, bits12, brace) = (
            _mm256_set1_epi8(0x20),
            _mm256_set1_epi8(!0x06u8 as i8),
            _mm256_set1_epi8(0x79),
        );
        let mut m = Masks {
            quote: 0,
            backslash: 0,
            bracket: 0,
            high: 0,
            first: 0,
        };
        for k in 0..2 {
            // SAFETY: an unaligned 32-byte load inside `block`, which holds at least 64 bytes.
            let v: __m256i = unsafe { _mm256_loadu_si256(block.as_ptr().add(32 * k).cast()) };
            let bits = |x: __m256i| u64::from(_mm256_movemask_epi8(x) as u32) << (32 * k);
            m.quote |= bits(_mm256_cmpeq_epi8(v, quote));
            m.backslash |= bits(_mm256_cmpeq_epi8(v, backslash));
            let folded = _mm256_and_si256(_mm256_or_si256(v, case), bits12);
            m.bracket |= bits(_mm256_cmpeq_epi8(folded, brace));
            m.high |= bits(v);
            if N > 0 {
                let mut any = _mm256_cmpeq_epi8(v, letters[0]);
                for &letter in &letters[1..] {
                    any = _mm256_or_si256(any, _mm256_cmpeq_epi8(v, letter));
                }
                // Opaque: seen through, LLVM kept this mask as a vector of 64 booleans, taken
                // apart and put together bit by bit (ten times the whole check's cost).
                m.first |= std::hint::black_box(bits(any));
            }
        }
        m
    }

    /// The masks of 64 bytes with SSE2 (four 16-byte quarters).
    #[inline(always)]
    fn masks_sse2<const N: usize>(block: &[u8], letters: &[__m128i; N]) -> Masks {
        debug_assert!(block.len() >= 64);
        // SAFETY: SSE2 is part of the x86_64 baseline; the loads are unaligned loads of 16 bytes
        // within the 64-byte array.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            // `[` `]` `{` `}` are 0x5b 0x5d 0x7b 0x7d: with 0x20 set and bits 1 and 2 cleared, each
            // becomes 0x79. Other bytes that do too (`Y`, `y`, `_`, DEL) are weeded out when
            // the candidates outside strings are visited.
            let (case, bits12, brace) = (
                _mm_set1_epi8(0x20),
                _mm_set1_epi8(!0x06u8 as i8),
                _mm_set1_epi8(0x79),
            );
            let mut m = Masks {
                quote: 0,
                backslash: 0,
                bracket: 0,
                high: 0,
                first: 0,
            };
            for k in 0..4 {
                let v: __m128i = _mm_loadu_si128(block.as_ptr().add(16 * k).cast());
                let bits = |x: __m128i| u64::from(_mm_movemask_epi8(x) as u16) << (16 * k);
                m.quote |= bits(_mm_cmpeq_epi8(v, quote));
                m.backslash |= bits(_mm_cmpeq_epi8(v, backslash));
                let folded = _mm_and_si128(_mm_or_si128(v, case), bits12);
                m.bracket |= bits(_mm_cmpeq_epi8(folded, brace));
                m.high |= bits(v);
                if N > 0 {
                    let mut any = _mm_cmpeq_epi8(v, letters[0]);
                    for &letter in &letters[1..] {
                        any = _mm_or_si128(any, _mm_cmpeq_epi8(v, letter));
                    }
                    m.first |= std::hint::black_box(bits(any));
                }
            }
            m
        }
    }

    /// The bytes escaped by a backslash: those right after a run of backslashes of odd
    /// length. `carry` says whether the previous block ended inside or right after an
    /// odd-length run (simdjson's `find_odd_backslash_sequences`).
    fn escaped(backslash: u64, carry: &mut u64) -> u64 {
        const ODD_BITS: u64 = !EVEN_BITS;
        let starts = backslash & !(backslash << 1);
        // A run that continues from the previous block has its parity flipped at bit 0.
        let even_start_mask = EVEN_BITS ^ *carry;
        let even_starts = starts & even_start_mask;
        let odd_starts = starts & !even_start_mask;
        let even_carries = backslash.wrapping_add(even_starts);
        let (mut odd_carries, ends_odd) = backslash.overflowing_add(odd_starts);
        odd_carries |= *carry;
        *carry = u64::from(ends_odd);
        let even_carry_ends = even_carries & !backslash;
        let odd_carry_ends = odd_carries & !backslash;
        (even_carry_ends & ODD_BITS) | (odd_carry_ends & EVEN_BITS)
    }

    /// Bit i set when an odd number of bits at positions ≤ i are set.
    fn prefix_xor(mut x: u64) -> u64 {
        x ^= x << 1;
        x ^= x << 2;
        x ^= x << 4;
        x ^= x << 8;
        x ^= x << 16;
        x ^= x << 32;
        x
    }

    /// `S` only makes a copy per set of names (see `check_members_in`).
    #[inline(always)]
    pub(super) fn check<S, const N: usize>(
        bytes: &[u8],
        max_depth: usize,
        names: &[&[u8]; N],
    ) -> Result<[Option<usize>; N], JsonError> {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above; the answer is cached).
            unsafe { check_avx2::<S, N>(bytes, max_depth, names) }
        } else {
            check_sse2(bytes, max_depth, names)
        }
    }

    /// The SSE2 path, on any x86_64 (tests run it where AVX2 would be chosen).
    pub(super) fn check_sse2<const N: usize>(
        bytes: &[u8],
        max_depth: usize,
        names: &[&[u8]; N],
    ) -> Result<[Option<usize>; N], JsonError> {
        // SAFETY: SSE2 is part of the x86_64 baseline.
        let letters = names.map(|n| unsafe { _mm_set1_epi8(n[0] as i8) });
        check_with(bytes, max_depth, names, |b| masks_sse2(b, &letters))
    }

    #[target_feature(enable = "avx2")]
    fn check_avx2<S, const N: usize>(
        bytes: &[u8],
        max_depth: usize,
        names: &[&[u8]; N],
    ) -> Result<[Option<usize>; N], JsonError> {
        let letters = names.map(|n| std::arch::x86_64::_mm256_set1_epi8(n[0] as i8));
        check_with(bytes, max_depth, names, |b| masks_avx2(b, &letters))
    }

    #[inline(always)]
    fn check_with<const N: usize>(
        bytes: &[u8],
        max_depth: usize,
        names: &[&[u8]; N],
        masks: impl Fn(&[u8]) -> Masks,
    ) -> Result<[Option<usize>; N], JsonError> {
        let mut found = [None; N];
        let max = max_depth.min(MAX_STRUCTURE_DEPTH);
        let n = bytes.len();
        if !matches!(bytes.get(skip_ws(bytes, 0)), Some(b'{' | b'[')) {
            return validate(bytes, max_depth).map(|()| found);
        }
        let invalid =
            |what: &str, at: usize| Err(JsonError::Invalid(format!("{what} at byte {at}")));
        let mut open = [0u64; MAX_STRUCTURE_DEPTH / 64];
        let mut depth = 0usize;
        let mut escape_carry = 0u64;
        let mut in_string_carry = 0u64;
        // An opening quote in the last byte of the previous block.
        let mut opening_carry = 0u64;
        let mut non_ascii = false;
        let mut base = 0usize;
        while base < n {
            // Full blocks are read in place; the last one is padded with spaces.
            let m = if n - base >= 64 {
                masks(&bytes[base..base + 64])
            } else {
                let mut block = [b' '; 64];
                block[..n - base].copy_from_slice(&bytes[base..]);
                masks(&block)
            };
            let escaped = if m.backslash == 0 && escape_carry == 0 {
                0
            } else {
                escaped(m.backslash, &mut escape_carry)
            };
            let quotes = m.quote & !escaped;
            let in_string = prefix_xor(quotes) ^ in_string_carry;
            in_string_carry = 0u64.wrapping_sub(in_string >> 63);
            // The first letters of strings that may be member names looked for: right after
            // an opening quote (a quote inside the string it opens).
            let (names_at, opening) = if N == 0 {
                (0, 0)
            } else {
                let opening = quotes & in_string;
                (((opening << 1) | opening_carry) & m.first, opening)
            };
            opening_carry = opening >> 63;
            // Outside strings (closing quotes count as outside: in_string is 0 there).
            let outside = !in_string & !quotes;
            non_ascii |= m.high != 0;
            // A stray byte is reported where it is: the brackets before it come first.
            let stray = (m.backslash | m.high) & outside;
            let before_stray = if stray == 0 {
                !0
            } else {
                (1u64 << stray.trailing_zeros()) - 1
            };
            let names_at = names_at & before_stray;
            // Brackets and names in the order they come, so that a name's depth is known.
            let mut visit = (m.bracket & outside & before_stray) | names_at;
            while visit != 0 {
                let bit = visit & visit.wrapping_neg();
                let at = base + visit.trailing_zeros() as usize;
                visit &= visit - 1;
                if names_at & bit != 0 {
                    if depth == 1 && open[0] & 1 != 0 {
                        member_name(bytes, at - 1, names, &mut found);
                    }
                    continue;
                }
                let c = bytes[at];
                if !matches!(c, b'{' | b'[' | b'}' | b']') {
                    continue;
                }
                if c == b'{' || c == b'[' {
                    if depth == max {
                        return Err(JsonError::TooDeep {
                            max: max_depth,
                            offset: at,
                        });
                    }
                    let (word, bit) = (depth / 64, 1u64 << (depth % 64));
                    if c == b'{' {
                        open[word] |= bit;
                    } else {
                        open[word] &= !bit;
                    }
                    depth += 1;
                    continue;
                }
                if depth == 0 {
                    return invalid("unbalanced bracket", at);
                }
                depth -= 1;
                let is_object = open[depth / 64] & (1u64 << (depth % 64)) != 0;
                if is_object != (c == b'}') {
                    return invalid("mismatched bracket", at);
                }
                if depth == 0 {
                    let end = skip_ws(bytes, at + 1);
                    if end != n {
                        return invalid("trailing characters after the value", end);
                    }
                    if non_ascii {
                        if let Err(e) = std::str::from_utf8(bytes) {
                            return Err(JsonError::Invalid(format!("invalid UTF-8 ({e})")));
                        }
                    }
                    return Ok(found);
                }
            }
            if stray != 0 {
                let at = base + stray.trailing_zeros() as usize;
                return invalid("unexpected byte outside a string", at);
            }
            base += 64;
        }
        if in_string_carry != 0 {
            return invalid("unterminated string", n);
        }
        invalid("document ends inside a value", n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block version and the scalar reference agree on documents built from the bytes that
    /// matter (quotes, backslash runs, brackets, multi-byte and invalid UTF-8), across block
    /// boundaries.
    #[test]
    fn block_and_scalar_agree() {
        let alphabet: [&[u8]; 16] = [
            b"\"",
            b"\\",
            b"\\\\",
            b"{",
            b"}",
            b"[",
            b"]",
            b"a",
            b" ",
            b":",
            b",",
            "é".as_bytes(),
            b"\xff",
            b"\"k\":\"v\"",
            b"\"usage\":",
            b"\"model\" ",
        ];
        let names: [&[u8]; 3] = [b"k", b"usage", b"model"];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200_000 {
            let mut doc = vec![if rng.bool() { b'{' } else { b'[' }];
            for _ in 0..rng.usize(0..120) {
                doc.extend_from_slice(alphabet[rng.usize(..alphabet.len())]);
            }
            let max = rng.usize(1..12);
            let a = check_structure_members(&doc, max, &names);
            let b = check_structure_members_scalar(&doc, max, &names);
            assert_eq!(check_structure(&doc, max).is_ok(), b.is_ok());
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                blocks::check_sse2(&doc, max, &names).ok(),
                b.as_ref().ok().copied(),
                "sse2 path: {:?}",
                String::from_utf8_lossy(&doc)
            );
            if let (Ok(a), Ok(b)) = (&a, &b) {
                assert_eq!(a, b, "{:?}", String::from_utf8_lossy(&doc));
            }
            assert_eq!(
                a.is_ok(),
                b.is_ok(),
                "{:?}: block {a:?}, scalar {b:?}",
                String::from_utf8_lossy(&doc)
            );
            assert_eq!(
                a.as_ref().err().map(JsonError::is_too_deep),
                b.as_ref().err().map(JsonError::is_too_deep)
            );
        }
    }

    /// The members found are the top-level object's own, named exactly, the last of a repeated
    /// name; on valid JSON, what a walk of the members finds.
    #[test]
    fn finds_the_top_level_members_named() {
        let names: [&[u8]; 3] = [b"usage", b"error", b"model"];
        let find = |doc: &str| {
            let a = check_structure_members(doc.as_bytes(), 16, &names).unwrap();
            let b = check_structure_members_scalar(doc.as_bytes(), 16, &names).unwrap();
            assert_eq!(a, b, "{doc}");
            a
        };
        let doc = r#"{"id":"x","model":"m","choices":[{"delta":{"model":"in","usage":{}}}],"usage":null}"#;
        assert_eq!(
            find(doc),
            [doc.rfind(r#""usage""#), None, doc.find(r#""model""#)]
        );
        // Values, nested members, escaped or longer names, and a top-level array: not members.
        for doc in [
            r#"{"a":"usage","b":["error"],"c":{"model":1},"modelx":1,"us\u0061ge":2}"#,
            r#"[{"usage":{}},"model"]"#,
            r#"{"a":"x"usage":{"}"#,
            r#""usage""#,
        ] {
            assert_eq!(find(doc), [None, None, None], "{doc}");
        }
        let repeated = r#"{ "error" :1, "error"	: {"message":"b"} }"#;
        assert_eq!(find(repeated)[1], repeated.rfind(r#""error""#));
        // Across 64-byte blocks: a name's opening quote at every place around a boundary.
        for pad in 40..80 {
            let doc = format!(r#"{{"p":"{}","model":"m","usage":{{}}}}"#, "x".repeat(pad));
            assert_eq!(
                find(&doc),
                [doc.find(r#""usage""#), None, doc.find(r#""model""#)],
                "pad {pad}"
            );
        }
        // Random valid objects: the same as the walk of the members.
        let mut rng = fastrand::Rng::with_seed(11);
        let words = ["usage", "error", "model", "x", "modelo", "é"];
        for _ in 0..20_000 {
            let mut doc = String::from("{");
            for i in 0..rng.usize(0..6) {
                let key = words[rng.usize(..words.len())];
                let value = match rng.usize(0..4) {
                    0 => serde_json::json!(words[rng.usize(..words.len())]),
                    1 => serde_json::json!({ key: [key, {"usage": 1}] }),
                    2 => serde_json::json!(rng.u32(..)),
                    _ => serde_json::Value::Null,
                };
                if i > 0 {
                    doc.push_str(if rng.bool() { "," } else { " ,\n" });
                }
                doc.push_str(&format!(
                    "{}{}:{}",
                    serde_json::json!(key),
                    " ".repeat(rng.usize(0..3)),
                    value
                ));
            }
            doc.push('}');
            let found = find(&doc);
            for (name, at) in names.iter().zip(found) {
                let walked = crate::json::members::top_level_member(doc.as_bytes(), name);
                assert_eq!(at.is_some(), walked.is_some(), "{doc}");
                if let (Some(at), Some(v)) = (at, walked) {
                    let v_at = v.as_ptr() as usize - doc.as_ptr() as usize;
                    let between = &doc[at + name.len() + 2..v_at];
                    assert!(between.trim() == ":", "{doc}");
                }
            }
        }
    }

    #[test]
    fn escapes_across_block_boundaries() {
        for pad in 50..70 {
            for run in 0..6 {
                let doc = format!("{{\"{}{}\"}}", "a".repeat(pad), "\\".repeat(run));
                // An odd run escapes the closing quote: the string never ends.
                assert_eq!(
                    check_structure(doc.as_bytes(), 8).is_ok(),
                    run % 2 == 0,
                    "pad {pad} run {run}"
                );
                assert_eq!(
                    check_structure_scalar(doc.as_bytes(), 8).is_ok(),
                    run % 2 == 0
                );
            }
        }
    }
}
