//! The benchmark's workloads: how each request is built (KServe v2 JSON header
//! plus binary tensor data) and how its response is checked.

use std::sync::Arc;

use serde_json::Value;

/// What the model computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// FP32[4] INPUT0, INPUT1 -> OUTPUT0 = a + b, OUTPUT1 = a - b.
    AddSub,
    /// UINT8[n] INPUT0 -> OUTPUT0 = INPUT0.
    Identity,
    /// BYTES[1] TEXT -> UPPER = TEXT upper-cased (ASCII, like Python's bytes.upper()).
    Upper,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "add_sub" => Some(Kind::AddSub),
            "identity" => Some(Kind::Identity),
            "upper" => Some(Kind::Upper),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::AddSub => "add_sub",
            Kind::Identity => "identity",
            Kind::Upper => "upper",
        }
    }
}

/// What the responses must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The workload's function of the inputs.
    Compute,
    /// Output i = input i (rustpy's native echo ceiling).
    Echo,
    /// Only the status is checked.
    Nothing,
}

impl Expect {
    pub fn parse(s: &str) -> Option<Expect> {
        match s {
            "compute" => Some(Expect::Compute),
            "echo" => Some(Expect::Echo),
            "none" => Some(Expect::Nothing),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Expect::Compute => "compute",
            Expect::Echo => "echo",
            Expect::Nothing => "none",
        }
    }
}

pub enum Expected {
    /// Compared byte for byte.
    Exact(Vec<u8>),
    /// A large shared buffer: compared in full or by sampled windows.
    Shared(Arc<Vec<u8>>),
}

/// One request, rebuilt in place for every call (buffers are reused).
#[derive(Default)]
pub struct Request {
    /// The JSON inference header.
    pub header: Vec<u8>,
    /// Per-request binary tensor data (small workloads).
    pub data: Vec<u8>,
    /// Shared binary tensor data (large workloads), sent after `data`.
    pub shared: Option<Arc<Vec<u8>>>,
    pub expected: Vec<(&'static str, Expected)>,
    /// Tensor bytes in the request body (excluding the JSON header).
    pub tensor_bytes: usize,
}

pub struct Workload {
    pub kind: Kind,
    pub expect: Expect,
    pub full_check: bool,
    /// Identity: the payload every request sends.
    payload: Option<Arc<Vec<u8>>>,
    /// Headers that do not change between requests.
    fixed_header: Option<Vec<u8>>,
}

fn binary_output(name: &str) -> Value {
    serde_json::json!({ "name": name, "parameters": { "binary_data": true } })
}

/// BYTES tensor element in the binary format: u32 little-endian length, bytes.
fn push_bytes_element(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

impl Workload {
    pub fn new(kind: Kind, expect: Expect, bytes: usize, full_check: bool) -> Workload {
        let mut w = Workload {
            kind,
            expect,
            full_check,
            payload: None,
            fixed_header: None,
        };
        match kind {
            Kind::AddSub => {
                let input = |name: &str| {
                    serde_json::json!({ "name": name, "shape": [1, 4], "datatype": "FP32",
                                        "parameters": { "binary_data_size": 16 } })
                };
                let h = serde_json::json!({
                    "inputs": [input("INPUT0"), input("INPUT1")],
                    "outputs": [binary_output("OUTPUT0"), binary_output("OUTPUT1")],
                });
                w.fixed_header = Some(serde_json::to_vec(&h).expect("serialisable"));
            }
            Kind::Identity => {
                // A position-dependent pattern, so shifted or mixed-up data shows.
                let payload: Vec<u8> = (0..bytes)
                    .map(|i| ((i * 31 + i / 251) % 251) as u8)
                    .collect();
                let h = serde_json::json!({
                    "inputs": [{ "name": "INPUT0", "shape": [1, bytes], "datatype": "UINT8",
                                 "parameters": { "binary_data_size": bytes } }],
                    "outputs": [binary_output("OUTPUT0")],
                });
                w.fixed_header = Some(serde_json::to_vec(&h).expect("serialisable"));
                w.payload = Some(Arc::new(payload));
            }
            Kind::Upper => {}
        }
        w
    }

    /// Fills `req` for request number `seq` of worker `worker`.
    pub fn build(&self, worker: usize, seq: u64, req: &mut Request) {
        req.data.clear();
        req.expected.clear();
        req.shared = None;
        match self.kind {
            Kind::AddSub => {
                let base = ((worker as u64 * 1_000_003 + seq) % (1 << 20)) as f32;
                let a: [f32; 4] = std::array::from_fn(|i| base + i as f32);
                let b: [f32; 4] =
                    std::array::from_fn(|i| ((seq * 7 + i as u64) % 1000) as f32 - 500.0);
                for v in a.iter().chain(b.iter()) {
                    req.data.extend_from_slice(&v.to_le_bytes());
                }
                req.header.clear();
                req.header
                    .extend_from_slice(self.fixed_header.as_ref().expect("built in new"));
                let le = |v: [f32; 4]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
                match self.expect {
                    Expect::Compute => {
                        req.expected.push((
                            "OUTPUT0",
                            Expected::Exact(le(std::array::from_fn(|i| a[i] + b[i]))),
                        ));
                        req.expected.push((
                            "OUTPUT1",
                            Expected::Exact(le(std::array::from_fn(|i| a[i] - b[i]))),
                        ));
                    }
                    Expect::Echo => {
                        req.expected.push(("OUTPUT0", Expected::Exact(le(a))));
                        req.expected.push(("OUTPUT1", Expected::Exact(le(b))));
                    }
                    Expect::Nothing => {}
                }
            }
            Kind::Identity => {
                let payload = self.payload.as_ref().expect("built in new");
                req.header.clear();
                req.header
                    .extend_from_slice(self.fixed_header.as_ref().expect("built in new"));
                req.shared = Some(payload.clone());
                if self.expect != Expect::Nothing {
                    req.expected
                        .push(("OUTPUT0", Expected::Shared(payload.clone())));
                }
            }
            Kind::Upper => {
                // Non-ASCII bytes must come back unchanged (bytes.upper() is ASCII-only).
                let text = format!("rustpy bench w{worker} request #{seq}: crème brûlée");
                push_bytes_element(&mut req.data, text.as_bytes());
                let h = serde_json::json!({
                    "inputs": [{ "name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                                 "parameters": { "binary_data_size": req.data.len() } }],
                    "outputs": [binary_output("UPPER")],
                });
                req.header.clear();
                serde_json::to_writer(&mut req.header, &h).expect("serialisable");
                let out = match self.expect {
                    Expect::Compute => Some(text.as_bytes().to_ascii_uppercase()),
                    Expect::Echo => Some(text.into_bytes()),
                    Expect::Nothing => None,
                };
                if let Some(out) = out {
                    let mut e = Vec::with_capacity(out.len() + 4);
                    push_bytes_element(&mut e, &out);
                    req.expected.push(("UPPER", Expected::Exact(e)));
                }
            }
        }
        req.tensor_bytes = req.data.len() + req.shared.as_ref().map_or(0, |s| s.len());
    }

    /// Checks a 200 response body against `req.expected`; returns the number
    /// of output tensor bytes on success.
    pub fn validate(
        &self,
        req: &Request,
        header_len: Option<usize>,
        body: &[u8],
    ) -> Result<usize, String> {
        let hl = header_len.unwrap_or(body.len());
        if hl > body.len() {
            return Err(format!(
                "Inference-Header-Content-Length {hl} > body length {}",
                body.len()
            ));
        }
        let header: Value = serde_json::from_slice(&body[..hl])
            .map_err(|e| format!("response header is not JSON: {e}"))?;
        let outputs = header
            .get("outputs")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                format!(
                    "response has no outputs: {}",
                    String::from_utf8_lossy(&body[..hl.min(300)])
                )
            })?;
        let mut offset = hl;
        let mut found = vec![false; req.expected.len()];
        for out in outputs {
            let name = out.get("name").and_then(Value::as_str).unwrap_or("");
            let size = out
                .get("parameters")
                .and_then(|p| p.get("binary_data_size"))
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("output {name:?} is not binary"))?
                as usize;
            let data = body.get(offset..offset + size).ok_or_else(|| {
                format!("output {name:?}: {size} bytes announced, body too short")
            })?;
            offset += size;
            if let Some(i) = req.expected.iter().position(|(n, _)| *n == name) {
                found[i] = true;
                check(name, &req.expected[i].1, data, self.full_check)?;
            }
        }
        if offset != body.len() {
            return Err(format!(
                "{} trailing bytes after the outputs",
                body.len() - offset
            ));
        }
        if let Some(i) = found.iter().position(|f| !f) {
            return Err(format!(
                "output {:?} missing from the response",
                req.expected[i].0
            ));
        }
        Ok(offset - hl)
    }
}

fn check(name: &str, expected: &Expected, got: &[u8], full: bool) -> Result<(), String> {
    let want: &[u8] = match expected {
        Expected::Exact(v) => v,
        Expected::Shared(v) => v,
    };
    if want.len() != got.len() {
        return Err(format!(
            "output {name:?}: {} bytes, expected {}",
            got.len(),
            want.len()
        ));
    }
    let sampled = matches!(expected, Expected::Shared(_)) && !full && want.len() > 64 * 1024;
    if sampled {
        // Beginning, middle, end, and a stride through the whole buffer.
        const W: usize = 4096;
        let n = want.len();
        for start in [0, n / 2 - W / 2, n - W] {
            if want[start..start + W] != got[start..start + W] {
                return Err(format!(
                    "output {name:?}: wrong bytes in [{start}, {})",
                    start + W
                ));
            }
        }
        let stride = 4093; // prime, so every page is visited at a different offset
        let mut i = 0;
        while i < n {
            if want[i] != got[i] {
                return Err(format!("output {name:?}: wrong byte at {i}"));
            }
            i += stride;
        }
        Ok(())
    } else if want != got {
        let at = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0);
        Err(format!(
            "output {name:?}: wrong value (first difference at byte {at})"
        ))
    } else {
        Ok(())
    }
}
