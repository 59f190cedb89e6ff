"""Where a textcls request's time goes outside any server: the classifier of
bench/models/textcls_python/1/textcls_build.py, timed alone with the serving
interpreter (ci/bench runs this and prints the result under the textcls
tables). Per request, at batch 1 (the official backend's loop) and per row at
batch 16 (the batched API): tokenizing, building the id arrays, session.run.

    RUSTPY_BENCH_SITE=$RUSTPY_DEPS/serving-site /usr/bin/python3.11 bench/textcls_profile.py
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "models" / "textcls_python" / "1"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))  # perf_analyzer imports tritonharness
import numpy as np  # noqa: E402

import textcls_build  # noqa: E402
from perf_analyzer import text  # noqa: E402  (the requests' texts)


def per_call_us(fn, seconds=0.4):
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n * 1e6


def main():
    tok, session = textcls_build.build()
    texts = [text(s) for s in range(64)]
    out = {"vocab": tok.get_vocab_size(), "texts_mean_chars": round(sum(map(len, texts)) / len(texts), 1)}
    k = iter(range(10**9))

    def one_text():
        return texts[next(k) % 64]

    enc1 = [tok.encode(texts[5])]
    out["batch1_us"] = {
        "tokenize": per_call_us(lambda: tok.encode(one_text())),
        "arrays": per_call_us(lambda: (np.array([e.ids for e in enc1], np.int64),
                                       np.array([e.attention_mask for e in enc1], np.int64))),
        "session_run": per_call_us(lambda: textcls_build.run(session, enc1)),
    }
    batch = texts[:16]
    enc16 = tok.encode_batch(batch)
    ids = np.array([e.ids for e in enc16], np.int64)
    mask = np.array([e.attention_mask for e in enc16], np.int64)
    out["batch16_us_per_row"] = {
        "tokenize": per_call_us(lambda: tok.encode_batch(batch)) / 16,
        "arrays": per_call_us(lambda: (np.array([e.ids for e in enc16], np.int64),
                                       np.array([e.attention_mask for e in enc16], np.int64))) / 16,
        "session_run": per_call_us(lambda: session.run(None, {"input_ids": ids, "attention_mask": mask})) / 16,
    }
    for k2 in ("batch1_us", "batch16_us_per_row"):
        out[k2] = {a: round(b, 1) for a, b in out[k2].items()}
        out[k2]["total"] = round(sum(out[k2].values()), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
