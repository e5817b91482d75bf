//! Body framing (Content-Length, chunked, until-close) for both directions, and the buffered
//! read helpers everything else uses.
//!
//! The chunked decoder is our own, over httparse's chunk-size and field-line parsers: it ignores
//! chunk extensions and discards trailer fields (RFC 9112 §7.1), bounding both, where
//! monoio-http's refuses them.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

use super::head::{Headers, MAX_HEADERS};

/// Longest chunk-size line (size, extensions, CRLF), as Go's net/http allows.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Most trailer fields in one chunked body.
pub const MAX_TRAILER_FIELDS: usize = MAX_HEADERS;

/// Default budget for a chunked body's extensions and trailer section together (see
/// [`BodyDecoder::with_metadata_limit`]); the same as the upstream response head limit.
pub const DEFAULT_METADATA_LIMIT: usize = 64 * 1024;

/// Reads once from `io`, appending to `buf`. Returns the number of bytes read (0 at EOF).
///
/// If the returned future is dropped mid-read the buffer is lost with it; callers only drop it
/// when they are about to abandon the connection.
pub async fn read_more<IO: AsyncReadRent>(
    io: &mut IO,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    read_into(io, buf, owned, len..cap).await
}

/// Like [`read_more`], but reads no more than `limit` bytes (a bounded buffer must not grow by
/// whatever spare capacity it happens to have).
pub async fn read_at_most<IO: AsyncReadRent>(
    io: &mut IO,
    buf: &mut BytesMut,
    limit: usize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < limit {
        buf.reserve(limit);
    }
    let owned = std::mem::take(buf);
    let len = owned.len();
    read_into(io, buf, owned, len..len + limit).await
}

async fn read_into<IO: AsyncReadRent>(
    io: &mut IO,
    buf: &mut BytesMut,
    owned: BytesMut,
    range: std::ops::Range<usize>,
) -> io::Result<usize> {
    let (res, slice) = io.read(owned.slice_mut(range)).await;
    *buf = slice.into_inner();
    res
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("invalid Content-Length")]
    BadLength,
    #[error("malformed Transfer-Encoding")]
    BadTransferEncoding,
    #[error("chunked is not the final transfer coding, or is applied twice")]
    ChunkedNotFinal,
    #[error("transfer coding not implemented (only chunked is)")]
    UnsupportedCoding,
    #[error("both Content-Length and Transfer-Encoding present")]
    Ambiguous,
    #[error("malformed chunked encoding")]
    BadChunk,
    #[error("chunk size line longer than {MAX_CHUNK_LINE} bytes")]
    ChunkLineTooLong,
    #[error("chunk extensions and trailer fields exceed their size limit")]
    MetadataTooLarge,
    #[error("more than {MAX_TRAILER_FIELDS} trailer fields")]
    TooManyTrailers,
    #[error("malformed trailer field")]
    BadTrailer,
}

/// How a message body is delimited.
pub enum BodyDecoder {
    Empty,
    Length {
        remaining: usize,
    },
    Chunked(ChunkedDecoder),
    /// A response body that ends when the server closes the connection.
    UntilClose {
        done: bool,
    },
}

/// One step of decoding.
#[derive(Debug)]
pub enum Step {
    Data(Bytes),
    NeedMore,
    End,
}

/// What the Transfer-Encoding fields of a message say, read as one list (RFC 9110 §5.3).
#[derive(Debug, Default)]
struct Codings {
    any: bool,
    /// How many times `chunked` appears, and whether it is the last coding.
    chunked: usize,
    chunked_last: bool,
    identity: bool,
    /// A coding other than `chunked` and `identity`.
    other: bool,
}

impl Codings {
    fn parse(headers: &Headers) -> Result<Self, FramingError> {
        let mut c = Codings::default();
        for element in headers
            .get_all("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
        {
            let element = trim_ows(element);
            // RFC 9110 §5.6.1: empty list elements are ignored.
            if element.is_empty() {
                continue;
            }
            let (name, params) = match memchr::memchr(b';', element) {
                Some(i) => (trim_ows(&element[..i]), true),
                None => (element, false),
            };
            if !is_token(name) {
                return Err(FramingError::BadTransferEncoding);
            }
            c.any = true;
            c.chunked_last = false;
            if name.eq_ignore_ascii_case(b"chunked") {
                // `chunked` takes no parameters; one would be a framing nobody agrees on.
                if params {
                    return Err(FramingError::BadTransferEncoding);
                }
                c.chunked += 1;
                c.chunked_last = true;
            } else if name.eq_ignore_ascii_case(b"identity") {
                c.identity = true;
            } else {
                c.other = true;
            }
        }
        if !c.any {
            return Err(FramingError::BadTransferEncoding);
        }
        Ok(c)
    }

    /// The framing these codings give a message, or why there is none we can decode. Requests:
    /// only `chunked` alone (RFC 9112 §6.1: 501 for a coding not implemented; §6.3: 400 when
    /// chunked is not final). Responses: `identity` (the no-op coding) is also accepted, alone
    /// meaning read-until-close (§6.3 rule 3), as before.
    fn framing(&self, response: bool) -> Result<BodyDecoder, FramingError> {
        if self.chunked > 1 || (self.chunked == 1 && !self.chunked_last) {
            return Err(FramingError::ChunkedNotFinal);
        }
        if self.other || (self.identity && !response) {
            return Err(FramingError::UnsupportedCoding);
        }
        Ok(if self.chunked == 1 {
            BodyDecoder::Chunked(ChunkedDecoder::new(DEFAULT_METADATA_LIMIT))
        } else {
            BodyDecoder::UntilClose { done: false }
        })
    }
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t');
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(a), Some(b)) => &s[a..=b],
        _ => &[],
    }
}

/// RFC 9110 §5.6.2 token.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn content_length(v: &[u8]) -> Result<usize, FramingError> {
    crate::util::parse_decimal(v)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(FramingError::BadLength)
}

impl BodyDecoder {
    /// The framing of a message with these headers. `until_close` is what a response without
    /// length information means (requests without one have no body); it also marks the
    /// message as a response for the Transfer-Encoding rules.
    pub fn from_headers(headers: &Headers, until_close: bool) -> Result<Self, FramingError> {
        let mut cls = headers.get_all("content-length");
        let cl = cls.next();
        // Repeated framing headers that disagree are how requests get smuggled: refuse them.
        if cls.any(|other| Some(other) != cl) {
            return Err(FramingError::BadLength);
        }
        if headers.get("transfer-encoding").is_some() {
            if cl.is_some() {
                return Err(FramingError::Ambiguous);
            }
            return Codings::parse(headers)?.framing(until_close);
        }
        if let Some(cl) = cl {
            let n = content_length(cl)?;
            return Ok(if n == 0 {
                Self::Empty
            } else {
                Self::Length { remaining: n }
            });
        }
        Ok(if until_close {
            Self::UntilClose { done: false }
        } else {
            Self::Empty
        })
    }

    /// Bounds the bytes of chunk extensions and trailer fields in a chunked body (the server
    /// uses its head limit). No effect on other framings.
    pub fn with_metadata_limit(mut self, bytes: usize) -> Self {
        if let Self::Chunked(c) = &mut self {
            c.metadata_left = bytes;
        }
        self
    }

    /// The declared length, if known up front.
    pub fn known_length(&self) -> Option<usize> {
        match self {
            Self::Empty => Some(0),
            Self::Length { remaining } => Some(*remaining),
            _ => None,
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Length { remaining } => *remaining == 0,
            Self::Chunked(c) => c.is_done(),
            Self::UntilClose { done } => *done,
        }
    }

    /// Whether the connection can carry another message after this body.
    pub fn reusable(&self) -> bool {
        !matches!(self, Self::UntilClose { .. }) && self.is_done()
    }

    /// Takes the next piece of body from `buf`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, FramingError> {
        match self {
            Self::Empty => Ok(Step::End),
            Self::Length { remaining } => {
                if *remaining == 0 {
                    return Ok(Step::End);
                }
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (*remaining).min(buf.len());
                *remaining -= n;
                Ok(Step::Data(buf.split_to(n).freeze()))
            }
            Self::Chunked(c) => c.step(buf),
            Self::UntilClose { done } => {
                if *done {
                    Ok(Step::End)
                } else if buf.is_empty() {
                    Ok(Step::NeedMore)
                } else {
                    Ok(Step::Data(buf.split().freeze()))
                }
            }
        }
    }

    /// Tells the decoder the peer closed the connection. Returns whether that is a clean end.
    pub fn eof(&mut self) -> bool {
        match self {
            Self::UntilClose { done } => {
                *done = true;
                true
            }
            other => other.is_done(),
        }
    }
}

/// Where a chunked body is (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer field lines up to an empty line.
    Trailers,
    Done,
}

/// The chunked transfer coding. Chunk data is split off the read buffer without copying; the
/// framing around it is parsed in place.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// What extensions and trailer lines may still take, in bytes.
    metadata_left: usize,
    trailer_fields: usize,
}

impl ChunkedDecoder {
    fn new(metadata_limit: usize) -> Self {
        Self {
            state: ChunkState::Size,
            metadata_left: metadata_limit,
            trailer_fields: 0,
        }
    }

    fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, FramingError> {
        loop {
            match self.state {
                ChunkState::Size => match self.size_line(buf)? {
                    None => return Ok(Step::NeedMore),
                    Some(0) => self.state = ChunkState::Trailers,
                    Some(n) => self.state = ChunkState::Data(n),
                },
                ChunkState::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = remaining.min(buf.len());
                    self.state = if n == remaining {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(remaining - n)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                ChunkState::DataEnd => {
                    if !take_crlf(buf)? {
                        return Ok(Step::NeedMore);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    if !self.trailers(buf)? {
                        return Ok(Step::NeedMore);
                    }
                    self.state = ChunkState::Done;
                }
                ChunkState::Done => return Ok(Step::End),
            }
        }
    }

    /// Consumes a complete chunk-size line and returns the size; `None` if the line is not
    /// complete yet.
    fn size_line(&mut self, buf: &mut BytesMut) -> Result<Option<usize>, FramingError> {
        if let Some((len, size)) = plain_size_line(buf) {
            buf.advance(len);
            return Ok(Some(size));
        }
        let (len, size) = match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete(v)) => v,
            // Partial means every byte so far belongs to the line.
            Ok(httparse::Status::Partial) if buf.len() >= MAX_CHUNK_LINE => {
                return Err(FramingError::ChunkLineTooLong)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(FramingError::BadChunk),
        };
        if len > MAX_CHUNK_LINE {
            return Err(FramingError::ChunkLineTooLong);
        }
        let line = &buf[..len - 2];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        // httparse reads a line without digits as size 0, which would end the body where a
        // stricter peer sees a malformed one.
        if digits == 0 {
            return Err(FramingError::BadChunk);
        }
        let rest = &line[digits..];
        if !rest.is_empty() {
            // httparse lets any octet through in extensions; a bare LF or another control
            // character there is where peers disagree about where the line ends.
            if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(FramingError::BadChunk);
            }
            self.spend(rest.len())?;
        }
        let size = usize::try_from(size).map_err(|_| FramingError::BadChunk)?;
        buf.advance(len);
        Ok(Some(size))
    }

    /// Consumes complete trailer field lines (validated, then discarded); true once the empty
    /// line that ends the body is consumed.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<bool, FramingError> {
        loop {
            let Some(lf) = memchr::memchr(b'\n', buf) else {
                // A lone CR may be the start of the empty line, which costs nothing.
                if buf.len() > self.metadata_left && buf[..] != b"\r"[..] {
                    return Err(FramingError::MetadataTooLarge);
                }
                return Ok(false);
            };
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err(FramingError::BadTrailer);
            }
            let len = lf + 1;
            if len == 2 {
                buf.advance(2);
                return Ok(true);
            }
            self.spend(len)?;
            self.trailer_fields += 1;
            if self.trailer_fields > MAX_TRAILER_FIELDS {
                return Err(FramingError::TooManyTrailers);
            }
            if !is_field_line(&buf[..len]) {
                return Err(FramingError::BadTrailer);
            }
            buf.advance(len);
        }
    }

    fn spend(&mut self, n: usize) -> Result<(), FramingError> {
        self.metadata_left = self
            .metadata_left
            .checked_sub(n)
            .ok_or(FramingError::MetadataTooLarge)?;
        Ok(())
    }
}

/// The chunk-size line almost every sender writes (hex digits, CRLF, no extension), parsed in
/// one pass: its length with the CRLF, and the size. `None` for anything else (an extension,
/// an incomplete line, more than 15 digits, a bad byte), which the general parse then takes.
fn plain_size_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut size = 0usize;
    for (i, &b) in buf.iter().enumerate().take(16) {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            b'\r' if i > 0 => return (buf.get(i + 1) == Some(&b'\n')).then_some((i + 2, size)),
            _ => return None,
        };
        size = size << 4 | usize::from(digit);
    }
    None
}

/// Consumes the CRLF that ends a chunk's data; false if it has not fully arrived.
fn take_crlf(buf: &mut BytesMut) -> Result<bool, FramingError> {
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        Ok(true)
    } else if buf.is_empty() || buf[..] == b"\r"[..] {
        Ok(false)
    } else {
        Err(FramingError::BadChunk)
    }
}

/// Whether `line` (ending in CRLF, no other LF) is one well-formed field line. httparse parses
/// it as the first field of a section and then waits for more: `Partial` is the valid outcome.
fn is_field_line(line: &[u8]) -> bool {
    let mut one = [httparse::EMPTY_HEADER; 1];
    matches!(
        httparse::parse_headers(line, &mut one),
        Ok(httparse::Status::Partial)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(pairs)
    }

    fn chunked() -> BodyDecoder {
        BodyDecoder::from_headers(&headers(&[("transfer-encoding", "chunked")]), false).unwrap()
    }

    fn drain(d: &mut BodyDecoder, input: &[u8]) -> (Vec<u8>, bool) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.step(&mut buf).unwrap() {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::NeedMore => return (out, false),
                Step::End => return (out, true),
            }
        }
    }

    #[test]
    fn the_plain_size_line_reads_what_the_general_parse_reads() {
        // Whatever the one-pass parse takes, httparse reads the same length and size, and the
        // general path's own checks accept it (digits, no extension).
        let alphabet = b"0123456789abcdefABCDEFgG;= \t\r\n\x00x";
        let mut rng = fastrand::Rng::with_seed(11);
        let mut taken = 0;
        for _ in 0..100_000 {
            let mut line: Vec<u8> = (0..rng.usize(0..24))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            if rng.bool() {
                let at = rng.usize(..=line.len().min(17));
                line.truncate(at);
                line.extend_from_slice(b"\r\n");
            }
            let Some((len, size)) = plain_size_line(&line) else {
                continue;
            };
            taken += 1;
            let Ok(httparse::Status::Complete((hlen, hsize))) = httparse::parse_chunk_size(&line)
            else {
                panic!("httparse refuses {:?}", String::from_utf8_lossy(&line));
            };
            assert_eq!(
                (len, size as u64),
                (hlen, hsize),
                "{:?}",
                String::from_utf8_lossy(&line)
            );
            assert!(line[..len - 2].iter().all(u8::is_ascii_hexdigit));
            assert!(len > 2);
        }
        assert!(taken > 1_000, "only {taken} lines took the one-pass parse");
        assert_eq!(
            plain_size_line(b"ffffffffffffffff\r\n"),
            None,
            "16 digits: the general path"
        );
        assert_eq!(
            plain_size_line(b"fffffffffffffff\r\n"),
            Some((17, 0x0fff_ffff_ffff_ffff))
        );
        assert_eq!(plain_size_line(b"1a;x=y\r\n"), None);
        assert_eq!(plain_size_line(b"\r\n"), None);
        assert_eq!(plain_size_line(b"1A\r"), None, "incomplete");
    }

    /// A decoded body and the bytes left after it.
    type Decoded = (Vec<u8>, Vec<u8>);

    /// Decodes `input` as a chunked body, `None` if the body is incomplete.
    fn decode_all(input: &[u8]) -> Result<Option<Decoded>, FramingError> {
        let mut d = chunked();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.step(&mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::NeedMore => return Ok(None),
                Step::End => return Ok(Some((out, buf.to_vec()))),
            }
        }
    }

    /// Feeds `input` in pieces cut at `cuts`; the body, whether it ended, what is left.
    fn decode_in_pieces(
        input: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, bool, Vec<u8>), FramingError> {
        let mut d = chunked();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&input.len())) {
            buf.extend_from_slice(&input[from..to]);
            from = to;
            loop {
                match d.step(&mut buf)? {
                    Step::Data(b) => out.extend_from_slice(&b),
                    Step::NeedMore => break,
                    Step::End => {
                        buf.extend_from_slice(&input[from..]);
                        return Ok((out, true, buf.to_vec()));
                    }
                }
            }
        }
        Ok((out, false, buf.to_vec()))
    }

    const WITH_EVERYTHING: &[u8] = b"5;foo=bar\r\nhello\r\n6 ; a ; b=\"x;y\"\r\n world\r\n\
        0;last\r\nX-Checksum: abc\r\nx-empty:\r\n\r\nGET / HTTP/1.1\r\n";

    #[test]
    fn chunked_and_length() {
        let mut d = chunked();
        let (out, end) = drain(&mut d, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        assert_eq!((out.as_slice(), end), (&b"hello world"[..], true));
        assert!(d.reusable());
        let mut d = BodyDecoder::from_headers(&headers(&[("content-length", "5")]), false).unwrap();
        assert_eq!(d.known_length(), Some(5));
        let (out, end) = drain(&mut d, b"hel");
        assert_eq!((out.as_slice(), end), (&b"hel"[..], false));
    }

    #[test]
    fn extensions_are_ignored_and_trailers_discarded() {
        let (body, rest) = decode_all(WITH_EVERYTHING).unwrap().unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(rest, b"GET / HTTP/1.1\r\n", "what follows the body stays");
        let data = "x".repeat(0x41);
        let input = format!("41;foo=bar\r\n{data}\r\n0\r\nA: 1\r\nB: 2\r\n\r\n");
        assert_eq!(
            decode_all(input.as_bytes()).unwrap().unwrap().0,
            data.as_bytes()
        );
    }

    #[test]
    fn any_split_gives_the_same_result() {
        let inputs: [&[u8]; 3] = [
            WITH_EVERYTHING,
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"1\r\na\r\n0\r\n\r\n",
        ];
        for input in inputs {
            let whole = decode_in_pieces(input, &[]).unwrap();
            assert!(whole.1, "{}", String::from_utf8_lossy(input));
            // One byte at a time, and every two-piece split.
            let every: Vec<usize> = (1..input.len()).collect();
            assert_eq!(decode_in_pieces(input, &every).unwrap(), whole);
            for cut in 1..input.len() {
                assert_eq!(
                    decode_in_pieces(input, &[cut]).unwrap(),
                    whole,
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn malformed_sizes_are_refused() {
        let bad: [&[u8]; 14] = [
            b"\r\n",
            b";ext\r\n",
            b" 5\r\n",
            b"g\r\nhello\r\n",
            b"5 5\r\nhello\r\n",
            b"-5\r\nhello\r\n",
            b"+5\r\nhello\r\n",
            b"0x5\r\nhello\r\n",
            b"fffffffffffffffff\r\n",
            b"5\nhello\r\n",
            b"5;a\nb\r\nhello\r\n",
            b"5;a\x00b\r\nhello\r\n",
            b"5\rhello\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
        ];
        for input in bad {
            // Followed by a complete ending, so that only a refusal makes this an error.
            let input = [input, b"0\r\n\r\n"].concat();
            assert!(
                decode_all(&input).is_err(),
                "{:?}",
                String::from_utf8_lossy(&input)
            );
        }
        // Refused even before the line is complete, where the bytes already say so.
        let mut d = chunked();
        assert_eq!(
            d.step(&mut BytesMut::from(&b"zz"[..])).err(),
            Some(FramingError::BadChunk)
        );
    }

    #[test]
    fn malformed_trailers_are_refused() {
        let bad: [&[u8]; 5] = [
            b"0\r\nbad line\r\n\r\n",
            b"0\r\nA: b\n\r\n",
            b"0\r\nA: b\r\n c\r\n\r\n",
            b"0\r\nA: b\rc\r\n\r\n",
            b"0\r\n\n",
        ];
        for input in bad {
            assert!(
                decode_all(input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn oversize_lines_and_metadata_are_refused() {
        // A size line that never ends is refused once it passes the limit, not buffered.
        let mut d = chunked();
        let mut long = b"5;".to_vec();
        long.resize(MAX_CHUNK_LINE, b'x');
        assert_eq!(
            d.step(&mut BytesMut::from(&long[..])).err(),
            Some(FramingError::ChunkLineTooLong)
        );
        long.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            decode_all(&long).err(),
            Some(FramingError::ChunkLineTooLong)
        );
        // Extensions and trailers share one budget per body.
        let limited = |input: &[u8], limit: usize| {
            let mut d = chunked().with_metadata_limit(limit);
            let mut buf = BytesMut::from(input);
            loop {
                match d.step(&mut buf)? {
                    Step::Data(_) => {}
                    Step::NeedMore => return Ok(false),
                    Step::End => return Ok(true),
                }
            }
        };
        let ext = b"1;abcdefgh\r\nx\r\n".repeat(10);
        let body = [&ext[..], b"0\r\n\r\n"].concat();
        assert_eq!(limited(&body, 90), Ok(true));
        assert_eq!(limited(&body, 89), Err(FramingError::MetadataTooLarge));
        let trailers = b"0\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(limited(trailers, 12), Ok(true));
        assert_eq!(limited(trailers, 11), Err(FramingError::MetadataTooLarge));
        // A trailer line that never ends is refused at the budget too.
        assert_eq!(
            limited(b"0\r\nA: 123456", 8),
            Err(FramingError::MetadataTooLarge)
        );
        assert_eq!(limited(b"0\r\nA: 12345", 8), Ok(false));
        // The empty line costs nothing, even split from its LF.
        assert_eq!(limited(b"0\r\n\r", 0), Ok(false));
        let many: Vec<u8> = (0..=MAX_TRAILER_FIELDS)
            .flat_map(|i| format!("t{i}: v\r\n").into_bytes())
            .collect();
        let input = [&b"0\r\n"[..], &many, b"\r\n"].concat();
        assert_eq!(
            decode_all(&input).err(),
            Some(FramingError::TooManyTrailers)
        );
    }

    fn framing(te: &[&str], response: bool) -> Result<&'static str, FramingError> {
        let pairs: Vec<_> = te.iter().map(|v| ("transfer-encoding", *v)).collect();
        Ok(
            match BodyDecoder::from_headers(&headers(&pairs), response)? {
                BodyDecoder::Chunked(_) => "chunked",
                BodyDecoder::UntilClose { .. } => "until-close",
                BodyDecoder::Empty | BodyDecoder::Length { .. } => "length",
            },
        )
    }

    #[test]
    fn transfer_codings_of_requests() {
        use FramingError::*;
        let cases: [(&[&str], Result<&str, FramingError>); 13] = [
            (&["chunked"], Ok("chunked")),
            (&["Chunked"], Ok("chunked")),
            (&["chunked, "], Ok("chunked")),
            (&["identity"], Err(UnsupportedCoding)),
            (&["gzip"], Err(UnsupportedCoding)),
            (&["gzip, chunked"], Err(UnsupportedCoding)),
            (&["gzip", "chunked"], Err(UnsupportedCoding)),
            (&["chunked, identity"], Err(ChunkedNotFinal)),
            (&["chunked, gzip"], Err(ChunkedNotFinal)),
            (&["chunked", "chunked"], Err(ChunkedNotFinal)),
            (&[""], Err(BadTransferEncoding)),
            (&["chunked;x=1"], Err(BadTransferEncoding)),
            (&["chu nked"], Err(BadTransferEncoding)),
        ];
        for (te, want) in cases {
            assert_eq!(framing(te, false), want, "{te:?}");
        }
    }

    #[test]
    fn transfer_codings_of_responses() {
        use FramingError::*;
        assert_eq!(framing(&["chunked"], true), Ok("chunked"));
        assert_eq!(framing(&["identity"], true), Ok("until-close"));
        assert_eq!(framing(&["identity, chunked"], true), Ok("chunked"));
        assert_eq!(framing(&["gzip, chunked"], true), Err(UnsupportedCoding));
        assert_eq!(framing(&["gzip"], true), Err(UnsupportedCoding));
        assert_eq!(framing(&["chunked, gzip"], true), Err(ChunkedNotFinal));
    }

    #[test]
    fn rejects_ambiguous_and_bad_lengths() {
        assert_eq!(
            BodyDecoder::from_headers(
                &headers(&[("content-length", "5"), ("transfer-encoding", "chunked")]),
                false
            )
            .err(),
            Some(FramingError::Ambiguous)
        );
        assert!(BodyDecoder::from_headers(&headers(&[("content-length", "+5")]), false).is_err());
        assert!(
            BodyDecoder::from_headers(&headers(&[("transfer-encoding", "gzip")]), false).is_err()
        );
        let mut d = chunked();
        assert!(d.step(&mut BytesMut::from(&b"zz\r\n"[..])).is_err());
        // Repeated framing headers: equal lengths are harmless, different ones are refused.
        let same = headers(&[("content-length", "2"), ("content-length", "2")]);
        assert_eq!(
            BodyDecoder::from_headers(&same, false)
                .unwrap()
                .known_length(),
            Some(2)
        );
        let differ = headers(&[("content-length", "2"), ("content-length", "3")]);
        assert!(BodyDecoder::from_headers(&differ, false).is_err());
        let two_te = headers(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ]);
        assert!(BodyDecoder::from_headers(&two_te, false).is_err());
    }

    #[test]
    fn until_close_for_responses() {
        let mut d = BodyDecoder::from_headers(&Headers::default(), true).unwrap();
        let (out, end) = drain(&mut d, b"abc");
        assert_eq!((out.as_slice(), end), (&b"abc"[..], false));
        assert!(d.eof());
        assert!(!d.reusable());
    }
}
