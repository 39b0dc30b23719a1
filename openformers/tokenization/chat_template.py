"""Chat templates: render conversations with the checkpoint's Jinja template in a sandbox."""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


@lru_cache(maxsize=32)
def compile_template(source: str) -> Any:
    """Compile ``source`` in an immutable sandbox with the helpers chat templates expect."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:
        raise ImportError("chat templates need jinja2: pip install 'jinja2>=3.1'") from exc

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        # unlike jinja's own filter: no HTML escaping
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ValueError(f"the chat template is not valid Jinja (line {exc.lineno}: {exc.message})") from exc


def select_template(own: str | dict[str, str] | None, chat_template: str | None, tools: list[Any] | None) -> str:
    """Pick the template: an explicit one (or the name of one), else the tokenizer's own."""
    if isinstance(own, dict):
        if chat_template is not None and chat_template in own:
            return own[chat_template]
        if chat_template is None:
            if tools is not None and "tool_use" in own:
                return own["tool_use"]
            if "default" in own:
                return own["default"]
            raise ValueError(f"this tokenizer has several chat templates and none is 'default'; pass "
                             f"chat_template= one of {sorted(own)}")
        return chat_template
    if chat_template is not None:
        return chat_template
    if own is None:
        raise ValueError("this tokenizer has no chat template (no chat_template in tokenizer_config.json nor a "
                         "chat_template.jinja file); pass chat_template= a Jinja template string")
    return own


def render_conversations(conversations: list[list[dict[str, Any]]], template: str, *, tools: list[Any] | None,
                         documents: list[Any] | None, add_generation_prompt: bool,
                         continue_final_message: bool, **kwargs: Any) -> list[str]:
    """Render each conversation to text."""
    if continue_final_message and add_generation_prompt:
        raise ValueError("continue_final_message and add_generation_prompt cannot both be set: the first "
                         "continues the last message, the second opens a new assistant turn")
    compiled = compile_template(template)
    for tool in tools or []:
        if not isinstance(tool, dict):
            raise TypeError(f"tools must be JSON-schema dicts, got {type(tool).__name__}")
    out = []
    for chat in conversations:
        chat = [dict(m) for m in chat]
        for m in chat:
            if "role" not in m:
                raise ValueError(f"every chat message needs a 'role' key, got {m!r}")
        final = None
        if continue_final_message:
            final = chat[-1].get("content")
            if not isinstance(final, str):
                raise ValueError("continue_final_message needs the last message to have text content")
            chat[-1]["content"] = final + CONTINUE_TAG
        text = compiled.render(messages=chat, tools=tools, documents=documents,
                               add_generation_prompt=add_generation_prompt, **kwargs)
        if final is not None:
            tag = CONTINUE_TAG.strip()
            if final.strip() not in text or tag not in text:
                raise ValueError("continue_final_message: the template dropped part of the final message, "
                                 "so it cannot be continued")
            loc = text.rindex(tag)
            # keep the message's own trailing spacing when the template preserved it
            text = text[:loc] if text[loc:loc + len(CONTINUE_TAG)] == CONTINUE_TAG else text[:loc].rstrip()
        out.append(text)
    return out


def apply_chat_template(tokenizer: Any, conversation: Any, *, tools: list[Any] | None = None,
                        documents: list[Any] | None = None, chat_template: str | None = None,
                        add_generation_prompt: bool = False, continue_final_message: bool = False,
                        tokenize: bool = True, padding: Any = False, truncation: Any = False,
                        max_length: int | None = None, return_tensors: str | None = None,
                        return_dict: bool = False, tokenizer_kwargs: dict[str, Any] | None = None,
                        **template_kwargs: Any) -> Any:
    """Body of ``PreTrainedTokenizerFast.apply_chat_template``.

    BOS is never doubled: the rendered text is tokenized without special tokens; when the
    tokenizer normally prepends BOS and the template did not write it, BOS is prepended once.
    """
    template = select_template(tokenizer.chat_template, chat_template, tools)
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise ValueError("conversation must be a non-empty list of messages (or a list of conversations)")
    batched = isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages")
    chats = [getattr(c, "messages", c) for c in conversation] if batched else [conversation]
    chats = [[{k: v for k, v in m.items() if v is not None} for m in chat] for chat in chats]
    kwargs = {**tokenizer.special_tokens_map, **template_kwargs}
    rendered = render_conversations(chats, template, tools=tools, documents=documents,
                                    add_generation_prompt=add_generation_prompt,
                                    continue_final_message=continue_final_message, **kwargs)
    if not tokenize:
        return rendered if batched else rendered[0]
    enc = tokenizer(rendered, add_special_tokens=False, **(tokenizer_kwargs or {}))
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if bos is not None and _adds_bos(tokenizer):
        for i, text in enumerate(rendered):
            if not text.startswith(bos):
                enc["input_ids"][i] = [bos_id] + enc["input_ids"][i]
                for key, fill in (("attention_mask", 1), ("token_type_ids", 0)):
                    if key in enc:
                        enc[key][i] = [fill] + enc[key][i]
    features = {k: v for k, v in enc.items()}
    if padding not in (False, None, "do_not_pad") or truncation or max_length is not None or return_tensors:
        if truncation or (max_length is not None and padding in (False, None, "do_not_pad")):
            limit = max_length if max_length is not None else tokenizer.model_max_length
            side = tokenizer.truncation_side
            features = {k: [v[:limit] if side == "right" else v[-limit:] for v in vs] if isinstance(vs, list) else vs
                        for k, vs in features.items()}
        out = tokenizer.pad(features, padding=padding, max_length=max_length, return_tensors=return_tensors)
    else:
        from .batch_encoding import BatchEncoding

        out = BatchEncoding(features, enc.encodings)
    if not batched and not return_tensors:
        out = type(out)({k: v[0] for k, v in out.items()}, out.encodings)
    return out if return_dict else out["input_ids"]


def _adds_bos(tokenizer: Any) -> bool:
    """Whether plain encoding starts with BOS (the post-processor adds it)."""
    layout = tokenizer._layout(pair=False)
    return bool(layout) and layout[0][0] == "special" and layout[0][1] == tokenizer.bos_token_id
