//! The admin listener: health, readiness, metrics (SPEC §6).
//!
//! It listens on its own address (loopback by default) so that probes and scrapes never
//! share a port with the traffic they watch.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::app::App;
use crate::body::{self, Body};
use crate::gate::json_response;

/// Handles one request of the admin listener.
pub async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            json_response(StatusCode::OK, &json!({"status": "ok"}))
        }
        (&Method::GET | &Method::HEAD, "/readyz") => readiness(&app).await,
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(body::full(app.metrics.render()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "error_description": "no such admin route"}),
        ),
    };
    Ok(response)
}

/// Ready when the keys are loaded (they are, or we would not have started) and the
/// store answers.
async fn readiness(app: &App) -> Response<Body> {
    match app.strategy.store().ping().await {
        Ok(()) => json_response(StatusCode::OK, &json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: store unavailable");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "unavailable", "error": "temporarily_unavailable", "error_description": "the token store is unavailable"}),
            )
        }
    }
}
