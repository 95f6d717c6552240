"""``stdcl bench prepare``: files/second and peak memory of :func:`prepare_ntu`.

A folder of a few real ``.skeleton`` files is copied to ``--copies`` files under fresh NTU
names (same action, so two-person files stay two-person) into a temporary folder, and
``prepare_ntu`` runs on it in a fresh subprocess (so that its peak RSS is its own).
With ``--reference DIR`` (a CTR-GCN checkout, or its ``data/ntu`` folder) the reference
scripts ``get_raw_skes_data.py``, ``get_raw_denoised_data.py`` and
``seq_transformation.py`` run on the same files, unmodified, in a scratch folder laid out
the way they expect, with a small shim on ``PYTHONPATH`` (``np.int``/``np.string_``
aliases for NumPy 2, empty ``h5py``/``sklearn`` stand-ins for their unused imports).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from stdcl.data.ntu_prepare import get_benchmark, missing_names, parse_sample_name

_MEASURE = r"""
import json, resource, sys, time
from stdcl.data.ntu_prepare import prepare_ntu
bench, raw, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after the imports (stdcl.data pulls in torch)
t0 = time.perf_counter()
s = prepare_ntu(bench, [raw], out, workers=workers, progress=False)
dt = time.perf_counter() - t0
ru_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ru_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": dt, "files": s.files_processed, "rss_after_import_mb": base / 1024,
                  "rss_peak_mb": ru_self / 1024, "worker_rss_peak_mb": ru_children / 1024}))
"""

_SHIM = {
    "sitecustomize.py": "import numpy as _np\n"
                        "for _k, _v in (('int', int), ('float', float), ('bool', bool), ('string_', _np.bytes_)):\n"
                        "    if _k not in _np.__dict__:\n"
                        "        setattr(_np, _k, _v)\n",
    "h5py.py": "",
    "sklearn/__init__.py": "",
    "sklearn/model_selection.py": "def train_test_split(*a, **k):\n    raise NotImplementedError\n",
}

_REF_SCRIPTS = ("get_raw_skes_data.py", "get_raw_denoised_data.py", "seq_transformation.py")


def make_bench_folder(sources: Sequence[Path], n_files: int, dest: Path, benchmark: str = "ntu60") -> list[str]:
    """Copy ``sources`` round-robin into ``dest`` as ``n_files`` files with fresh sample names."""
    bench = get_benchmark(benchmark)
    skip = missing_names(bench.name)
    dest.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    i = 0
    while len(names) < n_files:
        src = sources[len(names) % len(sources)]
        ids = parse_sample_name(src.name[:-len(".skeleton")])
        action = ids.action if ids else 1
        s, c, p, r = 1 + i % bench.max_setup, 1 + i // bench.max_setup % 3, 1 + i // (bench.max_setup * 3) % 40, \
            1 + i // (bench.max_setup * 120) % 2
        i += 1
        if i > bench.max_setup * 240:
            raise ValueError(f"cannot make {n_files} distinct names")
        name = f"S{s:03d}C{c:03d}P{p:03d}R{r:03d}A{action:03d}"
        if name in skip or name in names:
            continue
        shutil.copyfile(src, dest / f"{name}.skeleton")
        names.append(name)
    return names


def _find_reference_scripts(reference: Path, benchmark: str) -> Path:
    sub = "ntu" if benchmark == "ntu60" else "ntu120"
    for cand in (reference / "data" / sub, reference / sub, reference):
        if all((cand / s).is_file() for s in _REF_SCRIPTS):
            return cand
    raise FileNotFoundError(f"{reference}: no CTR-GCN {'/'.join(_REF_SCRIPTS)} found (looked in data/{sub})")


def run_reference(reference: str | os.PathLike, benchmark: str, files: dict[str, Path],
                  workdir: str | os.PathLike) -> dict[str, Any]:
    """Run CTR-GCN's three NTU scripts on ``files`` (name -> path) inside ``workdir``.

    Returns ``{"seconds", "rss_peak_mb", "outputs": [npz paths]}``. The statistics files
    the scripts read are written for exactly these names (sorted, missing list removed).
    """
    bench = get_benchmark(benchmark)
    scripts = _find_reference_scripts(Path(reference), bench.name)
    work = Path(workdir)
    run_dir, shim = work / "ref", work / "shim"
    stat = run_dir / "statistics"
    for d in (stat, shim / "sklearn", work / "nturgbd_raw" / "nturgb+d_skeletons",
              work / "nturgbd_raw" / "nturgb+d_skeletons120"):
        d.mkdir(parents=True, exist_ok=True)
    for rel, text in _SHIM.items():
        (shim / rel).write_text(text)
    for s in _REF_SCRIPTS:
        shutil.copyfile(scripts / s, run_dir / s)
    skip = missing_names(bench.name)
    names = sorted(n for n in files if n not in skip and bench.accepts(parse_sample_name(n)))
    if len(names) < 2:
        raise ValueError("the reference scripts need at least 2 samples (np.loadtxt returns a scalar for one)")
    for name in names:
        folder = "nturgb+d_skeletons120" if bench.name == "ntu120" and parse_sample_name(name).setup >= 18 \
            else "nturgb+d_skeletons"
        os.symlink(Path(files[name]).resolve(), work / "nturgbd_raw" / folder / f"{name}.skeleton")
    ids = [parse_sample_name(n) for n in names]
    (stat / "skes_available_name.txt").write_text("\n".join(names) + "\n")
    for key in ("setup", "camera", "performer", "replication"):
        (stat / f"{key}.txt").write_text("\n".join(str(getattr(i, key)) for i in ids) + "\n")
    (stat / "label.txt").write_text("\n".join(str(i.action) for i in ids) + "\n")
    env = dict(os.environ, PYTHONPATH=str(shim))
    wrapper = ("import resource, subprocess, sys, json, time\n"
               "t0 = time.perf_counter()\n"
               "for s in sys.argv[1:]:\n"
               "    subprocess.run([sys.executable, s], check=True, stdout=subprocess.DEVNULL)\n"
               "print(json.dumps({'seconds': time.perf_counter() - t0, 'rss_peak_mb':"
               " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n")
    out = subprocess.run([sys.executable, "-c", wrapper, *_REF_SCRIPTS], cwd=run_dir, env=env, check=True,
                         capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["outputs"] = sorted(str(p) for p in run_dir.glob(f"{bench.prefix}_*.npz"))
    return res


def _measure_ours(benchmark: str, raw: Path, out: Path, workers: int) -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", _MEASURE, benchmark, str(raw), str(out), str(workers)],
                          env=env, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_prepare(raw_dir: str | os.PathLike | Sequence[str | os.PathLike], workers: int = 1, repeat: int = 1,
                  copies: int = 200, benchmark: str = "ntu60", reference: str | os.PathLike | None = None,
                  verbose: bool = True) -> dict[str, Any]:
    """Measure ``prepare_ntu`` (and optionally the reference scripts) on ``copies`` files.

    Returns ``{"files", "workers", "runs": [...], "files_per_s" (best run), "rss_peak_mb",
    "rss_after_import_mb", "worker_rss_peak_mb", "reference": {...} | None}`` (peak RSS from
    ``getrusage`` of a fresh process; tracemalloc is not used: it slows parsing ~30x).
    """
    dirs = [Path(raw_dir)] if isinstance(raw_dir, (str, os.PathLike)) else [Path(d) for d in raw_dir]
    sources = sorted(p for d in dirs for p in d.glob("*.skeleton"))
    if not sources:
        raise FileNotFoundError(f"no .skeleton files in {', '.join(map(str, dirs))}")
    n_files = copies
    result: dict[str, Any] = {"benchmark": benchmark, "files": n_files, "workers": workers, "runs": [],
                              "reference": None}
    with tempfile.TemporaryDirectory(prefix="stdcl-bench-prepare-") as tmp:
        raw = Path(tmp) / "raw"
        names = make_bench_folder(sources, n_files, raw, benchmark)
        for r in range(repeat):
            out = Path(tmp) / f"out{r}"
            run = _measure_ours(benchmark, raw, out, workers)
            run["files_per_s"] = run["files"] / run["seconds"]
            result["runs"].append(run)
            shutil.rmtree(out, ignore_errors=True)
            if verbose:
                print(f"stdcl prepare_ntu: {run['files']} files in {run['seconds']:.2f} s = "
                      f"{run['files_per_s']:.1f} files/s, peak RSS {run['rss_peak_mb']:.0f} MiB "
                      f"({run['rss_after_import_mb']:.0f} MiB after imports; "
                      f"workers {run['worker_rss_peak_mb']:.0f} MiB each at most)")
        best = max(result["runs"], key=lambda r: r["files_per_s"])
        for k in ("files_per_s", "rss_peak_mb", "rss_after_import_mb", "worker_rss_peak_mb"):
            result[k] = best[k] if k == "files_per_s" else max(r[k] for r in result["runs"])
        if reference is not None:
            ref = run_reference(reference, benchmark, {n: raw / f"{n}.skeleton" for n in names}, Path(tmp) / "refrun")
            ref["files_per_s"] = n_files / ref["seconds"]
            ref.pop("outputs", None)
            result["reference"] = ref
            if verbose:
                print(f"reference CTR-GCN scripts: {n_files} files in {ref['seconds']:.2f} s = "
                      f"{ref['files_per_s']:.1f} files/s, peak RSS {ref['rss_peak_mb']:.0f} MiB "
                      f"(speed-up x{result['files_per_s'] / ref['files_per_s']:.1f})")
    return result


def main_bench_prepare(argv: Sequence[str] | None = None) -> int:
    """``[RAW_DIR ...] [--copies N] [--workers W] [--repeat R] [--benchmark B] [--reference DIR] [--json PATH]``."""
    default_raw = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ntu_skeleton_levelca"
    ap = argparse.ArgumentParser(prog="stdcl bench prepare", description=__doc__.splitlines()[0])
    ap.add_argument("raw_dir", nargs="*", default=[str(default_raw)],
                    help="folder(s) of .skeleton files to copy (default: %(default)s)")
    ap.add_argument("--copies", type=int, default=200, help="number of files to prepare (default 200)")
    ap.add_argument("--workers", type=int, default=1, help="parser processes (default 1)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs; the best is reported (default 1)")
    ap.add_argument("--benchmark", default="ntu60", choices=["ntu60", "ntu120"])
    ap.add_argument("--reference", metavar="DIR", help="CTR-GCN checkout to time its NTU scripts too")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = bench_prepare(args.raw_dir, workers=args.workers, repeat=args.repeat, copies=args.copies,
                        benchmark=args.benchmark, reference=args.reference)
    res["total_seconds"] = time.perf_counter() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_bench_prepare())
