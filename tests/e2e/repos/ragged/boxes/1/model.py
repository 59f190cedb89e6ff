import numpy as np


class Model:
    def predict(self, inputs, requests):
        ns = inputs["N"][:, 0]
        out, row = [], 0
        for r in requests:
            n = int(ns[row])
            row += r.batch_size
            boxes = np.arange(n * 4, dtype=np.float32).reshape(1, n, 4) + 1000 * n
            scores = np.full((1, n), len(requests), np.float32)
            mode = r.parameters.get("mode")
            if mode == "missing":
                out.append({"BOXES": boxes})
            elif mode == "mix":
                out.append(boxes)
            else:
                out.append({"BOXES": boxes, "SCORES": scores})
        if any(r.parameters.get("mode") == "short" for r in requests):
            out = out[:-1]
        return out
