"""Issue 15's ablation (Breakout at 100k): MuZero -> + consistency -> + value prefix -> + off-policy
correction. Rows 1-3 are configs/ablation/*.yaml (benchmarks/make_ablation_configs.py writes them); row 4 is
the shipped efficientzero_minatar_breakout.
Each row must be the shipped config with exactly its later parts switched off -- so retuning the
shipped config without regenerating the rows fails here instead of silently ablating another agent."""

import sys
from pathlib import Path

import pytest

from rlscratch.agent import agent_config, resolve_agent
from rlscratch.config import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import efficientzero_targets as targets  # noqa: E402

SHIPPED = "efficientzero_minatar_breakout"
OFF = {"consistency_coef": 0.0, "value_prefix": False, "offpolicy_age_unit": 0}
# the keys each row switches off, in the ablation's order: each row turns one more part on
ROW_OFF = [("consistency_coef", "value_prefix", "offpolicy_age_unit"), ("value_prefix", "offpolicy_age_unit"),
           ("offpolicy_age_unit",), ()]


def as_dict(config) -> dict:
    return {"agent": dict(config.agent), "env": config.env, "train": config.train, "model": config.model,
            "seed": config.seed}


@pytest.mark.parametrize("row", range(4))
def test_each_row_is_the_shipped_config_with_its_later_parts_off(row):
    path, _ = targets.ABLATION[row]
    config, _ = load_config(str(ROOT / path) if path.endswith(".yaml") else path)
    shipped, _ = load_config(SHIPPED)
    agent_config(resolve_agent(config.agent["name"]), config.agent)  # a valid efficientzero config
    expected = as_dict(shipped)
    for key in ROW_OFF[row]:
        assert shipped.agent[key] != OFF[key], key  # the shipped config has the part on
        expected["agent"][key] = OFF[key]
    assert as_dict(config) == expected


def test_the_ablation_suite_runs_the_four_rows_in_order(monkeypatch):
    chosen = []
    monkeypatch.setattr(targets.seed_runs, "run_suites", lambda args, suites, *a, **k: chosen.extend(suites) or [])
    assert targets.main(["--suites", "ablation", "--seeds", "0"]) == 0
    assert [s.config for s in chosen] == [config for config, _ in targets.ABLATION]
    assert chosen[-1].config == SHIPPED
    assert all(Path(ROOT / c).is_file() for c, _ in targets.ABLATION[:3])


def test_the_ablation_table_averages_each_row_over_its_seeds():
    suites = [targets.SUITES["ablation_1"], targets.SUITES["ablation_4"]]
    def run(seed: int, last100: float, greedy: float, wall: float, cpu: float) -> dict:
        return {"config": suites[0].config, "seed": seed, "last100": last100, "final_eval": greedy,
                "final_eval_std": 0.0, "evals": [], "seconds": wall, "cpu_seconds": cpu}

    results = [run(0, 2.0, 1.0, 100, 90), run(1, 3.0, 4.0, 300, 110),
               {"config": suites[1].config, "seed": 0, "error": "killed"}]
    lines = targets.format_ablation(suites, results).splitlines()
    assert lines[3].split()[-5:] == ["2", "2.50", "2.5", "200", "100"]
    assert lines[4].endswith("0  (no finished run)")


def test_the_row_files_are_what_the_generator_writes_from_the_shipped_config():
    import make_ablation_configs as make

    for name in make.ROWS:
        assert (ROOT / "configs" / "ablation" / f"{name}.yaml").read_text() == make.render(name), \
            f"configs/ablation/{name}.yaml is stale: run python benchmarks/make_ablation_configs.py"


def test_results_keep_the_config_as_the_job_named_it(monkeypatch, tmp_path):
    """The sweep hands a config file back as its absolute path; the tables match results to suites by
    the name the suite gave (a relative path for the ablation rows), so launch_all restores it -- the
    first ablation run printed its row as 'no finished run' without this."""
    from rlscratch import sweep

    row = targets.ABLATION[0][0]
    jobs = [(row, 0), ("efficientzero_minatar_breakout", 1)]
    trial = {"run_dir": "r", "env_steps": 1, "episodes": 1, "updates": 1, "final_eval": 0.0, "final_eval_std": 0.0,
             "evals": [], "seconds": 1.0, "attempt_cpu_seconds": 1.0, "attempts": 1}
    monkeypatch.setattr(sweep, "check_trials", lambda trials: None)
    monkeypatch.setattr(sweep, "sweep", lambda trials, *a, **k: (
        [{**trial, "config": str((ROOT / row).resolve()), "seed": 0},
         {**trial, "config": "efficientzero_minatar_breakout", "seed": 1}], None))
    results = targets.seed_runs.launch_all(jobs, tmp_path, overrides=[], workers=1)
    assert [(r["config"], r["seed"]) for r in results] == jobs
