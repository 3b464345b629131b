"""Embedding providers behind one small interface (:class:`sitekb.providers.base.Embedder`).

- :mod:`sitekb.providers.local`: the bundled all-MiniLM-L6-v2 (offline).
- :mod:`sitekb.providers.openai_api`: OpenAI or any OpenAI-compatible server
  through the official ``openai`` client.

Pick one with :func:`sitekb.embedding.get_embedder` (or
:func:`sitekb.embedding.embedder_for_site` for a site config); the pipeline
never talks to a provider class directly.
"""
