"""llama.cpp as a test oracle for our GGUF files: logits at every position, greedy decoding one token at a time
with its KV cache, and its own tokenizer.

Two bindings are accepted: llama-cpp-python (``llama_cpp``, compiled from source on install) when present, else
llama-cpp-py-sync (``llama_cpp_py_sync``, prebuilt libllama/libggml, driven here through its cffi declarations of
llama.h). The prebuilt libraries are linked against glibc 2.38 for four C23 libc entry points only
(``__isoc23_strtol``, ``strtoul``, ``strtoull``, ``sscanf``: the C23 names accept ``0b`` literals). On an older
glibc (Debian 12 has 2.36) they do not load; :func:`_rebind_c23` then copies them to a temporary folder and binds
those four imports to the classic functions of the same name, nothing else changed, so the same llama.cpp build runs.
"""
from __future__ import annotations

import importlib
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

_C23 = b"__isoc23_"
_VER_FLG_WEAK = 2


def _rebind_c23(path: Path) -> None:
    """Rewrite an x86-64 ELF shared library in place: its ``__isoc23_*`` imports become the classic names (the same
    string table entry, past the prefix), unversioned, and the glibc version they needed becomes a weak requirement."""
    data = bytearray(path.read_bytes())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    by_type = {s[1]: s for s in sections}
    dynsym, versym, verneed = by_type[11], by_type[0x6FFFFFFF], by_type[0x6FFFFFFE]  # SHT_DYNSYM, GNU versym/verneed
    dynstr = sections[dynsym[6]][4]

    def name_at(offset: int) -> bytes:
        return bytes(data[dynstr + offset : data.index(b"\0", dynstr + offset)])

    n_syms = dynsym[5] // dynsym[9]
    c23 = [i for i in range(n_syms) if name_at(struct.unpack_from("<I", data, dynsym[4] + i * dynsym[9])[0]).startswith(_C23)]
    if not c23:
        return
    indices = {struct.unpack_from("<H", data, versym[4] + 2 * i)[0] & 0x7FFF for i in c23}
    for i in c23:
        entry = dynsym[4] + i * dynsym[9]
        st_name, = struct.unpack_from("<I", data, entry)
        struct.pack_into("<I", data, entry, st_name + len(_C23))
        struct.pack_into("<H", data, versym[4] + 2 * i, 1)  # VER_NDX_GLOBAL: the library's default version
    used = {struct.unpack_from("<H", data, versym[4] + 2 * i)[0] & 0x7FFF for i in range(n_syms)}
    offset = verneed[4]
    while True:
        _, count, _, aux, next_need = struct.unpack_from("<HHIII", data, offset)
        at = offset + aux
        for _ in range(count):
            _, flags, other, _, next_aux = struct.unpack_from("<IHHII", data, at)
            if other in indices and other not in used:
                struct.pack_into("<H", data, at + 4, flags | _VER_FLG_WEAK)
            at += next_aux
        if not next_need:
            break
        offset += next_need
    path.write_bytes(bytes(data))


def _threads() -> int:
    """One thread: ggml's threads meet at a spinning barrier after every operation, which turns a token into seconds
    when the cores are shared with other work (a busy test machine); one thread has no barrier to wait at."""
    return 1


class _PySync:
    """llama-cpp-py-sync: the C API of llama.h through the package's own cffi declarations."""

    _lib = None
    _log = None
    errors: list[str] = []  # llama.cpp's warnings and errors, quoted when a load fails

    @classmethod
    def _quiet(cls, ffi):
        if cls._log is None:  # kept alive on the class: llama.cpp holds the pointer
            def log(level, text, _):
                if level in (3, 4):  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
                    cls.errors[:] = cls.errors[-20:] + [ffi.string(text).decode(errors="replace").strip()]
            cls._log = ffi.callback("void(enum ggml_log_level, const char *, void *)", log)
        return cls._log

    def __init__(self, module, path: Path, n_ctx: int):
        from llama_cpp_py_sync._cffi_bindings import get_ffi

        self.ffi = ffi = get_ffi()
        lib = self._library(ffi, Path(module.__file__).parent)
        self.lib = lib
        lib.llama_log_set(self._quiet(ffi), ffi.NULL)
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if self.model == ffi.NULL:
            raise RuntimeError(f"llama.cpp could not load {path}: " + " | ".join(self.errors[-3:]))
        ctx_params = lib.llama_context_default_params()
        ctx_params.n_ctx = ctx_params.n_batch = ctx_params.n_ubatch = n_ctx
        ctx_params.n_threads = ctx_params.n_threads_batch = _threads()
        self.ctx = lib.llama_init_from_model(self.model, ctx_params)
        if self.ctx == ffi.NULL:
            lib.llama_model_free(self.model)
            raise RuntimeError(f"llama.cpp could not make a context for {path}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)

    @classmethod
    def _library(cls, ffi, folder: Path):
        if cls._lib is None:
            try:
                cls._lib = ffi.dlopen(str(folder / "libllama.so"))
            except OSError as exc:
                if "GLIBC_2.38" not in str(exc):
                    raise
                copy = Path(tempfile.mkdtemp(prefix="llama-cpp-"))
                for lib in folder.glob("lib*.so*"):
                    shutil.copy2(lib, copy / lib.name)
                    _rebind_c23(copy / lib.name)
                try:
                    cls._lib = ffi.dlopen(str(copy / "libllama.so"))  # loads its libggml* neighbours with it
                finally:
                    shutil.rmtree(copy)  # a loaded library stays mapped
        return cls._lib

    def close(self) -> None:
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)

    def reset(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)

    def decode(self, ids: list[int], start: int, all_logits: bool) -> np.ndarray:
        lib, ffi = self.lib, self.ffi
        batch = lib.llama_batch_init(len(ids), 0, 1)
        try:
            batch.n_tokens = len(ids)
            for i, token in enumerate(ids):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = all_logits or i == len(ids) - 1
            if lib.llama_decode(self.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
        finally:
            lib.llama_batch_free(batch)
        rows = range(len(ids)) if all_logits else [len(ids) - 1]
        return np.stack([np.frombuffer(ffi.buffer(lib.llama_get_logits_ith(self.ctx, i), 4 * self.n_vocab), np.float32)
                         for i in rows])

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode()
        out = self.ffi.new(f"llama_token[{len(raw) + 8}]")
        n = self.lib.llama_tokenize(self.vocab, raw, len(raw), out, len(raw) + 8, True, True)
        return [out[i] for i in range(n)]


class _LlamaCppPython:
    """llama-cpp-python's ``Llama`` with logits kept for every position."""

    def __init__(self, module, path: Path, n_ctx: int):
        self.llm = module.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=_threads(),
                                logits_all=True, verbose=False)

    def close(self) -> None:
        self.llm.close()

    def reset(self) -> None:
        self.llm.reset()

    def decode(self, ids: list[int], start: int, all_logits: bool) -> np.ndarray:
        assert start == self.llm.n_tokens
        self.llm.eval(ids)
        scores = np.asarray(self.llm.scores[start : start + len(ids)], dtype=np.float32)
        return scores if all_logits else scores[-1:]

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=True, special=True)


def binding():
    """The first llama.cpp binding that imports, as (name, module), or None."""
    for name in ("llama_cpp", "llama_cpp_py_sync"):
        try:
            return name, importlib.import_module(name)
        except (ImportError, OSError, RuntimeError):  # a binding whose native library fails to load counts as absent
            continue
    return None


class LlamaCpp:
    """One GGUF file loaded in llama.cpp (CPU, fp32 logits)."""

    def __init__(self, path, n_ctx: int = 512):
        found = binding()
        if found is None:
            raise ImportError("neither llama-cpp-python nor llama-cpp-py-sync is installed")
        self.binding, module = found
        self._impl = (_LlamaCppPython if self.binding == "llama_cpp" else _PySync)(module, Path(path), n_ctx)

    def __enter__(self) -> "LlamaCpp":
        return self

    def __exit__(self, *exc) -> None:
        self._impl.close()

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits at every position of ``ids``, one forward pass from an empty cache: (len(ids), vocab)."""
        self._impl.reset()
        return self._impl.decode(list(ids), 0, True)

    def greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation of ``ids``, one token per llama_decode after the prompt, through the KV cache."""
        self._impl.reset()
        last = self._impl.decode(list(ids), 0, False)[-1]
        out, n = [], len(ids)
        for _ in range(max_new_tokens):
            out.append(int(last.argmax()))
            last = self._impl.decode(out[-1:], n, False)[-1]
            n += 1
        return out

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokenizer (the file's vocabulary and pre-tokenizer), BOS added if the file asks for it."""
        return self._impl.tokenize(text)


__all__ = ["LlamaCpp", "binding"]
