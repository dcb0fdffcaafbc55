//! The HTTP handlers, by audience: `device` (the gateways: Exosite's device API and the
//! forwarder's batches), `operator` (the JSON operator API), `edge` and `registry` (the
//! edge services and Arrowhead's service registry), `dashboard` (the fleet web pages and
//! their JSON). They read requests, ask the services (`crate::service`) and the store, and
//! answer; what they share is here: the error answer and reading a JSON body.

pub mod dashboard;
pub mod device;
pub mod edge;
pub mod operator;
pub mod registry;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::store;

/// The client's address as the hub's socket saw it (`server::serve` puts it in each request);
/// empty for a request that did not come through a socket.
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default(),
        ))
    }
}

/// An error answer: status and a message naming the problem.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, format!("{}\n", self.1)).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Exists(_) => ApiError(StatusCode::CONFLICT, e.to_string()),
            store::StoreError::Db(_) => {
                log::error!("{e}");
                ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

pub fn err(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(status, msg.into())
}

/// A handler's answer.
pub type ApiResult = Result<Response, ApiError>;

pub fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| err(StatusCode::BAD_REQUEST, format!("JSON body: {e}")))
}
