//! oneM2M request and response primitives, independent of any protocol binding.

use serde_json::Value;

use crate::error::{Error, Result, Rsc};
use crate::resource::Timestamp;
use crate::security::Principal;

/// `op`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Retrieve,
    Update,
    Delete,
    Notify,
}

impl Operation {
    pub fn code(self) -> u8 {
        match self {
            Operation::Create => 1,
            Operation::Retrieve => 2,
            Operation::Update => 3,
            Operation::Delete => 4,
            Operation::Notify => 5,
        }
    }

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
    Structured,
    Unstructured,
}

/// The filter criteria this CSE evaluates (`fc`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterCriteria {
    /// `fu`: 1 discovery, 2 conditional retrieval.
    pub fu: Option<u8>,
    /// `ty`: any of these types.
    pub ty: Vec<u64>,
    /// `lbl`: any of these labels.
    pub lbl: Vec<String>,
    /// `rn`: this resource name.
    pub rn: Option<String>,
    /// `lim`: at most this many results.
    pub lim: Option<usize>,
    /// `lvl`: at most this many levels below the target.
    pub lvl: Option<usize>,
    /// `ofst`: skip this many results.
    pub ofst: Option<usize>,
}

impl FilterCriteria {
    pub fn is_discovery(&self) -> bool {
        self.fu == Some(1)
    }
}

/// Who handed a request to the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Caller {
    /// This CSE itself (start-up, the remote-CSE manager, an embedder): trusted.
    #[default]
    Internal,
    /// A client or another CSE, through a protocol binding. `principal`: whose credentials
    /// the request carried, when the binding authenticates (HTTP Basic or Bearer); ACP
    /// rules with `acaf` apply only to such requests.
    Peer { principal: Option<Principal> },
}

impl Caller {
    /// The request passed authentication.
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Caller::Peer { principal: Some(_) })
    }
}

/// A request primitive.
#[derive(Debug, Clone)]
pub struct Request {
    pub op: Operation,
    /// `to`, as received (`cse-in/ae1`, `/id-in/cnt1`, `//sp/id-in/...`).
    pub to: String,
    /// `fr`, as received; `None` when absent or empty.
    pub originator: Option<String>,
    pub rqi: String,
    pub rvi: String,
    /// `ty` of a CREATE.
    pub ty: Option<u64>,
    /// `pc`
    pub content: Option<Value>,
    pub rcn: Option<u8>,
    pub drt: IdForm,
    pub filter: FilterCriteria,
    /// `rqet`: the request expiration time.
    pub rqet: Option<Timestamp>,
    pub vsi: Option<String>,
    /// The query string as received, for forwarding unchanged.
    pub query: Option<String>,
    /// The CSEs a forwarded request has passed, oldest first (HTTP `Via`), by their
    /// [`crate::address::Identity::hop_name`]. Loop protection.
    pub via: Vec<String>,
    /// Who handed the request to the core.
    pub caller: Caller,
}

impl Request {
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
            rqet: None,
            vsi: None,
            query: None,
            via: Vec::new(),
            caller: Caller::Internal,
        }
    }
}

/// A response primitive.
#[derive(Debug, Clone)]
pub struct Response {
    pub rsc: Rsc,
    pub rqi: String,
    pub rvi: String,
    pub vsi: Option<String>,
    pub content: Option<Value>,
    /// For CREATE: the address of the new resource.
    pub content_location: Option<String>,
}

impl Response {
    pub fn new(request: &Request, rsc: Rsc, content: Option<Value>) -> Response {
        Response {
            rsc,
            rqi: request.rqi.clone(),
            rvi: request.rvi.clone(),
            vsi: request.vsi.clone(),
            content,
            content_location: None,
        }
    }

    pub fn error(request: &Request, error: &Error) -> Response {
        let mut dbg = serde_json::Map::new();
        dbg.insert("m2m:dbg".into(), Value::String(error.public_dbg().to_string()));
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
