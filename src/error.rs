//! The one error type of the library, carrying the oneM2M Response Status Code.
//!
//! Every failure a client can see is an [`Error`] with an [`Rsc`] and a short, lowercase
//! debug text (`m2m:dbg`). The HTTP binding turns it into a response in exactly one place
//! (`http.rs`); this module knows nothing about HTTP beyond the status number of each code.

use std::fmt;

/// oneM2M Response Status Code (TS-0004 §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Rsc {
    /// 1000 ACCEPTED.
    Accepted = 1000,
    /// 2000 OK.
    Ok = 2000,
    /// 2001 CREATED.
    Created = 2001,
    /// 2002 DELETED.
    Deleted = 2002,
    /// 2004 UPDATED.
    Updated = 2004,
    /// 4000 BAD_REQUEST.
    BadRequest = 4000,
    /// 4001 RELEASE_VERSION_NOT_SUPPORTED.
    ReleaseVersionNotSupported = 4001,
    /// 4004 NOT_FOUND.
    NotFound = 4004,
    /// 4005 OPERATION_NOT_ALLOWED.
    OperationNotAllowed = 4005,
    /// 4008 REQUEST_TIMEOUT.
    RequestTimeout = 4008,
    /// 4015 UNSUPPORTED_MEDIA_TYPE.
    UnsupportedMediaType = 4015,
    /// 4102 CONTENTS_UNACCEPTABLE.
    ContentsUnacceptable = 4102,
    /// 4103 ORIGINATOR_HAS_NO_PRIVILEGE.
    OriginatorHasNoPrivilege = 4103,
    /// 4105 CONFLICT.
    Conflict = 4105,
    /// 4107 SECURITY_ASSOCIATION_REQUIRED.
    SecurityAssociationRequired = 4107,
    /// 4108 INVALID_CHILD_RESOURCE_TYPE.
    InvalidChildResourceType = 4108,
    /// 4117 ORIGINATOR_HAS_ALREADY_REGISTERED.
    OriginatorHasAlreadyRegistered = 4117,
    /// 4126 APP_RULE_VALIDATION_FAILED.
    AppRuleValidationFailed = 4126,
    /// 4127 OPERATION_DENIED_BY_REMOTE_ENTITY.
    OperationDeniedByRemoteEntity = 4127,
    /// 5000 INTERNAL_SERVER_ERROR.
    InternalServerError = 5000,
    /// 5001 NOT_IMPLEMENTED.
    NotImplemented = 5001,
    /// 5103 TARGET_NOT_REACHABLE.
    TargetNotReachable = 5103,
    /// 5105 RECEIVER_HAS_NO_PRIVILEGES.
    ReceiverHasNoPrivileges = 5105,
    /// 5106 ALREADY_EXISTS.
    AlreadyExists = 5106,
    /// 5107 REMOTE_ENTITY_NOT_REACHABLE.
    RemoteEntityNotReachable = 5107,
    /// 5203 TARGET_NOT_SUBSCRIBABLE.
    TargetNotSubscribable = 5203,
    /// 5204 SUBSCRIPTION_VERIFICATION_INITIATION_FAILED.
    SubscriptionVerificationInitiationFailed = 5204,
    /// 5207 NOT_ACCEPTABLE.
    NotAcceptable = 5207,
}

impl Rsc {
    /// All codes, for parsing a peer's `X-M2M-RSC`.
    const ALL: [Rsc; 28] = [
        Rsc::Accepted,
        Rsc::Ok,
        Rsc::Created,
        Rsc::Deleted,
        Rsc::Updated,
        Rsc::BadRequest,
        Rsc::ReleaseVersionNotSupported,
        Rsc::NotFound,
        Rsc::OperationNotAllowed,
        Rsc::RequestTimeout,
        Rsc::UnsupportedMediaType,
        Rsc::ContentsUnacceptable,
        Rsc::OriginatorHasNoPrivilege,
        Rsc::Conflict,
        Rsc::SecurityAssociationRequired,
        Rsc::InvalidChildResourceType,
        Rsc::OriginatorHasAlreadyRegistered,
        Rsc::AppRuleValidationFailed,
        Rsc::OperationDeniedByRemoteEntity,
        Rsc::InternalServerError,
        Rsc::NotImplemented,
        Rsc::TargetNotReachable,
        Rsc::ReceiverHasNoPrivileges,
        Rsc::AlreadyExists,
        Rsc::RemoteEntityNotReachable,
        Rsc::TargetNotSubscribable,
        Rsc::SubscriptionVerificationInitiationFailed,
        Rsc::NotAcceptable,
    ];

    /// The numeric code as sent in `X-M2M-RSC`.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code for a number, if this CSE knows it.
    pub fn from_code(code: u16) -> Option<Rsc> {
        Rsc::ALL.into_iter().find(|rsc| rsc.code() == code)
    }

    /// True for the 1xxx and 2xxx codes.
    pub fn is_success(self) -> bool {
        self.code() < 4000
    }

    /// The HTTP status of this code (TS-0009 as implemented by the reference CSE).
    /// One arm per code and no wildcard, so that a new code forces a decision.
    pub fn http_status(self) -> u16 {
        match self {
            Rsc::Accepted => 202,
            Rsc::Ok => 200,
            Rsc::Created => 201,
            Rsc::Deleted => 200,
            Rsc::Updated => 200,
            Rsc::BadRequest => 400,
            Rsc::ReleaseVersionNotSupported => 501,
            Rsc::NotFound => 404,
            Rsc::OperationNotAllowed => 405,
            Rsc::RequestTimeout => 504,
            Rsc::UnsupportedMediaType => 415,
            Rsc::ContentsUnacceptable => 400,
            Rsc::OriginatorHasNoPrivilege => 403,
            Rsc::Conflict => 409,
            Rsc::SecurityAssociationRequired => 403,
            Rsc::InvalidChildResourceType => 403,
            Rsc::OriginatorHasAlreadyRegistered => 403,
            Rsc::AppRuleValidationFailed => 403,
            Rsc::OperationDeniedByRemoteEntity => 403,
            Rsc::InternalServerError => 500,
            Rsc::NotImplemented => 501,
            Rsc::TargetNotReachable => 404,
            Rsc::ReceiverHasNoPrivileges => 403,
            Rsc::AlreadyExists => 409,
            Rsc::RemoteEntityNotReachable => 404,
            Rsc::TargetNotSubscribable => 403,
            Rsc::SubscriptionVerificationInitiationFailed => 500,
            Rsc::NotAcceptable => 406,
        }
    }
}

impl fmt::Display for Rsc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// A failed oneM2M operation: the status code and a text for the peer, and (for the log
/// only) the cause, which may name internal addresses and error chains.
#[derive(Debug, thiserror::Error)]
#[error("{rsc} {dbg}")]
pub struct Error {
    /// The response status code.
    pub rsc: Rsc,
    /// What the peer is told (`m2m:dbg`).
    pub dbg: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// A cause given as text: what went wrong internally, for the log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Detail(pub String);

/// A result whose failure is an [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a peer is told of an internal failure.
const INTERNAL: &str = "internal server error";

impl Error {
    /// A failure with `rsc`, telling the peer `dbg`.
    pub fn new(rsc: Rsc, dbg: impl Into<String>) -> Error {
        Error { rsc, dbg: dbg.into(), source: None }
    }

    /// Attach the cause, kept for the log.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// A 4000 failure telling the peer `dbg`.
    pub fn bad_request(dbg: impl Into<String>) -> Error {
        Error::new(Rsc::BadRequest, dbg)
    }
    /// A 4004 failure telling the peer `dbg`.
    pub fn not_found(dbg: impl Into<String>) -> Error {
        Error::new(Rsc::NotFound, dbg)
    }
    /// A 4005 (operation not allowed) failure telling the peer `dbg`.
    pub fn not_allowed(dbg: impl Into<String>) -> Error {
        Error::new(Rsc::OperationNotAllowed, dbg)
    }
    /// A 4105 failure telling the peer `dbg`.
    pub fn conflict(dbg: impl Into<String>) -> Error {
        Error::new(Rsc::Conflict, dbg)
    }
    /// A 4103 failure telling the peer `dbg`.
    pub fn no_privilege(dbg: impl Into<String>) -> Error {
        Error::new(Rsc::OriginatorHasNoPrivilege, dbg)
    }
    /// A 5103 failure telling the peer `dbg`.
    pub fn not_reachable(dbg: impl Into<String>) -> Error {
        Error::new(Rsc::TargetNotReachable, dbg)
    }
    /// A 5001 failure telling the peer `dbg`.
    pub fn not_implemented(dbg: impl Into<String>) -> Error {
        Error::new(Rsc::NotImplemented, dbg)
    }
    /// An internal failure. The text goes to the log; the peer sees a generic message.
    pub fn internal(detail: impl Into<String>) -> Error {
        Error::new(Rsc::InternalServerError, INTERNAL).with_source(Detail(detail.into()))
    }

    /// An internal failure caused by `source`: the peer sees a generic message.
    pub fn internal_from(source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::new(Rsc::InternalServerError, INTERNAL).with_source(source)
    }

    /// The direct cause, if it is a `T` (a marker a backend attached, a driver's error).
    pub fn cause<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.source.as_deref().and_then(|source| source.downcast_ref::<T>())
    }

    /// Everything known about the failure, for the log: the peer's text (unless it is the
    /// generic one of an internal failure) and the chain of causes.
    pub fn detail(&self) -> String {
        let mut parts = Vec::new();
        let mut cause = std::error::Error::source(self);
        if cause.is_none() || self.dbg != INTERNAL {
            parts.push(self.dbg.clone());
        }
        while let Some(error) = cause {
            parts.push(error.to_string());
            cause = error.source();
        }
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_maps_to_an_http_status() {
        for rsc in Rsc::ALL {
            assert_eq!(Rsc::from_code(rsc.code()), Some(rsc));
            let status = rsc.http_status();
            assert!((200..600).contains(&status), "{rsc:?} -> {status}");
        }
        assert_eq!(Rsc::TargetNotReachable.http_status(), 404);
        assert_eq!(Rsc::ReleaseVersionNotSupported.http_status(), 501);
        assert_eq!(Rsc::from_code(4242), None);
    }

    #[test]
    fn internal_details_are_not_shown_to_the_peer() {
        let error = Error::internal("sqlite disk i/o error at page 7");
        assert_eq!(error.dbg, "internal server error");
        assert!(error.detail().contains("page 7"), "{}", error.detail());
        let error = Error::not_reachable("CSE /id-mn is not reachable")
            .with_source(Detail("http://10.0.0.7:8081: refused".into()));
        assert_eq!(error.dbg, "CSE /id-mn is not reachable");
        assert!(error.detail().contains("10.0.0.7"), "{}", error.detail());
        assert_eq!(Error::not_found("no resource").dbg, "no resource");
    }
}
