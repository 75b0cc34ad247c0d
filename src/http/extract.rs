//! Extractors whose rejections are precise JSON errors instead of axum's plain-text ones (axum's
//! customize-extractor-error example): each wraps axum's own and turns its rejection into an [`ApiError`].

use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;

use super::error::ApiError;

/// `Json<T>`: 415 without a JSON content type, 400 for malformed JSON, 422 for the wrong shape, 413 over the
/// body limit.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Form<T>`: 415 for another content type, 422 for bad fields, 413 over the limit.
#[derive(FromRequest)]
#[from_request(via(axum::Form), rejection(ApiError))]
pub struct ApiForm<T>(pub T);

/// `Path<T>`: 400 with what was wrong (e.g. an id that is not a UUID).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `Query<T>`: 400 with what was wrong.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection {
            JsonRejection::MissingJsonContentType(_) => unsupported_media_type("application/json"),
            JsonRejection::JsonSyntaxError(_) => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
            }
            JsonRejection::JsonDataError(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
            }
            other => body_rejection(other.status(), message),
        }
    }
}

impl From<FormRejection> for ApiError {
    fn from(rejection: FormRejection) -> Self {
        let message = rejection.body_text();
        match rejection {
            FormRejection::InvalidFormContentType(_) => {
                unsupported_media_type("application/x-www-form-urlencoded")
            }
            FormRejection::FailedToDeserializeFormBody(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_form", message)
            }
            other => body_rejection(other.status(), message),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

fn unsupported_media_type(expected: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("expected `Content-Type: {expected}`"),
    )
}

/// Body read failures: 413 over the limit, else whatever axum decided.
fn body_rejection(status: StatusCode, message: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "payload_too_large",
            "request body is over the size limit",
        )
    } else {
        ApiError::new(status, "bad_request", message)
    }
}
