//! `/static/` served by the app itself, only with `DEBUG=true` (like Django's runserver); in live, nginx serves
//! the output of `collectstatic`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::ApiPath;
use super::state::AppState;

/// Embedded assets, by hashed name (cached forever) or logical name (revalidated).
pub async fn embedded(State(state): State<AppState>, ApiPath(path): ApiPath<String>) -> Response {
    match state.assets.find(&path) {
        Some(asset) => {
            let cache = if asset.hashed == path {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (
                [
                    (header::CONTENT_TYPE, asset.content_type()),
                    (header::CACHE_CONTROL, cache),
                ],
                asset.bytes,
            )
                .into_response()
        }
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no static file `{path}`"),
        )
        .into_response(),
    }
}
