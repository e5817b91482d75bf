//! Body framing (Content-Length, chunked, until-close) for both directions, over monoio-http's
//! chunked decoder, and the buffered read helper everything else uses.

use std::io;

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio_codec::{Decoded, Decoder};
use monoio_http::h1::codec::decoder::ChunkedBodyDecoder;

use super::head::Headers;

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
    let (res, slice) = io.read(owned.slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    res
}

#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("invalid Content-Length")]
    BadLength,
    #[error("unsupported Transfer-Encoding")]
    BadTransferEncoding,
    #[error("both Content-Length and Transfer-Encoding present")]
    Ambiguous,
    #[error("malformed chunked encoding")]
    BadChunk,
}

/// How a message body is delimited.
pub enum BodyDecoder {
    Empty,
    Length {
        remaining: usize,
    },
    Chunked {
        inner: ChunkedBodyDecoder,
        done: bool,
    },
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

impl BodyDecoder {
    /// The framing of a message with these headers. `until_close` is what a response without
    /// length information means (requests without one have no body).
    pub fn from_headers(headers: &Headers, until_close: bool) -> Result<Self, FramingError> {
        let mut tes = headers.get_all("transfer-encoding");
        let te = tes.next();
        let mut cls = headers.get_all("content-length");
        let cl = cls.next();
        // Repeated framing headers that disagree are how requests get smuggled: refuse them.
        if tes.next().is_some() {
            return Err(FramingError::BadTransferEncoding);
        }
        if cls.any(|other| Some(other) != cl) {
            return Err(FramingError::BadLength);
        }
        if let Some(te) = te {
            if cl.is_some() {
                return Err(FramingError::Ambiguous);
            }
            if te.eq_ignore_ascii_case(b"chunked") {
                return Ok(Self::Chunked {
                    inner: ChunkedBodyDecoder::default(),
                    done: false,
                });
            }
            if !te.eq_ignore_ascii_case(b"identity") {
                return Err(FramingError::BadTransferEncoding);
            }
        }
        if let Some(cl) = cl {
            let n = std::str::from_utf8(cl)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or(FramingError::BadLength)?;
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
            Self::Chunked { done, .. } | Self::UntilClose { done } => *done,
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
            Self::Chunked { inner, done } => {
                if *done {
                    return Ok(Step::End);
                }
                match inner.decode(buf).map_err(|_| FramingError::BadChunk)? {
                    Decoded::Some(Some(data)) => Ok(Step::Data(data)),
                    Decoded::Some(None) => {
                        *done = true;
                        Ok(Step::End)
                    }
                    Decoded::Insufficient | Decoded::InsufficientAtLeast(_) => Ok(Step::NeedMore),
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(pairs)
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
    fn chunked_and_length() {
        let mut d = BodyDecoder::from_headers(&headers(&[("transfer-encoding", "chunked")]), false)
            .unwrap();
        let (out, end) = drain(&mut d, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        assert_eq!((out.as_slice(), end), (&b"hello world"[..], true));
        let mut d = BodyDecoder::from_headers(&headers(&[("content-length", "5")]), false).unwrap();
        assert_eq!(d.known_length(), Some(5));
        let (out, end) = drain(&mut d, b"hel");
        assert_eq!((out.as_slice(), end), (&b"hel"[..], false));
    }

    #[test]
    fn rejects_ambiguous_and_bad_lengths() {
        assert!(BodyDecoder::from_headers(
            &headers(&[("content-length", "5"), ("transfer-encoding", "chunked")]),
            false
        )
        .is_err());
        assert!(BodyDecoder::from_headers(&headers(&[("content-length", "+5")]), false).is_err());
        assert!(
            BodyDecoder::from_headers(&headers(&[("transfer-encoding", "gzip")]), false).is_err()
        );
        let mut d = BodyDecoder::from_headers(&headers(&[("transfer-encoding", "chunked")]), false)
            .unwrap();
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
