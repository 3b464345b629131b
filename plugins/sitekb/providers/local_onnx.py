"""The bundled local model through ONNX Runtime: converted once from the bundled weights, cached on disk.

Owns converting all-MiniLM-L6-v2's transformer to ONNX (``torch.onnx.export``,
at first use; torch is only needed for that), the on-disk cache of the
converted file, and :class:`OnnxSentenceEncoder`, which reproduces what
sentence-transformers does for this model: the model's own tokenizer with
truncation at ``max_seq_length`` (256, from ``sentence_bert_config.json``),
mean pooling over the attention mask, then L2 normalisation
(``modules.json``: Transformer -> Pooling(mean) -> Normalize).

The cache file is named by a key over the model files' sha256, the
onnxruntime and torch versions, the conversion format and the quantisation,
so new weights or a new runtime convert again instead of loading a stale
file. It is written to a temporary file in the same folder and renamed into
place, so two processes converting at once each write their own temporary
file and the last rename wins with a complete file.

Dynamic int8 quantisation (``quantize=True``) is offered for measurement
only: it moves vectors measurably (cosine to fp32 down to 0.986, MRR@10 on
the pydocs proxy -0.010; bench-results/local_runtime.json), so vectors from
it must not share the embedding cache key of the fp32 model and
:class:`~sitekb.providers.local.LocalEmbedder` never uses it.

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

# Bump when the exported graph changes (inputs, outputs, opset, quantisation options).
CONVERSION_FORMAT = 1
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
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
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    target.parent.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    probe = tokenizer(["a probe sentence", "a second, longer probe sentence for the export"],
                      padding=True, return_tensors="pt")
    # The example the exporter traces: any ids will do, batch and sequence axes are dynamic.
    args = tuple(torch.ones((2, 16), dtype=torch.long) if name == "attention_mask"
                 else torch.full((2, 16), 1000 if name == "input_ids" else 0, dtype=torch.long)
                 for name in INPUT_NAMES)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            # Measured before the export: after it, this model instance's output on padded inputs was off
            # by cosine ~0.05 (the exported file itself matches a fresh model).
            expected = LastHiddenState(model)(*(probe[name] for name in INPUT_NAMES)).numpy()
            # The TorchScript exporter: the dynamo one needs onnxscript besides, for the same graph. Its
            # tracer warns about transformers' shape checks, which hold for every input here (the probe
            # check below runs a padded batch through the result).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    LastHiddenState(model), args, str(tmp), dynamo=False, opset_version=OPSET,
                    input_names=list(INPUT_NAMES), output_names=["token_embeddings"],
                    dynamic_axes={name: {0: "batch", 1: "sequence"} for name in (*INPUT_NAMES, "token_embeddings")},
                )
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fp32 = tmp.with_suffix(".fp32.tmp")
            tmp.replace(fp32)
            try:
                # Per-channel int8 weights of the MatMuls only: per-tensor scales move this model's vectors
                # to cosine ~0.95, per-channel to ~0.99 (measured on the demo chunks).
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                                 op_types_to_quantize=["MatMul"])
            finally:
                fp32.unlink(missing_ok=True)
        got = _session(tmp).run(None, {name: probe[name].numpy() for name in INPUT_NAMES})[0]
        mask = probe["attention_mask"].numpy()
        drift = 1.0 - float(np.min(_cosine(mean_pool(expected, mask), mean_pool(got, mask))))
        if drift > (0.05 if quantize else 1e-4):
            raise OnnxUnavailable(f"the converted model disagrees with torch on a probe (1 - cosine = {drift:.2e})")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared by users of one home
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def ensure_converted(model_dir: str | Path, cache_dir: str | Path, *, quantize: bool = False) -> Path:
    """The cached ONNX file of `model_dir`, converting it first if the cache lacks it."""
    target = cache_path(model_dir, cache_dir, quantize=quantize)
    if not target.is_file():
        log.info("converting the local model %s to ONNX%s in %s (once per model and runtime version)",
                 Path(model_dir).name, " (int8)" if quantize else "", target.parent)
        convert(model_dir, target, quantize=quantize)
    return target


def _session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: one per core, like torch
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
        self._session = _session(self.path, threads)
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
        # Longest first, so each batch is padded to similar lengths.
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        out: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = len(encodings[batch[0]].ids)
            feeds = {name: np.zeros((len(batch), width), dtype=np.int64) for name in INPUT_NAMES}
            for row, index in enumerate(batch):
                enc = encodings[index]
                n = len(enc.ids)
                feeds["input_ids"][row, :n] = enc.ids
                feeds["attention_mask"][row, :n] = 1
                feeds["token_type_ids"][row, :n] = enc.type_ids
            hidden = self._session.run(None, feeds)[0]
            vectors = normalize(mean_pool(hidden, feeds["attention_mask"]))
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        return out
