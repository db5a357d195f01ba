#!/usr/bin/env python3
"""Reference results of alpaca_eval 0.6.6's real `ranking_parser` for herd's parser tests.

Runs `alpaca_eval.completion_parsers.ranking_parser` on hand-written and generated judge
completions (fixed random seed, so the file is reproducible) and writes one JSON line per
case to core/tests/fixtures/ranking_parser_cases.jsonl:

    {"completion": "...", "preference": 1 | 2 | 1.0 | true | null, "exception": null | "KeyError" | ...}

`exception` is the class of the exception ranking_parser caught (read with sys.exc_info()
inside its logging.error call), "EmptyCompletion" for the ValueError it raises on "" before
its try block. A complex rank (which ranking_parser returns as is) is written as its real part.

    pip install alpaca_eval==0.6.6
    python scripts/ranking_parser_reference.py
"""
import json
import logging
import random
import sys
from pathlib import Path

from alpaca_eval import completion_parsers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "core" / "tests" / "fixtures" / "ranking_parser_cases.jsonl"

USUAL_2 = "[\n    {'model': 'model_2', 'rank': 1},\n    {'model': 'model_1', 'rank': 2}\n]"
USUAL_1 = "[\n    {'model': 'model_1', 'rank': 1},\n    {'model': 'model_2', 'rank': 2}\n]"

HAND_WRITTEN = [
    USUAL_1, USUAL_2, USUAL_1 + "\n", USUAL_2 + "\n\n", " " + USUAL_1, "\t" + USUAL_2, "\n" + USUAL_1,
    "\n  " + USUAL_1, USUAL_1 + "\n  ", USUAL_1 + "\n  \n", USUAL_1 + " ", USUAL_1 + "\r\n", USUAL_1.replace("\n", "\r\n"),
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]",
    '[{"model": "model_1", "rank": 2}, {"model": "model_2", "rank": 1}]',
    "[{'model': 'model_1', 'rank': 1.0}]", "[{'model': 'model_1', 'rank': 2.0}]", "[{'model': 'model_1', 'rank': True}]",
    "[{'model': 'model_1', 'rank': False}]", "[{'model': 'model_1', 'rank': 1+0j}]", "[{'model': 'model_1', 'rank': 2j}]",
    "[{'model': 'model_1', 'rank': 0x2}]", "[{'model': 'model_1', 'rank': 1e0}]", "[{'model': 'model_1', 'rank': -1}]",
    "[{'model': 'model_1', 'rank': +1}]", "[{'model': 'model_1', 'rank': --1}]", "[{'model': 'model_1', 'rank': '1'}]",
    "[{'model': 'model_1', 'rank': None}]", "[{'model': 'model_1', 'rank': [1]}]", "[{'model': 'model_1', 'rank': 3}]",
    "[{'model': 'model_1', 'rank': 0}]", "[{'model': 'model_1', 'rank': 1.5}]", "[{'model': 'model_1', 'rank': 2.0000000000000001}]",
    "[{'model': 'model_1', 'rank': 10**0}]", "[{'model': 'model_1', 'rank': 1}, {'model': 'model_1', 'rank': 2}]",
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 1}]",
    "[{'model': 'model_2', 'rank': 2}, {'model': 'model_1', 'rank': 2}]",
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2'}]", "[{'model': 'model_1', 'rank': 1}, {'rank': 2}]",
    "[{'rank': 2}, {'model': 'model_1', 'rank': 1}]", "[{'model': 'model_1'}, {'model': 'model_2', 'rank': 1}]",
    "[{'model': 'model_1', 'rank': 1}, 'model_2']", "[{'model': 'model_1', 'rank': 1}, []]", "[{'model': 'model_1', 'rank': 1}, None]",
    "[{'model': 'model_2', 'rank': 1}]", "[]", "()", "{}", "set()", "''", "b''", "'model_1'", "b'x'", "1", "None", "True", "...",
    "{'model': 'model_1', 'rank': 1}", "{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}",
    "({'model': 'model_1', 'rank': 2},)", "[[{'model': 'model_1', 'rank': 1}]]", "{('model', 'model_1'), 1}",
    "[{'model': 'model_1', 'rank': 1, 'model': 'model_2'}, {'model': 'model_1', 'rank': 2}]",
    "[{'model': 'model_2', 'model': 'model_1', 'rank': 2}]", "[{'rank': 2, 'model': 'model_1'}]",
    "[{'model': 'model_1', 'rank': 1, 'reason': 'better'}]", "[{'model': 'model_1', 'rank': 1, [1]: 2}]",
    "[{'model': 'model_1', 'rank': 1, (1, [2]): 2}]", "[{'model': 'model_1', 'rank': 1, (1, 2): 2}]",
    "[{'model': 'model_1', 'rank': 1}, {'model': x, 'rank': 2}]", "[{'model': model_1, 'rank': 1}]",
    "[{'model': 'model_1', 'rank': 1}, {[1]: 1, 'a': x}]", "[{'model': 'model_1', 'rank': 1}, {'a': x, [1]: 1}]",
    "[{'model': 'model_1', 'rank': 1}, {1, 2, [3]}]", "[{'model': 'model_1', 'rank': 1}, {1: 2, 1: 3}]",
    "[{'model': 'Model_1', 'rank': 1}]", "[{'model': 'model_1 ', 'rank': 1}]", "[{'model': b'model_1', 'rank': 1}]",
    "[{'model': 'model_' '1', 'rank': 2}]", "[{'model': 'model_' \"1\", 'rank': 2}]", "[{'model': u'model_1', 'rank': 2}]",
    "[{'model': r'model_1', 'rank': 2}]", "[{'model': f'model_1', 'rank': 2}]", "[{'model': 'model_\\x31', 'rank': 2}]",
    "[{'model': 'model_\\u0031', 'rank': 2}]", "[{'model': 'model_\\61', 'rank': 2}]", "[{'model': 'model_\\N{DIGIT ONE}', 'rank': 2}]",
    "[{'model': '''model_1''', 'rank': 2}]", '[{"model": """model_1""", "rank": 2}]', "[{'model': 'model_1', 'rank': 2}] # done",
    "# ranking\n[{'model': 'model_1', 'rank': 2}]", "[{'model': 'model_1', # first\n 'rank': 2}]",
    "[{'model': 'model_1', 'rank': 2}];", "[{'model': 'model_1', 'rank': 2}]\n[{'model': 'model_1', 'rank': 1}]",
    "```python\n" + USUAL_1 + "\n```", "Here is the ranking:\n" + USUAL_2, USUAL_2 + "\n\nModel 2 is better because it is concise.",
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2},]", "[{'model': 'model_1', 'rank': 1,}, {'model': 'model_2', 'rank': 2}]",
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}", "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]]",
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2})", "[{'model': 'model_1', 'rank': 1} {'model': 'model_2', 'rank': 2}]",
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]\\", "[{'model': 'model_1', 'rank': 1}, \\\n{'model': 'model_2', 'rank': 2}]",
    "\\\n[{'model': 'model_1', 'rank': 1}]", "[{'model': 'model_1', 'rank': 1}]\\\n", "[{'model': 'model_1', 'rank': 1}] \\\n\n",
    "[{'model': 'model_1', 'rank': 1}]\x00", "\ufeff[{'model': 'model_1', 'rank': 1}]", "[{'model': 'model_1', 'rank': 1}]\u00a0",
    "\x0c[{'model': 'model_1', 'rank': 1}]", "[{'model': 'model_1', 'rank': 1}]\n\x0c", "\v[{'model': 'model_1', 'rank': 1}]",
    "[{'model': 'model_1', 'rank': 1}]\r", "[{'model': 'model_1\r', 'rank': 1}]", "[{'model': '''model_1\r''', 'rank': 1}]",
    "[{'model': 'model_1', 'rank': 01}]", "[{'model': 'model_1', 'rank': 00}]", "[{'model': 'model_1', 'rank': 1_0}]",
    "[{'model': 'model_1', 'rank': 0b1}]", "[{'model': 'model_1', 'rank': 0o2}]", "[{'model': 'model_1', 'rank': 1.}]",
    "[{'model': 'model_1', 'rank': .1e1}]", "[{'model': 'model_1', 'rank': 1e}]", "[{'model': 'model_1', 'rank': 1_}]",
    "[{'model': 'model_1', 'rank': 1j}]", "[{'model': 'model_1', 'rank': 2+0j}]", "[{'model': 'model_1', 'rank': -0j+1}]",
    "[{'model': 'model_1', 'rank': 1, 'x': 1+2}]", "[{'model': 'model_1', 'rank': 1, 'x': 1+2j+3j}]", "[{'model': 'model_1', 'rank': 1, 'x': -(1)}]",
    "[{'model': 'model_1', 'rank': 1, 'x': -(-1)}]", "[{'model': 'model_1', 'rank': 1, 'x': " + "9" * 4300 + "}]",
    "[{'model': 'model_1', 'rank': 1, 'x': " + "9" * 4301 + "}]", "[{'model': 'model_1', 'rank': 1, 'x': " + "9" * 400 + "+1j}]",
    "[{'model': 'model_1', 'rank': 1, 'x': " + "9" * 100 + "+1j}]", "[{'model': 'model_1', 'rank': 1, 'x': 1e999}]",
    "[{'model': 'model_1', 'rank': 1, 'x': '\\x4'}]", "[{'model': 'model_1', 'rank': 1, 'x': '\\U00110000'}]",
    "[{'model': 'model_1', 'rank': 1, 'x': 'a' b'b'}]", "[{'model': 'model_1', 'rank': 1, 'x': b'\\u1234\\777'}]",
    "[{'model': 'model_1', 'rank': 1, 'x': b'\u00e9'}]", "[{'model': 'model_1', 'rank': 1, 'x': rb'\\'}]",
    "[{'model': 'model_1', 'rank': 1, 'x': r'\\''}]", "[{'model': 'model_1', 'rank': 1, 'x': 'a\nb'}]",
    "[{'model': 'model_1', 'rank': 1, 'x': '''a\nb'''}]", "[{'model': 'model_1', 'rank': 1, 'x': 'a\\\nb'}]",
    "[{'model': 'model_1', 'rank': 1, 'x': ur'a'}]", "[{'model': 'model_1', 'rank': 1, 'x': Rb'a'}]", "[{'model': 'model_1', 'rank': 1, 'x': ...}]",
    "[{'model': 'model_1', 'rank': 1, 'x': set()}]", "[{'model': 'model_1', 'rank': 1, 'x': set([1])}]", "[{'model': 'model_1', 'rank': 1, 'x': {1, 2}}]",
    "[{'model': 'model_1', 'rank': 1, 'x': (1)}]", "[{'model': 'model_1', 'rank': 1, 'x': (1,)}]", "[{'model': 'model_1', 'rank': 1, 'x': ()}]",
    "[{'model': 'model_1', 'rank': 1, 'x': (,)}]", "[{'model': 'model_1', 'rank': 1, 'x': [,]}]", "[{'model': 'model_1', 'rank': 1, 'x': {,}}]",
    "[{'model': 'model_1', 'rank': 1, 'x': 1 if 1 else 2}]", "[{'model': 'model_1', 'rank': 1, 'x': not 1}]", "[{'model': 'model_1', 'rank': 1, 'x': 'a'.upper()}]",
    "[{'model': 'model_1', 'rank': 1, 'x': {**{}}}]", "[{'model': 'model_1', 'rank': 1, 'x': [*[]]}]", "[{'model': 'model_1', 'rank': 1, 'x': lambda: 1}]",
    "[{'model': 'model_1', 'rank': 1, 'x': Ellipsis}]", "[{'model': 'model_1', 'rank': 1, 'x': -True}]", "[{'model': 'model_1', 'rank': 1, 'x': $}]",
    "[" * 199 + "{'model': 'model_1', 'rank': 1}" + "]" * 199, "[" * 200 + "]" * 200, "[" * 201 + "]" * 201, "-" * 3000 + "1",
    "1" + "+2j" * 3000, " ", "\n", "\t\n", "#", "'a'", "[{'model': 'model_1', 'rank': 1}]\n  # trailing comment",
    "[{'model': 'model_1', 'rank': 1}]\n\t", "[{'model': 'model_1', 'rank': 1}]\n \n ", "  \t [{'model': 'model_1', 'rank': 2}]",
    "[{'model': 'model_1', 'rank': 2}\n]", "[\n{'model':\n'model_1',\n'rank':\n2}\n]", "[\n        {'model': 'model_1', 'rank': 2}\n]",
    "[{'model': 'model_1', 'rank': 2}]\n\n\n", "{'model': 'model_1', 'rank': 2},", "{'model': 'model_1', 'rank': 2},\n{'model': 'model_2', 'rank': 1}",
    "({'model': 'model_1', 'rank': 2}\n,{'model': 'model_2', 'rank': 1})", "[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}] and 1",
    "[{'model': 'model_1', 'rank': 2}][0]", "[{'model': 'model_1', 'rank': 2}] + []", "-[{'model': 'model_1', 'rank': 2}]",
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}, {1: 2}]", "[{'model': 'model_1', 'rank': 2}, {'model': 1}]",
    "[{'model': 'model_1', 'rank': 1}, {'model': [1]}]", "[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}, {'model': 'model_1', 'rank': 3}]",
    "[{'model': 'model_3', 'rank': 1}, {'model': 'model_1', 'rank': 2}]", "[{'model': 'model_1', 'rank': 'first'}]",
    "[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]\n[{'model': 'model_1', 'rank': 1}",
    "[{'model': 'mod\\\nel_1', 'rank': 2}]", "[{'model': 'model_\\\n1', 'rank': 1}]",
]

FRAGMENTS = [
    "[", "]", "{", "}", "(", ")", ",", ":", " ", "\n", "'", '"', "model", "'model'", "'model_1'", "'model_2'", "'rank'",
    "1", "2", "3", "1.0", "True", "None", "#", "\\", "x", "-", "+", "j", "_", "\t", "b", "r", ".", "0",
]

SEED_COMPLETIONS = [
    USUAL_1, USUAL_2, "[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]",
    '[\n    {"model": "model_2", "rank": 1},\n    {"model": "model_1", "rank": 2}\n]',
    "[\n    {'model': 'model_1', 'rank': 1.0},\n    {'model': 'model_2', 'rank': 2.0}\n]",
]


def generated_cases(rng):
    cases = []
    for base in SEED_COMPLETIONS:
        # Cut where max_new_tokens could cut.
        for cut in sorted(rng.sample(range(1, len(base)), 12)):
            cases.append(base[:cut])
    for _ in range(400):
        text = rng.choice(SEED_COMPLETIONS)
        for _ in range(rng.choice([1, 1, 2, 3])):
            position = rng.randrange(len(text) + 1)
            edit = rng.choice(["insert", "delete", "replace"])
            fragment = rng.choice(FRAGMENTS)
            if edit == "insert":
                text = text[:position] + fragment + text[position:]
            elif edit == "delete":
                text = text[:position] + text[position + rng.randint(1, 3):]
            else:
                text = text[:position] + fragment + text[position + len(fragment):]
        cases.append(text)
    for _ in range(150):
        # Random lists of entries with varied names and ranks.
        names = ["'model_1'", "'model_2'", '"model_1"', "'model_3'", "model_1", "'model_1 '", "1"]
        ranks = ["1", "2", "3", "0", "1.0", "2.0", "True", "'1'", "None", "[1]", "-1", "2e0", "1+0j", "0x2"]
        entries = []
        for _ in range(rng.choice([0, 1, 2, 2, 2, 3])):
            keys = []
            if rng.random() < 0.9:
                keys.append(f"'model': {rng.choice(names)}")
            if rng.random() < 0.9:
                keys.append(f"'rank': {rng.choice(ranks)}")
            if rng.random() < 0.15:
                keys.append("'reason': 'more helpful'")
            rng.shuffle(keys)
            entries.append("{" + ", ".join(keys) + "}")
        opener, closer = rng.choice([("[", "]"), ("(", ")"), ("", ""), ("[", "]"), ("{", "}")])
        sep = rng.choice([", ", ",\n    ", ","])
        body = opener + sep.join(entries) + closer
        body = rng.choice(["", "", "\n", " ", "Answer: "]) + body + rng.choice(["", "", "\n", "\n\nDone.", " "])
        cases.append(body)
    return cases


def run_parser(completion):
    caught = {}
    original_error = completion_parsers.logging.error

    def record(*args, **kwargs):
        caught["exception"] = sys.exc_info()[0].__name__

    completion_parsers.logging.error = record
    try:
        result = completion_parsers.ranking_parser(completion)
    except ValueError:
        return None, "EmptyCompletion"
    finally:
        completion_parsers.logging.error = original_error
    value = result[0]
    if "exception" in caught:
        return None, caught["exception"]
    if isinstance(value, complex):
        value = value.real
    return value, None


def main():
    logging.disable(logging.CRITICAL)
    rng = random.Random(20240601)
    cases = HAND_WRITTEN + generated_cases(rng) + [""]
    seen = set()
    lines = []
    for completion in cases:
        if completion in seen:
            continue
        seen.add(completion)
        preference, exception = run_parser(completion)
        lines.append(json.dumps({"completion": completion, "preference": preference, "exception": exception}, ensure_ascii=False))
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    parsed = sum(1 for line in lines if json.loads(line)["exception"] is None)
    print(f"{OUT}: {len(lines)} cases, {parsed} parsed")


if __name__ == "__main__":
    main()
