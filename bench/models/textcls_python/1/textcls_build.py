"""The text classifier of the textcls workload, built in code (no downloads):
a Hugging Face `tokenizers` WordLevel tokenizer trained on a generated corpus
and an ONNX graph made with `onnx.helper` (embedding lookup, masked mean
pool, linear layer, softmax), run by an `onnxruntime` session. Seeded: every
variant of the workload builds the same classifier.

Threads, as docs/performance.md advises for a small model on a few cores:
one intra-op thread per session (parallelism comes from batching and
instances), and no tokenizer thread pool (TOKENIZERS_PARALLELISM=false, set
before the first encode).
"""
import os
import sys

import numpy as np

# Where ci/bench's servers find tokenizers and onnxruntime (ci/install.sh's
# serving-site): the official backend's stub ignores PYTHONPATH (its
# interpreter does not read the environment), so ci/bench names the directory
# in RUSTPY_BENCH_SITE and both backends append it here.
_SITE = os.environ.get("RUSTPY_BENCH_SITE")
if _SITE and _SITE not in sys.path:
    sys.path.append(_SITE)

CLASSES = 4
DIM = 64
MAX_TOKENS = 64

# The request texts' words (bench/perf_analyzer.py, rustpy-bench's embed::text)
# and generated ones, so the vocabulary is a realistic few thousand entries.
WORDS = ("Triton serves models from Python and Rust in one process batching requests numpy "
         "arrays tokens are hashed into a vocabulary of 4096 entries quickly").split()
SYLLABLES = "ka to ri en sa mo lu vi de na po te xi ru ba fo".split()


def corpus(n=6000):
    rng = np.random.default_rng(2024)
    for _ in range(n):
        words = []
        for _ in range(int(rng.integers(6, 24))):
            if rng.random() < 0.3:
                words.append(WORDS[int(rng.integers(len(WORDS)))])
            else:
                words.append("".join(SYLLABLES[int(k)] for k in rng.integers(len(SYLLABLES), size=3)))
        yield " ".join(words)


def tokenizer():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus(), trainer=trainers.WordLevelTrainer(
        vocab_size=8192, special_tokens=["[PAD]", "[UNK]"]))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=MAX_TOKENS)
    return tok


def onnx_model(vocab):
    from onnx import TensorProto, checker, helper, numpy_helper

    rng = np.random.default_rng(7)
    const = {
        "emb": rng.standard_normal((vocab, DIM)).astype(np.float32),
        "w": (rng.standard_normal((DIM, CLASSES)) / 8).astype(np.float32),
        "b": np.zeros(CLASSES, np.float32),
        "axis1": np.array([1], np.int64),
        "axis2": np.array([2], np.int64),
        "one": np.array([1.0], np.float32),
    }
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["x"]),                 # [b, s, D]
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),                   # [b, s, 1]
        helper.make_node("Mul", ["x", "m3"], ["xm"]),
        helper.make_node("ReduceSum", ["xm", "axis1"], ["sum"], keepdims=0),      # [b, D]
        helper.make_node("ReduceSum", ["m3", "axis1"], ["count"], keepdims=0),    # [b, 1]
        helper.make_node("Max", ["count", "one"], ["count1"]),
        helper.make_node("Div", ["sum", "count1"], ["mean"]),
        helper.make_node("Gemm", ["mean", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    io = lambda name, t, dims: helper.make_tensor_value_info(name, t, dims)  # noqa: E731
    graph = helper.make_graph(
        nodes, "textcls",
        [io("input_ids", TensorProto.INT64, ["batch", "seq"]),
         io("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [io("probs", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(v, k) for k, v in const.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    checker.check_model(model)
    return model.SerializeToString()


def build():
    """(tokenizer, onnxruntime session)."""
    import onnxruntime as ort

    tok = tokenizer()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_model(tok.get_vocab_size()), options,
                                   providers=["CPUExecutionProvider"])
    return tok, session


def run(session, encodings):
    """Class probabilities FP32[len(encodings), CLASSES], one session.run."""
    ids = np.array([e.ids for e in encodings], np.int64)
    mask = np.array([e.attention_mask for e in encodings], np.int64)
    return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
