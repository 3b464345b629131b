"""The bundled local model through ONNX Runtime: converted once from the bundled weights, cached on disk.

Owns converting all-MiniLM-L6-v2's transformer to ONNX (``torch.onnx.export``,
at first use; torch is only needed for that), the on-disk cache of the
converted file, and :class:`OnnxSentenceEncoder`, which reproduces what
sentence-transformers does for this model: the model's own tokenizer with
truncation at ``max_seq_length`` (256, from ``sentence_bert_config.json``),
mean pooling over the attention mask, then L2 normalisation
(``modules.json``: Transformer -> Pooling(mean) -> Normalize).

Why the conversion is done the way it is (bench-results/local_runtime.json):

- The model is exported with eager attention, not transformers' default
  SDPA: the exporter writes SDPA out as unfused matmuls behind a NaN guard
  (``IsNaN``/``Where`` over every attention score), which alone took about a
  quarter of the run time and made fp32 ONNX slower than torch.
- The exported graph is then fused by onnxruntime's transformer optimizer
  (one ``Attention`` per layer, ``SkipLayerNormalization``, ``BiasGelu``,
  ``EmbedLayerNormalization``). fp32 is then on a par with torch per padded
  token, not faster: both spend their time in the same fp32 matrix products
  (MKL vs MLAS), so fp32 cannot reach 2x torch on this machine.
- Batches are cut by padded tokens as well as by count, longest first, so a
  batch of short texts is not padded to a long one's width (with it, fp32
  measured 1.2-1.6x torch's batch-64 encode on the benchmark sample).

The cache file is named by a key over the model files' sha256, the
onnxruntime and torch versions, the conversion format and the quantisation,
so new weights or a new runtime convert again instead of loading a stale
file. It is written to a temporary file in the same folder and renamed into
place, so two processes converting at once each write their own temporary
file and the last rename wins with a complete file.

Dynamic int8 quantisation (``quantize=True``) of the fused graph is what makes
ONNX Runtime about twice as fast as torch or better here (int8 matrix products
with VNNI/AMX). It moves vectors (cosine to fp32 about 0.99, see the
benchmark), so vectors from it must not share the embedding cache key of the
fp32 model; :class:`~sitekb.providers.local.LocalEmbedder` does not use it.

Settings read: none (the cache folder is passed in).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

# Bump when the exported graph changes (inputs, outputs, opset, fusion, quantisation options).
# 2: eager-attention export fused by onnxruntime's transformer optimizer; int8 also quantises Attention.
CONVERSION_FORMAT = 2
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Padded tokens per forward run. Larger runs were no faster per token, and a batch of 64 texts sorted
# by length still pads its short ones to the longest (measured on the benchmark's mixed-length sample:
# runs of <= 4096 tokens ~1.2x faster than whole batches of 64, fp32 and int8 alike; 1024-8192 similar).
MAX_BATCH_TOKENS = 4096
# int8 (quantize=True): the fused ops whose weights are quantised, and how many leading layers keep
# their FFN output product in fp32 (see _unquantized_nodes).
QUANTIZED_OPS = ("MatMul", "Attention")
FP32_FFN_OUTPUT_LAYERS = 2
# Files whose bytes decide the converted model (the README and data_config.json do not).
_MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "modules.json", "sentence_bert_config.json",
                "1_Pooling/config.json", "tokenizer.json")
_FINGERPRINTS: dict[tuple, str] = {}


class OnnxUnavailable(RuntimeError):
    """The ONNX path cannot run here (runtime missing, conversion failed, unexpected model layout)."""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the model files that decide the converted graph (memoised by size and mtime)."""
    directory = Path(model_dir)
    files = [directory / name for name in _MODEL_FILES if (directory / name).is_file()]
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if stamp not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.relative_to(directory).as_posix().encode() + b"\0")
            with f.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        _FINGERPRINTS[stamp] = digest.hexdigest()
    return _FINGERPRINTS[stamp]


def cache_path(model_dir: str | Path, cache_dir: str | Path, *, quantize: bool = False) -> Path:
    """Where the converted model of `model_dir` lives in `cache_dir` (the file need not exist yet)."""
    key = "|".join([model_fingerprint(model_dir), f"onnxruntime={_version('onnxruntime')}",
                    f"torch={_version('torch')}", f"format={CONVERSION_FORMAT}", f"int8={quantize}"])
    name = Path(model_dir).name if Path(model_dir).name != "model" else Path(model_dir).parent.name
    suffix = "int8" if quantize else "fp32"
    return Path(cache_dir) / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}-{suffix}.onnx"


def read_model_layout(model_dir: str | Path) -> int:
    """The model's max_seq_length, after checking it is Transformer -> mean Pooling -> Normalize."""
    directory = Path(model_dir)
    try:
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((directory / "modules.json").read_text())]
        pooling = json.loads((directory / "1_Pooling/config.json").read_text())
        max_seq_length = int(json.loads((directory / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError) as exc:
        raise OnnxUnavailable(f"cannot read the sentence-transformers layout of {directory}: {exc}") from exc
    mean_only = pooling.get("pooling_mode_mean_tokens") and not any(
        v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens")
    if modules != ["Transformer", "Pooling", "Normalize"] or not mean_only:
        raise OnnxUnavailable(f"{directory} is not Transformer -> mean Pooling -> Normalize ({modules}, {pooling})")
    return max_seq_length


def convert(model_dir: str | Path, target: Path, *, quantize: bool = False) -> Path:
    """Export the transformer of `model_dir` to `target` (atomically), checked against torch on a probe."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        probe, expected, config = _export(model_dir, tmp)
        _fuse(tmp, num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
        if quantize:
            _quantize(tmp)
        got = _session(tmp).run(None, probe)[0]
        mask = probe["attention_mask"]
        drift = 1.0 - float(np.min(_cosine(mean_pool(expected, mask), mean_pool(got, mask))))
        if drift > (0.05 if quantize else 1e-4):
            raise OnnxUnavailable(f"the converted model disagrees with torch on a probe (1 - cosine = {drift:.2e})")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared by users of one home
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        for leftover in tmp.parent.glob(tmp.name + ".*"):  # the fusion and quantisation steps' own files
            leftover.unlink(missing_ok=True)
    return target


def _export(model_dir: str | Path, path: Path):
    """Write the plain exported graph to `path`; return a padded probe batch, torch's output on it, the config."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    # Eager attention: the exporter writes SDPA as unfused products behind an IsNaN/Where guard on every
    # score, which the optimizer cannot fuse and which cost ~25% of the run; eager's pattern fuses.
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    # Two lengths, so the probe runs a right-padded batch (what encode feeds) through the result.
    probe = tokenizer(["a probe sentence", "a second, longer probe sentence for the export"],
                      padding=True, return_tensors="pt")
    # The example the exporter traces: any ids will do, batch and sequence axes are dynamic.
    args = tuple(torch.ones((2, 16), dtype=torch.long) if name == "attention_mask"
                 else torch.full((2, 16), 1000 if name == "input_ids" else 0, dtype=torch.long)
                 for name in INPUT_NAMES)
    with torch.no_grad():
        # Measured before the export: after it, this model instance's output on padded inputs was off
        # by cosine ~0.05 (the exported file itself matches a fresh model).
        expected = LastHiddenState(model)(*(probe[name] for name in INPUT_NAMES)).numpy()
        # The TorchScript exporter: the dynamo one needs onnxscript besides, for the same graph. Its
        # tracer warns about transformers' shape checks, which hold for every input here (the probe
        # check in convert runs a padded batch through the result).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LastHiddenState(model), args, str(path), dynamo=False, opset_version=OPSET,
                input_names=list(INPUT_NAMES), output_names=["token_embeddings"],
                dynamic_axes={name: {0: "batch", 1: "sequence"} for name in (*INPUT_NAMES, "token_embeddings")},
            )
    return {name: probe[name].numpy() for name in INPUT_NAMES}, expected, model.config


def _fuse(path: Path, *, num_heads: int, hidden_size: int) -> None:
    """Rewrite `path` with onnxruntime's BERT fusions (Attention, SkipLayerNormalization, BiasGelu, ...).

    opt_level 0: only the pattern fusions are saved; ORT's own graph optimisations depend on the
    machine and run when a session loads the file. The fused Attention takes the mask as sequence
    lengths, so it assumes right padding, which is what encode builds.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = optimize_model(str(path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0)
    counts = fused.get_fused_operator_statistics()
    if not counts.get("Attention"):
        # Still a correct graph (the probe check decides), only not the fast one.
        log.warning("the ONNX optimizer fused no attention in %s (%s)", path.name, counts)
    fused.save_model_to_file(str(path))


def _quantize(path: Path) -> None:
    """Rewrite `path` with dynamic int8 weights: per-channel, in the fused Attention and the MatMuls."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name(path.name + ".fp32")
    path.replace(fp32)
    # Per-tensor weight scales move this model's vectors to cosine ~0.88 to fp32, per-channel to ~0.986.
    # Signed weights (QInt8): unsigned ones were ~2x slower (u8u8 kernels). Quantising Attention (its
    # QKV product) as well as the MatMuls: 1.2x faster than MatMuls alone, same drift.
    # DefaultTensorType: shape inference cannot type the outputs of the fused (com.microsoft) ops.
    quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=_unquantized_nodes(fp32),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    fp32.unlink(missing_ok=True)


def _unquantized_nodes(path: Path) -> list[str]:
    """The MatMuls left in fp32: the FFN output products (fed by GELU) of the first FP32_FFN_OUTPUT_LAYERS layers.

    GELU's output is heavy-tailed, so one int8 scale over a whole batch of it loses the most; of all
    products these moved the vectors most (keeping the first two in fp32: cosine min 0.986 -> 0.992)
    and cost least to keep.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    gelu_outputs = {out for node in graph.node if node.op_type in ("BiasGelu", "Gelu", "FastGelu")
                    for out in node.output}
    ffn_outputs = [node.name for node in graph.node if node.op_type == "MatMul" and node.input[0] in gelu_outputs]
    return ffn_outputs[:FP32_FFN_OUTPUT_LAYERS]


def ensure_converted(model_dir: str | Path, cache_dir: str | Path, *, quantize: bool = False) -> Path:
    """The cached ONNX file of `model_dir`, converting it first if the cache lacks it."""
    target = cache_path(model_dir, cache_dir, quantize=quantize)
    if not target.is_file():
        log.info("converting the local model %s to ONNX%s in %s (once per model and runtime version)",
                 Path(model_dir).name, " (int8)" if quantize else "", target.parent)
        convert(model_dir, target, quantize=quantize)
    return target


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread per core this process may use, like torch (0: that many): ORT's own default counts
    # the machine's physical cores, which oversubscribes a process limited to fewer.
    options.intra_op_num_threads = threads or cpu_count()
    # The graph is one chain of ops: parallel execution would only add a second pool competing for cores.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def mean_pool(token_embeddings: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' mean pooling: the average of the unmasked token vectors."""
    mask = attention_mask[..., None].astype(np.float32)
    summed = (token_embeddings.astype(np.float32) * mask).sum(axis=1)
    return summed / np.clip(mask.sum(axis=1), 1e-9, None)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (torch.nn.functional.normalize, eps 1e-12)."""
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (normalize(a) * normalize(b)).sum(axis=1)


class OnnxSentenceEncoder:
    """all-MiniLM-L6-v2 as sentence-transformers computes it, run by ONNX Runtime."""

    runtime = "onnx"

    def __init__(self, model_dir: str | Path, cache_dir: str | Path, *, quantize: bool = False, threads: int = 0):
        try:
            import onnxruntime
        except ImportError as exc:
            raise OnnxUnavailable("onnxruntime is not installed (pip install onnxruntime)") from exc
        from tokenizers import Tokenizer

        self.max_seq_length = read_model_layout(model_dir)
        self.runtime_version = onnxruntime.__version__
        self.quantized = quantize
        self.path = ensure_converted(model_dir, cache_dir, quantize=quantize)
        self.threads = threads or cpu_count()
        self._session = _session(self.path, self.threads)
        tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        # tokenizer.json ships truncating at 128 and padding to 128; sentence-transformers truncates at
        # max_seq_length and pads each batch to its longest input.
        tokenizer.enable_truncation(self.max_seq_length)
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit vectors of `texts` in input order (float32)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        # sentence-transformers strips each input before tokenizing.
        encodings = self._tokenizer.encode_batch([str(text).strip() for text in texts])
        out: np.ndarray | None = None
        for batch in token_batches([len(enc.ids) for enc in encodings], batch_size, MAX_BATCH_TOKENS):
            feeds = _feeds([encodings[i] for i in batch])
            hidden = self._session.run(None, feeds)[0]
            vectors = normalize(mean_pool(hidden, feeds["attention_mask"]))
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        return out


def token_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices of `lengths` in forward batches: longest first, at most `batch_size` texts and `max_tokens`
    padded tokens (texts x the batch's longest) each; a text longer than `max_tokens` runs alone."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        current = batches[-1] if batches else []
        # Sorted longest first, so a batch's width is its first text's length.
        if current and len(current) < batch_size and (len(current) + 1) * lengths[current[0]] <= max_tokens:
            current.append(index)
        else:
            batches.append([index])
    return batches


def _feeds(encodings: list) -> dict[str, np.ndarray]:
    """The model's inputs for one batch, right-padded to its longest text.

    Right padding matters: the fused Attention reads the mask as each row's length.
    """
    width = max(len(enc.ids) for enc in encodings)
    feeds = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in INPUT_NAMES}
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        feeds["input_ids"][row, :n] = enc.ids
        feeds["attention_mask"][row, :n] = 1
        feeds["token_type_ids"][row, :n] = enc.type_ids
    return feeds
