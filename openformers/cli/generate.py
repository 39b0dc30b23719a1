"""``openformers chat`` and ``openformers generate``: text generation from the command line.

Both default to the embedded SmolLM2-135M-Instruct; ``--model`` takes any local checkpoint
directory, cached repo id or GGUF file.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "generate":
        parser.add_argument("prompt", help="the prompt text (use --chat to wrap it in the chat template)")
        parser.add_argument("--chat", action="store_true", help="send the prompt as a user message through the chat template")
    parser.add_argument("--model", default="smollm2", help="model directory, cached repo id, GGUF file or embedded name")
    parser.add_argument("--gguf-file", default=None, help="GGUF file name inside --model's directory")
    parser.add_argument("--device", default=None,
                        help="where the model runs: cpu, cuda, cuda:1, mps or auto (None: the CPU)")
    parser.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16")
    parser.add_argument("--quantized", action="store_true", help="keep a GGUF model's 4-bit weights quantized in memory (faster decoding)")
    parser.add_argument("--system", default=None, help="a system message for the conversation")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="most tokens to generate")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (with --do-sample; None: the model's)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens (None: the model's)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling probability mass (None: the model's)")
    parser.add_argument("--min-p", type=float, default=None, help="drop tokens below min-p times the top probability")
    parser.add_argument("--repetition-penalty", type=float, default=None, help="penalty > 1 for tokens already present")
    parser.add_argument("--num-beams", type=int, default=None, help="beam search with this many beams (None: no beams)")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling")
    parser.add_argument("--timing", action="store_true", help="print the load time, then the time to the first token, the token count and tokens/s, to stderr")


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    from openformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": args.dtype}
    if getattr(args, "device", None):
        kwargs["device_map"] = args.device
    if args.gguf_file:
        kwargs["gguf_file"] = args.gguf_file
    if args.quantized:
        from openformers.quantization import GGUFQuantizationConfig

        kwargs["quantization_config"] = GGUFQuantizationConfig()
    tok_kwargs = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(args.model, **tok_kwargs)
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    return model, tokenizer


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample}
    for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "num_beams"):
        value = getattr(args, name)
        if value is not None:
            kw[name] = value
    if args.seed is not None:
        import torch

        kw["generator"] = torch.Generator().manual_seed(args.seed)
    return kw


class _TimedStreamer:
    """Prints text as it arrives and records when the first new token came."""

    def __init__(self, tokenizer: Any, out: Any) -> None:
        from openformers import TextStreamer

        self.first_token_at: float | None = None

        class _Printer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                out.write(text)
                if stream_end:
                    out.write("\n")
                out.flush()

        self.inner = _Printer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def put(self, value: Any) -> None:
        if not self.inner.next_tokens_are_prompt:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
        self.inner.put(value)

    def end(self) -> None:
        self.inner.end()


def _reply(model: Any, tokenizer: Any, messages: list[dict[str, str]], args: argparse.Namespace, out: Any) -> str:
    import torch

    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt").to(model.device)
    streamer = _TimedStreamer(tokenizer, out)
    start = time.perf_counter()
    with torch.inference_mode():
        sequences = model.generate(**inputs, streamer=streamer, **generation_kwargs(args))
    new_tokens = sequences[0, inputs["input_ids"].shape[1]:]
    if args.timing:
        _print_timing(start, streamer.first_token_at, len(new_tokens))
    return tokenizer.decode(new_tokens, skip_special_tokens=True)


def run_generate(args: argparse.Namespace) -> int:
    import torch

    start = time.perf_counter()
    model, tokenizer = load(args)
    if args.timing:
        print(f"[loaded in {time.perf_counter() - start:.2f} s]", file=sys.stderr)
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [{"role": "user", "content": args.prompt}]
        _reply(model, tokenizer, messages, args, sys.stdout)
        return 0
    inputs = tokenizer(args.prompt, return_tensors="pt").to(model.device)
    streamer = _TimedStreamer(tokenizer, sys.stdout)
    sys.stdout.write(args.prompt)
    begin = time.perf_counter()
    with torch.inference_mode():
        sequences = model.generate(**inputs, streamer=streamer, **generation_kwargs(args))
    if args.timing:
        _print_timing(begin, streamer.first_token_at, len(sequences[0]) - inputs["input_ids"].shape[1])
    return 0


def _print_timing(start: float, first_token_at: float | None, n_new: int) -> None:
    if first_token_at is None:
        print(f"[no new tokens in {time.perf_counter() - start:.2f} s]", file=sys.stderr)
        return
    elapsed = time.perf_counter() - start
    ttft = first_token_at - start
    rate = (n_new - 1) / max(elapsed - ttft, 1e-9) if n_new > 1 else 0.0
    print(f"[first token {ttft * 1000:.0f} ms, {n_new} tokens, {rate:.1f} tokens/s]", file=sys.stderr)


HELP = "commands: /reset clears the conversation, /exit quits (Ctrl-D and Ctrl-C quit too)"


def run_chat(args: argparse.Namespace, stdin: Any = None, out: Any = None) -> int:
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    start = time.perf_counter()
    model, tokenizer = load(args)
    if args.timing:
        print(f"[loaded in {time.perf_counter() - start:.2f} s]", file=sys.stderr)
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    interactive = stdin.isatty()
    if interactive:
        print(f"chatting with {args.model}; {HELP}", file=out)
    while True:
        if interactive:
            out.write(">>> ")
            out.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            out.write("\n")
            return 0
        if not line:  # end of input
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            messages = list(system)
            print("[conversation cleared]", file=out)
            continue
        if text.startswith("/"):
            print(f"unknown command {text!r}; {HELP}", file=out)
            continue
        messages.append({"role": "user", "content": text})
        try:
            reply = _reply(model, tokenizer, messages, args, out)
        except KeyboardInterrupt:  # stop this answer, keep the conversation without it
            messages.pop()
            out.write("\n[interrupted]\n")
            continue
        messages.append({"role": "assistant", "content": reply})


def run(args: argparse.Namespace) -> int:
    try:
        return run_chat(args) if args.command == "chat" else run_generate(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
