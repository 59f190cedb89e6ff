//! The embed workload: a pure-Python tokenizer step (lower-case, split into
//! ASCII letter/digit runs, FNV-1a 32-bit hash of each token modulo the
//! vocabulary), then the mean of the tokens' rows of an embedding table,
//! L2-normalised. bench/models/embed_*/1/model.py implement the same.

pub const VOCAB: u32 = 4096;
pub const DIM: usize = 64;

pub fn table(v: u32, d: usize) -> f32 {
    (((v as usize * 131 + d * 71) % 251) as f32 - 125.0) / 256.0
}

pub fn tokenize(text: &[u8]) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut h: u32 = 0x811c_9dc5;
    let mut in_word = false;
    for &b in text {
        let b = b.to_ascii_lowercase();
        if b.is_ascii_digit() || b.is_ascii_lowercase() {
            h = (h ^ b as u32).wrapping_mul(16_777_619);
            in_word = true;
        } else if in_word {
            ids.push(h % VOCAB);
            h = 0x811c_9dc5;
            in_word = false;
        }
    }
    if in_word {
        ids.push(h % VOCAB);
    }
    ids
}

pub fn embed(text: &[u8]) -> Vec<f32> {
    let ids = tokenize(text);
    let mut v = vec![0.0f64; DIM];
    for &id in &ids {
        for (d, x) in v.iter_mut().enumerate() {
            *x += table(id, d) as f64;
        }
    }
    let n = ids.len().max(1) as f64;
    v.iter_mut().for_each(|x| *x /= n);
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-6);
    v.into_iter().map(|x| (x / norm) as f32).collect()
}

const WORDS: [&str; 24] = [
    "Triton",
    "serves",
    "models",
    "from",
    "Python",
    "and",
    "Rust",
    "in",
    "one",
    "process",
    "batching",
    "requests",
    "numpy",
    "arrays",
    "tokens",
    "are",
    "hashed",
    "into",
    "a",
    "vocabulary",
    "of",
    "4096",
    "entries",
    "quickly",
];

/// Text number `s` of the pool: 8 to 39 words, punctuation included.
pub fn text(s: usize) -> String {
    let n = 8 + (s * 13) % 32;
    let mut out = String::new();
    for k in 0..n {
        if k > 0 {
            out.push_str(if k % 7 == 0 { ", " } else { " " });
        }
        out.push_str(WORDS[(s * 5 + k * 11 + k * k) % WORDS.len()]);
    }
    out.push('.');
    out
}
