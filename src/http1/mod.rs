//! HTTP/1.1 on monoio: the server connection loop, the response writer and the client-side
//! framing, with httparse for heads and chunk framing (see `head` and `body`).
//!
//! This module knows HTTP only: no providers, no config. Both the gateway and the mock upstream
//! are [`Service`]s served by [`conn::serve`].

pub mod body;
pub mod conn;
pub mod head;
pub mod io;
pub mod response;

use std::future::Future;

use bytes::Bytes;
use http::Method;

pub use conn::ConnLimits;
pub use io::ServerIo;
pub use response::ResponseWriter;

/// A fully received request (heads and bodies are small for this API: the body is bounded by
/// `max_request_body_bytes`).
#[derive(Debug)]
pub struct Request {
    pub head: head::RequestHead,
    pub body: Bytes,
    /// `X-Request-ID` from the client (validated) or generated.
    pub request_id: String,
}

impl Request {
    pub fn method(&self) -> &Method {
        &self.head.method
    }

    pub fn path(&self) -> &str {
        self.head.path()
    }

    pub fn query(&self) -> Option<&str> {
        self.head.query()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.headers.get_str(name)
    }
}

/// Something that answers requests on a connection.
pub trait Service {
    fn call<IO: ServerIo>(
        &self,
        req: &Request,
        w: &mut ResponseWriter<'_, IO>,
    ) -> impl Future<Output = ()>;

    /// A fresh request id, used when the client sent none.
    fn next_request_id(&self) -> String;

    /// True once the server is draining: responses then carry `Connection: close`.
    fn draining(&self) -> bool {
        false
    }

    /// Called when a request is answered with an error before reaching `call` (malformed
    /// HTTP, oversized or slow body), for metrics.
    fn on_rejected(&self, _status: http::StatusCode) {}
}

/// Returns the value to echo as `X-Request-ID` if the client's is acceptable.
pub fn valid_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}
