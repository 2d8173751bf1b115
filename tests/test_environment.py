"""What `make` installs: fairseq and transformers import side by side (paper-scale evaluation needs both)."""

import importlib.util
import subprocess
import sys


def test_fairseq_and_transformers_import_together():
    code = (
        "import fairseq, fairseq_headless\n"
        "from transformers import RobertaModel, GPT2LMHeadModel, GPTNeoXForCausalLM\n"
        "import torch; print(torch.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip().startswith("2.")


def test_the_cuda_torchaudio_that_breaks_transformers_is_not_installed():
    # ve-fairseq declares torchaudio; the Makefile removes it (fairseq never imports it).
    assert importlib.util.find_spec("torchaudio") is None
