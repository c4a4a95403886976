//! The one place where errors become HTTP answers, with Cinder's bodies:
//! `{"badRequest": {"code": 400, "message": "..."}}`, `itemNotFound`, ...

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorKind, ServiceError};

/// An error answer: status and message (the body's key follows the status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Human message.
    pub message: String,
}

impl ApiError {
    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: 400, message: message.into() }
    }
    /// 404 for a path this API does not have.
    pub fn not_found_path() -> Self {
        ApiError { status: 404, message: "The resource could not be found.".into() }
    }
    /// 405.
    pub fn bad_method() -> Self {
        ApiError { status: 405, message: "The method specified is not allowed for this resource.".into() }
    }
    /// 403 with `message`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError { status: 403, message: message.into() }
    }
    /// 406 for an unsupported microversion.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        ApiError { status: 406, message: message.into() }
    }

    /// Cinder's body key for a status.
    fn body_key(&self) -> &'static str {
        match self.status {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            406 => "notAcceptable",
            409 => "conflictingRequest",
            413 => "overLimit",
            415 => "badMediaType",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "computeFault",
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match e.kind() {
            ErrorKind::Invalid => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Forbidden => 403,
            ErrorKind::OverLimit => 413,
            ErrorKind::Conflict => 409,
            ErrorKind::Unavailable => 503,
            _ => 500,
        };
        if status >= 500 {
            tracing::error!(error = %e, "request failed");
        }
        ApiError { status, message: e.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let key = self.body_key();
        let code = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut inner = serde_json::json!({ "code": self.status, "message": self.message });
        if self.status == 413 {
            inner["retryAfter"] = "0".into();
            // Cinder's QuotaError carries the header as well as the body field.
            return (code, [("retry-after", "0")], axum::Json(serde_json::json!({ key: inner }))).into_response();
        }
        (code, axum::Json(serde_json::json!({ key: inner }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_map_to_cinder_codes() {
        let e: ApiError = ServiceError::not_found("Volume", "x").into();
        assert_eq!((e.status, e.message.as_str()), (404, "Volume x could not be found."));
        assert_eq!(ApiError::from(ServiceError::invalid("no")).status, 400);
        assert_eq!(ApiError::from(ServiceError::OverLimit("big".into())).body_key(), "overLimit");
        assert_eq!(ApiError::from(ServiceError::Conflict("dup".into())).body_key(), "conflictingRequest");
    }

    #[test]
    fn over_limit_says_when_to_retry() {
        let r = ApiError::from(ServiceError::OverLimit("full".into())).into_response();
        assert_eq!((r.status().as_u16(), r.headers().get("retry-after").map(|v| v.as_bytes())), (413, Some(&b"0"[..])));
        assert!(ApiError::bad_request("x").into_response().headers().get("retry-after").is_none());
    }
}
