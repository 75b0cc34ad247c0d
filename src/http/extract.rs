//! Extractors whose rejections are precise JSON errors instead of axum's plain-text ones.

use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// `Json<T>`: 415 without a JSON content type, 400 for malformed JSON, 422 for the wrong shape, 413 over the
/// body limit.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let message = rejection.body_text();
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", message)
        }
        JsonRejection::JsonDataError(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
        }
        other => body_rejection(other.status(), message),
    }
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

/// `Form<T>`: 415 for another content type, 400/422 for bad fields, 413 over the limit.
pub struct ApiForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(Self(value)),
            Err(rejection) => {
                let message = rejection.body_text();
                Err(match rejection {
                    FormRejection::InvalidFormContentType(_) => ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        "expected `Content-Type: application/x-www-form-urlencoded`",
                    ),
                    FormRejection::FailedToDeserializeFormBody(_) => {
                        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_form", message)
                    }
                    other => body_rejection(other.status(), message),
                })
            }
        }
    }
}

/// `Path<T>`: 400 with what was wrong (e.g. an id that is not a UUID).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|r: PathRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
            })
    }
}

/// `Query<T>`: 400 with what was wrong.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|r: QueryRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
            })
    }
}
