//! Where a checked object's top-level members are, noted by the parser that checked it, so
//! that what reads or rewrites a few members later does not cross every value again. A chat
//! request's check parses the whole body anyway; a passthrough request then rewrote `model`
//! by a second walk over the messages, and read `stream` by a third.
//!
//! The parser hands each member name over as a slice of the document itself when the name
//! holds no escape (sonic-rs borrows it): its offset is where the name starts. The value is
//! then between the name's colon and the next member's comma (or the object's closing brace),
//! found by skipping whitespace only. A name the parser had to unescape, or more members than
//! fit, leave the layout unknown, and readers walk the bytes as before.

use super::members::skip_ws;

/// The offsets of a top-level object's member names, in document order (a repeated name once
/// per occurrence), for the document they were noted from. Only valid for that document, and
/// only for a document its parser accepted. (Slots past `len` stay zero, so the derived
/// equality is the notes'.)
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TopMembers {
    /// The index of each name's first byte (after its opening quote).
    names: [u32; TopMembers::MAX],
    len: u8,
}

impl std::fmt::Debug for TopMembers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(&self.names[..usize::from(self.len)])
            .finish()
    }
}

impl TopMembers {
    /// The most members noted: requests rarely carry more than a dozen top-level fields, and
    /// the layout travels with the request (a larger object is walked instead).
    pub const MAX: usize = 24;

    /// No notes yet.
    pub fn new() -> Self {
        Self {
            names: [0; Self::MAX],
            len: 0,
        }
    }

    /// Whether nothing is noted (no notes were made, or the object is empty).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Notes the next member's name, as the parser gave it (`name`) for the document `doc`.
    /// False when the name is not a slice of `doc` between quotes (the parser unescaped it
    /// into a buffer of its own) or there is no room: the layout is then unknown. (The check
    /// notes offsets relative to its first name instead, [`TopMembers::rebased`]; tests note
    /// names directly.)
    #[cfg(test)]
    pub fn note(&mut self, doc: &[u8], name: &str) -> bool {
        let start = (name.as_ptr() as usize).wrapping_sub(doc.as_ptr() as usize);
        let end = start.wrapping_add(name.len());
        let quoted = start >= 1
            && end < doc.len()
            && doc[start - 1] == b'"'
            && doc[end] == b'"'
            // A buffer of the parser's own cannot overlap `doc`, so an address inside it is a
            // slice of it; the bytes are compared all the same (names are short).
            && &doc[start..end] == name.as_bytes();
        quoted && self.push(start)
    }

    /// Notes the next member's name as starting at `at`, for a caller that knows it is a
    /// name's first byte (or will [`TopMembers::rebased`] the notes). False when there is no
    /// room or `at` does not fit the notes.
    pub fn push(&mut self, at: usize) -> bool {
        let (Ok(at), Some(slot)) = (u32::try_from(at), self.names.get_mut(usize::from(self.len)))
        else {
            return false;
        };
        *slot = at;
        self.len += 1;
        true
    }

    /// Notes made relative to some point, moved to where that point is in `doc` (`shift`
    /// bytes in): `None` unless every name then follows a quote in `doc`.
    pub fn rebased(mut self, doc: &[u8], shift: usize) -> Option<Self> {
        for at in &mut self.names[..usize::from(self.len)] {
            let moved = usize::try_from(*at).ok()?.checked_add(shift)?;
            if moved == 0 || doc.get(moved - 1) != Some(&b'"') {
                return None;
            }
            *at = u32::try_from(moved).ok()?;
        }
        Some(self)
    }

    /// Calls `f(quoted name, raw value)` for each member of `doc` (the document these notes
    /// are of), first to last, while it returns true: `Some(true)` when every member was
    /// visited. `None`, before `f` is called at all, when there are no notes or they do not
    /// fit `doc` (a bug, not an input: the caller walks the bytes instead).
    pub fn for_each<'a>(
        &self,
        doc: &'a [u8],
        mut f: impl FnMut(&'a [u8], &'a [u8]) -> bool,
    ) -> Option<bool> {
        let names = &self.names[..usize::from(self.len)];
        if names.is_empty() {
            return None;
        }
        // Every member is located before any is handed over.
        let mut spans = [(0u32, 0u32, 0u32, 0u32); Self::MAX];
        for (i, &at) in names.iter().enumerate() {
            let at = at as usize;
            if at == 0 {
                return None;
            }
            let name_end = at + memchr::memchr(b'"', doc.get(at..)?)?;
            let colon = skip_ws(doc, name_end + 1);
            if doc.get(colon) != Some(&b':') {
                return None;
            }
            let start = skip_ws(doc, colon + 1);
            // The value ends before the separator that precedes the next name, or before the
            // object's closing brace.
            let end = match names.get(i + 1) {
                Some(&next) => value_end_before(doc, start, (next as usize).checked_sub(1)?, true),
                None => value_end_before(doc, start, last_brace(doc)?, false),
            }?;
            let offset = |i: usize| u32::try_from(i).ok();
            spans[i] = (
                offset(at - 1)?,
                offset(name_end + 1)?,
                offset(start)?,
                offset(end)?,
            );
        }
        for &(key, key_end, start, end) in &spans[..names.len()] {
            let key = &doc[key as usize..key_end as usize];
            if !f(key, &doc[start as usize..end as usize]) {
                return Some(false);
            }
        }
        Some(true)
    }
}

impl Default for TopMembers {
    fn default() -> Self {
        Self::new()
    }
}

/// The index of the document's last non-whitespace byte, when it is a `}`.
fn last_brace(doc: &[u8]) -> Option<usize> {
    let i = doc
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    (doc[i] == b'}').then_some(i)
}

/// Where the value that starts at `start` ends, given `boundary`: the next name's opening
/// quote (`comma`: a comma must come between) or the closing brace.
fn value_end_before(doc: &[u8], start: usize, boundary: usize, comma: bool) -> Option<usize> {
    if boundary <= start || boundary > doc.len() {
        return None;
    }
    let mut end = back_ws(doc, start, boundary);
    if comma {
        if end == start || doc[end - 1] != b',' {
            return None;
        }
        end = back_ws(doc, start, end - 1);
    }
    (end > start).then_some(end)
}

/// `end` moved back over whitespace, not before `floor`.
fn back_ws(doc: &[u8], floor: usize, mut end: usize) -> usize {
    while end > floor && matches!(doc[end - 1], b' ' | b'\t' | b'\n' | b'\r') {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Notes made the way the parser makes them: each name as a slice of the document.
    fn noted(doc: &[u8]) -> TopMembers {
        let mut top = TopMembers::new();
        super::super::members::for_each_member_forward(doc, |name, _| {
            top.note(doc, std::str::from_utf8(name).expect("utf8"))
        });
        top
    }

    fn members(doc: &[u8], top: &TopMembers) -> Option<Vec<(String, String)>> {
        let mut seen = Vec::new();
        let all = top.for_each(doc, |k, v| {
            seen.push((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
            true
        });
        (all == Some(true)).then_some(seen)
    }

    fn walked(doc: &[u8]) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        super::super::members::for_each_member_forward(doc, |k, v| {
            seen.push((
                format!("\"{}\"", String::from_utf8_lossy(k)),
                String::from_utf8_lossy(v).into_owned(),
            ));
            true
        });
        seen
    }

    #[test]
    fn finds_what_the_walk_finds() {
        for doc in [
            &br#"{"model":"m","messages":[{"role":"user","content":"a,}\"b"}]}"#[..],
            br#" { "a" : 1 , "b" :{"c":[1,2]} ,"a":"x" } "#,
            b"{\n\t\"n\":-1.5e3\r\n}\n",
            br#"{"x":null,"y":true,"z":"}"}"#,
        ] {
            let top = noted(doc);
            assert_eq!(
                members(doc, &top),
                Some(walked(doc)),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn a_name_not_taken_from_the_document_is_refused() {
        let doc = br#"{"model":"m"}"#;
        let mut top = TopMembers::new();
        assert!(!top.note(doc, "model"));
        // Inside the document but not between quotes.
        let inner = std::str::from_utf8(&doc[2..5]).expect("utf8");
        assert!(!top.note(doc, inner));
        assert_eq!(top.for_each(doc, |_, _| true), None, "no notes: unknown");
    }

    #[test]
    fn too_many_members_are_refused() {
        let body: String = (0..=TopMembers::MAX)
            .map(|i| format!("\"k{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let doc = format!("{{{body}}}");
        let mut top = TopMembers::new();
        let mut all = true;
        super::super::members::for_each_member_forward(doc.as_bytes(), |name, _| {
            all &= top.note(doc.as_bytes(), std::str::from_utf8(name).expect("utf8"));
            true
        });
        assert!(!all);
    }

    /// Notes are made by the gateway, not read from input; still, no set of offsets makes a
    /// walk panic or hand over a slice outside the document.
    #[test]
    fn arbitrary_notes_never_panic() {
        let mut r = fastrand::Rng::with_seed(7);
        let docs: [&[u8]; 4] = [
            br#"{"model":"m","messages":[{"role":"user"}],"n":1}"#,
            br#"{ "a" : "}" , "b":[ ] }"#,
            b"{}",
            b"",
        ];
        for _ in 0..20_000 {
            let doc = docs[r.usize(0..docs.len())];
            let mut notes = TopMembers::new();
            for _ in 0..r.usize(0..5) {
                notes.push(r.usize(0..doc.len() + 3));
            }
            let _ = notes.for_each(doc, |k, v| {
                assert!(!k.is_empty() && k.len() + v.len() <= doc.len());
                true
            });
            let _ = notes.rebased(doc, r.usize(0..doc.len() + 3));
        }
    }

    #[test]
    fn notes_of_another_document_fail_instead_of_misreading() {
        let doc = br#"{"model":"m","messages":[]}"#;
        let top = noted(doc);
        // Shorter, or with other separators: the walk stops rather than slice wrongly.
        let mut called = false;
        for other in [
            &br#"{"model":"m"}"#[..],
            br#"{"model":"m"   "messages":[]}"#,
        ] {
            assert_eq!(
                top.for_each(other, |_, _| {
                    called = true;
                    true
                }),
                None
            );
        }
        assert!(!called, "nothing is handed over from notes that do not fit");
    }
}
