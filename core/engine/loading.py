"""Loading a base model safely from a hub id, a local directory or a local GGUF file.

Safe by default: weights must be safetensors (or GGUF), never pickles, and no repository code runs unless
the operator allows it. GGUF weights are dequantised and rebuilt as a plain model so they can be pruned
and saved like any other.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from core.engine import architectures  # noqa: F401  (registers the gisp model type)
from core.errors import ModelLoadError, UnsafeModelError, UnsupportedModelError, UserInputError
from core.families import PRUNED_MODEL_TYPE, declared_model_type

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    identity: dict[str, Any] = field(default_factory=dict)  # id, revision, weights_sha256, source


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserInputError(f"dtype must be one of {sorted(DTYPES)}, got '{name}'", field="dtype")
    return DTYPES[name]


def load_model(
    ref: str | Path,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    allow_pickle: bool = False,
    allow_remote_code: bool = False,
) -> LoadedModel:
    """Load ``ref``: a ``.gguf`` file, a local model directory, or a hub id (``org/name``)."""
    torch_dtype = resolve_dtype(dtype)
    path = Path(ref)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist", field="model")
        loaded = _load_gguf(path, torch_dtype)
    elif path.is_dir():
        _check_local_directory(path, allow_pickle=allow_pickle, allow_remote_code=allow_remote_code)
        loaded = _load_pretrained(
            str(path), None, torch_dtype, allow_pickle, allow_remote_code, source="local"
        )
        loaded.identity["weights_sha256"] = weights_sha256(path)
    elif str(ref).startswith(("/", ".", "~")) or str(ref).count("/") > 1:
        raise ModelLoadError(f"{ref} is neither a model directory, a .gguf file nor a hub id", field="model")
    else:
        loaded = _load_pretrained(
            str(ref), revision, torch_dtype, allow_pickle, allow_remote_code, source="hub"
        )
    loaded.identity["ref"] = str(ref)
    loaded.model.to(device).eval()
    if loaded.tokenizer.pad_token_id is None and loaded.tokenizer.eos_token is not None:
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
    return loaded


def _check_local_directory(path: Path, *, allow_pickle: bool, allow_remote_code: bool) -> None:
    names = {p.name for p in path.iterdir()}
    if "config.json" not in names:
        raise ModelLoadError(f"{path} has no config.json", field="model")
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    if not has_safetensors and any(n.endswith(PICKLE_SUFFIXES) for n in names) and not allow_pickle:
        raise UnsafeModelError(
            f"{path} holds only pickled weights (.bin); convert them to safetensors, or have the operator "
            "allow pickles explicitly",
            field="model",
        )
    config = json.loads((path / "config.json").read_text())
    if declared_model_type(config) == PRUNED_MODEL_TYPE:  # before any loading: no code of the folder runs
        raise UnsupportedModelError(
            f"{path} is an already pruned GISP checkpoint; prune its base model instead", field="model"
        )
    if config.get("auto_map") and not allow_remote_code:
        raise UnsafeModelError(
            f"{path} asks to run its own model code (auto_map); that is refused unless the operator allows it",
            field="model",
        )


def load_without_remote_code(
    path: Path, *, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of a model directory, with no code from the directory ever run.

    Our own checkpoints (``gisp_layers`` in config.json, or ``model_type: gisp`` in older ones) load through the engine's registered ``GispForCausalLM``: the
    modeling files shipped beside their weights, whatever they hold, are never imported. Any other directory
    that asks for code of its own (``auto_map`` in config.json or tokenizer_config.json) is refused: a file
    name such as ``gisp_manifest.json`` proves nothing, since anyone can write one.
    """
    from core.engine.modeling.modeling_gisp import GispForCausalLM

    config = _json_file(path / "config.json")
    if config is None:
        raise ModelLoadError(f"{path} has no readable config.json", field="model")
    tokenizer_config = _json_file(path / "tokenizer_config.json") or {}
    if tokenizer_config.get("auto_map"):
        raise UnsafeModelError(
            f"{path} asks to run its own tokenizer code (auto_map in tokenizer_config.json); refused",
            field="model",
        )
    ours = declared_model_type(config) == PRUNED_MODEL_TYPE
    if config.get("auto_map") and not ours:
        raise UnsafeModelError(
            f"{path} asks to run its own model code (auto_map in config.json); refused", field="model"
        )
    try:
        if ours:
            model = GispForCausalLM.from_pretrained(path, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load {path}: {error}", field="model") from None
    return model, tokenizer


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _load_pretrained(
    ref: str,
    revision: str | None,
    dtype: torch.dtype,
    allow_pickle: bool,
    allow_remote_code: bool,
    *,
    source: str,
) -> LoadedModel:
    try:
        config = AutoConfig.from_pretrained(ref, revision=revision, trust_remote_code=allow_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            ref,
            revision=revision,
            dtype=dtype,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=allow_remote_code,
            config=config,
        )
        tokenizer = AutoTokenizer.from_pretrained(ref, revision=revision, trust_remote_code=allow_remote_code)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load '{ref}': {error}", field="model") from None
    identity = {"id": ref, "revision": revision or getattr(config, "_commit_hash", None), "source": source}
    if source == "hub":
        identity["weights_sha256"] = _hub_weights_sha256(model)
    return LoadedModel(model, tokenizer, identity)


def _load_gguf(path: Path, dtype: torch.dtype) -> LoadedModel:
    """Dequantise a GGUF file, then rebuild a plain model without ``quantization_config``.

    A model loaded straight from GGUF refuses ``save_pretrained``; the rebuilt one saves like any other.
    """
    directory, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        quantised = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"could not read GGUF file {path}: {error}", field="model") from None
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = quantised.config.__class__.from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=not getattr(config, "tie_word_embeddings", False))
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.to(dtype)
    identity = {"id": path.name, "revision": None, "source": "gguf", "weights_sha256": file_sha256(path)}
    return LoadedModel(model, tokenizer, identity)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(directory: Path) -> str:
    """One digest over every weight file of a directory, in name order."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.suffix in (".safetensors", ".gguf", *PICKLE_SUFFIXES):
            digest.update(path.name.encode())
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _hub_weights_sha256(model: PreTrainedModel) -> str | None:
    name = getattr(model.config, "_name_or_path", None)
    if name and Path(name).is_dir():
        return weights_sha256(Path(name))
    try:
        from huggingface_hub import snapshot_download

        return weights_sha256(Path(snapshot_download(name, local_files_only=True)))
    except Exception:  # the hash is informative; a cache layout we cannot read must not fail the load
        logger.warning("could not hash the weights of %s", name)
        return None


def import_model(source: str | Path, destination: Path, *, revision: str | None = None) -> Path:
    """Write ``source`` as a plain safetensors model directory (how GGUF files enter a models folder).

    The folder is made world-readable (see :func:`make_readable`): the operator imports as one user, the
    workers read it as another.
    """
    if destination.exists() and any(destination.iterdir()):
        raise UserInputError(f"{destination} already exists and is not empty", field="name")
    loaded = load_model(source, revision=revision)
    created = [parent for parent in (destination, *destination.parents) if not parent.exists()]
    destination.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(destination, safe_serialization=True)
    loaded.tokenizer.save_pretrained(destination)
    make_readable(destination)
    for folder in created[1:]:  # the parents this import created, e.g. a first models folder
        folder.chmod(DIRECTORY_MODE)
    return destination


FILE_MODE = 0o644
DIRECTORY_MODE = 0o755


def make_readable(root: Path) -> None:
    """Set 0644 on every file and 0755 on every folder under ``root`` (itself included), whatever the umask.

    ``save_pretrained`` writes its weights through a private temporary file (0600), so without this a
    worker running as another user (the images' ``gisp``) could not read the model it is asked to prune.
    """
    root.chmod(DIRECTORY_MODE)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        path.chmod(DIRECTORY_MODE if path.is_dir() else FILE_MODE)
