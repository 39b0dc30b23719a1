"""Inference never changes a model: after generate(), an evaluation forward and a pipeline-style batched call,
under 1 and 2 threads, in float32, bfloat16 and kept 4-bit, every parameter and buffer of every family has the
storage pointer, strides, contiguity and values it had; then save_file, torch.save, an optimizer step and DDP
all work."""
from __future__ import annotations

import io
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import openformers as of
from openformers.quantization import GGUFQuantizationConfig

safetensors_torch = pytest.importorskip("safetensors.torch")

LLAMA = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
FAMILIES = {
    "llama": lambda: of.LlamaForCausalLM(of.LlamaConfig(**LLAMA)),
    "llama-untied-bias": lambda: of.LlamaForCausalLM(of.LlamaConfig(**LLAMA, attention_bias=True, mlp_bias=True,
                                                                        tie_word_embeddings=False)),
    "mistral": lambda: of.MistralForCausalLM(of.MistralConfig(**LLAMA, sliding_window=4)),
    "qwen2": lambda: of.Qwen2ForCausalLM(of.Qwen2Config(**LLAMA)),
    "qwen3": lambda: of.Qwen3ForCausalLM(of.Qwen3Config(**LLAMA, head_dim=16)),
    "gemma": lambda: of.GemmaForCausalLM(of.GemmaConfig(**LLAMA, head_dim=16)),
    "starcoder2": lambda: of.Starcoder2ForCausalLM(of.Starcoder2Config(**LLAMA, sliding_window=4)),
    "gpt2": lambda: of.GPT2LMHeadModel(of.GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                                     pad_token_id=0)),
    "bert": lambda: of.BertForSequenceClassification(of.BertConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2,
                                                                   num_attention_heads=4, intermediate_size=96)),
    "roberta": lambda: of.RobertaForMaskedLM(of.RobertaConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2,
                                                              num_attention_heads=4, intermediate_size=96)),
    "distilbert": lambda: of.DistilBertForSequenceClassification(of.DistilBertConfig(vocab_size=256, dim=64, n_layers=2,
                                                                                     n_heads=4, hidden_dim=96)),
}


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = dict(model.named_parameters(remove_duplicate=False))
    out.update(model.named_buffers(remove_duplicate=False))  # non-persistent ones too
    return out


def _snapshot(model: torch.nn.Module) -> dict[str, tuple]:
    return {name: (t.data_ptr(), t.stride(), t.is_contiguous(), t.detach().clone()) for name, t in _tensors(model).items()}


def _assert_unchanged(model: torch.nn.Module, before: dict[str, tuple], what: str) -> None:
    now = _tensors(model)
    assert sorted(now) == sorted(before), what
    for name, t in now.items():
        ptr, stride, contiguous, value = before[name]
        assert t.data_ptr() == ptr, f"{what}: {name} moved"
        assert t.stride() == stride and t.is_contiguous() == contiguous, f"{what}: {name} strides {t.stride()} != {stride}"
        assert torch.equal(t.detach(), value), f"{what}: {name} values changed"


def _infer(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 250, (2, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    if getattr(model, "_is_causal_lm", False):
        model.generate(ids[:1], max_new_tokens=4, do_sample=False)  # one sequence: the native step where it runs
        model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)  # padded batch: the plan
        model.generate(ids, max_new_tokens=3, do_sample=False)  # batch without padding
    with torch.no_grad():  # an evaluation forward
        model(input_ids=ids, attention_mask=mask)
    with torch.inference_mode():  # what pipelines run
        model(input_ids=ids[:1, :1])
        model(input_ids=ids, attention_mask=mask)


def _build(family: str, dtype: torch.dtype | None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = FAMILIES[family]()
    if dtype is None:  # kept 4-bit (the GGUF path's layers), bf16 activations; 128 wide for the native kernel
        config = model.config
        config.hidden_size, config.intermediate_size = 128, 256
        model = type(model)(config)
        GGUFQuantizationConfig().quantize_model(model)
    elif dtype != torch.float32:
        model.to(dtype)
    return model.eval()


CASES = [(f, d) for f in FAMILIES for d in (torch.float32, torch.bfloat16)] + [("llama", None), ("qwen2", None), ("qwen3", None), ("gemma", None),
                                                                        ("starcoder2", None)]


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("family,dtype", CASES, ids=[f"{f}-{str(d).replace('torch.', '') if d else 'q4'}" for f, d in CASES])
def test_inference_leaves_every_tensor_alone(family, dtype, threads, tmp_path):
    model = _build(family, dtype)
    before = _snapshot(model)
    for n in (1, 2):
        torch.set_num_threads(n)
        _infer(model)
        _assert_unchanged(model, before, f"{family} {dtype} after inference at {n} thread(s)")
    # what a user does next works: the state dict as it is (tied copies left out) goes to safetensors
    state = model.state_dict()
    tied = set(getattr(model, "_tied_weights_keys", None) or ()) if model.config.tie_word_embeddings else set()
    safetensors_torch.save_file({k: v for k, v in state.items() if k not in tied}, str(tmp_path / "m.safetensors"))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    trainable = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    model.train()
    ids = torch.randint(3, 250, (2, 6), generator=torch.Generator().manual_seed(1))
    if getattr(model, "_is_causal_lm", False):
        loss = model(input_ids=ids, labels=ids).loss
    else:
        out = model(input_ids=ids)
        loss = (out.logits.float() ** 2).mean()
    loss.backward()
    torch.optim.AdamW(trainable, lr=1e-3).step()
    model.eval()


def _ddp_worker(rank: int, port: int, errors) -> None:
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=2)
        torch.set_num_threads(1)
        model = _build("llama", torch.float32)
        model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
        ddp = torch.nn.parallel.DistributedDataParallel(model.train())
        ids = torch.randint(3, 250, (2, 6), generator=torch.Generator().manual_seed(rank))
        ddp(input_ids=ids, labels=ids).loss.backward()
        torch.optim.SGD(ddp.parameters(), lr=0.1).step()
        dist.destroy_process_group()
    except Exception as exc:  # reported to the parent
        errors.put(f"rank {rank}: {type(exc).__name__}: {exc}")


def test_ddp_wraps_a_model_after_generate():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    procs = [ctx.Process(target=_ddp_worker, args=(rank, port, errors)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
