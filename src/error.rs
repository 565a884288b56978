//! The one catalog of request and protocol errors.
//!
//! Every error a client can see has a stable `code` (what programs match on), an HTTP status (for the REST API) and a
//! human message. The socket sends the same code and message in an `error` event. Startup errors are not here: they
//! speak to the operator through `anyhow` in `main`.

use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(code: &'static str, status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new("bad_request", StatusCode::BAD_REQUEST, message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new("invalid", StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn too_long(message: impl Into<String>) -> ApiError {
        ApiError::new("too_long", StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new("unauthorized", StatusCode::UNAUTHORIZED, "log in first")
    }

    pub fn wrong_credentials() -> ApiError {
        ApiError::new(
            "wrong_credentials",
            StatusCode::UNAUTHORIZED,
            "wrong username or password",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new("forbidden", StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new("not_found", StatusCode::NOT_FOUND, message)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            "method_not_allowed",
            StatusCode::METHOD_NOT_ALLOWED,
            "this route does not take that method",
        )
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            "unsupported_media_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON with Content-Type: application/json",
        )
    }

    pub fn throttled(message: impl Into<String>) -> ApiError {
        ApiError::new("throttled", StatusCode::TOO_MANY_REQUESTS, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new("unavailable", StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// A storage failure: the client is told the message was not saved (so it keeps it and retries); the detail goes
    /// to the log, not to the client.
    pub fn storage() -> ApiError {
        ApiError::new(
            "storage",
            StatusCode::SERVICE_UNAVAILABLE,
            "the message could not be saved; it will be retried",
        )
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            "internal",
            StatusCode::INTERNAL_SERVER_ERROR,
            "something went wrong on the server",
        )
    }

    /// The JSON body, as the REST API and the socket's `error` event both carry it.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code, "message": self.message })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
