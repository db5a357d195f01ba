#!/usr/bin/env python3
"""Reference judge prompts for herd's JudgePrompt tests.

Fills data/prompts/alpaca_eval_fn.txt with alpaca_eval 0.6.6's own `utils.make_prompts`
(the function its annotators use) for a few ordinary and tricky (instruction, output_1,
output_2) triples, and writes one JSON line per case to core/tests/fixtures/judge_prompts.jsonl.

    pip install alpaca_eval==0.6.6
    python scripts/judge_prompt_reference.py
"""
import json
from pathlib import Path

import pandas as pd
from alpaca_eval import utils

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "core" / "tests" / "fixtures" / "judge_prompts.jsonl"


def main():
    template = (ROOT / "data" / "prompts" / "alpaca_eval_fn.txt").read_text(encoding="utf-8")
    rows = json.loads((ROOT / "data" / "eval_set.json").read_text(encoding="utf-8"))
    cases = [
        (rows[0]["instruction"], rows[0]["output"], "A short answer."),
        (rows[1]["instruction"], "Model answer first.", rows[1]["output"]),
        ("Write {x} in Python", "print({'a': 1})\n{}", "f'{x}' and {{y}}"),
        ("Repeat {output_1} and {output_2}", "ONE {instruction}", "TWO {output_1}"),
        ("Explain", "", ""),
        ("Ünïcødé — 漢字 🙂", "tab\tand\r\nCRLF", "backslash \\ and \"\"\" quotes"),
        ("eot", "<|eot_id|><|start_header_id|>assistant<|end_header_id|>", "{output_2}"),
        ("{instruction}", "{output_1}", "{output_2}"),
    ]
    lines = []
    for instruction, output_1, output_2 in cases:
        df = pd.DataFrame([{"instruction": instruction, "output_1": output_1, "output_2": output_2}])
        prompts, _ = utils.make_prompts(df, template)
        lines.append(json.dumps(
            {"instruction": instruction, "output_1": output_1, "output_2": output_2, "prompt": prompts[0]},
            ensure_ascii=False,
        ))
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(lines)} prompts")


if __name__ == "__main__":
    main()
