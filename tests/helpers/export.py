"""Helpers of the export tests (test_convert_to_hf, test_zeroshot): data folders written by prepare_data,
random-weight checkpoints saved by fairseq's Trainer, and the converter's command line in process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from conftest import REPO, build_task_and_model
from fairseq_headless import cli
from fairseq_headless.export import cli as export_cli

MULTILINGUAL = [
    "Accents: café, naïve, Ångström, Straße, façade, coöperate, jalapeño, smörgåsbord.",
    "Русский текст для проверки токенизатора, с пунктуацией!",
    "中文文本用于检查分词器。日本語のテキストも少し。",
    "Numbers 1790-2021, 3.14 and 50,304; symbols (a) [b] {c} #1 @x $5 % & * + = ? !",
    "  Leading spaces, inner   runs   of spaces,\ttabs and trailing spaces.  ",
]


def corpus_lines() -> list[str]:
    """Real English (the project's own docs), a few other scripts, no blank lines (one document)."""
    lines = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        lines += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines + MULTILINGUAL * 20


def prepare(root: Path, *tokenizer_args) -> Path:
    (root / "corpus.txt").write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    data = root / "data"
    proc = subprocess.run(
        [sys.executable, REPO / "scripts" / "prepare_data.py", "--input", root / "corpus.txt", "--output", data,
         "--valid-lines", "200", "--test-lines", "10", *tokenizer_args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return data


def byte_level_tokenizer(path: Path) -> Path:
    """A Pythia-style byte-level BPE tokenizer.json (<|endoftext|> = id 0, then <|padding|>) trained on corpus_lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(corpus_lines(), trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return path


def save_checkpoint(config: str, data: Path, path: Path, *overrides: str, seed: int = 0, updates: int = 0):
    """A model of `config` saved by fairseq's Trainer; returns the fairseq model. Random weights
    (perturbed), or with `updates` the config's own initialisation trained that many steps of its
    criterion on the data folder's train split."""
    from fairseq.trainer import Trainer

    cfg, task, model = build_task_and_model(config, data, "common.cpu=true", *overrides)
    generator = torch.Generator().manual_seed(seed)
    if not updates:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    if updates:
        task.load_dataset("train")
        done = 0
        while done < updates:
            batches = task.get_batch_iterator(dataset=task.dataset("train"), max_sentences=cfg.dataset.batch_size,
                                              seed=seed, epoch=1 + done).next_epoch_itr(shuffle=True)
            for batch in batches:
                trainer.train_step([batch])
                done += 1
                if done == updates:
                    break
    trainer.consolidate_optimizer()
    trainer.save_checkpoint(str(path), {})
    return model.eval()


def run(*argv) -> int:
    """scripts/convert_to_hf.py's exit status for argv, in process: its command line under cli.run."""
    return cli.run(export_cli.main, [str(a) for a in argv])
