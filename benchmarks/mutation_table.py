"""The table benchmarks/mutation.sh prints: mutants killed / total per file and per function.

    python benchmarks/mutation_table.py RESULTS EQUIVALENT

RESULTS is the output of `mutmut results --all true`; EQUIVALENT lists mutants that cannot change any result
(one per line: the name, then the reason), which are left out of the totals. A timeout counts as killed:
a mutant that makes the tests hang is noticed too.
"""

import collections
import re
import sys

equivalent = {}
for line in open(sys.argv[2]):
    line = line.strip()
    if line and not line.startswith("#"):
        name, _, reason = line.partition(" ")
        equivalent[name] = reason.strip()
counts = collections.defaultdict(collections.Counter)
by_function = collections.defaultdict(collections.Counter)
survivors = collections.defaultdict(list)
for line in open(sys.argv[1]):
    match = re.match(r"\s*(\S+__mutmut_\d+): (.+)$", line)
    if not match:
        continue
    name, status = match.groups()
    module, function = re.match(r"(.+?)\.x[_\u01c1](.+)__mutmut_\d+$", name).groups()
    function = f"{module}.{function.replace(chr(0x1c1), '.')}"
    if name in equivalent:
        counts[module]["equivalent"] += 1
        continue
    for tally in (counts[module], by_function[function]):
        tally["total"] += 1
        tally[status] += 1
    if status != "killed":
        survivors[module].append(f"{name}: {status}")
print(f"{'module':32s} {'total':>6s} {'killed':>7s} {'score':>6s} {'equiv.':>7s}  other outcomes")
for module in sorted(counts):
    c = counts[module]
    other = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in ("total", "killed", "equivalent"))
    score = 100.0 * (c["killed"] + c["timeout"]) / c["total"] if c["total"] else 100.0  # a hang is noticed too
    print(f"{module:32s} {c['total']:6d} {c['killed']:7d} {score:5.1f}% {c['equivalent']:7d}  {other}")
print(f"\n{'function':56s} {'total':>6s} {'killed':>7s}")
for function in sorted(by_function):
    c = by_function[function]
    print(f"{function:56s} {c['total']:6d} {c['killed'] + c['timeout']:7d}")
for module in sorted(survivors):
    for line in survivors[module]:
        print("  not killed:", line)
