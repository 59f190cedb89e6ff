"""textcls on rustpy's batched API: one predict() per dynamic batch, the
texts tokenized with one encode_batch call and classified with one
session.run (textcls_build.py builds the same classifier as textcls_python).

BYTES TEXT [1] -> FP32 PROBS [4] (class probabilities).
"""
from textcls_build import CLASSES, build, run


class Model:
    def initialize(self, ctx):
        self.tokenizer, self.session = build()

    def predict(self, inputs):
        texts = inputs["TEXT"]
        probs = run(self.session, self.tokenizer.encode_batch([t.decode() for t in texts.reshape(-1)]))
        return {"PROBS": probs.reshape(texts.shape[:-1] + (CLASSES,))}
