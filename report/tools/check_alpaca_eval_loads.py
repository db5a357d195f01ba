"""Loads the files herd wrote (report/examples/alpaca_eval_interop.rs) with alpaca_eval 0.6.6.

    pip install alpaca_eval==0.6.6
    python report/tools/check_alpaca_eval_loads.py OUT_DIR [SHARED_DATA_DIR]

1. alpaca_eval's own loader reads herd's model_outputs.json and reference_outputs.json, and
   gets the same values Python's json module reads.
2. alpaca_eval.main.evaluate(is_recompute_metrics_only=True) reads herd's annotations.json
   and herd's leaderboard.csv (as its precomputed leaderboard), recomputes the metrics, and
   they agree with the numbers herd wrote. alpaca_eval's calibration download is served
   from the reconstructed files in SHARED_DATA_DIR, as the oracle's README describes.
3. The annotations.json that alpaca_eval writes back holds the same values as herd's.
Exits non-zero on the first difference.
"""

import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
from alpaca_eval import main as ae_main
from alpaca_eval import utils
from alpaca_eval.metrics import glm_winrate

out = Path(sys.argv[1]).resolve()
shared = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/data").resolve()
annotator = "weighted_alpaca_eval_gpt4_turbo"
calibration = {
    "df_gamed.csv": shared / "alpaca_eval/df_gamed_reconstructed.csv",
    "instruction_difficulty.csv": shared / "alpaca_eval/instruction_difficulty_reconstructed.csv",
}
glm_winrate.hf_hub_download = lambda filename, **_: str(calibration[filename])

# 1. model outputs through alpaca_eval's loader
for name in ["model_outputs.json", "reference_outputs.json"]:
    df = utils.load_or_convert_to_dataframe(out / name)
    rows = json.loads((out / name).read_text())
    assert len(df) == len(rows) == 805, (name, len(df))
    for column in ["instruction", "output", "generator", "dataset"]:
        assert df[column].tolist() == [r[column] for r in rows], (name, column)
    print(f"ok  {name}: alpaca_eval loads {len(df)} rows, columns {list(df.columns)}")

# 2. recompute the metrics from herd's annotations, with herd's leaderboard as the precomputed one
herd_leaderboard = pd.read_csv(out / "leaderboard.csv", index_col=0)
herd_annotations = json.loads((out / annotator / "annotations.json").read_text())
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    shutil.copytree(out, tmp / "run")
    # Spoil the metric columns of the copy alpaca_eval reads, so that matching numbers can
    # only come from its own recomputation (herd's text, two cells changed).
    lines = (tmp / "run/leaderboard.csv").read_text().split("\n")
    cells = lines[1].split(",")
    cells[1], cells[10] = "-1.0", "-1.0"  # win_rate, length_controlled_winrate
    lines[1] = ",".join(cells)
    (tmp / "run/leaderboard.csv").write_text("\n".join(lines))
    df_leaderboard, _ = ae_main.evaluate(
        model_outputs=str(tmp / "run/model_outputs.json"),
        reference_outputs=str(tmp / "run/reference_outputs.json"),
        annotators_config=annotator,
        output_path=str(tmp / "run"),
        precomputed_leaderboard=str(tmp / "run/leaderboard.csv"),
        is_recompute_metrics_only=True,
        is_return_instead_of_print=True,
    )
    rewritten = json.loads((tmp / "run" / annotator / "annotations.json").read_text())

name = herd_leaderboard.index[0]
theirs, ours = df_leaderboard.loc[name], herd_leaderboard.loc[name]
for column in herd_leaderboard.columns:
    a, b = theirs[column], ours[column]
    if isinstance(b, str):
        assert a == b, (column, a, b)
    else:
        assert math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9), (column, a, b)
print(f"ok  leaderboard.csv + annotations.json: alpaca_eval recomputes {name}'s metrics as herd wrote them")
print("    " + ", ".join(f"{c}={theirs[c]}" for c in ["win_rate", "length_controlled_winrate", "n_total", "avg_length"]))

# 3. alpaca_eval's rewrite of herd's annotations holds the same values
assert len(rewritten) == len(herd_annotations)
for i, (a, b) in enumerate(zip(rewritten, herd_annotations)):
    for key, value in b.items():
        other = a.get(key)
        if isinstance(value, float):
            assert math.isclose(value, other, rel_tol=1e-9), (i, key, value, other)
        else:
            assert other == value, (i, key)
print(f"ok  annotations.json: alpaca_eval writes back the same {len(rewritten)} rows")
