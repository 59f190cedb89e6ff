//! What came back (locally, over HTTP, or streamed by `generate_stream`)
//! and how it is compared with what a case expects.

use rustpy_core::local::{self, LocalResponse};
use serde_json::{Map, Value};

use super::case::{CaseRequest, Expect};

const MAX_DIFFS: usize = 5;

/// One response as received: outputs, or an error message.
#[derive(Debug, Clone)]
pub(super) enum Actual {
    Outputs(Vec<ActualTensor>),
    Error(String),
}

#[derive(Debug, Clone)]
pub(super) struct ActualTensor {
    pub(super) name: String,
    pub(super) datatype: String,
    pub(super) shape: Vec<i64>,
    /// Flat values.
    pub(super) data: Vec<Value>,
    /// Whether `datatype` and `shape` are known (Triton's generate endpoint
    /// returns values only).
    pub(super) meta_known: bool,
}

impl Actual {
    pub(super) fn from_local(r: &LocalResponse) -> Actual {
        match r {
            LocalResponse::Error(e) => Actual::Error(e.message.clone()),
            LocalResponse::Outputs(ts) => Actual::Outputs(
                ts.iter()
                    .map(|t| {
                        let mut data = Vec::new();
                        flatten(&local::tensor_to_json(t), &mut data);
                        ActualTensor {
                            name: t.name.clone(),
                            datatype: t.dtype.name().to_string(),
                            shape: t.shape.clone(),
                            data,
                            meta_known: true,
                        }
                    })
                    .collect(),
            ),
        }
    }

    /// From a KServe v2 JSON response body (or error body).
    pub(super) fn from_http(status: u16, body: &[u8]) -> Actual {
        let doc: Value = match serde_json::from_slice(body) {
            Ok(d) => d,
            Err(_) => {
                return Actual::Error(format!("HTTP {status}: {}", String::from_utf8_lossy(body)))
            }
        };
        if let Some(err) = doc.get("error").and_then(Value::as_str) {
            return Actual::Error(err.to_string());
        }
        if status != 200 {
            return Actual::Error(format!("HTTP {status}: {doc}"));
        }
        let outputs = doc
            .get("outputs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Actual::Outputs(
            outputs
                .iter()
                .map(|o| {
                    let mut data = Vec::new();
                    flatten(o.get("data").unwrap_or(&Value::Null), &mut data);
                    ActualTensor {
                        name: o.get("name").and_then(Value::as_str).unwrap_or("").into(),
                        datatype: o
                            .get("datatype")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        shape: o
                            .get("shape")
                            .and_then(|s| serde_json::from_value(s.clone()).ok())
                            .unwrap_or_default(),
                        data,
                        meta_known: true,
                    }
                })
                .collect(),
        )
    }

    /// From Triton's `generate_stream` reply: server-sent events, one
    /// `data: {json}` per response, in a chunked body.
    pub(super) fn from_generate_stream(status: u16, body: &[u8]) -> Vec<Actual> {
        let body = dechunk(body).unwrap_or_else(|| body.to_vec());
        let text = String::from_utf8_lossy(&body);
        let mut out = Vec::new();
        for line in text.lines() {
            let Some(json) = line.strip_prefix("data:") else {
                continue;
            };
            let doc: Value = match serde_json::from_str(json.trim()) {
                Ok(d) => d,
                Err(_) => {
                    out.push(Actual::Error(format!("HTTP {status}: bad event {line:?}")));
                    continue;
                }
            };
            if let Some(err) = doc.get("error").and_then(Value::as_str) {
                out.push(Actual::Error(err.to_string()));
                continue;
            }
            let tensors = doc
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !matches!(k.as_str(), "model_name" | "model_version" | "id"))
                .map(|(k, v)| {
                    let mut data = Vec::new();
                    flatten(v, &mut data);
                    ActualTensor {
                        name: k.clone(),
                        datatype: String::new(),
                        shape: Vec::new(),
                        data,
                        meta_known: false,
                    }
                })
                .collect();
            out.push(Actual::Outputs(tensors));
        }
        if out.is_empty() && status != 200 {
            out.push(Actual::Error(format!("HTTP {status}: {text}")));
        }
        out
    }
}

/// The payload of an HTTP chunked body; `None` if it is not one.
pub(super) fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

pub(super) fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

/// The shape of a nested list (its first element's at each level); `None`
/// when ragged.
pub(super) fn nested_shape(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Array(items) => {
            let inner: Vec<Option<Vec<i64>>> = items.iter().map(nested_shape).collect();
            let first = inner.first().cloned().unwrap_or(Some(Vec::new()))?;
            if inner.iter().any(|s| s.as_ref() != Some(&first)) {
                return None;
            }
            let mut shape = vec![items.len() as i64];
            shape.extend(first);
            Some(shape)
        }
        _ => Some(Vec::new()),
    }
}

pub(super) fn judge_request(req: &CaseRequest, got: &[Actual], decoupled: bool) -> Vec<String> {
    let error = got.iter().find_map(|a| match a {
        Actual::Error(e) => Some(e.clone()),
        _ => None,
    });
    let responses: Vec<&Vec<ActualTensor>> = got
        .iter()
        .filter_map(|a| match a {
            Actual::Outputs(o) if !(decoupled && o.is_empty()) => Some(o),
            _ => None,
        })
        .collect();
    match (&req.expect, error) {
        (Expect::Error(want), Some(e)) if e.contains(want.as_str()) => Vec::new(),
        (Expect::Error(want), Some(e)) => {
            vec![format!("error {e:?} does not contain {want:?}")]
        }
        (Expect::Error(want), None) => {
            vec![format!(
                "expected an error containing {want:?}, but the request succeeded"
            )]
        }
        (_, Some(e)) => vec![format!("unexpected error: {e}")],
        (Expect::Success, None) => Vec::new(),
        (Expect::Outputs(want), None) => match responses.as_slice() {
            [one] => compare_outputs(want, one, req.atol, req.rtol),
            other => vec![format!("expected 1 response, got {}", other.len())],
        },
        (Expect::Responses(want), None) => {
            let mut diffs = Vec::new();
            if want.len() != responses.len() {
                diffs.push(format!(
                    "expected {} response(s), got {}",
                    want.len(),
                    responses.len()
                ));
            }
            for (k, (w, g)) in want.iter().zip(&responses).enumerate() {
                for d in compare_outputs(w, g, req.atol, req.rtol) {
                    diffs.push(format!("response {k}: {d}"));
                }
            }
            diffs
        }
    }
}

pub(super) fn compare_outputs(
    want: &Map<String, Value>,
    got: &[ActualTensor],
    atol: f64,
    rtol: f64,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (name, expected) in want {
        let Some(actual) = got.iter().find(|t| &t.name == name) else {
            let present: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
            diffs.push(format!(
                "missing output '{name}' (got: {})",
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            ));
            continue;
        };
        diffs.extend(compare_tensor(name, expected, actual, atol, rtol));
    }
    diffs
}

pub(super) fn compare_tensor(
    name: &str,
    expected: &Value,
    actual: &ActualTensor,
    atol: f64,
    rtol: f64,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let (data, shape, datatype) = match expected {
        Value::Object(o) => {
            let data = o.get("data").cloned().unwrap_or(Value::Null);
            let shape: Option<Vec<i64>> = o
                .get("shape")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .or_else(|| nested_shape(&data).filter(|s| s.len() > 1));
            (
                data,
                shape,
                o.get("datatype")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
        }
        other => (other.clone(), nested_shape(other), None),
    };
    if let Some(dt) = datatype.filter(|_| actual.meta_known) {
        if dt != actual.datatype {
            diffs.push(format!(
                "output '{name}': datatype is {}, expected {dt}",
                actual.datatype
            ));
        }
    }
    let mut want = Vec::new();
    flatten(&data, &mut want);
    if let Some(shape) = shape.as_ref().filter(|_| actual.meta_known) {
        if shape != &actual.shape {
            diffs.push(format!(
                "output '{name}': shape is {:?}, expected {shape:?}",
                actual.shape
            ));
        }
    }
    if want.len() != actual.data.len() {
        diffs.push(format!(
            "output '{name}': {} element(s), expected {}",
            actual.data.len(),
            want.len()
        ));
        return diffs;
    }
    let mut bad = 0;
    for (i, (w, g)) in want.iter().zip(&actual.data).enumerate() {
        if let Some(why) = element_diff(w, g, atol, rtol) {
            bad += 1;
            if bad <= MAX_DIFFS {
                diffs.push(format!(
                    "output '{name}'{}: got {g}, expected {w}{why}",
                    index_of(
                        i,
                        if actual.meta_known {
                            &actual.shape
                        } else {
                            &[]
                        }
                    )
                ));
            }
        }
    }
    if bad > MAX_DIFFS {
        diffs.push(format!(
            "output '{name}': ... {} more differing element(s) ({bad} of {})",
            bad - MAX_DIFFS,
            want.len()
        ));
    }
    diffs
}

/// `None` when equal (numbers within tolerance); otherwise a note on why.
pub(super) fn element_diff(want: &Value, got: &Value, atol: f64, rtol: f64) -> Option<String> {
    match (want, got) {
        (Value::Number(w), Value::Number(g)) => {
            let (w, g) = (w.as_f64()?, g.as_f64()?);
            let tol = atol + rtol * w.abs();
            let diff = (g - w).abs();
            (diff > tol).then(|| format!(" (|diff| {diff:.3e} > tolerance {tol:.3e})"))
        }
        // Triton writes NaN/inf as strings or null in JSON; compare as text.
        _ if want == got => None,
        _ => Some(String::new()),
    }
}

/// `[i,j,...]` of flat index `i` in `shape`.
pub(super) fn index_of(mut flat: usize, shape: &[i64]) -> String {
    if shape.is_empty() {
        return format!("[{flat}]");
    }
    let mut idx = vec![0usize; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        let d = usize::try_from(d).unwrap_or(1).max(1);
        idx[k] = flat % d;
        flat /= d;
    }
    let parts: Vec<String> = idx.iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tensor(name: &str, shape: &[i64], data: Value) -> ActualTensor {
        let mut flat = Vec::new();
        flatten(&data, &mut flat);
        ActualTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: shape.to_vec(),
            data: flat,
            meta_known: true,
        }
    }

    #[test]
    fn generate_stream_events_are_dechunked_and_parsed() {
        let body = b"3f\r\ndata: {\"TOKEN\":\"once\",\"model_name\":\"gen\",\"model_version\":\"1\"}\n\n\r\n19\r\ndata: {\"error\":\"bad k\"}\n\n\r\n0\r\n\r\n";
        let plain = dechunk(body).expect("a valid chunked body");
        assert!(plain.starts_with(b"data: {") && plain.ends_with(b"\"bad k\"}\n\n"));
        let got = Actual::from_generate_stream(200, body);
        assert_eq!(got.len(), 2, "{got:?}");
        match &got[0] {
            Actual::Outputs(t) => {
                assert_eq!(t.len(), 1);
                assert_eq!(t[0].name, "TOKEN");
                assert_eq!(t[0].data, vec![json!("once")]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&got[1], Actual::Error(e) if e == "bad k"),
            "{got:?}"
        );
    }

    fn want(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn values_shapes_dtypes_and_missing_outputs() {
        let got = [tensor("Y", &[1, 3], json!([[1.0, 2.0, 3.0]]))];
        assert!(compare_outputs(&want(json!({"Y": [[1, 2, 3]]})), &got, 1e-5, 0.0).is_empty());
        let d = compare_outputs(&want(json!({"Y": [[1, 2, 3.5]]})), &got, 1e-5, 0.0);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0],
            "output 'Y'[0,2]: got 3.0, expected 3.5 (|diff| 5.000e-1 > tolerance 1.000e-5)"
        );
        let d = compare_outputs(&want(json!({"Y": [1, 2, 3]})), &got, 1e-5, 0.0);
        assert_eq!(d, ["output 'Y': shape is [1, 3], expected [3]"]);
        let d = compare_outputs(
            &want(json!({"Y": {"data": [1, 2, 3], "datatype": "INT32"}})),
            &got,
            1e-5,
            0.0,
        );
        assert_eq!(d, ["output 'Y': datatype is FP32, expected INT32"]);
        let d = compare_outputs(&want(json!({"Z": [1]})), &got, 1e-5, 0.0);
        assert_eq!(d, ["missing output 'Z' (got: Y)"]);
        let d = compare_outputs(&want(json!({"Y": [[1, 2]]})), &got, 1e-5, 0.0);
        assert!(
            d.iter().any(|l| l.contains("3 element(s), expected 2")),
            "{d:?}"
        );
    }

    #[test]
    fn tolerance_edges() {
        // |diff| = 1e-3: inside atol 1e-3, outside 9e-4; rtol scales with |expected|.
        let w = json!(1.0);
        assert_eq!(element_diff(&w, &json!(1.001), 1.0001e-3, 0.0), None);
        assert!(element_diff(&w, &json!(1.001), 9e-4, 0.0).is_some());
        assert_eq!(
            element_diff(&json!(1000.0), &json!(1001.0), 0.0, 1.0001e-3),
            None
        );
        assert!(element_diff(&json!(1000.0), &json!(1001.0), 0.0, 0.9e-3).is_some());
        assert_eq!(element_diff(&json!("cat"), &json!("cat"), 0.0, 0.0), None);
        assert!(element_diff(&json!("cat"), &json!("dog"), 1.0, 1.0).is_some());
        assert!(element_diff(&json!(true), &json!(false), 1.0, 1.0).is_some());
    }

    #[test]
    fn many_differences_are_summarised() {
        let got = [tensor("Y", &[10], json!([0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))];
        let d = compare_outputs(
            &want(json!({"Y": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]})),
            &got,
            0.0,
            0.0,
        );
        assert_eq!(d.len(), MAX_DIFFS + 1);
        assert_eq!(
            d[MAX_DIFFS],
            "output 'Y': ... 5 more differing element(s) (10 of 10)"
        );
    }

    #[test]
    fn nested_shapes() {
        assert_eq!(
            nested_shape(&json!([[1, 2], [3, 4], [5, 6]])),
            Some(vec![3, 2])
        );
        assert_eq!(nested_shape(&json!([[1, 2], [3]])), None);
        assert_eq!(nested_shape(&json!(7)), Some(vec![]));
        assert_eq!(index_of(5, &[2, 3]), "[1,2]");
    }
}
