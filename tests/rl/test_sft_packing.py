"""SFT packing: best-fit bins, and packed documents that never attend to each other (the packed loss
equals the padded one, document by document)."""
from __future__ import annotations

import torch

from tests.rl.helpers import WORDS, tiny_word_llama, word_tokenizer


def test_best_fit_packing_keeps_every_document_whole():
    from openformers.rl.data import pack_best_fit

    docs = [{"input_ids": list(range(n)), "completion_mask": [1] * n} for n in (7, 3, 5, 2, 6, 1, 4)]
    packed = pack_best_fit(docs, max_length=8)
    assert all(sum(p["seq_lengths"]) == len(p["input_ids"]) <= 8 for p in packed)
    assert sorted(n for p in packed for n in p["seq_lengths"]) == [1, 2, 3, 4, 5, 6, 7]
    assert len(packed) == 4  # 28 tokens in bins of 8: the fewest bins that can hold them


def test_packed_loss_equals_padded_loss(tmp_path):
    from openformers.rl import SFTConfig, SFTTrainer

    tok = word_tokenizer(tmp_path / "tok")
    data = [{"prompt": f"say {w} :", "completion": " " + " ".join([w] * (1 + i % 4)) + " ."}
            for i, w in enumerate(WORDS[3:15])]
    model = tiny_word_llama()
    model.eval()
    losses = {}
    for packing in (False, True):
        args = SFTConfig(str(tmp_path / str(packing)), packing=packing, max_length=32, gradient_checkpointing=False)
        trainer = SFTTrainer(model, args=args, train_dataset=data, processing_class=tok)
        rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        if packing:
            assert len(rows) < len(data) and all(len(r["seq_lengths"]) > 1 for r in rows[:-1])
        batch = trainer.data_collator(rows)
        with torch.no_grad():
            losses[packing] = trainer.compute_loss(model, batch)
    assert "position_ids" in batch and batch["input_ids"].shape[0] == 1
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-5, atol=1e-6)
