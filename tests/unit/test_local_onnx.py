"""The local model through ONNX Runtime: same vectors as torch, a cache keyed by model and runtime, the setting.

The converted model is cached in the user's cache folder (the default when no
settings are given, as in most tests), so only the first run on a machine
converts; a test that needs a fresh cache says so and uses its own folder.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sitekb.embedding import choose, get_embedder, query_embedder
from sitekb.errors import ConfigError
from sitekb.providers import local
from sitekb.providers.local import LocalEmbedder
from sitekb.providers.local_onnx import (
    OnnxSentenceEncoder,
    cache_path,
    model_fingerprint,
    read_model_layout,
    token_batches,
)
from sitekb.settings import Settings
from sitekb.sites import EmbeddingSettings
from sitekb.tokenization import local_model_path

pytest.importorskip("onnxruntime")

TEXTS = [
    "How do I read a file line by line in Python?",
    "   leading and trailing whitespace   \n",
    "",
    "Ünïcödé — em dashes, “quotes”, 日本語 and emoji 🐍",
    "def f(x):\n    return {k: v for k, v in x.items() if v is not None}",
    "short",
    # Longer than max_seq_length (256 tokens): both runtimes must truncate the same way.
    " ".join(f"word{i} and some filler text" for i in range(300)),
    "asyncio runs coroutines on an event loop; await suspends one until its awaitable completes. " * 6,
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return LocalEmbedder(runtime="torch", batch_size=3).embed(TEXTS)


def test_onnx_gives_the_torch_vectors_for_every_text(torch_vectors):
    embedder = LocalEmbedder(runtime="onnx", batch_size=3)  # several batches of different lengths
    vectors = embedder.embed(TEXTS)
    assert embedder.runtime_used == "onnx"
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    cosine = (vectors * torch_vectors).sum(axis=1)
    assert cosine.min() >= 0.999, dict(zip(TEXTS, cosine.round(5)))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Input order is kept although batches are formed longest first.
    single = np.vstack([embedder.embed([text]) for text in TEXTS[:3]])
    np.testing.assert_allclose(single, vectors[:3], atol=1e-5)


def test_batches_are_cut_by_count_and_by_padded_tokens():
    lengths = [5, 256, 10, 10, 200, 3, 256, 40]
    batches = token_batches(lengths, batch_size=3, max_tokens=400)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    # Longest first; a text too long for the budget with another runs alone; at most 3 texts a batch.
    assert batches == [[1], [6], [4, 7], [2, 3, 0], [5]]
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) <= 3 and (len(batch) == 1 or len(batch) * width <= 400)
        assert lengths[batch[0]] == width
    assert token_batches([], batch_size=3, max_tokens=400) == []


def _op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def test_the_converted_graph_is_the_fused_one():
    # The slow graph (SDPA exported unfused, behind IsNaN/Where guards) gave the same vectors, 1.3x slower.
    encoder = OnnxSentenceEncoder(local_model_path(), local.DEFAULT_CACHE_DIR.expanduser())
    ops = _op_types(encoder.path)
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= ops, ops
    assert "IsNaN" not in ops and "Softmax" not in ops


@pytest.mark.slow
def test_int8_stays_close_to_torch_and_keeps_the_first_ffn_outputs_in_fp32(torch_vectors):
    import onnx

    encoder = OnnxSentenceEncoder(local_model_path(), local.DEFAULT_CACHE_DIR.expanduser(), quantize=True)
    assert encoder.quantized and encoder.path.name.endswith("-int8.onnx")
    vectors = encoder.encode(TEXTS, batch_size=3)
    cosine = dict(zip(TEXTS, (vectors * torch_vectors).sum(axis=1).round(4)))
    # Measured 0.986 min over 999 pydocs texts. The empty text (two special tokens, nothing a chunk or a
    # question can be: both are refused empty) is the one whose int8 error depends on the CPU's int8
    # kernels: 0.979 on one machine here, above 0.98 on another. It must still point the same way.
    assert min(c for text, c in cosine.items() if text) >= 0.98, cosine
    assert cosine[""] >= 0.95, cosine
    graph = onnx.load(str(encoder.path), load_external_data=False).graph
    assert "QAttention" in {node.op_type for node in graph.node}
    fp32_matmuls = [node.name for node in graph.node if node.op_type == "MatMul"]
    assert fp32_matmuls == ["/inner/encoder/layer.0/output/dense/MatMul",
                            "/inner/encoder/layer.1/output/dense/MatMul"]


def test_auto_embeds_bulk_text_and_questions_on_onnx_with_one_model_identity(monkeypatch, tmp_path):
    monkeypatch.setattr(local, "_BACKENDS", {})  # a process that has not loaded the model yet
    settings = Settings(home=tmp_path / "home")
    # Bulk text (the embed stage) runs on ONNX Runtime too, falling back to torch where it cannot.
    assert get_embedder("local", None, settings=settings).runtime == "auto"
    # Questions run on ONNX Runtime: it loads in a fraction of torch's time.
    embedder = query_embedder("local", "all-MiniLM-L6-v2", 384, settings)
    assert (embedder.runtime, embedder.cache_dir) == ("auto", local.DEFAULT_CACHE_DIR.expanduser())
    embedder.embed(["a question"])
    assert embedder.runtime_used == "onnx"
    assert any(p.suffix == ".onnx" for p in local.DEFAULT_CACHE_DIR.expanduser().iterdir())
    # Snapshots and the embedding cache know the model by name: the same for both runtimes.
    choice = choose(EmbeddingSettings(provider="local"), settings)
    assert (choice.provider, choice.model, choice.dimensions, choice.tokenizer) == (
        "local", "all-MiniLM-L6-v2", 384, "all-MiniLM-L6-v2")


def test_the_setting_chooses_the_runtime_of_every_local_embedder(monkeypatch, tmp_path):
    monkeypatch.setenv("SITEKB_LOCAL_RUNTIME", "Torch")
    settings = Settings.from_env(home=str(tmp_path))
    assert settings.local_runtime == "torch"
    assert get_embedder("local", None, settings=settings).runtime == "torch"
    query = query_embedder("local", "all-MiniLM-L6-v2", 384, settings)
    assert query.runtime == "torch"
    monkeypatch.setenv("SITEKB_LOCAL_RUNTIME", "")
    assert Settings.from_env().local_runtime == "auto"
    monkeypatch.setenv("SITEKB_LOCAL_RUNTIME", "tensorrt")
    with pytest.raises(ConfigError, match=r"SITEKB_LOCAL_RUNTIME='tensorrt': expected 'auto', 'onnx' or 'torch'"):
        Settings.from_env()
    with pytest.raises(ConfigError, match="unknown local runtime"):
        LocalEmbedder(runtime="tensorrt")


def test_auto_falls_back_to_torch_and_says_why(monkeypatch, tmp_path, caplog, torch_vectors):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should go")
    monkeypatch.setattr(local, "_BACKENDS", {})
    embedder = LocalEmbedder(runtime="auto", cache_dir=blocked / "models")
    with caplog.at_level(logging.INFO, logger="sitekb.providers.local"):
        vectors = embedder.embed(TEXTS[:2])
    assert embedder.runtime_used == "torch"
    assert any("runs on torch: the ONNX conversion failed" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(vectors, torch_vectors[:2], atol=1e-6)
    # Asked for explicitly, the same failure is a one-line configuration error.
    monkeypatch.setattr(local, "_BACKENDS", {})
    with pytest.raises(ConfigError, match="SITEKB_LOCAL_RUNTIME=onnx, but .* set SITEKB_LOCAL_RUNTIME=torch"):
        LocalEmbedder(runtime="onnx", cache_dir=blocked / "models").embed(["x"])


def test_auto_without_onnxruntime_uses_torch(monkeypatch, caplog):
    monkeypatch.setattr(local, "_BACKENDS", {})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed: import raises
    embedder = LocalEmbedder(runtime="auto")
    with caplog.at_level(logging.INFO, logger="sitekb.providers.local"):
        embedder.warm()
    assert embedder.runtime_used == "torch"
    assert any("onnxruntime is not installed" in r.getMessage() for r in caplog.records)


def test_cache_key_follows_the_model_files_and_the_runtime(tmp_path):
    model_dir = Path(local_model_path())
    assert read_model_layout(model_dir) == 256
    base = cache_path(model_dir, tmp_path)
    assert cache_path(model_dir, tmp_path) == base
    assert cache_path(model_dir, tmp_path, quantize=True) != base
    # A copy with other weights' config (same big file, linked) gets another key.
    copy = tmp_path / "model"
    copy.mkdir()
    for item in model_dir.iterdir():
        (copy / item.name).symlink_to(item)
    assert model_fingerprint(copy) == model_fingerprint(model_dir)
    (copy / "config.json").unlink()
    (copy / "config.json").write_text((model_dir / "config.json").read_text().replace('"gelu"', '"gelu_new"'))
    assert model_fingerprint(copy) != model_fingerprint(model_dir)
    assert cache_path(copy, tmp_path).name != base.name


def test_a_model_that_is_not_mean_pooled_is_refused(tmp_path):
    from sitekb.providers.local_onnx import OnnxUnavailable

    model_dir = Path(local_model_path())
    copy = tmp_path / "model"
    copy.mkdir()
    for item in model_dir.iterdir():
        if item.name != "1_Pooling":
            (copy / item.name).symlink_to(item)
    (copy / "1_Pooling").mkdir()
    (copy / "1_Pooling/config.json").write_text('{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}')
    with pytest.raises(OnnxUnavailable, match="mean Pooling"):
        OnnxSentenceEncoder(copy, tmp_path / "cache")


@pytest.mark.slow
def test_two_processes_converting_at_once_leave_one_complete_file(tmp_path, torch_vectors):
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import sys
        from sitekb.providers.local_onnx import OnnxSentenceEncoder
        from sitekb.tokenization import local_model_path
        encoder = OnnxSentenceEncoder(local_model_path(), {str(cache)!r})
        print(encoder.path)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1
    assert sorted(p.name for p in cache.iterdir()) == [Path(paths.pop()).name]  # no temporary file left
    vectors = OnnxSentenceEncoder(local_model_path(), cache).encode(TEXTS)
    assert ((vectors * torch_vectors).sum(axis=1)).min() >= 0.999
