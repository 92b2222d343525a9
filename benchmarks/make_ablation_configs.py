"""Writes issue 15's ablation rows, configs/ablation/*.yaml, from the shipped Breakout config.

    python benchmarks/make_ablation_configs.py      # after retuning configs/efficientzero_minatar_breakout.yaml

Rows 1-3 are the shipped config with EfficientZero's later parts switched off (row 4 is the shipped
config itself): MuZero -> + temporal consistency -> + value prefix -> + off-policy correction.
tests/test_efficientzero_ablation.py fails when the files and this script's output differ.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "configs" / "efficientzero_minatar_breakout.yaml"
OFF = {"consistency_coef": "0.0", "value_prefix": "false", "offpolicy_age_unit": "0"}
ROWS = {
    "efficientzero_breakout_1_muzero": (
        "row 1, MuZero: the shipped config's conv networks and search with EfficientZero's three parts off --\n"
        "# no consistency loss, a per-step reward head instead of the value prefix, no off-policy correction.",
        ("consistency_coef", "value_prefix", "offpolicy_age_unit")),
    "efficientzero_breakout_2_consistency": (
        "row 2, + the temporal-consistency loss.", ("value_prefix", "offpolicy_age_unit")),
    "efficientzero_breakout_3_value_prefix": (
        "row 3, + the value prefix (an LSTM over the unroll).", ("offpolicy_age_unit",)),
}


def render(name: str) -> str:
    """The YAML text of one ablation row: a header, then the shipped config's keys with its parts off."""
    what, switched_off = ROWS[name]
    text = "".join(line for line in SHIPPED.read_text().splitlines(keepends=True) if not line.startswith("#"))
    for key in switched_off:
        text, count = re.subn(rf"^(  {key}: )\S+", rf"\g<1>{OFF[key]}", text, flags=re.M)
        if count != 1:
            raise SystemExit(f"{SHIPPED.name}: expected one '  {key}:' line, found {count}")
    return (f"# Issue 15's ablation on MinAtar Breakout at 100k, {what}\n"
            "# Written by benchmarks/make_ablation_configs.py from efficientzero_minatar_breakout.yaml (row 4);\n"
            "# run all four: python benchmarks/efficientzero_targets.py --suites ablation --seeds 0,1\n" + text)


def main() -> int:
    for name in ROWS:
        path = ROOT / "configs" / "ablation" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(render(name))
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
