"""studies/benchmarks/lazy_vs_dense.py: the movement of embedding rows under lazy Adam against dense
AdamW, per how often a row was touched (BENCHMARKS.md)."""
import torch

from conftest import network_terms, rounding_bound
from studies.benchmarks.lazy_vs_dense import Settings, measure, movement_ratios, zipf_batches


def test_each_row_counts_once_in_the_bucket_of_its_touches():
    initial = torch.zeros(6, 2)
    touched = torch.tensor([0, 1, 5, 6, 9, 10])  # 10 steps: never, 1-5 (two rows), 6-9 (two rows), all
    lazy = torch.tensor([[0.0, 0], [1, 0], [0, 2], [3, 0], [0, 4], [3, 4]])  # distances 0, 1, 2, 3, 4, 5
    dense = torch.tensor([[0.0, 1], [2, 0], [0, 2], [6, 0], [0, 6], [6, 8]])  # distances 1, 2, 2, 6, 6, 10
    ratios = movement_ratios(initial, lazy, dense, touched, steps=10)
    assert ratios == {
        "never": {"rows": 1, "lazy": 0.0, "dense": 1.0, "ratio": 0.0},
        "1-5 steps": {"rows": 2, "lazy": 3.0, "dense": 4.0, "ratio": 0.75},
        "6-9 steps": {"rows": 2, "lazy": 7.0, "dense": 12.0, "ratio": 7 / 12},
        "all 10 steps": {"rows": 1, "lazy": 5.0, "dense": 10.0, "ratio": 0.5},
    }


def test_one_step_from_the_same_state_moves_every_touched_row_as_dense_adamw(tiny_data):
    """One step: the touched rows (the batch's ids, inputs and targets) get the dense update, the others stay
    where dense AdamW shrinks them by its weight decay."""
    from fairseq.data import Dictionary

    from conftest import build_task_and_model

    settings = Settings(vocab_size=105, batch=2, length=16, steps=1, held_out_batches=2)
    result = measure(settings)
    dictionary = Dictionary()  # the masked_lm task's: dict.txt's words after the specials, then <mask>
    for i in range(settings.vocab_size - 5):
        dictionary.add_symbol(f"w{i}")
    dictionary.add_symbol("<mask>")
    (batch,) = zipf_batches(1, settings, dictionary, settings.seed)  # the measurement's training batch
    ids = torch.cat([batch["net_input"]["src_tokens"].flatten(), batch["target"][batch["target"] != dictionary.pad()]])
    expected = torch.zeros(settings.vocab_size, dtype=torch.long)
    expected[ids.unique()] = 1
    assert result["touched"] == expected.tolist()

    buckets = result["buckets"]
    assert buckets["never"]["rows"] == settings.vocab_size - len(ids.unique()) > 0
    assert buckets["never"]["lazy"] == 0.0 and buckets["never"]["dense"] > 0  # dense: weight decay
    every = buckets["all 1 steps"]
    assert every["rows"] == len(ids.unique())
    assert sorted(buckets) == ["all 1 steps", "never"]  # one step: every touched row was touched in all of them
    # float32 against float64: the gradient's relative rounding, which Adam's first step lr * g / (|g| + eps')
    # passes on at most (its relative slope in g is below 1)
    _, _, model = build_task_and_model(settings.config, tiny_data)
    bound = rounding_bound(network_terms(model, settings.batch * settings.length), 1.0)
    assert abs(every["ratio"] - 1) <= bound, (every["ratio"] - 1, bound)


def test_the_command_writes_the_numbers_it_prints(tmp_path, capsys, monkeypatch):
    """python -m studies.benchmarks.lazy_vs_dense: the JSON, and the markdown table made from it, printed too
    (its settings, but a smaller vocabulary and batch)."""
    import json
    from dataclasses import replace

    from fairseq_headless import cli
    from studies.benchmarks import lazy_vs_dense

    small = lambda settings: measure(replace(settings, vocab_size=105, batch=2, length=16, held_out_batches=2))
    monkeypatch.setattr(lazy_vs_dense, "measure", small)
    assert cli.run(lazy_vs_dense.main, ["--steps", "3", "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --steps must be at least 7")
    assert cli.run(lazy_vs_dense.main, ["--steps", "7", "--seed", "2", "--output", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "lazy_vs_dense.json").read_text())
    assert (result["settings"]["steps"], result["settings"]["seed"]) == (7, 2)
    assert sum(b["rows"] for b in result["buckets"].values()) == 105
    text = (tmp_path / "lazy_vs_dense.md").read_text()
    assert text == lazy_vs_dense.markdown(result) and text in capsys.readouterr().out
