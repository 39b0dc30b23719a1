"""Shared building blocks: attention backends, masks, KV caches, norms, rotary embeddings."""
