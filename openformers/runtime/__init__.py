"""What makes inference fast, and nothing else: kernels chosen per product, packed and tiled weight copies,
decode plans and the native decode step. Built from a model and never changing it: no parameter or buffer
is re-pointed, re-laid out or updated, and nothing is stored on a module; every copy lives in this
package's tables, keyed weakly by the module it was made for, and is rebuilt when its sources change.

- ``fused.py``: the products of plain or 4-bit linear layers at inference (groups that read one input).
- ``packed_weights.py``: oneDNN-blocked copies of weights for bf16 products and float32 batch steps.
- ``encoder.py``: inference calls of post-norm BERT-like encoders and their heads, from the blocks their
  families declare (``modules/encoder_blocks.py``), registered with ``dispatch.py``.
- ``dispatch.py``: the runners ``PreTrainedModel.__call__`` asks when no gradient is recorded.
- ``decode.py``: decode steps of a Llama-like stack through a plan resolved once per dtype and batch.
- ``native_step.py`` and ``int4_native.{c,py}``: the native 4-bit kernel and the one-call decode step.
"""
