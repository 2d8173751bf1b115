"""fairseq-headless: headless language models (Contrastive Weight Tying) as a fairseq plugin."""
from setuptools import find_packages, setup

# Pins live here and only here; the Makefile adds no version of its own except
# torch's (see the Makefile for why).
INSTALL_REQUIRES = [
    # fairseq's own 0.12.2 release does not import on Python 3.11
    # (dataclass mutable-default error); ve-fairseq is a prebuilt wheel of
    # fairseq's main branch for cp311/cp312 that installs in under a minute.
    # It declares a torchaudio dependency that fairseq never imports; on a CPU
    # torch the CUDA torchaudio wheel breaks `import transformers`, so the
    # Makefile removes it after installing (GPU users can keep it).
    "ve-fairseq==0.12.3",
    # Any torch 2.x; `make` installs the 2.13.0 CPU wheel before this resolves
    # so that pip never fetches a multi-GB CUDA build on a CPU machine.
    "torch>=2.1",
    # hydra 1.3.8 + omegaconf 2.3.x is the pair fairseq was checked with here.
    "hydra-core==1.3.8",
    "omegaconf>=2.3,<2.4",
    "numpy>=1.24",
    "sentencepiece>=0.2",
    # sentencepiece's model files are protobuf messages; sentencepiece ships their generated module
    # (sentencepiece_model_pb2) but not the runtime it imports.
    "protobuf",
    "tokenizers>=0.20",
    # transformers 5.x: the export and evaluation scripts load models offline.
    "transformers>=5.0,<6",
    "safetensors>=0.4",
    "tqdm",
    # every markdown table of the package and the studies (tablefmt="github")
    "tabulate>=0.9",
    # .zst input (OpenWebText2's distribution format), read by fairseq_headless/data/sources.py.
    "zstandard>=0.22",
    "matplotlib>=3.8",
    # Downstream fine-tuning (GLUE, SuperGLUE, XNLI) runs on the transformers Trainer,
    # which needs accelerate; 1.15.0 is the version it was tested with here.
    "accelerate==1.15.0",
    # Metrics (Matthews, Spearman, F1) are computed locally: the `evaluate` package
    # fetches metric code from a hub at run time.
    "scipy>=1.10",
    "scikit-learn>=1.3",
    # Experiment tracking out of the box: fairseq writes TensorBoard event files with it
    # (common.tensorboard_logdir=DIR), and its text_to_speech task otherwise prints "Please install
    # tensorboardX" on every fairseq import. Pure Python.
    "tensorboardX==2.6.5",
]

setup(
    name="fairseq-headless",
    version="0.1.0",
    description="Headless language models: pretraining without an output vocabulary projection "
    "(Contrastive Weight Tying, Godey et al., ICLR 2024) as a fairseq --user-dir plugin.",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",  # ve-fairseq==0.12.3 ships cp311 and cp312 wheels only
    packages=find_packages(include=["fairseq_headless", "fairseq_headless.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # nltk: tests/test_synonym_analysis.py reads a hand-made WordNet folder with it (see "analysis").
        "test": ["pytest>=8", "nltk==3.10.4"],
        # xformers' memory-efficient attention has no CPU operator; only useful on GPUs.
        "gpu": ["xformers"],
        # Hugging Face dataset names (GLUE/SuperGLUE/XNLI/raw text) when the machine is online.
        "hub": ["datasets"],
        # Synonym analysis (App. A, studies/synonyms/ --wordnet): nltk's WordNet reader on a
        # local database (Debian's wordnet-base), never a download. Pure Python; adds only defusedxml
        # here (its click, joblib, regex, tqdm are already installed), ~5 s.
        "analysis": ["nltk==3.10.4"],
        # Zero-shot suite of Tab.4 (scripts/eval_zeroshot.py): the task files in
        # fairseq_headless/evaluation/zeroshot_tasks/ include lm-eval's own YAMLs by path,
        # written against this exact version. Adds datasets, evaluate, pandas, pyarrow (~70 s);
        # changes no pin above (it moves python-dateutil from 4.0 to 2.9, which matplotlib accepts).
        "zeroshot": ["lm-eval==0.4.13"],
        # Weights & Biases logging of training runs (common.wandb_project=NAME, README "Tracking"):
        # optional, it adds ~15 packages (httpx, opentelemetry) and needs an account or WANDB_MODE=offline.
        "wandb": ["wandb==0.31.0"],
    },
    package_data={"fairseq_headless.evaluation": ["zeroshot_tasks/*.yaml"]},
    license="MIT",
)
