"""{{name}}: streaming text generation (scaffolded by `rustpy init`).

The model is decoupled (config.pbtxt: model_transaction_policy { decoupled:
true }), so `predict` is a generator: each `yield` sends one response to every
request of the batch, and rustpy sends the final flag when it returns.

A deterministic toy that needs only numpy: it "generates" `max_tokens` words
picked from the prompt's own words and a small vocabulary by a generator
seeded from a stable hash of the prompt; with `temperature` 0 it repeats the
prompt's words in order instead. Both are request parameters declared in
request_parameters.json (types, defaults, ranges: rustpy checks them before
predict). `split_by_parameters` keeps requests with different parameters in
separate calls, so one call streams one `max_tokens` for all its requests.

Input  PROMPT  BYTES [1]     Output TOKEN  BYTES [1]  (one token per response)
"""

import hashlib

import numpy as np

VOCAB = (
    "the model a of and to in is that it for on with as was at by an be this "
    "which from or have are not but one all were when there can more"
).split()


class Model:
    split_by_parameters = True

    def initialize(self, ctx):
        pass

    def predict(self, inputs, requests):
        max_tokens = requests[0].parameters["max_tokens"]
        temperature = requests[0].parameters["temperature"]
        prompts = inputs["PROMPT"]
        shape = prompts.shape  # [B, 1] when batched, [1] otherwise
        streams = [_generate(_to_str(p), max_tokens, temperature) for p in prompts.reshape(-1)]
        for step in range(max_tokens):
            # Leading space on every token but the first, so the client can
            # concatenate the stream as it arrives.
            tokens = [(" " if step else "") + stream[step] for stream in streams]
            yield {"TOKEN": np.array([t.encode("utf-8") for t in tokens], dtype=np.object_).reshape(shape)}


def _to_str(value):
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _generate(prompt, n, temperature):
    if temperature == 0:
        words = prompt.split() or VOCAB
        return [words[i % len(words)] for i in range(n)]
    seed = int.from_bytes(hashlib.blake2b(prompt.encode("utf-8"), digest_size=8).digest(), "little")
    rng = np.random.Generator(np.random.PCG64(seed))
    words = prompt.split() + VOCAB
    return [words[i] for i in rng.integers(0, len(words), size=n)]
