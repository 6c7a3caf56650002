"""Instructions per request from callgrind_annotate listings (used by loadtest/instructions).

Arguments: CASE TOP, then per binary LABEL SHORT_LISTING SHORT_REQUESTS LONG_LISTING
LONG_REQUESTS. What a request costs is the difference between the long and the short run
divided by the difference in requests: the connections' setup and teardown (the same in both
runs) cancel out.
"""

import re
import sys


def load(path):
    """Own instructions per function ('' : the program's total)."""
    funcs, listing = {}, False
    with open(path) as f:
        for line in f:
            if "PROGRAM TOTALS" in line:
                funcs[""] = int(line.split()[0].replace(",", ""))
            if "file:function" in line:
                listing = True
                continue
            if listing and len(funcs) > 1 and not line.strip():
                break
            m = listing and re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
            if not m:
                continue
            name = re.sub(r" \[[^\]]*\]$", "", m.group(2))
            name = name.split(":", 1)[1] if ":" in name else name
            funcs[name] = funcs.get(name, 0) + int(m.group(1).replace(",", ""))
    return funcs


def main():
    case, top, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    tables = []
    for i in range(0, len(args), 5):
        label, short, n_short, long_, n_long = args[i : i + 5]
        s, l = load(short), load(long_)
        n = int(n_long) - int(n_short)
        if n <= 0:
            sys.exit(f"{case} {label}: the long run completed no more requests than the short one")
        tables.append((label, n, {k: (l.get(k, 0) - s.get(k, 0)) / n for k in set(s) | set(l)}))
    for label, n, per in tables:
        print(f"  {case:<6} {label:<9} {per['']:9.0f} instructions/request ({n} requests apart)")
    if top == 0:
        return
    # The thread's entry frames carry all of it (inlined runtime code): not a function's own.
    whole = {k for _, _, t in tables for k, v in t.items() if v > 0.5 * t[""]}
    keys = sorted(
        set().union(*(t for _, _, t in tables)) - whole,
        key=lambda k: -max(t.get(k, 0) for _, _, t in tables),
    )
    head = "".join(f"{label:>12}" for label, _, _ in tables)
    if len(tables) == 2:
        head += "      change"
    print(f"  own instructions per request, top {top}:")
    print(f"  {head}  function")
    for k in keys[:top]:
        vals = [t.get(k, 0) for _, _, t in tables]
        row = "".join(f"{v:12.0f}" for v in vals)
        if len(vals) == 2:
            row += f"{vals[1] - vals[0]:+12.0f}"
        print(f"  {row}  {k[:110]}")


main()
