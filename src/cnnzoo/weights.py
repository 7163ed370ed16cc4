"""Checkpoint files: read them safely, convert their keys, fit them to the model, save them.

Kept out of the model files on purpose: a model file describes an architecture; how other
projects named its tensors is a separate concern.

Reading never runs pickled code: `.pth` files go through ``torch.load(weights_only=True)``,
which accepts tensors and plain containers only, and `.safetensors` files cannot hold code.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.atomic import atomic_write

__all__ = [
    "CheckpointError",
    "convert_state_dict",
    "fit_state_dict",
    "load_pretrained",
    "read_state_dict",
    "register_key_converter",
    "save_weights",
]

StateDict = dict[str, torch.Tensor]

# Containers other trainers wrap the weights in (Lightning, timm, DeiT, our own trainer).
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema")
# Prefixes added by DataParallel/DDP ("module.") and torch.compile ("_orig_mod.").
_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 8  # how many offending keys an error message lists


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


# family -> functions rewriting a foreign layout's keys into cnnzoo's names (torchvision's old
# DenseNet names, timm's MobileNetV2/EfficientNet/VGG). Each returns a state it does not recognise
# unchanged; cnnzoo.convert holds the maps of other projects.
_CONVERTERS: dict[str, list[Callable[[StateDict], StateDict]]] = {}


# What a weights file's header may claim: anything outside would build a model or an input far
# beyond any real one (a 1e10-way head, a 1e6 x 1e6 input) before the weights are even compared.
HEADER_BOUNDS = {"num_classes": (1, 1_000_000), "in_chans": (1, 64), "side": (1, 16_384)}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string header of a `.safetensors` file (architecture, run info); {} for other formats."""
    from safetensors import safe_open

    if Path(path).suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable safetensors file ({e})") from e


def run_metadata(meta: dict[str, str], path: str | os.PathLike) -> dict[str, Any]:
    """The trainer's ``cnnzoo_run`` header of a weights file, parsed and checked.

    A header is data from a file, not a promise: it must be a JSON object whose known fields have
    the right types and sane sizes; anything else is a CheckpointError naming the field.
    """
    if "cnnzoo_run" not in meta:
        return {}
    where = f"checkpoint {str(path)!r}"
    try:
        run = json.loads(meta["cnnzoo_run"])
    except ValueError as e:
        raise CheckpointError(f"{where}: its cnnzoo_run header is not JSON ({e})") from e
    if not isinstance(run, dict):
        raise CheckpointError(f"{where}: its cnnzoo_run header is a {type(run).__name__}, not an object")

    def bad(field: str, why: str) -> CheckpointError:
        return CheckpointError(f"{where}: header field {field!r} {why}; the file is damaged or not cnnzoo's")

    def whole(field: str, lo: int, hi: int) -> None:
        v = run.get(field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise bad(field, f"is {v!r}, not a whole number in [{lo:,}, {hi:,}]")

    for field, kind in (
        ("model", str),
        ("data", str),
        ("augment", str),
        ("model_kwargs", dict),
        ("classes", list),
    ):
        if run.get(field) is not None and not isinstance(run[field], kind):
            raise bad(field, f"is a {type(run[field]).__name__}, not a {kind.__name__}")
    whole("num_classes", *HEADER_BOUNDS["num_classes"])
    whole("in_chans", *HEADER_BOUNDS["in_chans"])
    whole("resize_to", *HEADER_BOUNDS["side"])
    size = run.get("input_size")
    if size is not None:
        ok = (
            isinstance(size, list)
            and len(size) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        )
        if (
            not ok
            or not HEADER_BOUNDS["in_chans"][0] <= size[0] <= HEADER_BOUNDS["in_chans"][1]
            or not all(HEADER_BOUNDS["side"][0] <= v <= HEADER_BOUNDS["side"][1] for v in size[1:])
        ):
            raise bad("input_size", f"is {size!r}, not [C, H, W] with C <= 64 and sides <= 16,384")
    if any(not isinstance(c, str) for c in run.get("classes") or []):
        raise bad("classes", "holds something other than names")
    return run


def check_head(run: dict[str, Any], state: StateDict, head: str | None, path: str | os.PathLike) -> None:
    """A header's num_classes must be the size of the head the file holds (when it holds one)."""
    weight = state.get(f"{head}.weight") if head else None
    claimed = run.get("num_classes")
    if claimed is not None and weight is not None and weight.dim() >= 1 and int(weight.shape[0]) != claimed:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its header says {claimed:,} classes but its {head} has "
            f"{int(weight.shape[0]):,} outputs; the file is damaged or its header was edited"
        )


def register_key_converter(family: str) -> Callable[[Callable[[StateDict], StateDict]], Callable]:
    """Register a key converter for a model family (applied before fitting; several may be registered)."""

    def decorator(fn: Callable[[StateDict], StateDict]) -> Callable[[StateDict], StateDict]:
        if fn not in _CONVERTERS.setdefault(family, []):
            _CONVERTERS[family].append(fn)
        return fn

    return decorator


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Tensors of a `.safetensors` or PyTorch (`.pth`, `.pt`, `.bin`) file, unwrapped and unprefixed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; pass the path of a .pth or .safetensors file"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {str(path)!r} is not a readable safetensors file ({e})") from e
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises UnpicklingError, RuntimeError or EOFError here
            text = str(e)
            unsafe = "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text
            if unsafe and path.suffix == ".ckpt":
                # Lightning pickles hyper-parameters, callbacks and loggers beside the weights.
                raise CheckpointError(
                    f"checkpoint {str(path)!r} holds pickled Python objects beside its tensors (a Lightning "
                    "checkpoint's hyper-parameters or callbacks); cnnzoo does not execute pickled code. Export "
                    "a plain state dict where you trust the file: torch.save(torch.load(path, "
                    "weights_only=False)['state_dict'], 'weights.pth')"
                ) from e
            if unsafe:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} contains pickled Python objects beyond tensors; cnnzoo does "
                    "not execute pickled code. Re-save it as a state dict (torch.save(model.state_dict(), f)) "
                    "or as safetensors"
                ) from e
            raise CheckpointError(
                f"checkpoint {str(path)!r} could not be read ({type(e).__name__}: {_first_sentence(text)}); "
                "is it a complete PyTorch or safetensors file?"
            ) from e
    return _unwrap(state, path)


def _first_sentence(text: str) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line.split(". ")[0][:160]


def _unwrap(state: Any, path: Path) -> StateDict:
    while isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a state dict of tensors"
        )
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint {str(path)!r} holds no tensors (keys: {list(state)[:_SHOW]})")
    out: StateDict = {}
    for k, v in tensors.items():
        for p in _PREFIXES:
            while k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def _matches(state: StateDict, target: set[str]) -> int:
    return sum(1 for k in state if k in target)


def _convert(
    state: StateDict, converters: list[Callable[[StateDict], StateDict]], target: set[str]
) -> StateDict:
    # A converter's result is kept only where it names more of the model's tensors: a map for one
    # member of a family (timm's MobileNetV2) must not rename a file meant for another (V1).
    for convert in converters:
        renamed = convert(state)
        if _matches(renamed, target) > _matches(state, target):
            state = renamed
    return state


def convert_state_dict(
    state: StateDict,
    *,
    model: nn.Module,
    model_name: str | None = None,
    source: str = "checkpoint",
    path: str | os.PathLike | None = None,
) -> StateDict:
    """Rename a foreign checkpoint's tensors to `model`'s names, recognising the layout from the keys.

    Two things are undone: an attribute prefix (a LightningModule's `model.` or `net.`, found by
    trying each top-level name against the model's keys, other attributes such as a loss's buffers
    being left out with a warning) and another project's layout (timm's, via the family's key maps
    in `cnnzoo.convert`). A file whose architecture differs in ways no renaming fixes (timm's
    TensorFlow-ported EfficientNets) is refused by name.
    """
    import cnnzoo.convert  # registers the key maps
    from cnnzoo.registry import model_info

    if path is not None and source == "checkpoint":
        source = f"checkpoint {os.fspath(path)!r}"
    if path is not None:
        cnnzoo.convert.timm_keys.check_source(path)
    target = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    model_name = model_name or getattr(model, "model_name", None)
    converters = _CONVERTERS.get(model_info(model_name).family, []) if model_name else []
    best = _convert(state, converters, target)
    # Nested wrappers (a LightningModule holding a wrapper holding the net) peel one name a round.
    for _ in range(3):
        if _matches(best, target) >= len(target):
            break
        groups: dict[str, StateDict] = {}
        for k, v in state.items():
            head, dot, rest = k.partition(".")
            if dot:
                groups.setdefault(head, {})[rest] = v
        scored = [
            (_matches(c, target), name, c)
            for name, g in groups.items()
            for c in [_convert(g, converters, target)]
        ]
        if not scored:
            break
        hits, name, candidate = max(scored, key=lambda t: t[0])
        if hits <= _matches(best, target):
            break
        left_out = sorted({k.partition(".")[0] for k in state} - {name})
        if left_out:
            warnings.warn(
                f"{source}: the model's tensors are under {name!r}; the file's other modules "
                f"({', '.join(left_out[:_SHOW])}) were left out",
                stacklevel=2,
            )
        state, best = groups[name], candidate
    if _matches(best, target) > len(target) // 2:  # the right architecture: now its constants
        cnnzoo.convert.timm_keys.check_model(state, model, source=source)
    return best


def _first_conv_key(model: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return f"{name}.weight"
    return None


def _adapt_stem(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Fit an RGB stem to `in_chans` inputs, keeping the response to a grey image the same.

    One channel: sum the three filters (a grey image x gives the RGB net's response to (x, x, x)).
    More channels: repeat the filters and rescale so the summed response is unchanged.
    """
    c = weight.shape[1]
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // c)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (c / in_chans)


def fit_state_dict(model: nn.Module, state: StateDict, *, source: str = "checkpoint") -> StateDict:
    """Make `state` load strictly into `model`: adapt the stem, drop a head of another size.

    Raises CheckpointError naming the missing, unexpected and mis-shaped keys otherwise.
    """
    target = model.state_dict()
    state = dict(state)
    name = getattr(model, "model_name", type(model).__name__)

    stem = _first_conv_key(model)
    if stem and stem in state and stem in target:
        have, want = state[stem].shape, target[stem].shape
        if have != want and have[0] == want[0] and have[2:] == want[2:]:
            state[stem] = _adapt_stem(state[stem], want[1])
            warnings.warn(
                f"{source}: stem {stem!r} has {have[1]} input channels, the model {want[1]}; "
                "its filters were adapted (summed or repeated)",
                stacklevel=3,
            )

    # Submodules a checkpoint may carry that this configuration leaves out (GoogLeNet's
    # auxiliary heads with aux_logits=False): their tensors are dropped, not reported. The reverse,
    # a file saved without them (every fine-tuned GoogLeNet), keeps the model's fresh heads: they
    # only add a training loss, so inference is the file's.
    option = getattr(model, "optional_option", "")
    for prefix in getattr(model, "optional_prefixes", ()):
        if any(k.startswith(prefix) for k in target) and not any(k.startswith(prefix) for k in state):
            state.update({k: v for k, v in target.items() if k.startswith(prefix)})
            warnings.warn(
                f"{source}: has no {prefix.rstrip('.')!r}; this model's was freshly initialised (it only "
                f"matters in training{f'; build with {option} to leave it out' if option else ''})",
                stacklevel=3,
            )
        elif not any(k.startswith(prefix) for k in target):
            dropped = [k for k in state if k.startswith(prefix)]
            for k in dropped:
                del state[k]
            if dropped:
                warnings.warn(
                    f"{source}: {prefix.rstrip('.')!r} is not part of this model; its tensors were skipped",
                    stacklevel=3,
                )

    heads = [h for h in (getattr(model, "head_name", None), *getattr(model, "extra_head_names", ())) if h]
    for head in heads:
        head_keys = [k for k in (f"{head}.weight", f"{head}.bias") if k in state]
        mismatched = [k for k in head_keys if k not in target or state[k].shape != target[k].shape]
        if mismatched:
            file_classes = state[head_keys[0]].shape[0]
            for k in head_keys:
                del state[k]
            classes = getattr(model, "num_classes", "?")
            warnings.warn(
                f"{source}: its {file_classes}-way classifier {head!r} was replaced by this model's "
                f"freshly initialised {classes}-way head (num_classes={classes}); train or fine-tune it",
                stacklevel=3,
            )
            for k in (f"{head}.weight", f"{head}.bias"):
                if k in target:
                    state[k] = target[k]

    # BatchNorm's counter is bookkeeping, absent from old checkpoints: keep the model's own.
    for k, v in target.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v

    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(target[k].shape)})"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if keys:
                more = f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
                parts.append(f"{label}: {', '.join(keys[:_SHOW])}{more}")
        hint = ""
        optional = tuple(getattr(model, "optional_prefixes", ()))
        misfits = (
            *missing,
            *unexpected,
            *(k for k in target if k in state and state[k].shape != target[k].shape),
        )
        if option and optional and any(k.startswith(optional) for k in misfits):
            hint = f"; its auxiliary heads do not match - build the model with {option} to leave them out"
        elif len(missing) > len(target) // 2:
            hint = "; the file looks like a different architecture - check the model name"
        raise CheckpointError(f"{source} does not fit {name}: " + "; ".join(parts) + hint)
    return state


def load_pretrained(model: nn.Module, path: str | os.PathLike, *, model_name: str | None = None) -> nn.Module:
    """Load a weights file into `model` (in place): torchvision's, timm's, a Lightning `.ckpt`, cnnzoo's."""
    source = f"checkpoint {os.fspath(path)!r}"
    state = read_state_dict(path)
    state = convert_state_dict(state, model=model, model_name=model_name, source=source, path=path)
    state = fit_state_dict(model, state, source=source)
    model.load_state_dict(state, strict=True)
    return model


def save_weights(
    model: nn.Module, path: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write the model's tensors to a `.safetensors` file atomically (temp file, then rename).

    The architecture name and any `metadata` go into the file's header as JSON strings, so the
    file says what it holds.
    """
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    if path.suffix != ".safetensors":
        raise ValueError(
            f"save_weights writes safetensors; give the path a .safetensors suffix, not {path.suffix!r}"
        )
    meta = {"format": "pt", "cnnzoo_model": str(getattr(model, "model_name", type(model).__name__))}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
