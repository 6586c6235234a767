//! Errors of the HTTP API: the WAMP API's error URIs (`wamp.error.*`, `brume.error.*`) with an
//! HTTP status, as `{"error": uri, "message": text, "details": {...}}`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use crate::things::request::{ApiError, errors};
use crate::wamp::uris;

/// No such route or resource outside the things API.
pub const NOT_FOUND: &str = "brume.error.not_found";
/// The part asked about is not enabled (`GET /api/uplink` without an uplink).
pub const NOT_ENABLED: &str = "brume.error.not_enabled";

/// A failed HTTP API request.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpError {
    pub uri: &'static str,
    pub message: String,
    pub details: Json,
}

impl HttpError {
    pub fn new(uri: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            uri,
            message: message.into(),
            details: Json::Object(serde_json::Map::new()),
        }
    }

    pub fn invalid(message: impl Into<String>) -> HttpError {
        HttpError::new(uris::INVALID_ARGUMENT, message)
    }

    /// The HTTP status of the error URI.
    pub fn status(&self) -> StatusCode {
        match self.uri {
            uris::INVALID_ARGUMENT | uris::INVALID_URI | uris::PAYLOAD_SIZE_EXCEEDED => {
                StatusCode::BAD_REQUEST
            }
            uris::AUTHENTICATION_FAILED => StatusCode::UNAUTHORIZED,
            uris::NOT_AUTHORIZED => StatusCode::FORBIDDEN,
            errors::NO_SUCH_THING
            | errors::NO_SUCH_TYPE
            | errors::NO_SUCH_ACTION
            | NOT_FOUND
            | NOT_ENABLED => StatusCode::NOT_FOUND,
            errors::THING_OFFLINE => StatusCode::CONFLICT,
            errors::ACTION_FAILED => StatusCode::BAD_GATEWAY,
            errors::WRITE_FAILED => StatusCode::INSUFFICIENT_STORAGE,
            uris::TIMEOUT => StatusCode::GATEWAY_TIMEOUT,
            uris::UNAVAILABLE | uris::CANCELED => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        HttpError {
            uri: e.uri,
            message: e.message,
            details: Json::from(&crate::wamp::Value::Dict(e.kwargs)),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({"error": self.uri, "message": self.message, "details": self.details});
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"brume\""),
            );
        }
        response
    }
}
