//! The ragged workload (issue 12): variable-length token ids, lengths
//! uniform in 8..=128 from a seeded generator, and the mean of each
//! request's rows of an integer-formula embedding table (exact in FP32).
//! bench/models/ragged_*/1/model.py build the same table with numpy.

pub const VOCAB: u32 = 1024;
pub const DIM: usize = 16;
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;
/// Distinct requests (each with its own length and tokens).
pub const POOL: usize = 512;
/// The generator's seed: every run sends the same sequence of requests.
pub const SEED: u64 = 0x005e_ed12;

pub fn table(v: u32, d: usize) -> f32 {
    (((v as usize * 131 + d * 71) % 251) as f32 - 125.0) / 256.0
}

/// splitmix64: a small seeded generator, enough for uniform lengths.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Request number `s` of the pool: its token ids (length uniform in
/// MIN_LEN..=MAX_LEN, ids uniform in 0..VOCAB).
pub fn tokens(s: usize) -> Vec<i32> {
    let mut st = SEED ^ (s as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let span = (MAX_LEN - MIN_LEN + 1) as u64;
    let n = MIN_LEN + (splitmix(&mut st) % span) as usize;
    (0..n)
        .map(|_| (splitmix(&mut st) % VOCAB as u64) as i32)
        .collect()
}

pub fn embed(tokens: &[i32]) -> Vec<f32> {
    let mut v = vec![0.0f64; DIM];
    for &t in tokens {
        for (d, x) in v.iter_mut().enumerate() {
            *x += table(t as u32 % VOCAB, d) as f64;
        }
    }
    let n = tokens.len().max(1) as f64;
    v.into_iter().map(|x| (x / n) as f32).collect()
}

/// Which pool entry worker `worker` sends as its request `seq`: the
/// workers walk the pool from different starts.
pub fn pool_index(worker: usize, seq: u64) -> usize {
    ((worker as u64 * 97 + seq) % POOL as u64) as usize
}
