"""Reading a fairseq checkpoint (its config, weights, training state), whichever fairseq CLI wrote it: the one reader.

``torch.load`` with ``weights_only`` runs here and nowhere else, allowing only :data:`LEGACY_CONFIG_CLASSES`
(fairseq-train's ``argparse.Namespace`` config sections). docs/training.md."""
from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from .cli import InputError

LEGACY_CONFIG_CLASSES = [argparse.Namespace]


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _folder_message(name: str, where: str, folder: Path) -> str:
    usual = [f for f in ("checkpoint_best.pt", "checkpoint_last.pt") if (folder / f).is_file()]
    inside = usual + sorted(p.name for p in folder.glob("*.pt") if p.name not in usual)
    if not inside:
        return f"{name}: a folder with no .pt file in it; pass a checkpoint file that fairseq-hydra-train saved"
    listed = ", ".join(inside[:5]) + (f" and {len(inside) - 5} more" if len(inside) > 5 else "")
    return (f"{name}: a folder, not a checkpoint file; pass one of its files ({listed}), e.g. "
            f"{where + ' ' if where else ''}{folder / inside[0]}")


def load_state(path, where: str = "", mmap: bool = False) -> dict:
    """The checkpoint's dict as saved (no fairseq upgrade), loaded weights_only with argparse.Namespace allowed.

    ``where`` (the option that named the file, e.g. ``--checkpoint``) starts every error message."""
    import torch
    path = Path(path)
    name = f"{where} {path}".strip()
    if path.is_dir():  # a save_dir: which of its checkpoints to read is the user's choice
        raise InputError(_folder_message(name, where, path))
    if not path.is_file():
        raise InputError(f"{name}: file not found")
    try:
        with torch.serialization.safe_globals(LEGACY_CONFIG_CLASSES):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError... for bad files
        if zipfile.is_zipfile(path) and "Weights only load failed" in str(e):
            unsafe = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) or _first_line(e)
            raise InputError(f"{name}: holds pickled objects that weights_only loading refuses ({unsafe}); "
                                  f"re-save it with tensors and plain containers only") from None
        raise InputError(f"{name}: not a readable fairseq checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(state, dict):
        raise InputError(f"{name}: holds a {type(state).__name__}, not a fairseq checkpoint's dict")
    return state


def read_checkpoint(path, where: str = "", data=None) -> dict:
    """The checkpoint as fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` returns it (``cfg`` upgraded,
    ``task.data`` replaced by ``data`` when given), but read by :func:`load_state`."""
    from fairseq import checkpoint_utils
    from fairseq.dataclass.utils import overwrite_args_by_name
    from omegaconf import OmegaConf
    state = load_state(path, where)
    name = f"{where} {path}".strip()
    if (state.get("cfg") is None and state.get("args") is None) or not isinstance(state.get("model"), dict):
        raise InputError(f"{name}: no model config or weights in it; is it a fairseq checkpoint?")
    overrides = {"data": str(data)} if data is not None else None
    if overrides and state.get("args") is not None:  # pre-hydra checkpoints: the whole config is a Namespace
        for key, value in overrides.items():
            setattr(state["args"], key, value)
    if state.get("cfg") is not None:
        # allow_objects: the Namespace sections of fairseq-train checkpoints (as load_checkpoint_to_cpu)
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
        if overrides:
            overwrite_args_by_name(state["cfg"], overrides)
    try:
        state = checkpoint_utils._upgrade_state_dict(state)  # fairseq's own upgrade of old layouts
    except (KeyError, AttributeError, TypeError) as e:
        raise InputError(f"{name}: not a fairseq checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    return state


def build_model(state: dict):
    """(task, model) of a checkpoint read by :func:`read_checkpoint`, through fairseq's public builders
    (``tasks.setup_task``, ``task.build_model``, a strict ``load_state_dict``: RuntimeError when the
    weights do not fit the model the config describes); fp32, eval mode, on the CPU."""
    from fairseq import tasks
    import fairseq_headless.plugin  # noqa: F401  (registers the plugin's tasks, models and criterions)
    cfg = state["cfg"]
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    return task, model.float().eval()


def cfg_field(section, key: str):
    """``key`` of one section of a checkpoint's cfg (a dict, a DictConfig or a fairseq-train Namespace).

    Raises KeyError when the section lacks it, whatever its type."""
    if isinstance(section, argparse.Namespace):
        try:
            return getattr(section, key)
        except AttributeError:
            raise KeyError(key) from None
    return section[key]
