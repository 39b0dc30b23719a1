"""Tiny random models built with transformers (the oracle), saved with the MiniLM tokenizer files.

Each directory is loadable by both libraries, so a test builds the transformers pipeline and ours
on the very same weights and compares the results.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
NLI_LABELS = ["contradiction", "neutral", "entailment"]
CHAT_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


def minilm_dir() -> Path:
    from openformers import embedded_model_path

    return embedded_model_path("minilm")


def _copy_tokenizer(path: Path, chat_template: str | None = None, model_max_length: int | None = None) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, path / name)
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    if model_max_length is not None:
        cfg["model_max_length"] = model_max_length
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))


def _bert(cls_name: str, path: Path, seed: int, **extra) -> Path:
    import transformers

    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=512, **extra)
    torch.manual_seed(seed)
    # a larger init spread gives confident, varied predictions (groups, spans, label changes)
    config.initializer_range = 0.5
    model = getattr(transformers, cls_name)(config).eval()
    model.save_pretrained(path)
    _copy_tokenizer(path)
    return path


def _llama(path: Path) -> Path:
    import transformers

    config = transformers.LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      bos_token_id=101, eos_token_id=102, pad_token_id=0, initializer_range=0.3)
    torch.manual_seed(7)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(path)
    _copy_tokenizer(path, chat_template=CHAT_TEMPLATE)
    return path


BUILDERS = {
    "cls": lambda p: _bert("BertForSequenceClassification", p, 0, num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"},
                           label2id={"neg": 0, "neu": 1, "pos": 2}),
    "cls1": lambda p: _bert("BertForSequenceClassification", p, 1, num_labels=1),
    "multi": lambda p: _bert("BertForSequenceClassification", p, 2, num_labels=4,
                             problem_type="multi_label_classification"),
    "ner": lambda p: _bert("BertForTokenClassification", p, 3, num_labels=len(NER_LABELS),
                           id2label=dict(enumerate(NER_LABELS)), label2id={l: i for i, l in enumerate(NER_LABELS)}),
    "qa": lambda p: _bert("BertForQuestionAnswering", p, 4),
    "mlm": lambda p: _bert("BertForMaskedLM", p, 5),
    "nli": lambda p: _bert("BertForSequenceClassification", p, 6, num_labels=3, id2label=dict(enumerate(NLI_LABELS)),
                           label2id={l: i for i, l in enumerate(NLI_LABELS)}),
    "lm": _llama,
}


class _LazyDirs(dict):
    """Builds a model directory the first time a test asks for it."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        path = BUILDERS[name](self.root / name)
        self[name] = path
        return path


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _LazyDirs(tmp_path_factory.mktemp("pipeline_models"))


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine, two threads spin and stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _roberta(path: Path) -> Path:
    """A tiny RoBERTa token classifier with a byte-level BPE tokenizer trained here (no "##" sub-words)."""
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    corpus = ["My name is Wolfgang and I live in Berlin.", "Hugging Face Inc. is a company based in New York City.",
              "Angela Merkel visited Washington and Paris last year.", "The quick brown fox jumps over the lazy dog."] * 5
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    path.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(path))
    tok = transformers.RobertaTokenizerFast(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"))
    tok.save_pretrained(path)
    config = transformers.RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=130, pad_token_id=1,
                                        num_labels=len(NER_LABELS), id2label=dict(enumerate(NER_LABELS)),
                                        label2id={l: i for i, l in enumerate(NER_LABELS)}, initializer_range=0.5)
    torch.manual_seed(8)
    transformers.RobertaForTokenClassification(config).eval().save_pretrained(path)
    return path


BUILDERS["roberta_ner"] = _roberta
