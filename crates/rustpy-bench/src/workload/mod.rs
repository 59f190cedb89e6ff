//! The benchmark's workloads: how each request is built (KServe v2 JSON header
//! plus binary tensor data) and how its response is checked.

pub mod embed;
pub mod mlp;
pub mod ragged;

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
    /// FP32[512] INPUT -> FP32[128] OUTPUT: two dense layers (see `mlp`).
    Mlp,
    /// BYTES[1] TEXT -> FP32[64] EMBEDDING: tokenizer + mean of embeddings (see `embed`).
    Embed,
    /// INT32[n] TOKENS, n uniform in 8..=128 -> FP32[16] EMB: mean of
    /// embedding rows (see `ragged`).
    Ragged,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "add_sub" => Some(Kind::AddSub),
            "identity" => Some(Kind::Identity),
            "upper" => Some(Kind::Upper),
            "mlp" => Some(Kind::Mlp),
            "embed" => Some(Kind::Embed),
            "ragged" => Some(Kind::Ragged),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::AddSub => "add_sub",
            Kind::Identity => "identity",
            Kind::Upper => "upper",
            Kind::Mlp => "mlp",
            Kind::Embed => "embed",
            Kind::Ragged => "ragged",
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
    /// FP32 values computed here in f64: compared with a tolerance (BLAS
    /// summation order differs between libraries and batch sizes).
    Approx(Arc<Vec<f32>>),
}

/// One input tensor of a request, as the in-process driver passes it to
/// `TRITONSERVER_InferenceRequestAddInput` / `AppendInputData`.
pub struct Input<'a> {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
    pub data: &'a [u8],
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

#[derive(Clone)]
pub struct Workload {
    pub kind: Kind,
    pub expect: Expect,
    pub full_check: bool,
    /// Identity: the payload every request sends.
    payload: Option<Arc<Vec<u8>>>,
    /// Headers that do not change between requests.
    fixed_header: Option<Vec<u8>>,
    /// mlp / embed: request inputs (tensor bytes) and their reference outputs.
    pool: Vec<(Vec<u8>, Arc<Vec<f32>>)>,
    /// ragged: the JSON header of each pool entry (its shape differs), built
    /// once so that making a request costs the drivers no serialisation.
    pool_headers: Vec<Vec<u8>>,
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
            pool: Vec::new(),
            pool_headers: Vec::new(),
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
            Kind::Mlp => {
                let m = mlp::Mlp::new();
                w.pool = (0..POOL)
                    .map(|s| {
                        let x = mlp::input(s);
                        let y = m.forward(&x);
                        let bytes = x.iter().flat_map(|v| v.to_le_bytes()).collect();
                        (bytes, Arc::new(y))
                    })
                    .collect();
                let h = serde_json::json!({
                    "inputs": [{ "name": "INPUT", "shape": [1, mlp::IN], "datatype": "FP32",
                                 "parameters": { "binary_data_size": mlp::IN * 4 } }],
                    "outputs": [binary_output("OUTPUT")],
                });
                w.fixed_header = Some(serde_json::to_vec(&h).expect("serialisable"));
            }
            Kind::Embed => {
                w.pool = (0..POOL)
                    .map(|s| {
                        let text = embed::text(s);
                        let y = embed::embed(text.as_bytes());
                        let mut bytes = Vec::new();
                        push_bytes_element(&mut bytes, text.as_bytes());
                        (bytes, Arc::new(y))
                    })
                    .collect();
            }
            Kind::Ragged => {
                w.pool = (0..ragged::POOL)
                    .map(|s| {
                        let tokens = ragged::tokens(s);
                        let y = ragged::embed(&tokens);
                        let bytes = tokens.iter().flat_map(|v| v.to_le_bytes()).collect();
                        (bytes, Arc::new(y))
                    })
                    .collect();
                w.pool_headers = w
                    .pool
                    .iter()
                    .map(|(bytes, _)| {
                        let h = serde_json::json!({
                            "inputs": [{ "name": "TOKENS", "shape": [1, bytes.len() / 4], "datatype": "INT32",
                                         "parameters": { "binary_data_size": bytes.len() } }],
                            "outputs": [binary_output("EMB")],
                        });
                        serde_json::to_vec(&h).expect("serialisable")
                    })
                    .collect();
            }
        }
        w
    }

    /// The input tensors of `req` (built by `build`).
    pub fn inputs<'a>(&self, req: &'a Request) -> Vec<Input<'a>> {
        let one = |name, datatype, n: usize, data| Input {
            name,
            datatype,
            shape: vec![1, n as i64],
            data,
        };
        match self.kind {
            Kind::AddSub => vec![
                one("INPUT0", "FP32", 4, &req.data[..16]),
                one("INPUT1", "FP32", 4, &req.data[16..32]),
            ],
            Kind::Identity => {
                let d = req.shared.as_ref().map_or(&[][..], |s| &s[..]);
                vec![one("INPUT0", "UINT8", d.len(), d)]
            }
            Kind::Upper | Kind::Embed => vec![one("TEXT", "BYTES", 1, &req.data[..])],
            Kind::Mlp => vec![one("INPUT", "FP32", mlp::IN, &req.data[..])],
            Kind::Ragged => vec![one("TOKENS", "INT32", req.data.len() / 4, &req.data[..])],
        }
    }

    /// The outputs every request asks for.
    pub fn output_names(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::AddSub => &["OUTPUT0", "OUTPUT1"],
            Kind::Identity => &["OUTPUT0"],
            Kind::Upper => &["UPPER"],
            Kind::Mlp => &["OUTPUT"],
            Kind::Embed => &["EMBEDDING"],
            Kind::Ragged => &["EMB"],
        }
    }

    /// Checks one output tensor; `Ok(true)` if it was an expected output.
    pub fn check_output(&self, req: &Request, name: &str, data: &[u8]) -> Result<bool, String> {
        match req.expected.iter().find(|(n, _)| *n == name) {
            Some((_, e)) => check(name, e, data, self.full_check).map(|_| true),
            None => Ok(false),
        }
    }

    /// Fills `req` for request number `seq` of worker `worker`.
    pub fn build(&self, worker: usize, seq: u64, req: &mut Request) {
        req.data.clear();
        req.expected.clear();
        req.shared = None;
        match self.kind {
            Kind::AddSub => self.build_add_sub(worker, seq, req),
            Kind::Identity => self.build_identity(req),
            Kind::Upper => self.build_upper(worker, seq, req),
            Kind::Mlp | Kind::Embed => self.build_pooled(worker, seq, req),
            Kind::Ragged => self.build_ragged(worker, seq, req),
        }
        req.tensor_bytes = req.data.len() + req.shared.as_ref().map_or(0, |s| s.len());
    }

    /// add_sub: two FP32[4] inputs from the worker and sequence numbers.
    fn build_add_sub(&self, worker: usize, seq: u64, req: &mut Request) {
        let base = ((worker as u64 * 1_000_003 + seq) % (1 << 20)) as f32;
        let a: [f32; 4] = std::array::from_fn(|i| base + i as f32);
        let b: [f32; 4] = std::array::from_fn(|i| ((seq * 7 + i as u64) % 1000) as f32 - 500.0);
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

    /// identity: the shared payload, sent as is.
    fn build_identity(&self, req: &mut Request) {
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

    /// upper: one BYTES element of text (with non-ASCII bytes).
    fn build_upper(&self, worker: usize, seq: u64, req: &mut Request) {
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

    /// mlp / embed: one request of the precomputed pool.
    fn build_pooled(&self, worker: usize, seq: u64, req: &mut Request) {
        let (bytes, expected) = &self.pool[pool_index(worker, seq)];
        req.data.extend_from_slice(bytes);
        req.header.clear();
        if self.kind == Kind::Mlp {
            req.header
                .extend_from_slice(self.fixed_header.as_ref().expect("built in new"));
        } else {
            let h = serde_json::json!({
                "inputs": [{ "name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                             "parameters": { "binary_data_size": req.data.len() } }],
                "outputs": [binary_output("EMBEDDING")],
            });
            serde_json::to_writer(&mut req.header, &h).expect("serialisable");
        }
        if self.expect == Expect::Compute {
            let out = if self.kind == Kind::Mlp {
                "OUTPUT"
            } else {
                "EMBEDDING"
            };
            req.expected.push((out, Expected::Approx(expected.clone())));
        }
    }

    /// ragged: one request of the pool, each with its own length.
    fn build_ragged(&self, worker: usize, seq: u64, req: &mut Request) {
        let k = ragged::pool_index(worker, seq);
        let (bytes, expected) = &self.pool[k];
        req.data.extend_from_slice(bytes);
        req.header.clear();
        req.header.extend_from_slice(&self.pool_headers[k]);
        if self.expect == Expect::Compute {
            req.expected
                .push(("EMB", Expected::Approx(expected.clone())));
        }
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

/// Distinct inputs of the mlp and embed workloads (reference outputs are
/// computed once, so checking a response costs a comparison).
const POOL: usize = 64;

fn pool_index(worker: usize, seq: u64) -> usize {
    ((worker as u64 * 7 + seq) % POOL as u64) as usize
}

fn check(name: &str, expected: &Expected, got: &[u8], full: bool) -> Result<(), String> {
    let want: &[u8] = match expected {
        Expected::Exact(v) => v,
        Expected::Shared(v) => v,
        Expected::Approx(v) => return check_approx(name, v, got),
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

fn check_approx(name: &str, want: &[f32], got: &[u8]) -> Result<(), String> {
    if got.len() != want.len() * 4 {
        return Err(format!(
            "output {name:?}: {} bytes, expected {} FP32 values",
            got.len(),
            want.len()
        ));
    }
    for (i, (w, g)) in want.iter().zip(got.chunks_exact(4)).enumerate() {
        let g = f32::from_le_bytes(g.try_into().expect("4 bytes"));
        // Written so that a NaN answer fails too.
        let close = (g - w).abs() <= 1e-3 + 1e-3 * w.abs();
        if !close {
            return Err(format!("output {name:?}[{i}] = {g}, expected {w}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_splits_on_non_alphanumerics_and_lowercases() {
        assert_eq!(embed::tokenize(b"Ab, ab!"), embed::tokenize(b"ab ab"));
        assert_eq!(embed::tokenize(b"  ").len(), 0);
        assert_eq!(embed::tokenize(b"x1 y2 z3").len(), 3);
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(embed::tokenize(b"a"), vec![0xe40c_292c % embed::VOCAB]);
    }

    #[test]
    fn mlp_reference_matches_a_direct_computation() {
        let m = mlp::Mlp::new();
        let x = mlp::input(3);
        let y = m.forward(&x);
        // Output 5 computed the slow way.
        let mut acc = mlp::b2(5) as f64;
        for j in 0..mlp::HIDDEN {
            let mut h = mlp::b1(j) as f64;
            for (i, xi) in x.iter().enumerate().take(mlp::IN) {
                h += *xi as f64 * mlp::w1(i, j) as f64;
            }
            acc += h.max(0.0) * mlp::w2(j, 5) as f64;
        }
        assert!((y[5] as f64 - acc).abs() < 1e-5, "{} vs {acc}", y[5]);
        // Distinct pool inputs give distinct outputs (a mixed-up row would show).
        assert_ne!(m.forward(&mlp::input(4)), y);
    }

    #[test]
    fn approx_check_rejects_wrong_values() {
        let want = vec![1.0f32, -2.0];
        let ok: Vec<u8> = [1.0f32, -2.0005]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bad: Vec<u8> = [1.0f32, -2.1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(check_approx("Y", &want, &ok).is_ok());
        assert!(check_approx("Y", &want, &bad).is_err());
        assert!(check_approx("Y", &want, &ok[..4]).is_err());
    }

    #[test]
    fn inputs_describe_the_request_tensors() {
        let w = Workload::new(Kind::AddSub, Expect::Compute, 0, false);
        let mut r = Request::default();
        w.build(1, 2, &mut r);
        let ins = w.inputs(&r);
        assert_eq!(ins.len(), 2);
        assert_eq!(
            (ins[0].name, ins[0].datatype, ins[0].shape.clone()),
            ("INPUT0", "FP32", vec![1, 4])
        );
        let w = Workload::new(Kind::Mlp, Expect::Compute, 0, false);
        w.build(0, 0, &mut r);
        assert_eq!(w.inputs(&r)[0].data.len(), mlp::IN * 4);
        let w = Workload::new(Kind::Embed, Expect::Compute, 0, false);
        w.build(0, 5, &mut r);
        let t = embed::text(5);
        assert_eq!(&w.inputs(&r)[0].data[4..], t.as_bytes());
    }

    #[test]
    fn ragged_lengths_are_uniform_over_8_to_128_and_requests_carry_them() {
        let lens: Vec<usize> = (0..ragged::POOL).map(|s| ragged::tokens(s).len()).collect();
        assert!(lens
            .iter()
            .all(|&n| (ragged::MIN_LEN..=ragged::MAX_LEN).contains(&n)));
        let distinct: std::collections::HashSet<_> = lens.iter().collect();
        assert!(distinct.len() > 100, "{} distinct lengths", distinct.len());
        let mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
        assert!((mean - 68.0).abs() < 6.0, "mean length {mean}");
        // Seeded: the same pool every time.
        assert_eq!(ragged::tokens(7), ragged::tokens(7));
        let w = Workload::new(Kind::Ragged, Expect::Compute, 0, false);
        let mut r = Request::default();
        w.build(0, 7, &mut r);
        let ins = w.inputs(&r);
        let n = ragged::tokens(7).len();
        assert_eq!((ins[0].name, ins[0].datatype), ("TOKENS", "INT32"));
        assert_eq!(ins[0].shape, vec![1, n as i64]);
        assert_eq!(ins[0].data.len(), 4 * n);
        let header: Value = serde_json::from_slice(&r.header).unwrap();
        assert_eq!(header["inputs"][0]["shape"], serde_json::json!([1, n]));
        // The reference is the mean of the table rows (row 0 by hand).
        let t = ragged::tokens(7);
        let want: f64 = t
            .iter()
            .map(|&v| ragged::table(v as u32, 0) as f64)
            .sum::<f64>()
            / n as f64;
        assert!((ragged::embed(&t)[0] as f64 - want).abs() < 1e-6);
    }

    #[test]
    fn ragged_validation_rejects_another_requests_mean() {
        let w = Workload::new(Kind::Ragged, Expect::Compute, 0, false);
        let mut r = Request::default();
        w.build(0, 3, &mut r);
        let body = |emb: &[f32]| {
            let data: Vec<u8> = emb.iter().flat_map(|v| v.to_le_bytes()).collect();
            let h = serde_json::json!({ "outputs": [{ "name": "EMB", "datatype": "FP32", "shape": [1, 16],
                                         "parameters": { "binary_data_size": data.len() } }] });
            let mut b = serde_json::to_vec(&h).unwrap();
            let hl = b.len();
            b.extend_from_slice(&data);
            (hl, b)
        };
        let (hl, good) = body(&ragged::embed(&ragged::tokens(3)));
        assert_eq!(w.validate(&r, Some(hl), &good), Ok(64));
        // A scatter that mixed up requests hands back a neighbour's mean.
        let (hl, bad) = body(&ragged::embed(&ragged::tokens(4)));
        assert!(w.validate(&r, Some(hl), &bad).unwrap_err().contains("EMB"));
    }
}
