"""The data folder's tokenizer as a fairseq BPE, ``bpe=data_folder``: fairseq's own tools on the project's
checkpoints (the hub interface's ``encode``/``fill_mask``/``sample``, ``fairseq-interactive``).

A data folder's ``dict.txt`` symbols are tokenizer ids (fairseq id = tokenizer id + 4), which no BPE of
fairseq's produces; this one encodes with the tokenizer the folder's manifest names, and decodes back.
``bpe.data_folder`` defaults to ``task.data``."""
from dataclasses import dataclass

from fairseq.data.encoders import register_bpe
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from .data.folder import open_data_folder
from .cli import InputError


def _is_id(symbol: str) -> bool:
    return symbol.isascii() and symbol.isdigit()  # dict.txt's ids; str.isdigit alone also takes "²"


@dataclass
class DataFolderBPEConfig(FairseqDataclass):  # field types are real types (no __future__ annotations): argparse reads them
    # The data folder (or colon list of shards) whose manifest.json names the tokenizer. No help text: fairseq's
    # argparse tools then add no option for an interpolated field and resolve it to task.data (their DATA argument),
    # where a help text would make the option's default None.
    data_folder: str = II("task.data")


@register_bpe("data_folder", dataclass=DataFolderBPEConfig)
class DataFolderBPE:
    """Text <-> the data folder's tokenizer ids, as the space-separated ``dict.txt`` symbols fairseq's hub binarizes."""

    def __init__(self, cfg: DataFolderBPEConfig):
        where = "bpe.data_folder (default: task.data)"
        folder = open_data_folder(cfg.data_folder, where, need_tokenizer=False)
        if folder.manifest is None:  # the folder reader's own message would offer tokenizer files, which a BPE cannot take
            raise InputError(f"{where}: no manifest.json in {folder.path}; give a folder written by scripts/prepare_data.py "
                            f"(a folder binarized by fairseq-preprocess from GPT-2 BPE ids takes fairseq's own bpe=gpt2 "
                            f"with gpt2_encoder_json and gpt2_vocab_bpe: the same ids)")
        self.tokenizer = folder.load_tokenizer()
        self.special_ids = frozenset(self.tokenizer.special_ids())

    def encode(self, x: str) -> str:
        # No special token is added: the hub adds fairseq's own <s> and </s>, as binarization added </s>.
        return " ".join(map(str, self.tokenizer.encode_batch([x])[0]))

    def decode(self, x: str) -> str:
        """The tokenizer's decode of the ids; a symbol that is no id (``<mask>``, ``<unk>``, ``madeupword0000``)
        stands for itself, as in fairseq's GPT-2 BPE. One id alone reads as inside running text (`` Paris``):
        fairseq's fill_mask decodes each predicted symbol alone and splices it in after a word."""
        symbols = x.split()
        if len(symbols) == 1 and _is_id(symbols[0]):
            return self.tokenizer.running_text([int(symbols[0])])
        text, run = [], []
        for symbol in [*symbols, None]:
            if symbol is not None and _is_id(symbol):
                run.append(int(symbol))
                continue
            if run:
                text.append(self.tokenizer.decode(run) if not text else self.tokenizer.running_text(run))
                run = []
            if symbol is not None:
                text.append(symbol)
        return "".join(text)

    def is_beginning_of_word(self, x: str) -> bool:
        """For whole-word masking (fairseq's ``get_whole_word_mask``), which counts the ValueError of a symbol that
        is no id (fairseq's specials, ``madeupword``) as a beginning; the tokenizer's own specials are too."""
        i = int(x)
        return i in self.special_ids or self.tokenizer.running_text([i]).startswith(" ")
