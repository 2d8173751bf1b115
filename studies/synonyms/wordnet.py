"""Synonym pairs from a local WordNet database (Princeton layout, e.g. Debian's wordnet-base), read with nltk's
reader and never downloaded: every unordered pair of distinct lemma names sharing a synset, all parts of
speech, each pair once; multiword lemmas become text with spaces. Three things stand between nltk's reader
and such a folder (docs/analysis.md): Debian leaves out ``lexnames`` (served from here), the reader maps to
nltk's downloaded WordNet (skipped) and nltk 3.9+ opens only its data path (the folder is appended to it).
"""
from __future__ import annotations

import functools
import io
import itertools
import warnings
from pathlib import Path

from fairseq_headless.cli import InputError

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")  # Debian's wordnet-base (WordNet 3.0)
NLTK_PIN = "nltk==3.10.4"
NLTK_INSTALL = f"pip install 'fairseq-headless[analysis]' (or: pip install {NLTK_PIN})"
POS_FILES = ("noun", "verb", "adj", "adv")
REQUIRED_FILES = tuple(f"{kind}.{pos}" for pos in POS_FILES for kind in ("data", "index")) + tuple(
    f"{pos}.exc" for pos in POS_FILES)

# lexnames(5WN) of WordNet 3.0: file number = position; the category (1 noun, 2 verb, 3 adjective,
# 4 adverb) follows from the name's prefix.
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
LEXNAMES_TEXT = "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


@functools.lru_cache(maxsize=None)
def _reader_class():
    try:
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError:
        raise InputError(f"--wordnet needs nltk, which is not installed: {NLTK_INSTALL}") from None

    class LocalWordNetReader(WordNetCorpusReader):
        """nltk's reader on a bare WordNet folder: no lexnames needed, no download looked for."""

        def open(self, file):
            if file == "lexnames" and not Path(self._root.path, file).is_file():
                return io.StringIO(LEXNAMES_TEXT)
            return super().open(file)

        def map_wn(self, version="wordnet"):
            return None

    return LocalWordNetReader


def open_wordnet(folder: Path):
    """nltk's WordNet reader on ``folder``; one InputError for any reason it cannot be."""
    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        where = "does not exist" if not folder.is_dir() else f"has no {', '.join(missing[:3])}" + (
            ", ..." if len(missing) > 3 else "")
        raise InputError(
            f"--wordnet {folder}: not a WordNet database folder ({where}); install Debian's WordNet 3.0 "
            f"(apt-get install wordnet-base: {DEFAULT_WORDNET_DIR}) or pass the dict/ folder of a WordNet release")
    reader_class = _reader_class()
    import nltk.data

    root = str(folder.resolve())
    if root not in nltk.data.path:
        nltk.data.path.append(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": not used
            return reader_class(root, None)
    except (ValueError, OSError, AssertionError, StopIteration) as e:  # nltk's WordNetError is a ValueError
        raise InputError(f"--wordnet {folder}: cannot read it as WordNet ({e})".splitlines()[0]) from None


def synonym_pairs(reader, progress=None) -> list[tuple[str, str]]:
    """Every unordered pair of distinct lemma names sharing a synset, once, in first-seen order."""
    seen, pairs = set(), []
    try:
        for pos in ("n", "v", "a", "r"):  # "a" also yields the satellites ("s"): each synset once
            for synset in reader.all_synsets(pos):
                names = list(dict.fromkeys(name.replace("_", " ") for name in synset.lemma_names()))
                for a, b in itertools.combinations(names, 2):
                    key = (a, b) if a < b else (b, a)
                    if key not in seen:
                        seen.add(key)
                        pairs.append((a, b))
                if progress is not None:
                    progress.update(1)
            reader._synset_offset_cache.clear()  # parsed synsets are not needed again: free them
    except (ValueError, IndexError, KeyError) as e:  # a malformed data line (WordNetError is a ValueError)
        raise InputError(f"--wordnet {reader.root}: malformed WordNet data ({e})".splitlines()[0]) from None
    return pairs


def wordnet_version(reader) -> str | None:
    """The version in the database's licence header ("3.0" for Debian's wordnet-base), if any."""
    try:
        return reader.get_version()
    except (ValueError, OSError):
        return None
