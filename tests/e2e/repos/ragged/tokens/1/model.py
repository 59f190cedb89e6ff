import numpy as np


class Model:
    def predict(self, inputs, requests):
        tokens = inputs["TOKENS"]
        count, index, offsets = inputs["COUNT"], inputs["INDEX"], inputs["OFFSETS"]
        shapes, flat = inputs["SHAPES"], inputs["SHAPES_FLAT"]
        n = len(requests)
        # The batch inputs must agree with each other and with the data
        # (the request fails otherwise, which the test would see).
        assert tokens.ndim == 1 and tokens.dtype == np.int32, tokens.shape
        assert count.dtype == np.int32 and count.shape == (n,), count
        assert index.dtype == np.float32 and index.shape == (n,), index
        assert offsets.shape == (n + 1,) and offsets[0] == 0, offsets
        assert (np.diff(offsets) == count).all() and (offsets[1:] == index).all()
        assert offsets[-1] == tokens.shape[0]
        assert inputs["MAXLEN"].shape == (int(count.max()),)
        rows = sum(r.batch_size for r in requests)
        assert shapes.shape == (rows, 1) and (shapes.reshape(-1) == flat).all()
        sums, k = [], 0
        for i, r in enumerate(requests):
            seg = tokens[offsets[i]:offsets[i + 1]].reshape(r.batch_size, -1)
            assert (shapes[k:k + r.batch_size, 0] == seg.shape[1]).all()
            sums.extend(seg.sum(axis=1, dtype=np.int64))
            k += r.batch_size
        doubled = tokens * 2
        if any(r.parameters.get("mode") == "badlen" for r in requests):
            doubled = doubled[:-1]
        return {
            "DOUBLED": doubled,
            "SUM": np.array(sums, np.int64).reshape(-1, 1),
            "NREQ": np.full((rows, 1), n, np.int32),
        }
