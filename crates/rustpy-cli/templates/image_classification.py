"""{{name}}: image classification (scaffolded by `rustpy init`).

A deterministic toy classifier that needs only numpy: it summarises each image
into a few colour statistics and scores them with fixed weights. Replace
`_features` and `_weights` with your real network.

Input  IMAGE  UINT8 [H, W, 3]     Output PROBS FP32 [num_labels]

Request parameters (request_parameters.json): `threshold` zeroes the
probabilities below it, `top_k` (0 = all) keeps only the k best. For
"score:index:label" strings, ask Triton for the output with class_count
(its classification extension reads label_filename).
"""

import numpy as np


class Model:
    def initialize(self, ctx):
        # ctx.labels: the output's label_filename (Triton's classification
        # extension reads the same file), else labels.txt.
        self.labels = ctx.labels
        self.weights, self.bias = _weights(num_features=18, num_labels=len(self.labels))

    def predict(self, inputs, requests):
        images = inputs["IMAGE"]
        # With max_batch_size > 0 the batch is stacked on dim 0: [B, H, W, 3];
        # with max_batch_size == 0 predict sees one [H, W, 3] image.
        batched = images.ndim == 4
        if not batched:
            images = images[np.newaxis]
        logits = _features(images) @ self.weights + self.bias
        probs = _softmax(logits).astype(np.float32)
        # One row per image; request i owns batch_size consecutive rows.
        row = 0
        for r in requests:
            for _ in range(r.batch_size if batched else 1):
                _filter(probs[row], r.parameters["threshold"], r.parameters["top_k"])
                row += 1
        return {"PROBS": probs if batched else probs[0]}

    def finalize(self):
        pass


def _features(images):
    """[B, H, W, 3] uint8 -> [B, 18] float64: per-channel mean and std of the
    whole image and mean of each quadrant, scaled to [0, 1]."""
    x = images.astype(np.float64) / 255.0
    h, w = x.shape[1] // 2, x.shape[2] // 2
    feats = [x.mean(axis=(1, 2)), x.std(axis=(1, 2))]
    for rows in (slice(None, max(h, 1)), slice(h, None)):
        for cols in (slice(None, max(w, 1)), slice(w, None)):
            quadrant = x[:, rows, cols, :]
            feats.append(quadrant.mean(axis=(1, 2)) if quadrant.size else np.zeros((x.shape[0], 3)))
    return np.concatenate(feats, axis=1)


def _weights(num_features, num_labels):
    """Fixed pseudo-weights from a closed formula, so every run agrees."""
    i = np.arange(num_features, dtype=np.float64)[:, np.newaxis]
    j = np.arange(num_labels, dtype=np.float64)[np.newaxis, :]
    return 4.0 * np.sin(1.3 * i + 0.7 * j + 0.1 * i * j), 0.1 * np.cos(j[0])


def _filter(probs, threshold, top_k):
    """In place: zero the probabilities below `threshold` and, when top_k > 0,
    all but the top_k largest."""
    probs[probs < threshold] = 0.0
    if 0 < top_k < probs.size:
        probs[np.argsort(-probs, kind="stable")[top_k:]] = 0.0


def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
