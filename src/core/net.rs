//! The outbound seam: how the core sends a request to another CSE.
//!
//! The core (forwarding, registration, liveliness probes, and later notifications) names
//! no transport: it hands a [`Request`] and a point of access to an [`Outbound`], which a
//! protocol binding implements (HTTP today). A failure to reach the peer is a
//! [`TransportError`]; a peer's answer is a [`Response`], whatever its status code.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::core::request::{Request, Response};
use crate::error::{Error, Rsc};
use crate::security::Credentials;

/// The peer could not be reached, or did not give a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No connection, or it broke before an answer.
    #[error("{address} is not reachable: {reason}")]
    Unreachable {
        /// Where the request went.
        address: String,
        /// Why it did not get there.
        reason: String,
    },
    /// No answer in time (the request may have been carried out).
    #[error("{address} did not answer within {timeout:?}")]
    Timeout {
        /// Where the request went.
        address: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The peer wants other (or any) credentials from this CSE.
    #[error("{address} refused this CSE's credentials")]
    Unauthorized {
        /// Where the request went.
        address: String,
    },
    /// The answer is larger than this CSE reads.
    #[error("{address} answered with a body larger than {limit} bytes")]
    TooLarge {
        /// Where the request went.
        address: String,
        /// The most this CSE reads of an answer, in bytes.
        limit: usize,
    },
}

impl TransportError {
    /// The error a client of this CSE sees when the request for CSE `cse_id` failed this
    /// way: the status code and a generic text; the address and the cause go to the log.
    pub fn into_error(self, cse_id: &str) -> Error {
        let (rsc, text) = match &self {
            TransportError::Unreachable { .. } => (Rsc::TargetNotReachable, format!("CSE {cse_id} is not reachable")),
            TransportError::Timeout { timeout, .. } => {
                (Rsc::RequestTimeout, format!("CSE {cse_id} did not answer within {timeout:?}"))
            }
            // As a peer's refusal of credentials is mapped by oneM2M implementations.
            TransportError::Unauthorized { .. } => {
                (Rsc::InternalServerError, format!("CSE {cse_id} refused this CSE's credentials"))
            }
            TransportError::TooLarge { limit, .. } => (
                Rsc::InternalServerError,
                format!("CSE {cse_id} answered with more than {limit} bytes (http.client_max_body_size)"),
            ),
        };
        Error::new(rsc, text).with_source(self)
    }
}

/// The answer of [`Outbound::send`].
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<Response, TransportError>> + Send + 'a>>;

/// Sends requests to other CSEs. Implemented by the protocol bindings.
pub trait Outbound: Send + Sync + 'static {
    /// Send `request` to the CSE reached at `address` (one of its points of access), within
    /// `timeout`, presenting `credentials` (those of that CSE).
    fn send<'a>(
        &'a self,
        address: &'a str,
        request: &'a Request,
        timeout: Duration,
        credentials: Option<&'a Credentials>,
    ) -> Sending<'a>;

    /// How long a request to another CSE may take, unless its expiration says otherwise.
    fn timeout(&self) -> Duration;
}
