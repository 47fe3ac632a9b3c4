//! Every error answer is a `perimeter.api/1` error document with a status code
//! that says whose fault it is; server-side failures are logged in full and
//! answered with a sentence that leaks nothing.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use perimeter_api::{ErrorDoc, SCHEMA};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) expected_seq: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            expected_seq: None,
        }
    }

    pub(crate) fn unauthenticated(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// A failure of the server itself: logged with its detail, answered
    /// without it.
    pub(crate) fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("{detail}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not do this; its log says why",
        )
    }

    /// The store is out of reach (PostgreSQL restarting): try again later.
    pub(crate) fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!("{detail}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server's database is out of reach; try again later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let doc = ErrorDoc {
            schema: SCHEMA.to_owned(),
            error: self.code.to_owned(),
            message: self.message,
            expected_seq: self.expected_seq,
        };
        (self.status, Json(doc)).into_response()
    }
}

impl From<perimeter_store::fleet::FleetError> for ApiError {
    fn from(err: perimeter_store::fleet::FleetError) -> Self {
        use perimeter_store::fleet::FleetError;
        match err {
            FleetError::Exists { what } => {
                ApiError::conflict("conflict", format!("{what} already exists"))
            }
            FleetError::NotFound { what } => ApiError::not_found(format!("no {what}")),
            FleetError::Backend { .. } => ApiError::unavailable(err),
            FleetError::TooNew { .. } | FleetError::Corrupt { .. } => ApiError::internal(err),
        }
    }
}
