//! The OpenAPI document of the HTTP API (`GET /api/v1/openapi.json`), generated with
//! `utoipa` from the handlers' `#[utoipa::path]` annotations.

#![allow(dead_code)]

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// `POST /api/v1/query`'s body.
#[derive(ToSchema)]
pub struct QueryBody {
    /// A read-only statement.
    sql: String,
    /// Wait until the views reflect every event up to this time (ms).
    min_as_of: Option<u64>,
}

/// A query's answer as JSON.
#[derive(ToSchema)]
pub struct QueryAnswer {
    /// Column names.
    columns: Vec<String>,
    /// Rows, as arrays in column order.
    rows: Vec<Vec<serde_json::Value>>,
    /// The logical time of the snapshot read.
    as_of: u64,
}

/// Every error answer.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// Why, for a person.
    error: String,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::access::COOKIE))),
        );
        components.add_security_scheme(
            "ingest_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Sightflow-Key"))),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "sightflow", description = "Real-time behaviour analytics and session replay: ingest, SQL over live views, REST, live feed."),
    paths(crate::http::track, crate::http::import_rrweb, crate::http::query, crate::http::replay, crate::http::login, crate::http::logout, crate::http::me, crate::http::health, crate::http::metrics, crate::rest::sessions, crate::rest::session, crate::rest::heatmap, crate::rest::projects, crate::rest::project_create, crate::rest::project_update, crate::rest::project_delete, crate::rest::members, crate::rest::member_set, crate::rest::member_remove, crate::rest::tokens, crate::rest::token_create, crate::rest::token_revoke, crate::live::subscribe, crate::live::ticket, crate::http::sdk_js, openapi_json),
    components(schemas(QueryBody, QueryAnswer, ErrorBody)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", body = serde_json::Value)))]
pub(crate) async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], ApiDoc::openapi().to_pretty_json().unwrap_or_default())
        .into_response()
}
