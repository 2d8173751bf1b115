"""docs/reproduce.md: every command in its code blocks can run as written.

A reader copies these commands onto a GPU node; a wrong option name or hydra key would fail there, after
the queue. So each script must exist and accept every option given, each config must exist, every hydra
override must compose with its config (a misspelled key is an error, as in fairseq-hydra-train), and
each training command must pass the launch check (fairseq_headless/launch.py) for its launcher on
nodes of 8 GPUs, with the config's own global batch. A script's parser is the one the script itself
builds: the script runs in-process until it parses its arguments.
"""
from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from dataclasses import dataclass, field
from functools import lru_cache

import pytest

from conftest import REPO, load_config

# fairseq names its hydra schemas after the config files (fairseq.dataclass.initialize.hydra_init): hydra's notice
# about it is fairseq's to fix
pytestmark = pytest.mark.filterwarnings("ignore:(?s).*is validated against ConfigStore schema:UserWarning")

DOC = REPO / "docs" / "reproduce.md"
GPUS_PER_NODE = 8
# programs of other projects that the document runs: their options are theirs to check
EXTERNAL = {"export", "mkdir", "tar", "wait", "fairseq-eval-lm"}
SHELL_KEYWORDS = {"do", "then", "else"}  # a command may follow these on a line
SKIPPED_LINES = {"for", "done", "fi", "if", "while"}  # control lines, no command of ours
# options whose values are hydra overrides, and the options naming the configs they apply to
OVERRIDE_OPTIONS = {"--finetune-override": ("--finetune-config",), "--override": ("--configs",),
                    "--train-overrides": ("--headless-config", "--vanilla-config")}
CONFIG_OPTIONS = ("--finetune-config", "--configs", "--headless-config", "--vanilla-config")
# the results of the paper that must each have a section (the paper's numbering)
SECTIONS = ("## Tab.1:", "## Tab.2:", "## Tabs.3-4 and Fig.4:", "## Tab.5:", "## Tab.6:", "## Fig.6:", "## Fig.7:",
            "## Figs.3-5:")


@dataclass
class Command:
    words: list
    line: int  # of the document, for messages
    sbatch: dict = field(default_factory=dict)  # the #SBATCH options of its code block

    def __str__(self):
        return f"docs/reproduce.md:{self.line}: {' '.join(self.words)[:120]}"


def code_blocks(text: str):
    """(first line number, body) of every fenced block."""
    blocks, start, body = [], None, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if start is None:
                start, body = number + 1, []
            else:
                blocks.append((start, body))
                start = None
        elif start is not None:
            body.append(line)
    return blocks


def commands(text: str) -> list:
    """The simple commands of every code block: continuation lines joined, split at ; & && | ||."""
    found = []
    for start, lines in code_blocks(text):
        sbatch = {}
        for line in lines:
            if line.startswith("#SBATCH"):
                for option in shlex.split(line[len("#SBATCH"):], comments=True):
                    key, _, value = option.partition("=")
                    sbatch[key] = value
        joined, first = [], []  # logical lines and the document line each starts on
        for offset, line in enumerate(lines):
            if joined and joined[-1].endswith("\\"):
                joined[-1] = joined[-1][:-1] + " " + line
            else:
                joined.append(line)
                first.append(start + offset)
        for line, number in zip(joined, first):
            line = line.replace("$(which fairseq-hydra-train)", "fairseq-hydra-train")
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words = []
            for word in [*lexer, ";"]:
                if word.strip(";&|"):
                    words.append(word)
                    continue
                while words and words[0] in SHELL_KEYWORDS:
                    words.pop(0)
                while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):  # VAR=value prefix
                    words.pop(0)
                if words and words[0] not in SKIPPED_LINES:
                    found.append(Command(words, number, sbatch))
                words = []
    return found


class _Parsed(BaseException):  # not an Exception: no script's error handling may catch it
    def __init__(self, parser):
        self.parser = parser


@lru_cache(maxsize=None)
def script_parser(path, module: str = "") -> argparse.ArgumentParser:
    """The parser scripts/X.py (or ``python -m module``) builds, taken at its first parse (it runs no further)."""
    def capture(self, args=None, namespace=None):
        raise _Parsed(self)

    original, argv = argparse.ArgumentParser.parse_known_args, sys.argv
    argparse.ArgumentParser.parse_known_args, sys.argv = capture, [str(path)]
    try:
        if module:
            sys.modules.pop(module, None)  # imported by another study: run_module would warn of two copies
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(str(path), run_name="__main__")
    except _Parsed as parsed:
        return parsed.parser
    finally:
        argparse.ArgumentParser.parse_known_args, sys.argv = original, argv
    raise AssertionError(f"{path} ended without parsing its arguments")


def option_values(words: list, option: str, many: bool = True) -> list:
    """The values given to `option`: `--x=V`, `--x V`, or with `many` `--x V W ...` up to the next option."""
    values = []
    for i, word in enumerate(words):
        if word.startswith(option + "="):
            values.append(word[len(option) + 1:])
        elif word == option:
            for value in words[i + 1:]:
                if value.startswith("-"):
                    break
                values.append(value)
                if not many:
                    break
    return values


def config_exists(name: str) -> bool:
    return (REPO / "configs" / f"{name}.yaml").is_file()


@lru_cache(maxsize=None)
def composed(config: str, overrides: tuple = ()):
    """load_config, once per config and overrides (RANK set for the ${oc.env:RANK} of the torchrun recipe)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RANK", "0")
        return load_config(config, *overrides)


def override_problems(config: str, overrides: list) -> list:
    """Compose the config with the overrides as fairseq-hydra-train does; name every key that is not in it."""
    try:
        cfg = composed(config, tuple(overrides))
    except Exception as error:  # hydra's and omegaconf's own errors name the key
        return [f"{config} with {overrides}: {type(error).__name__}: {str(error).splitlines()[0]}"]
    from omegaconf import OmegaConf

    missing = object()
    return [f"{config}: no key {key}" for key in (o.split("=", 1)[0].lstrip("+~") for o in overrides)
            if OmegaConf.select(cfg, key, default=missing) is missing]


def script_problems(command: Command) -> list:
    if command.words[1] == "-m":  # a study: python -m studies.X
        module = command.words[2]
        path = REPO / module.replace(".", "/")
        path = path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
        if not re.fullmatch(r"studies(\.\w+)+", module) or not path.is_file():
            return [f"no study {module}"]
        parser, words = script_parser(path, module), command.words[3:]
    else:
        path = REPO / command.words[1]
        if not re.fullmatch(r"scripts/\w+\.py", command.words[1]) or not path.is_file():
            return [f"no script {command.words[1]}"]
        parser, words = script_parser(path), command.words[2:]
    accepted = {s for action in parser._actions for s in action.option_strings}
    problems = [f"{path.name} has no option {word.split('=')[0]}" for word in words
                if word.startswith("-") and word.split("=")[0] not in accepted]

    def given(option):  # the command's value, else the parser's default
        values = option_values(words, option)
        default = parser.get_default(option.lstrip("-").replace("-", "_"))
        return values or ([default] if isinstance(default, str) else [])

    for option in CONFIG_OPTIONS:
        problems += [f"{option}: no configs/{name}.yaml" for value in option_values(words, option)
                     for name in value.split(",") if not config_exists(name)]
    for option, config_options in OVERRIDE_OPTIONS.items():
        overrides = option_values(words, option)
        configs = {n for o in config_options for value in given(o) for n in value.split(",")}
        if overrides and not configs:
            problems.append(f"{option} without {' or '.join(config_options)}: the overrides apply to nothing")
        for config in configs if overrides else ():
            problems += override_problems(config, overrides)
    return problems


def launch_environment(command: Command):
    """(environment, visible GPUs) of one rank as the command's launcher starts it."""
    launcher = command.words[0]
    if launcher == "torchrun":
        per_node = int((option_values(command.words, "--nproc_per_node") or ["1"])[0])
        nodes = int((option_values(command.words, "--nnodes") or ["1"])[0])
        world = str(per_node * nodes)
        return {"MASTER_ADDR": "node1", "MASTER_PORT": "29500", "WORLD_SIZE": world, "RANK": "0"}, GPUS_PER_NODE
    if launcher == "srun":
        nodes, per_node = int(command.sbatch.get("--nodes", "1")), int(command.sbatch.get("--ntasks-per-node", "1"))
        return ({"SLURM_NTASKS": str(nodes * per_node), "SLURM_NNODES": str(nodes), "SLURM_JOB_NODELIST": "node[1-2]",
                 "SLURM_NTASKS_PER_NODE": f"{per_node}(x{nodes})"}, int(command.sbatch.get("--gpus-per-node", "0")))
    return {}, GPUS_PER_NODE


def training_config(command: Command):
    """(config name, hydra overrides) of a fairseq-hydra-train command."""
    words = command.words[command.words.index("fairseq-hydra-train") + 1:]
    name = option_values(words, "--config-name", False)
    return (name[0] if name else None), [w for w in words if "=" in w and not w.startswith("-")]


def training_problems(command: Command) -> list:
    from omegaconf import OmegaConf

    from fairseq_headless.launch import check_config
    from fairseq_headless.cli import InputError

    name, overrides = training_config(command)
    config_dir = option_values(command.words, "--config-dir", False)
    if config_dir != ["configs"] or name is None or not config_exists(name):
        return [f"expected --config-dir configs --config-name <one of configs/>, got {config_dir} {name}"]
    problems = override_problems(name, overrides)
    if problems:
        return problems
    cfg, own = composed(name, tuple(overrides)), composed(name)
    environ, gpus = launch_environment(command)
    # The data folders of the commands do not exist here: the launch and the devices are checked, not task.data.
    without_data = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "task"])
    try:
        check_config(without_data, environ=environ, cuda_devices=gpus)
    except InputError as error:
        problems.append(f"launch check: {error}")
    world = cfg.distributed_training.distributed_world_size
    if not environ and world > GPUS_PER_NODE:
        problems.append(f"world size {world} without a launcher: one node has {GPUS_PER_NODE} GPUs")

    def batch(c):
        return c.dataset.batch_size * c.distributed_training.distributed_world_size * c.optimization.update_freq[0]

    if batch(cfg) != batch(own):
        problems.append(f"global batch {batch(cfg)}, the config's is {batch(own)}")
    tokens = batch(cfg) * cfg.task.tokens_per_sample  # what the document's updates-to-tokens arithmetic rests on
    if f"{tokens:,}" not in DOC.read_text(encoding="utf-8"):
        problems.append(f"{tokens:,} tokens per update, a number the document never states")
    return problems


def problems_of(command: Command) -> list:
    program = command.words[0]
    if program in ("python", "python3"):
        return script_problems(command)
    if program in ("torchrun", "srun", "fairseq-hydra-train"):
        if "fairseq-hydra-train" not in command.words:
            return [f"{program} runs something else than fairseq-hydra-train"]
        return training_problems(command)
    if program in EXTERNAL:
        return []
    return [f"unknown program {program}"]


DOC_COMMANDS = commands(DOC.read_text(encoding="utf-8"))
# checkpoints/RUN/checkpoint_*_UPDATES.pt (or _*_*.pt: every interval checkpoint), .../checkpoint_last.pt, checkpoints/RUN
CHECKPOINT = re.compile(r"checkpoints/(\w+)/checkpoint_(?:\*_(\d+|\*)|last)\.pt|checkpoints/(\w+)$")


def checkpoint_problems(commands_: list) -> list:
    """Every checkpoint an evaluation names is one a training of the document writes: its save_dir, at an
    update that is a multiple of its checkpoint interval and not beyond its end."""
    written = {}  # save_dir -> (interval, max_update)
    for command in commands_:
        if "fairseq-hydra-train" in command.words:
            name, overrides = training_config(command)
            cfg = composed(name, tuple(overrides))
            written[cfg.checkpoint.save_dir] = (cfg.checkpoint.save_interval_updates, cfg.optimization.max_update)
    problems = []
    for command in commands_:
        for word in command.words:
            for match in CHECKPOINT.finditer(word.split("=")[-1]):
                save_dir = f"checkpoints/{match.group(1) or match.group(3)}"
                if save_dir not in written:
                    problems.append(f"{command}: no training writes {save_dir}")
                elif (match.group(2) or "*").isdigit():
                    interval, max_update = written[save_dir]
                    if int(match.group(2)) % interval or int(match.group(2)) > max_update:
                        problems.append(f"{command}: {save_dir} is saved every {interval} updates up to {max_update}, "
                                        f"never at {match.group(2)}")
    return problems


def test_every_result_has_a_section_with_commands():
    text = DOC.read_text(encoding="utf-8")
    for heading in SECTIONS:
        assert heading in text, heading
    programs = [c.words[0] if c.words[0] != "python" else c.words[2] if c.words[1] == "-m" else c.words[1]
                for c in DOC_COMMANDS]
    for needed in ("torchrun", "srun", "fairseq-hydra-train", "scripts/prepare_data.py", "scripts/convert_to_hf.py",
                   "scripts/finetune_glue.py", "scripts/finetune_superglue.py", "scripts/finetune_xnli.py",
                   "scripts/eval_lambada.py", "scripts/eval_zeroshot.py", "studies.vocab_sweep",
                   "studies.along_training.batch_size_sweep", "studies.along_training"):
        assert needed in programs, needed


@pytest.mark.parametrize("command", DOC_COMMANDS, ids=lambda c: f"line{c.line}")
def test_command_runs_as_written(command):
    assert problems_of(command) == [], str(command)


def test_evaluated_checkpoints_are_written_by_a_documented_training():
    assert checkpoint_problems(DOC_COMMANDS) == []
    wrong = commands("```bash\nfairseq-hydra-train --config-dir configs --config-name hmlm_base task.data=D "
                     "optimization.max_update=125000 +lr_scheduler.total_num_update=1000000\n"
                     "python scripts/convert_to_hf.py --checkpoint checkpoints/hmlm_base/checkpoint_*_62500.pt --output o\n"
                     "python scripts/convert_to_hf.py --checkpoint checkpoints/mlm_base/checkpoint_last.pt --output o\n```\n")
    assert [p.rsplit(": ", 1)[1] for p in checkpoint_problems(wrong)] == [
        "checkpoints/hmlm_base is saved every 50000 updates up to 125000, never at 62500",
        "no training writes checkpoints/mlm_base"]


@pytest.mark.parametrize("line, expected", [
    ("python scripts/eval_lambada.py --modle ckpt.pt --data l.jsonl", "has no option --modle"),
    ("python scripts/finetune_glue.py --model hf/x --output r --tasks all --data_dir g", "has no option --data_dir"),
    ("python -m studies.vocab_sweep --corpus c --sizes 8 --output o --max-updates=5", "has no option --max-updates"),
    ("python scripts/finetune_gleu.py --model hf/x", "no script"),
    ("python -m studies.along_training --run a=b --output o --finetune-config hlm_pythia_70m_ft",
     "no configs/hlm_pythia_70m_ft.yaml"),
    ("python -m studies.along_training --run a=b --output o --finetune-config hlm_pythia70m_ft "
     "--finetune-override optimization.max_updat=5", "max_updat"),
    ("python -m studies.along_training --run a=b --output o --finetune-override optimization.max_update=5",
     "apply to nothing"),
    ("fairseq-hydra-train --config-dir configs --config-name hmlm_bas task.data=D", "expected --config-dir"),
    ("fairseq-hydra-train --config-dir configs --config-name hmlm_small task.data=D optimization.max_updat=5",
     "max_updat"),
    ("fairseq-hydra-train --config-dir configs --config-name hmlm_small task.data=D +lr_scheduler.total_num_updat=5",
     "total_num_updat"),
    ("torchrun --nproc_per_node=8 fairseq-hydra-train --config-dir configs --config-name hlm_pythia70m task.data=D",
     "launch check"),
    ("torchrun --nproc_per_node=8 fairseq-hydra-train --config-dir configs --config-name hlm_pythia70m task.data=D "
     "distributed_training.distributed_world_size=8", "global batch"),
    ("fairseq-hydra-train --config-dir configs --config-name hlm_pythia70m task.data=D", "without a launcher"),
    ("pyhton scripts/eval_lambada.py --model m --data d", "unknown program"),
])
def test_a_wrong_command_is_reported(line, expected):
    """The checks can fail: each mistake a reader could meet is named."""
    command, = commands(f"```bash\n{line}\n```\n")
    problems = problems_of(command)
    assert any(expected in problem for problem in problems), problems


def test_slurm_options_reach_the_launch_check():
    """#SBATCH lines set the tasks the launch check sees: 1 task per node cannot run a 16-GPU config."""
    block = ("```bash\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=4\n#SBATCH --gpus-per-node=8\n"
             "srun fairseq-hydra-train --config-dir configs --config-name hlm_pythia70m task.data=D\n```\n")
    command, = commands(block)
    assert command.sbatch == {"--nodes": "2", "--ntasks-per-node": "4", "--gpus-per-node": "8"}
    assert any("Slurm started 8 task(s)" in p for p in problems_of(command))
