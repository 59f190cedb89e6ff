//! A case's requests against a live tritonserver over HTTP: KServe v2 JSON
//! `infer`, or `generate_stream` for decoupled models.

use std::net::SocketAddr;
use std::time::Duration;

use rustpy_core::local;
use serde_json::{json, Value};

use super::case::{Case, CaseRequest};
use super::judge::{flatten, Actual};

/// Sends the case's requests concurrently over HTTP (KServe v2 JSON).
pub(super) fn infer_http(
    addr: SocketAddr,
    model: &str,
    case: &Case,
    timeout: Duration,
) -> Vec<Vec<Actual>> {
    let path = format!("/v2/models/{model}/infer");
    std::thread::scope(|s| {
        let handles: Vec<_> = case
            .requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let path = &path;
                s.spawn(move || {
                    let body = http_body(i, r);
                    match crate::commands::serve::http::request(
                        addr,
                        "POST",
                        path,
                        Some(body.as_bytes()),
                        timeout,
                    ) {
                        Ok(resp) => vec![Actual::from_http(resp.status, &resp.body)],
                        Err(e) => vec![Actual::Error(format!("HTTP request failed: {e:#}"))],
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Actual::Error("client thread panicked".into())])
            })
            .collect()
    })
}

/// Bodies for Triton's `generate_stream` endpoint (the only HTTP way to
/// drive a decoupled model): each input as a JSON value, parameters as
/// top-level fields. Inputs with more than one element per row do not fit.
pub(super) fn generate_bodies(case: &Case) -> std::result::Result<Vec<String>, String> {
    case.requests
        .iter()
        .map(|r| {
            let mut doc = r.parameters.clone();
            for t in &r.inputs {
                let mut data = Vec::new();
                flatten(&local::tensor_to_json(t), &mut data);
                if data.len() != 1 {
                    return Err(format!(
                        "decoupled model over HTTP: input '{}' has {} elements; Triton's generate_stream takes one value per input",
                        t.name,
                        data.len()
                    ));
                }
                doc.insert(t.name.clone(), Value::Array(data));
            }
            if !r.requested_outputs.is_empty() {
                return Err("decoupled model over HTTP: generate_stream cannot select outputs".into());
            }
            Ok(Value::Object(doc).to_string())
        })
        .collect()
}

/// Streams each request of a decoupled case through `generate_stream`,
/// concurrently.
pub(super) fn infer_generate_stream(
    addr: SocketAddr,
    model: &str,
    bodies: &[String],
    timeout: Duration,
) -> Vec<Vec<Actual>> {
    let path = format!("/v2/models/{model}/generate_stream");
    std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|body| {
                let path = &path;
                s.spawn(move || {
                    match crate::commands::serve::http::request(
                        addr,
                        "POST",
                        path,
                        Some(body.as_bytes()),
                        timeout,
                    ) {
                        Ok(resp) => Actual::from_generate_stream(resp.status, &resp.body),
                        Err(e) => vec![Actual::Error(format!("HTTP request failed: {e:#}"))],
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Actual::Error("client thread panicked".into())])
            })
            .collect()
    })
}

pub(super) fn http_body(i: usize, r: &CaseRequest) -> String {
    let inputs: Vec<Value> = r
        .inputs
        .iter()
        .map(|t| {
            let mut data = Vec::new();
            flatten(&local::tensor_to_json(t), &mut data);
            json!({"name": t.name, "shape": t.shape, "datatype": t.dtype.name(), "data": data})
        })
        .collect();
    let mut doc = json!({"id": i.to_string(), "inputs": inputs});
    if !r.parameters.is_empty() {
        doc["parameters"] = Value::Object(r.parameters.clone());
    }
    if !r.requested_outputs.is_empty() {
        doc["outputs"] = r
            .requested_outputs
            .iter()
            .map(|n| json!({"name": n}))
            .collect();
    }
    doc.to_string()
}
