"""Dataset.map and load_dataset show a tqdm bar (with map's desc=), and disable_progress_bars() hides them."""
import openformers.data as data
from openformers.data import Dataset, load_dataset


def test_map_bar_uses_desc(capsys, tmp_path):
    data.enable_progress_bars()
    ds = Dataset.from_dict({"x": list(range(2500))})
    out = ds.map(lambda r: {"y": r["x"] * 2}, desc="Doubling", keep_in_memory=True)
    assert out["y"][-1] == 4998
    err = capsys.readouterr().err
    assert "Doubling" in err and "2500/2500" in err
    ds.map(lambda b: {"y": b["x"]}, batched=True, keep_in_memory=True)
    assert "Map" in capsys.readouterr().err


def test_disable_progress_bars(capsys, tmp_path):
    ds = Dataset.from_dict({"x": list(range(10))})
    data.disable_progress_bars()
    try:
        assert data.are_progress_bars_disabled()
        ds.map(lambda r: r, desc="Silent", keep_in_memory=True)
        (tmp_path / "a.csv").write_text("a,b\n1,2\n3,4\n")
        load_dataset("csv", data_files=str(tmp_path / "a.csv"), cache_dir=str(tmp_path / "c"))
        assert "Silent" not in capsys.readouterr().err
    finally:
        data.enable_progress_bars()


def test_load_dataset_bar(capsys, tmp_path):
    (tmp_path / "a.csv").write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(100)))
    ds = load_dataset("csv", data_files=str(tmp_path / "a.csv"), cache_dir=str(tmp_path / "c"))
    assert ds["train"].num_rows == 100
    assert "Generating train split" in capsys.readouterr().err
