//! The mlp workload: y = relu(x·W1 + b1)·W2 + b2 with FP32[512] in, a 1024
//! hidden layer and FP32[128] out. Weights and inputs come from integer
//! formulas (exact in FP32) that bench/models/mlp_*/1/model.py repeat with
//! numpy, so the reference needs no weight file.

pub const IN: usize = 512;
pub const HIDDEN: usize = 1024;
pub const OUT: usize = 128;

pub fn w1(i: usize, j: usize) -> f32 {
    (((i * 37 + j * 11) % 61) as f32 - 30.0) / 1024.0
}
pub fn b1(j: usize) -> f32 {
    ((j % 7) as f32 - 3.0) / 64.0
}
pub fn w2(j: usize, k: usize) -> f32 {
    (((j * 13 + k * 29) % 53) as f32 - 26.0) / 1024.0
}
pub fn b2(k: usize) -> f32 {
    ((k % 5) as f32 - 2.0) / 32.0
}

/// Input number `s` of the pool.
pub fn input(s: usize) -> Vec<f32> {
    (0..IN)
        .map(|i| (((i * (2 * s + 1) + 7 * s) % 101) as f32 - 50.0) / 64.0)
        .collect()
}

pub struct Mlp {
    w1: Vec<f64>,
    w2: Vec<f64>,
}

impl Mlp {
    pub fn new() -> Mlp {
        let mut w1 = vec![0.0; IN * HIDDEN];
        for i in 0..IN {
            for j in 0..HIDDEN {
                w1[i * HIDDEN + j] = self::w1(i, j) as f64;
            }
        }
        let mut w2 = vec![0.0; HIDDEN * OUT];
        for j in 0..HIDDEN {
            for k in 0..OUT {
                w2[j * OUT + k] = self::w2(j, k) as f64;
            }
        }
        Mlp { w1, w2 }
    }

    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut h: Vec<f64> = (0..HIDDEN).map(|j| b1(j) as f64).collect();
        for (i, &xi) in x.iter().enumerate() {
            let row = &self.w1[i * HIDDEN..(i + 1) * HIDDEN];
            for (hj, w) in h.iter_mut().zip(row) {
                *hj += xi as f64 * w;
            }
        }
        let mut y: Vec<f64> = (0..OUT).map(|k| b2(k) as f64).collect();
        for (j, &hj) in h.iter().enumerate() {
            let hj = hj.max(0.0);
            let row = &self.w2[j * OUT..(j + 1) * OUT];
            for (yk, w) in y.iter_mut().zip(row) {
                *yk += hj * w;
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }
}

impl Default for Mlp {
    fn default() -> Self {
        Mlp::new()
    }
}
