//! Static files the server hands out without a credential: the browser SDK
//! (`/sdk.js`) for the one-line snippet. The binary embeds them at build time; a
//! binary built without them answers 404 with how to build them.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::ApiError;

/// One embedded file.
#[derive(Clone, Debug)]
pub struct Asset {
    /// Its bytes.
    pub body: &'static [u8],
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// How long browsers and proxies may keep it without asking again.
    pub max_age_s: u32,
    etag: String,
}

impl Asset {
    /// A file with a strong ETag computed from its content.
    pub fn new(body: &'static [u8], content_type: &'static str, max_age_s: u32) -> Asset {
        let etag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(body));
        Asset { body, content_type, max_age_s, etag }
    }
}

/// The embedded files by URL path.
#[derive(Clone, Debug, Default)]
pub struct Assets {
    files: HashMap<&'static str, Asset>,
}

impl Assets {
    /// Adds (or replaces) the file served at `path`; an empty body is left out, as a
    /// file the build did not produce.
    pub fn with(mut self, path: &'static str, asset: Asset) -> Assets {
        if !asset.body.is_empty() {
            self.files.insert(path, asset);
        }
        self
    }

    /// The file at `path`.
    pub fn get(&self, path: &str) -> Option<&Asset> {
        self.files.get(path)
    }
}

/// Answers `GET path` from `assets`: 200 with caching headers, 304 when the client's
/// `If-None-Match` matches, or 404 saying how to build what is missing.
pub fn serve(assets: &Assets, path: &str, headers: &HeaderMap, missing: &str) -> Response {
    let Some(a) = assets.get(path) else {
        return ApiError::NotFound(format!("{path} is not built into this server: {missing}")).into_response();
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(a.body));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&a.etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", a.max_age_s)) {
        h.insert(header::CACHE_CONTROL, v);
    }
    // Any site may load the SDK, also with `crossorigin` (for error details).
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}
