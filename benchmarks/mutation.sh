#!/usr/bin/env bash
# Mutation score per file: does the test suite notice a single-line bug in the maths?
#
#   benchmarks/mutation.sh                              every file in pyproject's [tool.mutmut] only_mutate
#   benchmarks/mutation.sh rlscratch/returns.py ...     just these files
#   MUTATION_TESTS="tests/test_buffers.py tests/test_returns_by_hand.py" benchmarks/mutation.sh rlscratch/buffers.py
#                                                       and only these tests (faster; a lower bound on the score)
#
# mutmut 3 copies rlscratch/ into ./mutants/, plants one mutant at a time (a flipped
# operator, a changed constant, an argument dropped) in the listed files, runs the non-slow tests that reach
# the mutated function, and calls the mutant "killed" if a test fails. This script runs it in a scratch
# copy of the checkout (tracked and untracked-but-not-ignored files, as they are now), so the checkout's
# pyproject.toml is never edited, then prints killed / total per file. Mutants that cannot change any
# result ("equivalent") are listed with a one-line reason in benchmarks/mutation_equivalent.txt and left
# out of the total. The scratch folder is kept (printed at the end) for `mutmut show <name>` there.
#
# CPU-heavy: run it with `nice -n 10` on a shared machine. Environment: PYTHON (default .venv/bin/python,
# then /work/main/.venv/bin/python), MUTATION_TESTS, MUTATION_DIR (the scratch folder), MUTATION_CHILDREN
# (parallel mutants, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=/work/main/.venv/bin/python; fi
fi
python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python")
mutmut=$(dirname "$python")/mutmut
[[ -x $mutmut ]] || { echo "error: $mutmut not found; install the dev extra: pip install -e \".[dev]\"" >&2; exit 2; }
for file in "$@"; do
    [[ -f $file ]] || { echo "error: $file: no such file; pass paths like rlscratch/returns.py" >&2; exit 2; }
done

scratch=${MUTATION_DIR:-$(mktemp -d -t rlscratch-mutation.XXXXXX)}
mkdir -p "$scratch"
rm -rf "${scratch:?}/mutants"
git ls-files -co --exclude-standard -z | tar --null -cf - -T - | tar -xf - -C "$scratch"
cd "$scratch"
# mutmut names mutants after file paths (agents/dqn.py -> agents.dqn), while the tests import rlscratch.agents.dqn
# through rlscratch/__init__.py's __path__ trick: here agents/, envs/ and configs/ become real subpackages.
for folder in agents envs configs; do cp -r "$folder" "rlscratch/$folder"; done

# Narrow the files and tests in the scratch copy's pyproject.toml only.
"$python" - "$@" <<'EOF'
import json, os, re, sys
path = "pyproject.toml"
text = open(path).read()
files = [f"rlscratch/{f}" if f.startswith(("agents/", "envs/")) else f for f in sys.argv[1:]]
if files:
    text = re.sub(r"only_mutate = \[.*?\]\n", f"only_mutate = {json.dumps(files)}\n", text, count=1, flags=re.S)
tests = os.environ.get("MUTATION_TESTS", "").split()
if tests:
    selection = tests + ["-m", "not slow", "-p", "no:cacheprovider"]
    text = re.sub(r"pytest_add_cli_args_test_selection = \[.*?\]\n",
                  f"pytest_add_cli_args_test_selection = {json.dumps(selection)}\n", text, count=1, flags=re.S)
open(path, "w").write(text)
EOF

export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
unset PYTHONPATH  # mutmut puts ./mutants first on sys.path; the checkout must not shadow it
"$mutmut" run --max-children "${MUTATION_CHILDREN:-1}" > mutmut-run.log 2>&1 || {
    tail -c 3000 mutmut-run.log >&2; echo "error: mutmut run failed; log in $scratch/mutmut-run.log" >&2; exit 1; }
"$mutmut" results --all true > mutmut-results.txt 2>&1

"$python" "$root/benchmarks/mutation_table.py" mutmut-results.txt "$root/benchmarks/mutation_equivalent.txt"
echo "scratch copy (mutmut show <name> there): $scratch"
