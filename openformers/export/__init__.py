"""Export: models written in formats other tools run (GGUF for llama.cpp)."""
