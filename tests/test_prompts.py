"""The ERank prompt, byte for byte, and the task instructions as data (spec 2.1, 2.6)."""

import pytest

from erank.errors import InputError
from erank.prompts import instruction_names, load_template, render_template, resolve_instruction

SPEC_PROMPT = (
    "Given a query and a document, please give a relevance score of 0~10.\n"
    "The goal or relevance definition is: {instruction}\n"
    "\n"
    "Here is the query:\n"
    "{query}\n"
    "\n"
    "Here is the document:\n"
    "{doc}\n"
    "\n"
    "After thinking, directly choose a relevance score from [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10].\n"
    "- 0 represents completely not related\n"
    "- 10 means perfectly related.\n"
    "\n"
    "Desired output format:\n"
    "<think>put your thinking here</think><answer>Only allows an integer here</answer>\n"
    "\n"
    "Your output:"
)

# The exact text the SmolLM2 tokenizer's own chat template renders for one user turn (its
# template adds its default system message when none is given), with the generation prompt.
GOLDEN_SMOLLM2 = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nGiven a query and a document, please give a relevance score of 0~10.\n"
    "The goal or relevance definition is: Given a query, retrieval relevant passage.\n\n"
    "Here is the query:\nwhat is rust\n\nHere is the document:\nRust is a language.\n\n"
    "After thinking, directly choose a relevance score from [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10].\n"
    "- 0 represents completely not related\n- 10 means perfectly related.\n\n"
    "Desired output format:\n<think>put your thinking here</think><answer>Only allows an integer here</answer>\n\n"
    "Your output:<|im_end|>\n<|im_start|>assistant\n"
)


def test_template_is_the_spec_text_byte_for_byte():
    assert load_template("erank") == SPEC_PROMPT


def test_golden_rendering_through_the_models_chat_template(tiny_qwen3_dir):
    from erank.engines.transformers import TransformersEngine
    from erank.methods.erank import DIRECT_SUFFIX, ERankMethod

    eng = TransformersEngine(str(tiny_qwen3_dir))
    m = ERankMethod(eng, mode="reasoning")
    instr = resolve_instruction("beir")
    assert m.build_prompt("what is rust", "Rust is a language.", instr) == GOLDEN_SMOLLM2
    direct = ERankMethod(eng, mode="direct")
    assert direct.build_prompt("what is rust", "Rust is a language.", instr) == GOLDEN_SMOLLM2 + DIRECT_SUFFIX


def test_documents_with_braces_and_placeholders_are_inserted_literally():
    text = render_template("erank", instruction="I", query="{doc}", doc="x = {'a': 1} {query}")
    assert "Here is the query:\n{doc}\n" in text
    assert "x = {'a': 1} {query}\n" in text


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("beir", "Given a query, retrieval relevant passage."),
        ("trec-dl", "Given a query, retrieval relevant passage."),
        ("followir", "Retrieval the relevant passage for the given query. Be careful"),
        ("bright/biology", "A document is relevant if it contains information that helps answer"),
        ("bright/aops", "We want to find different but similar math problems"),
        ("bright/leetcode", "I am looking to find different problems that share similar data structures"),
        ("bright/pony", "I will use the programming language pony."),
        ("bright/theoremqa_theorems", "We want to find a document which uses the same mathematical process"),
    ],
)
def test_instructions_by_name(name, start):
    assert resolve_instruction(name).startswith(start)


def test_all_bright_tasks_are_named():
    names = set(instruction_names())
    for task in [
        "biology",
        "earth_science",
        "economics",
        "psychology",
        "robotics",
        "stackoverflow",
        "sustainable_living",
        "aops",
        "leetcode",
        "pony",
        "theoremqa_questions",
        "theoremqa_theorems",
    ]:
        assert f"bright/{task}" in names


def test_free_text_instruction_passes_through_and_none_is_the_default():
    assert resolve_instruction("Find passages about cooking.") == "Find passages about cooking."
    assert resolve_instruction(None) == resolve_instruction("beir")


def test_unknown_instruction_name_is_a_clear_error():
    with pytest.raises(InputError, match="unknown instruction name 'bright/biolgy'.*bright/biology"):
        resolve_instruction("bright/biolgy")


def test_template_placeholder_checks():
    with pytest.raises(InputError, match="needs the fields"):
        render_template("erank", instruction="i", query="q")
    with pytest.raises(InputError, match="no placeholder"):
        render_template("erank", instruction="i", query="q", doc="d", extra="x")
    with pytest.raises(InputError, match="unknown prompt template"):
        load_template("nope")
