//! The upper tester interface (oneM2M TS-0019) at `POST /__ut__`, for conformance test
//! systems, when `[http] enable_upper_tester` is on (off by default). Authenticated like
//! every request of this binding.
//!
//! - `X-M2M-UTCMD: <command> [argument]`: `Status` (`RUNNING`), `GetConfig <key>` (a
//!   configuration value, by this CSE's key or the reference CSE's name for it),
//!   `testCaseStart <name>` and `testCaseEnd <name>` (a line in the log). The result
//!   comes back in `X-M2M-UTRSP`, with `X-M2M-RSC: 2000`; an unknown command or key is
//!   HTTP 400 with `X-M2M-RSC: 4000` and the reason in `X-M2M-UTRSP`.
//! - Otherwise the body is a request primitive (`{"m2m:rqp": {op, to, fr, rqi, rvi, ty,
//!   pc, rcn, drt}}`) that this CSE carries out as if received; the answer is the response
//!   primitive (`{"m2m:rsp": {rsc, rqi, rvi, pc}}`).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::core::Cse;
use crate::core::request::{Caller, Operation, Request};

const X_M2M_UTCMD: &str = "x-m2m-utcmd";
const X_M2M_UTRSP: &str = "x-m2m-utrsp";

/// Handle one upper tester request (authenticated already), from `caller`.
pub(super) async fn upper_tester(cse: &Cse, caller: Caller, headers: &HeaderMap, body: Body) -> Response {
    if let Some(command) = headers.get(X_M2M_UTCMD).and_then(|value| value.to_str().ok()) {
        let (name, argument) = command.trim().split_once(' ').unwrap_or((command.trim(), ""));
        let argument = argument.trim();
        let config = cse.config();
        let outcome = match name.to_ascii_lowercase().as_str() {
            "status" => Ok("RUNNING".to_string()),
            "getconfig" => config_value(&config, argument)
                .ok_or_else(|| format!("GetConfig: no configuration key {argument:?} is known")),
            "testcasestart" | "testcaseend" => {
                tracing::info!(test_case = argument, "upper tester: {name}");
                Ok(String::new())
            }
            _ => Err(format!(
                "unknown upper tester command {name:?}: Status, GetConfig <key>, testCaseStart <name>, testCaseEnd <name>"
            )),
        };
        return match outcome {
            Ok(result) => answer(StatusCode::OK, 2000, Some(&result), None),
            Err(reason) => answer(StatusCode::BAD_REQUEST, 4000, Some(&reason), None),
        };
    }
    let limit = cse.config().http.max_body_size;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) if !bytes.is_empty() => bytes,
        Ok(_) => {
            return answer(
                StatusCode::BAD_REQUEST,
                4000,
                Some("the upper tester needs X-M2M-UTCMD or a request primitive"),
                None,
            );
        }
        Err(_) => return answer(StatusCode::BAD_REQUEST, 4000, Some("the request primitive is too large"), None),
    };
    let request = match primitive(&bytes) {
        Ok(mut request) => {
            request.caller = caller;
            request
        }
        Err(reason) => return answer(StatusCode::BAD_REQUEST, 4000, Some(&reason), None),
    };
    let response = cse.handle(request).await;
    let mut rsp = Map::new();
    rsp.insert("rsc".into(), json!(response.rsc.code()));
    rsp.insert("rqi".into(), json!(response.rqi));
    rsp.insert("rvi".into(), json!(response.rvi));
    if let Some(content) = response.content {
        rsp.insert("pc".into(), content);
    }
    answer(StatusCode::OK, 2000, None, Some(json!({ "m2m:rsp": rsp })))
}

/// A request primitive as JSON: `{"m2m:rqp": {...}}` (or the bare object).
fn primitive(bytes: &[u8]) -> Result<Request, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| format!("the body is not JSON: {error}"))?;
    let rqp = value.get("m2m:rqp").unwrap_or(&value);
    let text = |name: &str| rqp.get(name).and_then(Value::as_str);
    let op = match rqp.get("op").and_then(Value::as_u64) {
        Some(1) => Operation::Create,
        Some(2) => Operation::Retrieve,
        Some(3) => Operation::Update,
        Some(4) => Operation::Delete,
        Some(5) => Operation::Notify,
        _ => return Err("the request primitive needs op (1 to 5)".into()),
    };
    let to = text("to").ok_or("the request primitive needs to")?;
    let mut request = Request::new(op, to.trim_start_matches("/~"), text("fr"));
    request.rqi = text("rqi").ok_or("the request primitive needs rqi")?.to_string();
    request.rvi = text("rvi").unwrap_or("4").to_string();
    request.ty = rqp.get("ty").and_then(Value::as_u64);
    request.content = rqp.get("pc").cloned();
    for name in ["rcn", "drt"] {
        if let Some(value) = rqp.get(name) {
            let value = value.as_u64().map(|n| n.to_string()).or_else(|| value.as_str().map(str::to_string));
            request.set_parameter(name, value.as_deref().unwrap_or_default()).map_err(|error| error.dbg)?;
        }
    }
    Ok(request)
}

/// A configuration value by this CSE's key, or by the reference CSE's name for it.
fn config_value(config: &Config, key: &str) -> Option<String> {
    let cse = &config.cse;
    Some(match key {
        "cse.cse_id" | "cse.cseID" => cse.cse_id.to_string(),
        "cse.resource_name" | "cse.resourceName" => cse.resource_name.clone(),
        "cse.resource_id" | "cse.resourceID" => cse.resource_id.clone(),
        "cse.sp_id" | "cse.spID" => cse.sp_id.to_string(),
        "cse.type" => cse.kind.name().to_string(),
        "cse.admin_originator" | "cse.originator" => cse.admin_originator.clone(),
        "cse.release_version" | "cse.releaseVersion" => cse.release_version.clone(),
        "cse.release_versions" | "cse.supportedReleaseVersions" => cse.release_versions.join(","),
        "http.listen" => config.http.listen.to_string(),
        "http.port" => config.http.listen.port().to_string(),
        "cse.registration.check_interval" | "cse.registration.checkInterval" => {
            config.registration.check_interval.as_secs().to_string()
        }
        "cse.registrar.cse_id" | "cse.registrar.cseID" => config.registrar.as_ref()?.cse_id.to_string(),
        _ => return None,
    })
}

fn answer(code: StatusCode, rsc: u16, result: Option<&str>, body: Option<Value>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("x-m2m-rsc", HeaderValue::from(rsc));
    if let Some(value) = result.and_then(|result| HeaderValue::from_str(result).ok()) {
        headers.insert(X_M2M_UTRSP, value);
    }
    match body {
        Some(body) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            (code, headers, body.to_string()).into_response()
        }
        None => (code, headers).into_response(),
    }
}
