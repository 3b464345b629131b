"""The int8 local model (all-MiniLM-L6-v2-int8): a model of its own, on ONNX Runtime only (issue 14).

It has the bundled model's files and tokenizer but other vectors (cosine ~0.99 to
fp32), so a site opts in by naming it: snapshots and the embedding cache then
know its vectors by its own name, questions asked of its snapshots are embedded
by it too, and it never falls back to torch, which would give fp32 vectors under
the int8 name.
"""

from __future__ import annotations

import numpy as np
import pytest

from sitekb.embedding import choose, get_embedder, query_embedder
from sitekb.errors import ConfigError
from sitekb.providers import local
from sitekb.providers.base import LOCAL_INT8_MODEL
from sitekb.settings import Settings
from sitekb.sites import EmbeddingSettings

TEXTS = ["How many points does a demo request add to a lead score?",
         "Parcels to other countries take five to ten working days after roasting.",
         "functools.lru_cache keeps the results of recent calls."]


def test_the_int8_model_embeds_on_onnx_close_to_fp32(tmp_path):
    settings = Settings(home=tmp_path / "home")
    int8 = get_embedder("local", LOCAL_INT8_MODEL, settings=settings)
    fp32 = get_embedder("local", None, settings=settings)
    a, b = int8.embed(TEXTS), fp32.embed(TEXTS)
    assert int8.runtime_used == "onnx" and a.shape == (3, 384)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 0.97 and cosines.max() < 0.99999     # close, and not the same vectors
    # Questions asked of its snapshots are embedded by it as well. Dynamic quantisation scales a
    # batch's activations together, so a text alone comes out a little different from the same
    # text in a batch (the embedding cache keeps the first vector of each chunk).
    question = query_embedder("local", LOCAL_INT8_MODEL, 384, settings)
    assert float(question.embed(TEXTS[:1])[0] @ a[0]) > 0.98


def test_a_site_that_names_it_records_it_as_its_own_model(tmp_path):
    choice = choose(EmbeddingSettings(provider="local", model=LOCAL_INT8_MODEL), Settings(home=tmp_path / "home"))
    assert (choice.provider, choice.model, choice.dimensions, choice.tokenizer) == (
        "local", LOCAL_INT8_MODEL, 384, "all-MiniLM-L6-v2")


def test_it_never_falls_back_to_torch(monkeypatch, tmp_path):
    monkeypatch.setattr(local, "_BACKENDS", {})
    monkeypatch.setenv("SITEKB_LOCAL_RUNTIME", "torch")
    embedder = get_embedder("local", LOCAL_INT8_MODEL, settings=Settings.from_env(home=str(tmp_path)))
    with pytest.raises(ConfigError, match="runs on ONNX Runtime only, and SITEKB_LOCAL_RUNTIME=torch"):
        embedder.embed(TEXTS[:1])

    def broken(name, cache_dir):
        raise RuntimeError("onnxruntime is missing")

    monkeypatch.setattr(local, "_load_onnx", broken)
    monkeypatch.delenv("SITEKB_LOCAL_RUNTIME")
    embedder = get_embedder("local", LOCAL_INT8_MODEL, settings=Settings.from_env(home=str(tmp_path)))
    with pytest.raises(ConfigError, match="cannot run it here: onnxruntime is missing"):
        embedder.embed(TEXTS[:1])


def test_other_local_names_are_still_refused():
    with pytest.raises(ConfigError, match="is not bundled.*all-MiniLM-L6-v2-int8, its int8 quantisation"):
        get_embedder("local", "all-MiniLM-L12-v2")
