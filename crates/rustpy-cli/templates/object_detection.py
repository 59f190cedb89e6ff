"""{{name}}: object detection (scaffolded by `rustpy init`).

A deterministic toy detector that needs only numpy: it splits the image into a
grid and reports the cells whose colour stands out most from the image mean,
classed by their dominant channel (labels.txt: red, green, blue).

The request parameter `score_threshold` (request_parameters.json) drops
weaker detections.

Every image returns exactly MAX_DETECTIONS rows, because dim 0 of a batched
output must be the batch size; unused rows have score 0 and class -1.

Input   IMAGE    UINT8 [H, W, 3]
Output  BOXES    FP32  [{{max_detections}}, 4]   (x1, y1, x2, y2 in pixels)
        SCORES   FP32  [{{max_detections}}]
        CLASSES  INT32 [{{max_detections}}]
        LABELS   BYTES [{{max_detections}}]      (the class's label; "" when unused)
"""

import numpy as np

MAX_DETECTIONS = {{max_detections}}
GRID = 4


class Model:
    def initialize(self, ctx):
        # ctx.labels: the output's label_filename (Triton's classification
        # extension reads the same file), else labels.txt.
        self.labels = ctx.labels

    def predict(self, inputs, requests):
        images = inputs["IMAGE"]
        batched = images.ndim == 4  # [B, H, W, 3] when max_batch_size > 0
        if not batched:
            images = images[np.newaxis]
        # One threshold per image: request i owns batch_size consecutive images.
        thresholds = [r.parameters["score_threshold"] for r in requests for _ in range(r.batch_size if batched else 1)]
        results = [self._detect(image, t) for image, t in zip(images, thresholds)]
        out = {
            "BOXES": np.stack([r[0] for r in results]),
            "SCORES": np.stack([r[1] for r in results]),
            "CLASSES": np.stack([r[2] for r in results]),
            "LABELS": np.stack([self._names(r[2]) for r in results]),
        }
        return out if batched else {k: v[0] for k, v in out.items()}

    def _names(self, classes):
        return np.array([self.labels[c].encode() if c >= 0 else b"" for c in classes], dtype=np.object_)

    def _detect(self, image, threshold):
        boxes = np.zeros((MAX_DETECTIONS, 4), dtype=np.float32)
        scores = np.zeros(MAX_DETECTIONS, dtype=np.float32)
        classes = np.full(MAX_DETECTIONS, -1, dtype=np.int32)

        h, w = image.shape[:2]
        x = image.astype(np.float64) / 255.0
        mean = x.mean(axis=(0, 1))
        found = []
        for gy in range(GRID):
            y1, y2 = gy * h // GRID, (gy + 1) * h // GRID
            for gx in range(GRID):
                x1, x2 = gx * w // GRID, (gx + 1) * w // GRID
                cell = x[y1:y2, x1:x2]
                if cell.size == 0:
                    continue
                delta = cell.mean(axis=(0, 1)) - mean
                score = float(np.abs(delta).max())
                if score > threshold:
                    cls = int(np.argmax(delta)) % len(self.labels)
                    found.append((score, (x1, y1, x2, y2), cls))
        # Highest score first; ties broken by position for determinism.
        found.sort(key=lambda d: (-d[0], d[1]))
        for i, (score, box, cls) in enumerate(found[:MAX_DETECTIONS]):
            boxes[i] = box
            scores[i] = min(score, 1.0)
            classes[i] = cls
        return boxes, scores, classes
