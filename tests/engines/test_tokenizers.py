"""Engines share the tokenizer wrapper through ``erank.engines.tokenizers``, never a sibling engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import erank.engines

ENGINES_DIR = Path(erank.engines.__file__).parent
#: modules of erank.engines that every engine may import
SHARED = {"erank.engines", "erank.engines.base", "erank.engines.tokenizers", "erank.engines.precision"}


def _erank_engine_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("erank.engines"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("erank.engines"))
    return found


def test_no_engine_imports_a_sibling_engine():
    engines = [
        p for p in ENGINES_DIR.glob("*.py") if p.stem not in {"__init__", "base", "tokenizers", "precision"}
    ]
    assert {p.stem for p in engines} >= {"transformers", "vllm", "openai", "llamacpp"}
    # an engine's own companion modules (``llamacpp_parallel`` for ``llamacpp``) are part of it
    family = {p.stem: p.stem.split("_")[0] for p in engines}
    bad = {
        p.stem: sorted(
            m
            for m in _erank_engine_imports(p) - SHARED
            if family.get(m.rsplit(".", 1)[-1], m).split("_")[0] != family[p.stem]
        )
        for p in engines
    }
    assert all(not v for v in bad.values()), bad


def test_old_import_path_still_gives_the_wrapper_and_the_new_one_needs_no_torch():
    code = (
        "import sys; from erank.engines.tokenizers import HFTokenizer; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'; "
        "from erank.engines.transformers import HFTokenizer as Old; assert Old is HFTokenizer"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_the_wrapper_encodes_decodes_and_builds_chat_prompts(tiny_tokenizer):
    from erank.engines.tokenizers import HFTokenizer

    tok = HFTokenizer(tiny_tokenizer)
    ids = tok.encode("Paris is the capital of France.")
    assert ids and tok.decode(ids) == "Paris is the capital of France."
    prompt = tok.chat_prompt("hello")
    assert "hello" in prompt and prompt != "hello"  # the model's chat template was applied
