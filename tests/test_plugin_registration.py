"""fairseq_headless/__init__.py and plugin.py: the fairseq plugin registers with fairseq only.

The Hugging Face side (fine-tuning, zero-shot, synonym analysis on exports) and the command-line
convention import no fairseq; the plugin is registered whenever fairseq is loaded, in either order.
Each check runs in a fresh interpreter: this one has imported fairseq long ago.
"""

import json
import os
import subprocess
import sys

from conftest import REPO

HF_SIDE = sorted(f"{folder.replace('/', '.')}.{path.stem}"
                 for folder in ("fairseq_headless/evaluation", "fairseq_headless/hf", "studies/synonyms")
                 for path in (REPO / folder).glob("*.py") if path.stem not in ("__init__", "__main__")) + [
    "fairseq_headless.evaluation", "fairseq_headless.hf", "studies.synonyms"]
HF_SCRIPTS = ["scripts/finetune_glue.py", "scripts/finetune_superglue.py", "scripts/finetune_xnli.py",
              "scripts/eval_zeroshot.py", "scripts/compare_zeroshot.py", "scripts/pretrain_hf.py", "studies.synonyms"]


def fresh_python(code: str) -> dict:
    """Run `code` in a new interpreter of this venv, with this checkout first on the path; its printed JSON."""
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_hf_side_and_the_command_line_convention_import_no_fairseq():
    assert len(HF_SIDE) > 10 and "fairseq_headless.evaluation.finetune" in HF_SIDE  # the glob found the modules
    result = fresh_python(
        "import importlib, json, sys\n"
        "import fairseq_headless.cli\n"
        "cli = {'torch': 'torch' in sys.modules, 'fairseq': 'fairseq' in sys.modules}\n"
        f"for name in {HF_SIDE!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'cli': cli, 'fairseq': sorted(m for m in sys.modules if m.split('.')[0] == 'fairseq'),\n"
        "                  'torch': 'torch' in sys.modules}))\n")
    assert result["cli"] == {"torch": False, "fairseq": False}
    assert result["fairseq"] == [] and result["torch"]  # torch: the evaluation does import it, fairseq not


def test_the_hf_scripts_help_imports_no_fairseq():
    result = fresh_python(
        "import json, runpy, sys\n"
        "seen = {}\n"
        f"for script in {HF_SCRIPTS!r}:\n"
        "    sys.argv = [script, '--help']\n"
        "    try:\n"
        "        if script.endswith('.py'):\n"
        "            runpy.run_path(script, run_name='__main__')\n"
        "        else:\n"
        "            runpy.run_module(script, run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as e:\n"
        "        seen[script] = [e.code, 'fairseq' in sys.modules]\n"
        "print(json.dumps(seen))\n")
    assert result == {script: [0, False] for script in HF_SCRIPTS}


REGISTERED = (
    "from fairseq.criterions import CRITERION_REGISTRY\n"
    "from fairseq.models import ARCH_MODEL_REGISTRY\n"
    "from fairseq.optim import OPTIMIZER_REGISTRY\n"
    "import fairseq.utils\n"
    "print(json.dumps({'criterions': sorted(c for c in CRITERION_REGISTRY if c.startswith('headless_')),\n"
    "                  'lazy_adam': 'lazy_adam' in OPTIMIZER_REGISTRY,\n"
    "                  'arch': 'headless_roberta_tiny' in ARCH_MODEL_REGISTRY,\n"
    "                  'clip_grad_norm_': fairseq.utils.clip_grad_norm_.__module__}))\n")
EXPECTED = {"criterions": ["headless_language_modeling", "headless_masked_lm"], "lazy_adam": True, "arch": True,
            "clip_grad_norm_": "fairseq.utils"}  # the plugin registers; it patches none of fairseq's features


def test_the_plugin_is_registered_when_fairseq_comes_first_as_with_user_dir():
    code = ("import json\nfrom argparse import Namespace\nimport fairseq.utils\n"
            "fairseq.utils.import_user_module(Namespace(user_dir='fairseq_headless'))\n")
    assert fresh_python(code + REGISTERED) == EXPECTED


def test_the_plugin_is_registered_when_fairseq_comes_after_the_hf_side():
    # fairseq's import_user_module would not import the package a second time: the import hook registers it
    code = ("import json, sys\nimport fairseq_headless.evaluation.finetune\n"
            "assert 'fairseq' not in sys.modules\n"
            "from argparse import Namespace\nimport fairseq.utils\n"
            "fairseq.utils.import_user_module(Namespace(user_dir='fairseq_headless'))\n")
    assert fresh_python(code + REGISTERED) == EXPECTED
