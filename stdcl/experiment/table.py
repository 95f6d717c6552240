"""Aggregating a grid's results records: mean ± sd over seeds, and the paired STD-CL gain.

Rows are the grid's cells without ``seed`` and ``stdcl``; within a row, the baseline
(``stdcl`` off) and STD-CL runs are summarised over seeds (final-epoch test top-1, and the test
top-1 at the best validation epoch when the runs have a validation split), and the paired
difference STD-CL minus baseline is taken per seed (only seeds present in both), with its mean,
sample standard deviation and a two-sided 95 % confidence interval from Student's t with n - 1
degrees of freedom (``scipy.stats.t``). With n = 1 the interval is undefined (shown as "n/a").
A row of a ``variant`` with STD-CL runs only is paired with the row of the variant that has
baseline runs only and the same other axis values (an ablation against one shared baseline).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from stdcl.experiment.grid import VARIANT_AXIS, Grid, config_digest, format_value

PAIR_AXIS, SEED_AXIS = "stdcl", "seed"


@dataclass
class Summary:
    """Mean, sample sd and n of a list of values (``None`` when empty; sd ``None`` for n < 2)."""

    n: int
    mean: float | None
    sd: float | None
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: list[float]) -> "Summary":
        v = [float(x) for x in values if x is not None]
        if not v:
            return cls(0, None, None, [])
        mean = sum(v) / len(v)
        sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
        return cls(len(v), mean, sd, v)


@dataclass
class Paired:
    """STD-CL minus baseline per seed: mean, sd, 95 % CI (t), n and the seeds used."""

    n: int
    mean: float | None
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    seeds: list[str] = field(default_factory=list)
    diffs: list[float] = field(default_factory=list)


def paired_difference(on: dict[str, float], off: dict[str, float], level: float = 0.95) -> Paired:
    """The paired difference ``on[seed] - off[seed]`` over the seeds both have."""
    from scipy import stats

    seeds = sorted(set(on) & set(off), key=lambda s: (len(s), s))
    diffs = [on[s] - off[s] for s in seeds]
    s = Summary.of(diffs)
    lo = hi = None
    if s.n >= 2 and s.sd is not None:
        half = float(stats.t.ppf(0.5 + level / 2, s.n - 1)) * s.sd / math.sqrt(s.n)
        lo, hi = s.mean - half, s.mean + half
    return Paired(s.n, s.mean, s.sd, lo, hi, seeds, diffs)


@dataclass
class Row:
    """One row of the table: a cell without seed / stdcl."""

    key: dict[str, str]
    baseline_final: Summary
    stdcl_final: Summary
    baseline_best: Summary
    stdcl_best: Summary
    gain_final: Paired
    gain_best: Paired
    cells: dict[str, dict[str, str]] = field(default_factory=dict)  # "on"/"off" -> seed -> cell name
    curves: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)  # on/off -> seed -> pts
    run_dirs: dict[str, dict[str, str]] = field(default_factory=dict)
    baseline_of: str | None = None  # the variant whose baseline runs this row is paired with


@dataclass
class Table:
    grid: str
    description: str
    rows: list[Row]
    skipped: list[str]  # records left out (stale digest, unknown cell), with the reason
    missing: list[str]  # cells with no record yet


def _seed(values: dict[str, Any]) -> str:
    return format_value(values.get(SEED_AXIS, "-"))


def _group(values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((k, format_value(v)) for k, v in values.items() if k not in (SEED_AXIS, PAIR_AXIS))


def _shared_baselines(rows: dict[tuple, Row]) -> dict[tuple, tuple]:
    """Rows with STD-CL runs only -> the row that differs only in ``variant`` and has baseline runs only."""
    only_off = {k for k, r in rows.items() if set(r.cells) == {"off"}}
    out = {}
    for k, r in rows.items():
        if set(r.cells) != {"on"} or VARIANT_AXIS not in dict(k):
            continue
        rest = tuple(kv for kv in k if kv[0] != VARIANT_AXIS)
        match = [b for b in only_off if tuple(kv for kv in b if kv[0] != VARIANT_AXIS) == rest]
        if len(match) == 1:
            out[k] = match[0]
    return out


def aggregate(records: list[dict[str, Any]], grid: str = "", description: str = "",
              order: list[tuple] | None = None) -> Table:
    """The table of ``records`` alone (rows: their values without seed / stdcl, in ``order`` if given)."""
    rows: dict[tuple, Row] = {}
    finals: dict[tuple, dict[str, dict[str, float]]] = {}
    bests: dict[tuple, dict[str, dict[str, float]]] = {}
    for rec in records:
        values = rec["values"]
        k = _group(values)
        arm = "on" if rec.get("stdcl_enabled", format_value(values.get(PAIR_AXIS, True)) == "on") else "off"
        seed = _seed(values)
        row = rows.setdefault(k, Row(dict(k), *(Summary.of([]) for _ in range(4)),
                                     paired_difference({}, {}), paired_difference({}, {})))
        row.cells.setdefault(arm, {})[seed] = rec["cell"]
        row.run_dirs.setdefault(arm, {})[seed] = rec.get("run_dir") or ""
        row.curves.setdefault(arm, {})[seed] = [
            (e["epoch"], e["test_top1"]) for e in rec["epochs"] if e.get("test_top1") is not None]
        if rec.get("final_test_top1") is not None:
            finals.setdefault(k, {}).setdefault(arm, {})[seed] = rec["final_test_top1"]
        best = (rec.get("best_val") or {}).get("test_top1")
        if best is not None:
            bests.setdefault(k, {}).setdefault(arm, {})[seed] = best
    shared = _shared_baselines(rows)
    for k, row in rows.items():
        f, b = dict(finals.get(k, {})), dict(bests.get(k, {}))
        if k in shared:  # a variant row measured against the grid's baseline variant
            base = shared[k]
            f.setdefault("off", finals.get(base, {}).get("off", {}))
            b.setdefault("off", bests.get(base, {}).get("off", {}))
            row.baseline_of = dict(base).get(VARIANT_AXIS)
            for attr in ("cells", "run_dirs", "curves"):
                getattr(row, attr).setdefault("off", getattr(rows[base], attr).get("off", {}))
        row.stdcl_final, row.baseline_final = Summary.of(list(f.get("on", {}).values())), \
            Summary.of(list(f.get("off", {}).values()))
        row.stdcl_best, row.baseline_best = Summary.of(list(b.get("on", {}).values())), \
            Summary.of(list(b.get("off", {}).values()))
        row.gain_final = paired_difference(f.get("on", {}), f.get("off", {}))
        row.gain_best = paired_difference(b.get("on", {}), b.get("off", {}))
    keys = [k for k in (order or []) if k in rows] + [k for k in rows if k not in (order or [])]
    return Table(grid, description, [rows[k] for k in keys], [], [])


def build_table(grid: Grid, records: list[dict[str, Any]]) -> Table:
    """The table of ``grid`` from its results records (records of changed configs are left out)."""
    cells = {c.name: c for c in grid.cells}
    digests = {c.name: config_digest(c.resolved_config()) for c in grid.cells}
    kept, skipped = [], []
    for rec in records:
        name = rec["cell"]
        if rec.get("grid") != grid.name or name not in cells:
            skipped.append(f"{name}: not a cell of grid {grid.name}")
        elif rec["config_digest"] != digests[name]:
            skipped.append(f"{name}: recorded with another config (digest {rec['config_digest']}, "
                           f"grid now {digests[name]})")
        else:
            kept.append(rec)
    order = []
    for c in grid.cells:  # rows in grid order
        k = _group(c.values)
        if k not in order:
            order.append(k)
    table = aggregate(kept, grid.name, grid.description, order)
    seen = {r["cell"] for r in kept}
    table.skipped = skipped
    table.missing = [c.name for c in grid.cells if c.name not in seen]
    return table


# -- rendering -------------------------------------------------------------------------------------
def format_pct(s: Summary) -> str:
    if s.n == 0:
        return "—"
    if s.sd is None:
        return f"{100 * s.mean:.2f}"
    return f"{100 * s.mean:.2f} ± {100 * s.sd:.2f}"


def format_gain(p: Paired) -> str:
    if p.n == 0:
        return "—"
    ci = "n/a" if p.ci_low is None else f"[{100 * p.ci_low:+.2f}, {100 * p.ci_high:+.2f}]"
    return f"{100 * p.mean:+.2f} {ci}"


def _key_text(row: Row) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.key.items()) or "all"


def to_markdown(table: Table) -> str:
    """A Markdown table: test top-1 (%) mean ± sd over seeds, and the paired gain with its 95 % CI."""
    has_best = any(r.baseline_best.n or r.stdcl_best.n for r in table.rows)
    head = ["cell", "baseline final", "STD-CL final", "gain final [95 % CI]", "n"]
    if has_best:
        head += ["baseline best-val", "STD-CL best-val", "gain best-val [95 % CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.rows:
        cells = [_key_text(r), format_pct(r.baseline_final), format_pct(r.stdcl_final), format_gain(r.gain_final), str(r.gain_final.n)]
        if has_best:
            cells += [format_pct(r.baseline_best), format_pct(r.stdcl_best), format_gain(r.gain_best)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"Test top-1 (%) over seeds, mean ± sd; gain = STD-CL minus baseline paired by seed, mean and 95 % "
             f"t-interval; n = paired seeds. Final = last epoch" + ("; best-val = the epoch chosen on the validation "
                                                                    "split." if has_best else
                                                                    " (no validation split: no best-epoch figure).")]
    shared = sorted({r.baseline_of for r in table.rows if r.baseline_of})
    if shared:
        notes.append(f"Variant rows are paired with the runs of the variant {', '.join(shared)} (STD-CL off), "
                     "same seed.")
    if table.missing:
        notes.append(f"Not finished yet: {len(table.missing)} run(s) ({', '.join(table.missing[:6])}"
                     f"{', ...' if len(table.missing) > 6 else ''}).")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def to_rows(table: Table) -> list[dict[str, Any]]:
    """Flat rows (CSV / JSON): every figure as a fraction in [0, 1]."""
    out = []
    for r in table.rows:
        d: dict[str, Any] = dict(r.key)
        for name, s in (("baseline_final", r.baseline_final), ("stdcl_final", r.stdcl_final),
                        ("baseline_best", r.baseline_best), ("stdcl_best", r.stdcl_best)):
            d |= {f"{name}_mean": s.mean, f"{name}_sd": s.sd, f"{name}_n": s.n}
        for name, p in (("gain_final", r.gain_final), ("gain_best", r.gain_best)):
            d |= {f"{name}_mean": p.mean, f"{name}_sd": p.sd, f"{name}_ci_low": p.ci_low,
                  f"{name}_ci_high": p.ci_high, f"{name}_n": p.n}
        out.append(d)
    return out


def to_csv(table: Table) -> str:
    rows = to_rows(table)
    if not rows:
        return ""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in keys})
    return buf.getvalue()


def to_json(table: Table) -> dict[str, Any]:
    return {"grid": table.grid, "description": table.description, "rows": [asdict(r) for r in table.rows],
            "skipped": table.skipped, "missing": table.missing}
