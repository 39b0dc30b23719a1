"""Every native kernel rebuilt with AddressSanitizer and run through its Python wrapper on valid
inputs and on crafted ones (odd sizes, single elements, a hostile GGUF), in a child process
started with ``libasan`` preloaded (see ``test_native_asan.py``). Prints ``ASAN-CHILD-OK`` at the end;
an out-of-bounds access aborts the process with AddressSanitizer's report instead."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ASAN_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer", "-g", "-O1")


# the int4 builds for CPUs without AVX-512 BF16 (tests/runtime/test_int4_simd.py): "int4:avx2", "int4:avx512f"
INT4_VARIANTS = {"avx2": ("-march=x86-64-v3",), "avx512f": ("-mno-avx512bf16",)}


def _sanitized(library, extra: tuple[str, ...] = ()) -> None:
    """Swap a NativeLibrary's loaded library for an AddressSanitizer build of the same source."""
    path = library.build(ASAN_FLAGS + extra)
    with library._lock:
        library._lib, library._tried, library.error = library.load(path), True, None


def swiglu_cases() -> None:
    from openformers.modules import swiglu_native

    _sanitized(swiglu_native._LIBRARY)
    for n in (1, 7, 16, 33, 255, 4097):
        gate = torch.randn(n, requires_grad=True)
        up = torch.randn(n, requires_grad=True)
        out = swiglu_native.swiglu(gate, up)
        assert out is not None, "swiglu kernel did not run"
        out.sum().backward()
        torch.testing.assert_close(out, torch.nn.functional.silu(gate) * up)
    assert swiglu_native.swiglu(torch.randn(8, 2, requires_grad=True).t(), torch.randn(2, 8).requires_grad_()) is None


def rotary_cases() -> None:
    from openformers.modules import rotary_native

    _sanitized(rotary_native._LIBRARY)
    for b, h, s, d in ((1, 1, 1, 2), (2, 3, 5, 6), (1, 2, 17, 64), (3, 1, 2, 130)):
        x = torch.randn(b, h, s, d, requires_grad=True)
        cos, sin = torch.randn(1, 1, s, d), torch.randn(1, 1, s, d)
        out = rotary_native.rotate(x, cos, sin)
        assert out is not None, "rotary kernel did not run"
        out.sum().backward()
        # strided input (a slice of a wider tensor): the kernel reads the strides it is given
        wide = torch.randn(b, h, s, d + 4)
        xs = wide[..., :d].requires_grad_()
        out = rotary_native.rotate(xs, cos, sin)
        if out is not None:
            out.sum().backward()


def dropout_cases() -> None:
    from openformers.modules import dropout as dropout_mod

    _sanitized(dropout_mod._LIBRARY)
    for rows, w, r in ((1, 1, 1), (3, 7, 2), (17, 64, 8), (5, 130, 3)):
        x = torch.randn(rows, w, requires_grad=True)
        a = torch.randn(r, w, requires_grad=True)
        out = dropout_mod.dropout_product(x, a, 0.3)
        assert out is not None, "dropout kernel did not run"
        out.sum().backward()
        ids = torch.arange(rows) * 7
        dropout_mod.dropout_product(x, a, 0.5, ids=ids).sum().backward()
        dropout_mod.seeded_mask(1234, rows, w, 0.25)


def int4_cases(workdir: Path, variant: str = "") -> None:
    from openformers.runtime import int4_native

    _sanitized(int4_native._LIBRARY, INT4_VARIANTS[variant] if variant else ())
    int4_native._FAST.clear()
    if not int4_native.fast():
        print("int4: not an x86 CPU, the int4 kernels are not used (skipped)")
        return
    for out_f, in_f in ((16, 64), (48, 128), (32, 192)):
        q = torch.randint(0, 16, (out_f, in_f), dtype=torch.uint8)
        scale = torch.rand(out_f, in_f // 32) * 0.1
        zero = torch.randn(out_f, in_f // 32) * 0.1
        kernel = int4_native.NativeInt4.from_values(q, scale, zero)
        for rows in (1, 2, 3, 17):  # blocks of 1, 2, 3 and 4 rows
            for dtype in (torch.float32, torch.bfloat16):
                kernel(torch.randn(rows, in_f, dtype=dtype))
    # the decode step of a 4-bit Llama model, on a consistent file and a hostile one
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from openformers.core.gguf import GGUFError
    from openformers.models.auto import AutoModelForCausalLM
    from openformers.quantization.gguf_linear import GGUFQuantizationConfig
    from tests.security.ggufs import write_llama_gguf

    good = write_llama_gguf(workdir / "good.gguf", hidden=64, intermediate=128, layers=2)
    model = AutoModelForCausalLM.from_pretrained(str(good), quantization_config=GGUFQuantizationConfig())
    out = model.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 9)
    bad = write_llama_gguf(workdir / "bad.gguf", hidden=64, intermediate=[128, 1024], layers=2)
    try:
        AutoModelForCausalLM.from_pretrained(str(bad), quantization_config=GGUFQuantizationConfig())
    except GGUFError:
        pass
    else:
        raise AssertionError("the GGUF with a layer wider than its config was loaded")
    # Gemma's layer through the decode step: offset norms on float32 copies, tanh-GELU, plain and 4-bit weights;
    import openformers
    from openformers.runtime import decode

    torch.set_num_threads(2)  # float32 layers are row-major (what the step reads) from two threads on
    # and Qwen2's (q/k/v biases) and Starcoder2's (biases on every product, LayerNorms, the plain MLP)
    sizes = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64)
    for family, extra in (("Gemma", {"head_dim": 16}), ("Qwen2", {}), ("Starcoder2", {})):
        for dtype, quantized in ((torch.float32, False), (torch.bfloat16, False), (torch.float32, True)):
            cfg = getattr(openformers, f"{family}Config")(**sizes, **extra)
            model = getattr(openformers, f"{family}ForCausalLM")(cfg)
            if quantized:
                GGUFQuantizationConfig().quantize_model(model)
            model = model.to(dtype).eval()
            with torch.inference_mode():
                model.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=4, do_sample=False)
            plan = decode.plan_of(model.model)
            assert plan is not None and any(s is not None for s in plan.native.values()), f"the {family} step did not run"


def canary_cases() -> None:
    """A deliberate overflow (the kernel told of more elements than the buffers hold): proves the
    sanitizer is active, so the other runs' silence means something."""
    from openformers.modules import swiglu_native

    _sanitized(swiglu_native._LIBRARY)
    gate, up, out = torch.randn(64), torch.randn(64), torch.empty(64)
    swiglu_native._LIBRARY.get().of_swiglu(gate.data_ptr(), up.data_ptr(), out.data_ptr(), 64 + 4096, 1)


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in sys.argv[1:] or ("swiglu", "rotary", "dropout", "int4"):
            if name.startswith("int4"):
                int4_cases(Path(tmp), name.partition(":")[2])
            else:
                globals()[f"{name}_cases"]()
            print(f"{name}: ok", flush=True)
    print("ASAN-CHILD-OK")


if __name__ == "__main__":
    main()
