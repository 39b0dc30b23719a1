from __future__ import annotations

import pytest

from openformers.data import Dataset, KeyDataset


def test_key_dataset():
    ds = Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]})
    kd = KeyDataset(ds, "text")
    assert len(kd) == 3 and kd[1] == "b" and list(kd) == ["a", "b", "c"]
    import torch.utils.data

    loader = torch.utils.data.DataLoader(kd, batch_size=2)
    assert [list(b) for b in loader] == [["a", "b"], ["c"]]
    with pytest.raises(KeyError, match="nope"):
        KeyDataset(ds, "nope")
