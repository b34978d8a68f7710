//! oneM2M request and response primitives, independent of any protocol binding.

use std::net::IpAddr;

use serde_json::Value;

pub use crate::core::filter::{FilterCriteria, FilterOperation, FilterUsage};

use crate::error::{Error, Result, Rsc};
use crate::resource::Timestamp;
use crate::security::Principal;

/// The serializations (media types) this CSE reads and writes.
pub const SUPPORTED_MEDIA_TYPES: [&str; 2] = ["application/json", "application/vnd.onem2m-res+json"];

/// `op`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// CREATE (1).
    Create,
    /// RETRIEVE (2).
    Retrieve,
    /// UPDATE (3).
    Update,
    /// DELETE (4).
    Delete,
    /// NOTIFY (5).
    Notify,
}

impl Operation {
    /// The `op` number.
    pub fn code(self) -> u8 {
        match self {
            Operation::Create => 1,
            Operation::Retrieve => 2,
            Operation::Update => 3,
            Operation::Delete => 4,
            Operation::Notify => 5,
        }
    }

    /// The operation's name in capitals (`RETRIEVE`).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Retrieve => "RETRIEVE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Notify => "NOTIFY",
        }
    }
}

/// `drt`: how IDs in results are expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdForm {
    #[default]
    /// Structured (`drt` 1): paths of resource names.
    Structured,
    /// Unstructured (`drt` 2): resource IDs.
    Unstructured,
}

/// Who handed a request to the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Caller {
    /// This CSE itself (start-up, the remote-CSE manager, an embedder): trusted.
    #[default]
    Internal,
    /// A client or another CSE, through a protocol binding.
    Peer {
        /// Whose credentials the request carried, when the binding authenticates (HTTP
        /// Basic or Bearer); ACP rules with `acaf` apply only to such requests.
        principal: Option<Principal>,
        /// Where the request came from, when the binding knows it (ACP rules with `acip`).
        address: Option<IpAddr>,
    },
}

impl Caller {
    /// The request passed authentication.
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Caller::Peer { principal: Some(_), .. })
    }

    /// The address the request came from.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Caller::Peer { address, .. } => *address,
            Caller::Internal => None,
        }
    }
}

/// A request primitive.
#[derive(Debug, Clone)]
pub struct Request {
    /// The operation.
    pub op: Operation,
    /// `to`, as received (`cse-in/ae1`, `/id-in/cnt1`, `//sp/id-in/...`).
    pub to: String,
    /// `fr`, as received; `None` when absent or empty.
    pub originator: Option<String>,
    /// The request identifier (`X-M2M-RI`).
    pub rqi: String,
    /// The release version indicator (`X-M2M-RVI`).
    pub rvi: String,
    /// `ty` of a CREATE.
    pub ty: Option<u64>,
    /// `pc`
    pub content: Option<Value>,
    /// `rcn`: what the answer carries.
    pub rcn: Option<u8>,
    /// `drt`: how IDs in results are written.
    pub drt: IdForm,
    /// The filter criteria (discovery and result selection).
    pub filter: FilterCriteria,
    /// `atrl`: a partial RETRIEVE of these attributes only.
    pub atrl: Vec<String>,
    /// `rqet`: the request expiration time.
    pub rqet: Option<Timestamp>,
    /// `vsi`: the vendor information, echoed.
    pub vsi: Option<String>,
    /// `ec`: the event category (`X-M2M-EC`), set by this CSE on a latest-notify batch.
    pub ec: Option<u8>,
    /// The query string as received, for forwarding unchanged.
    pub query: Option<String>,
    /// The CSEs a forwarded request has passed, oldest first (HTTP `Via`), by their
    /// [`crate::core::address::Identity::hop_name`]. Loop protection.
    pub via: Vec<String>,
    /// Who handed the request to the core.
    pub caller: Caller,
    /// Whether the answer may carry its content as JSON text ([`Response::text`]) instead
    /// of a value: set by a binding that sends JSON anyway. Off by default, so that every
    /// other caller finds the content in [`Response::content`].
    pub text_answer: bool,
}

impl Request {
    /// A request of `op` to `to` from `originator`, with a fresh `rqi` and release version 4.
    pub fn new(op: Operation, to: impl Into<String>, originator: Option<&str>) -> Request {
        Request {
            op,
            to: to.into(),
            originator: originator.filter(|o| !o.is_empty()).map(str::to_string),
            rqi: crate::resource::random_id(10),
            rvi: "4".into(),
            ty: None,
            content: None,
            rcn: None,
            drt: IdForm::Structured,
            filter: FilterCriteria::default(),
            atrl: Vec::new(),
            rqet: None,
            vsi: None,
            ec: None,
            query: None,
            via: Vec::new(),
            caller: Caller::Internal,
            text_answer: false,
        }
    }
}

impl Request {
    /// Take a request parameter by its oneM2M name (`rcn`, `drt`, `atrl`, the filter
    /// criteria, ...; bindings carry them differently, the names are the same). An unknown
    /// name or a value it cannot have is a 4000 naming it; a known parameter this CSE does
    /// not serve is a 5001.
    pub fn set_parameter(&mut self, name: &str, value: &str) -> Result<()> {
        let value = value.trim();
        match name {
            "rcn" => {
                let rcn = value.parse().map_err(|_| invalid_parameter(name, value))?;
                if self.rcn.replace(rcn).is_some() {
                    return Err(Error::bad_request("request parameter rcn is given twice"));
                }
            }
            "drt" => {
                self.drt = match value {
                    "1" => IdForm::Structured,
                    "2" => IdForm::Unstructured,
                    _ => return Err(Error::bad_request(format!("drt must be 1 or 2, got {value:?}"))),
                }
            }
            // Blocking requests are all this CSE serves.
            "rt" => match value {
                "3" => {}
                "1" | "2" | "4" | "5" => {
                    return Err(Error::not_implemented(format!(
                        "response type rt={value} is not supported (only 3, blocking)"
                    )));
                }
                _ => return Err(invalid_parameter(name, value)),
            },
            "rp" | "sqi" | "ma" => {
                return Err(Error::not_implemented(format!("request parameter {name} is not supported")));
            }
            "atrl" => {
                for attribute in value.split([' ', '+']).filter(|attribute| !attribute.is_empty()) {
                    self.atrl.push(attribute.to_string());
                }
            }
            _ => {
                if !self.filter.set(name, value)? {
                    return Err(Error::bad_request(format!("unknown request parameter {name}")));
                }
            }
        }
        Ok(())
    }
}

fn invalid_parameter(name: &str, value: &str) -> Error {
    Error::bad_request(format!("request parameter {name} has an invalid value {value:?}"))
}

/// A response primitive.
#[derive(Debug, Clone)]
pub struct Response {
    /// The response status code.
    pub rsc: Rsc,
    /// The request identifier it answers.
    pub rqi: String,
    /// The release version indicator.
    pub rvi: String,
    /// The vendor information, echoed.
    pub vsi: Option<String>,
    /// The primitive content, if any.
    pub content: Option<Value>,
    /// The primitive content as JSON text, instead of `content`: only in answers to a
    /// request with [`Request::text_answer`] set (a held resource's text, made once; a next
    /// hop's answer to a forwarded request, relayed as it came).
    pub text: Option<bytes::Bytes>,
    /// For CREATE: the address of the new resource.
    pub content_location: Option<String>,
    /// `Some(next)` when the content is partial (Content Status): more results were found
    /// than one answer holds, and a request with `ofst` = `next` continues (Content Offset).
    pub partial: Option<usize>,
}

impl Response {
    /// The answer to `request`.
    pub fn new(request: &Request, rsc: Rsc, content: Option<Value>) -> Response {
        Response {
            rsc,
            rqi: request.rqi.clone(),
            rvi: request.rvi.clone(),
            vsi: request.vsi.clone(),
            content,
            text: None,
            content_location: None,
            partial: None,
        }
    }

    /// The answer to `request` that failed with `error` (its `m2m:dbg`).
    pub fn error(request: &Request, error: &Error) -> Response {
        let mut dbg = serde_json::Map::new();
        dbg.insert("m2m:dbg".into(), Value::String(error.dbg.clone()));
        Response::new(request, error.rsc, Some(Value::Object(dbg)))
    }

    /// The `m2m:dbg` text of an error response.
    pub fn dbg(&self) -> Option<&str> {
        self.content.as_ref()?.get("m2m:dbg")?.as_str()
    }

    /// Turn a non-success response into an [`Error`] with its code and text.
    pub fn into_result(self) -> Result<Response> {
        if self.rsc.is_success() {
            return Ok(self);
        }
        let dbg = self.dbg().unwrap_or("no details").to_string();
        Err(Error::new(self.rsc, dbg))
    }
}
