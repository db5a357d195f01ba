#!/usr/bin/env python3
"""Reference output-order decisions for herd's SwapDecision tests.

For every instruction of data/eval_set.json (in order), writes '1' when alpaca_eval 0.6.6
shows the two outputs swapped and '0' otherwise, by calling alpaca_eval's own
`utils.random_seeded_choice` with the seed string its RandomSwitchTwoColumnsProcessor builds
("is_switched_outputs" + instruction + str(seed)). One file per annotator seed:

    pip install alpaca_eval==0.6.6
    python scripts/swap_reference.py 0 1 42 123   # -> core/tests/fixtures/swap_seed{N}.txt
"""
import json
import sys
from pathlib import Path

from alpaca_eval import utils

ROOT = Path(__file__).resolve().parent.parent


def decisions(instructions, seed):
    return "".join(
        "1" if utils.random_seeded_choice(seed="is_switched_outputs" + instruction + str(seed), choices=[False, True])
        else "0"
        for instruction in instructions
    )


def main(seeds):
    rows = json.loads((ROOT / "data" / "eval_set.json").read_text(encoding="utf-8"))
    instructions = [row["instruction"] for row in rows]
    for seed in seeds:
        bits = decisions(instructions, int(seed))
        lines = [bits[i : i + 100] for i in range(0, len(bits), 100)]
        out = ROOT / "core" / "tests" / "fixtures" / f"swap_seed{seed}.txt"
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{out}: {bits.count('1')} of {len(bits)} switched")


if __name__ == "__main__":
    main(sys.argv[1:] or ["0"])
