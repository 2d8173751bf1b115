"""What `make` installs: fairseq and transformers import side by side (paper-scale evaluation needs both)."""

import importlib.util
import subprocess
import sys


def test_fairseq_and_transformers_import_together():
    """In a fresh interpreter, fairseq (with the plugin) first, then the transformers models the exports use:
    both import, and they are the installed distributions (not a stray copy on the path)."""
    from importlib.metadata import version

    code = (
        "import fairseq, fairseq_headless\n"
        "import transformers\n"
        "from transformers import RobertaModel, GPT2LMHeadModel, GPTNeoXForCausalLM\n"
        "print(fairseq.__version__, transformers.__version__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [version("ve-fairseq"), version("transformers")]  # fairseq as the Makefile installs it


def test_the_cuda_torchaudio_that_breaks_transformers_is_not_installed():
    # ve-fairseq declares torchaudio; the Makefile removes it (fairseq never imports it).
    assert importlib.util.find_spec("torchaudio") is None
