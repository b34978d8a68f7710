//! The wire mapping of the HTTP binding (TS-0009), shared by its server and its client:
//! the `X-M2M-*` header names, the path escapes of IDs (`/~/`, `/_/`), the `Via` header of
//! forwarded requests, `Content-Type` with its `ty` parameter, and JSON bodies.

use axum::http::header::AsHeaderName;
use axum::http::{HeaderMap, header};
use percent_encoding::percent_decode_str;
use serde_json::Value;

use crate::error::{Error, Result};

/// The originator header, `X-M2M-Origin` (its name in lower case, as the `http` crate keeps names).
pub const X_M2M_ORIGIN: &str = "x-m2m-origin";
/// The request identifier header, `X-M2M-RI` (its name in lower case, as the `http` crate keeps names).
pub const X_M2M_RI: &str = "x-m2m-ri";
/// The release version indicator header, `X-M2M-RVI` (its name in lower case, as the `http` crate keeps names).
pub const X_M2M_RVI: &str = "x-m2m-rvi";
/// The response status code header, `X-M2M-RSC` (its name in lower case, as the `http` crate keeps names).
pub const X_M2M_RSC: &str = "x-m2m-rsc";
/// The originating timestamp header, `X-M2M-OT` (its name in lower case, as the `http` crate keeps names).
pub const X_M2M_OT: &str = "x-m2m-ot";
/// The request expiration timestamp header, `X-M2M-RET` (its name in lower case, as the `http` crate keeps names).
pub const X_M2M_RET: &str = "x-m2m-ret";
/// The vendor information header, `X-M2M-VSI` (its name in lower case, as the `http` crate keeps names).
pub const X_M2M_VSI: &str = "x-m2m-vsi";
/// Event category (`ec`).
pub const X_M2M_EC: &str = "x-m2m-ec";
/// Content Status: partial (`1`) when a result was cut short.
pub const X_M2M_CTS: &str = "x-m2m-cts";
/// Content Offset: the `ofst` at which the rest of a partial result begins.
pub const X_M2M_CTO: &str = "x-m2m-cto";
/// The Content Status value of a partial result.
pub const CONTENT_STATUS_PARTIAL: u16 = 1;
/// The standard HTTP `Via` header: the CSEs a forwarded request has passed.
pub const VIA: &str = "via";

/// The header names above as [`HeaderName`]s, for this binding's own reads and writes: a
/// name given as `&str` is parsed and checked again on every use.
pub(crate) mod names {
    use axum::http::HeaderName;

    pub(crate) const ORIGIN: HeaderName = HeaderName::from_static(super::X_M2M_ORIGIN);
    pub(crate) const RI: HeaderName = HeaderName::from_static(super::X_M2M_RI);
    pub(crate) const RVI: HeaderName = HeaderName::from_static(super::X_M2M_RVI);
    pub(crate) const RSC: HeaderName = HeaderName::from_static(super::X_M2M_RSC);
    pub(crate) const OT: HeaderName = HeaderName::from_static(super::X_M2M_OT);
    pub(crate) const RET: HeaderName = HeaderName::from_static(super::X_M2M_RET);
    pub(crate) const VSI: HeaderName = HeaderName::from_static(super::X_M2M_VSI);
    pub(crate) const EC: HeaderName = HeaderName::from_static(super::X_M2M_EC);
    pub(crate) const CTS: HeaderName = HeaderName::from_static(super::X_M2M_CTS);
    pub(crate) const CTO: HeaderName = HeaderName::from_static(super::X_M2M_CTO);
}

/// The hop names of all `Via` entries (`1.1 acme.example.com_id-mn, ...`).
pub fn via_hops(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(VIA)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.split_whitespace().nth(1))
        .map(str::to_string)
        .collect()
}

/// The `Via` header value for `hops`.
pub fn via_header(hops: &[String]) -> String {
    hops.iter().map(|hop| format!("1.1 {hop}")).collect::<Vec<_>>().join(", ")
}

/// A header's value; present but not visible ASCII is an error naming the header. The
/// name is a `&str` or a `&HeaderName` (no parsing per call).
pub fn header_text<N>(headers: &HeaderMap, name: N) -> Result<Option<&str>>
where
    N: AsHeaderName + std::fmt::Display + Copy,
{
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(text) => Ok(Some(text.trim())),
        Err(_) => Err(Error::bad_request(format!("header {name} is not visible ASCII"))),
    }
}

/// A JSON value parsed like `serde_json::Value`, but refusing duplicate object keys (which
/// would otherwise silently keep the last one).
pub struct StrictJson(pub Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<StrictJson, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }
    fn visit_bool<E>(self, value: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(value))
    }
    fn visit_i64<E>(self, value: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(value))
    }
    fn visit_u64<E>(self, value: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(value))
    }
    fn visit_f64<E>(self, value: f64) -> std::result::Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, value: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(value.to_string()))
    }
    fn visit_string<E>(self, value: String) -> std::result::Result<Value, E> {
        Ok(Value::String(value))
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            let StrictJson(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The media type (lowercase, without parameters) and the `ty` parameter of `Content-Type`.
pub fn content_type(headers: &HeaderMap) -> Result<(Option<String>, Option<u64>)> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok((None, None));
    };
    let value = value.to_str().map_err(|_| Error::bad_request("Content-Type is not ASCII"))?;
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let mut ty = None;
    for parameter in parts {
        if let Some((name, value)) = parameter.split_once('=')
            && name.trim().eq_ignore_ascii_case("ty")
        {
            let value = value.trim();
            ty = Some(value.parse::<u64>().map_err(|_| {
                Error::bad_request(format!("resource type ty={value:?} in Content-Type is not a number"))
            })?);
        }
    }
    Ok(((!media.is_empty()).then_some(media), ty))
}

/// HTTP path → oneM2M target: `/~/x` is SP-relative `/x`, `/_/x` is absolute `//x`.
pub fn target_of(path: &str) -> Result<String> {
    // Decode each segment on its own: an encoded '/' must not create a path element.
    let mut segments = Vec::new();
    for segment in path.split('/') {
        let decoded = percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| Error::bad_request("the request path is not valid UTF-8"))?;
        if decoded.contains('/') {
            return Err(Error::bad_request("the request path contains an encoded '/'"));
        }
        segments.push(decoded);
    }
    let decoded = segments.join("/");
    let path = decoded.strip_prefix('/').unwrap_or(&decoded);
    Ok(if let Some(rest) = path.strip_prefix("~/") {
        format!("/{rest}")
    } else if let Some(rest) = path.strip_prefix("_/") {
        format!("//{rest}")
    } else {
        path.to_string()
    })
}

/// oneM2M target → HTTP path (the inverse of [`target_of`]).
pub fn path_of(to: &str) -> String {
    if let Some(rest) = to.strip_prefix("//") {
        format!("/_/{rest}")
    } else if let Some(rest) = to.strip_prefix('/') {
        format!("/~/{rest}")
    } else {
        format!("/{to}")
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::error::Rsc;

    #[test]
    fn path_escapes_map_to_id_forms_and_back() {
        for (path, to) in [
            ("/cse-in/ae1", "cse-in/ae1"),
            ("/~/id-in/cse-in", "/id-in/cse-in"),
            ("/_/acme.example.com/id-in/cse-in", "//acme.example.com/id-in/cse-in"),
        ] {
            assert_eq!(target_of(path).expect("valid"), to);
            assert_eq!(path_of(to), path);
        }
        assert_eq!(target_of("/cse-in/a%20b").expect("decoded"), "cse-in/a b");
    }

    #[test]
    fn content_type_carries_the_resource_type() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; ty=3"));
        assert_eq!(content_type(&headers).expect("valid"), (Some("application/json".into()), Some(3)));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;ty=x"));
        assert_eq!(content_type(&headers).expect_err("invalid").rsc, Rsc::BadRequest);
    }
}
