"""What makes inference fast (and a padded encoder fine-tune's forward, ``encoder.py``), and nothing else: kernels chosen per product, packed and tiled weight copies,
the layer plans of described decoders and the native decode step. Built from a model and never changing
it: no parameter or buffer is re-pointed, re-laid out or updated, and nothing is stored on a module; every
copy lives in this package's tables, keyed weakly by the module it was made for, and is rebuilt when its
sources change. Models never import this package: they describe themselves with plain data
(``modules/blocks.py``), and ``PreTrainedModel.__call__`` asks ``dispatch.py`` for a runner.

- ``dispatch.py``: ``register_runner`` / ``inference_runner``, the hook point of model calls without autograd;
  ``register_training_runner`` / ``training_runner``, that of training calls.
- ``describe.py``: which class declares a description, and the debug line saying why a model runs its module path.
- ``decoder.py``: the runner of described decoders (stack and causal-LM head), registered on import.
- ``decode.py``: a described stack's layers through a plan (prefill and decode steps, kernels kept per step).
- ``adapters.py``: LoRA-wrapped projections at inference, as stand-in linears over merged copies of their weights.
- ``fused.py``: the products of plain or 4-bit linear layers at inference (groups that read one input).
- ``packed_weights.py``: oneDNN-blocked copies of weights for bf16 products and float32 batch steps.
- ``encoder.py``: inference calls of post-norm BERT-like encoders and their heads, from the blocks their
  families declare (``modules/encoder_blocks.py``), and training calls under a head that reads the first
  position alone (the real tokens of a padded batch), registered with ``dispatch.py``.
- ``native_step.py`` and ``int4_native.{c,py}``: the native 4-bit kernel and the one-call decode step.
"""
