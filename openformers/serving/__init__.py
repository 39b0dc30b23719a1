"""OpenAI-compatible serving: a continuous-batching engine (``engine.py``) and its HTTP server (``app.py``).

``openformers serve --model NAME_OR_PATH`` starts it; see ``openformers/cli/serve.py``.
"""
from openformers.serving.engine import Engine, SamplingParams, TokenEvent

__all__ = ["Engine", "SamplingParams", "TokenEvent"]
