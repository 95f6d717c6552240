"""``stdcl experiment plan | run | collect | table``: grids of training runs and their results tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from stdcl.cli import float_in, int_at_least, subparser


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("experiment", help="grids of runs: plan, run (local, GPUs, SLURM), tables",
                         description="Grids of training runs (see stdcl/experiment/grid.py for the grid file).")
    esub = exp.add_subparsers(dest="experiment_command", metavar="SUBCOMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("grid", type=Path, help="grid file (YAML)")
        p.add_argument("--runs", type=Path, default=None,
                       help="folder of the grid's run directories (default: the grid's `runs:`, "
                            "$STDCL_RUNS/<name> or runs/<name>)")
        p.add_argument("--results", type=Path, default=None,
                       help="folder of the results records (default results/<name>)")

    p = subparser(esub, "plan", "the grid's runs, their status and the expected time on this machine",
                  "  stdcl experiment plan experiments/ucla-ctrgcn-reference.yaml\n"
                  "  stdcl experiment plan experiments/paper-ntu60.yaml --device cuda --workers 4")
    common(p)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="estimate for this device")
    p.add_argument("--workers", type=int_at_least(1), default=1, help="concurrent runs the estimate assumes")
    p.set_defaults(func=_plan)

    p = subparser(esub, "run", "run every unfinished cell (resumes interrupted runs, isolates failures)",
                  "  stdcl experiment run experiments/ucla-ctrgcn-reference.yaml --workers 2\n"
                  "  stdcl experiment run grid.yaml --gpus 0,1,2,3                  # four runs, one GPU each\n"
                  "  stdcl experiment run grid.yaml --gpus 0,1,2,3 --ddp            # one run at a time on all four\n"
                  "  stdcl experiment run grid.yaml --executor slurm --partition gpu --time 1440 --gpus-per-task 1\n"
                  "  stdcl experiment run grid.yaml --only encoder-hcn_stdcl-on_seed-1")
    common(p)
    p.add_argument("--workers", type=int_at_least(1), default=None, help="concurrent runs (default 1, or one per GPU)")
    p.add_argument("--threads", type=int_at_least(1), default=None,
                   help="CPU threads per run (default: usable CPUs // workers)")
    p.add_argument("--gpus", default=None, help="comma-separated GPU ids, one per concurrent run (or all for --ddp)")
    p.add_argument("--ddp", action="store_true", help="each run uses every --gpus GPU through torchrun")
    p.add_argument("--checkpoint-every", type=int_at_least(0), default=200, metavar="STEPS",
                   help="save the resume state every STEPS steps (default 200; 0: only at epoch ends)")
    p.add_argument("--data-workers", type=int_at_least(0), default=None,
                   help="data-loading workers per run (data.num_workers)")
    p.add_argument("--only", nargs="+", default=None, metavar="CELL", help="run only these cells")
    p.add_argument("--rerun", action="store_true", help="delete the runs (and records) of --only cells first and start them again")
    p.add_argument("--executor", default="local", choices=["local", "slurm"])
    g = p.add_argument_group("SLURM (--executor slurm, through submitit)")
    g.add_argument("--partition", default=None)
    g.add_argument("--time", type=int_at_least(1), default=24 * 60, metavar="MIN", help="time limit per task (minutes)")
    g.add_argument("--gpus-per-task", type=int_at_least(0), default=1)
    g.add_argument("--cpus-per-task", type=int_at_least(1), default=8)
    g.add_argument("--mem-gb", type=float_in(0, above=True), default=None)
    g.add_argument("--array-parallelism", type=int_at_least(1), default=64, help="tasks of the array running at once")
    g.add_argument("--account", default=None)
    g.add_argument("--qos", default=None)
    g.add_argument("--constraint", default=None)
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any further sbatch option (repeatable)")
    g.add_argument("--wait", action="store_true", help="wait for the array and report each task")
    p.set_defaults(func=_run)

    p = subparser(esub, "collect", "write the results records of finished runs (e.g. started by hand)",
                  "  stdcl experiment collect experiments/ucla-ctrgcn-reference.yaml --runs /scratch/runs/x")
    common(p)
    p.set_defaults(func=_collect)

    p = subparser(esub, "table", "mean ± sd over seeds, the paired STD-CL gain with its 95 % CI, and curves",
                  "  stdcl experiment table experiments/ucla-ctrgcn-reference.yaml\n"
                  "  stdcl experiment table grid.yaml --out report/ --fusion\n"
                  "writes table.md, table.csv, table.json, curves.png and curves.html (default: the results folder)")
    common(p)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the results folder)")
    p.add_argument("--fusion", action="store_true",
                   help="also fuse the four modalities per seed (needs the run directories)")
    p.set_defaults(func=_table)


def _paths(args: argparse.Namespace):
    from stdcl.experiment.grid import load_grid
    from stdcl.experiment.status import results_dir, runs_root

    grid = load_grid(args.grid)
    return grid, runs_root(grid, args.runs), results_dir(grid, args.results)


def _plan(args: argparse.Namespace) -> int:
    from stdcl.experiment.status import format_seconds, plan

    grid, root, results = _paths(args)
    rows = plan(grid, root, device=args.device, results=results)
    width = max([len(r.cell.name) for r in rows] + [4])
    print(f"{grid.name}: {len(rows)} runs in {root} (records: {results})")
    if grid.description:
        print(f"  {grid.description.strip()}")
    print(f"{'cell':<{width}}  {'status':<8}  {'done':>6}  {'time left':>9}  note")
    total, counts = 0.0, {}
    sources = set()
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
        done = "-" if r.fraction is None else f"{100 * r.fraction:.0f}%"
        if r.expected_s:
            total += r.expected_s
            sources.add(r.estimate_source)
        print(f"{r.cell.name:<{width}}  {r.status:<8}  {done:>6}  {format_seconds(r.expected_s):>9}  {r.message}")
    workers = max(1, args.workers)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    unknown = sum(r.expected_s is None and r.status not in ("finished", "recorded", "changed") for r in rows)
    if unknown:
        summary += f" ({unknown} without an estimate)"
    print(f"{summary}; expected {format_seconds(total)} of compute, about {format_seconds(total / workers)} with "
          f"{workers} at once on {args.device} ({'; '.join(sorted(sources)) or ('no estimate' if unknown else 'nothing left')})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from stdcl.errors import ConfigError
    from stdcl.experiment.runner import RunOptions, remove_run, run_grid

    grid, root, results = _paths(args)
    if args.rerun:
        if not args.only:
            raise ConfigError("--rerun needs --only CELL ... (it deletes those runs)")
        for name in args.only:
            remove_run(root, grid.cell(name), results)
    if args.executor == "slurm":
        return _run_slurm(args, grid, root, results)
    gpus = tuple(g.strip() for g in args.gpus.split(",") if g.strip()) if args.gpus else ()
    workers = args.workers or (len(gpus) if gpus and not args.ddp else 1)
    opts = RunOptions(workers=workers, threads=args.threads, gpus=gpus, ddp=args.ddp,
                      checkpoint_every_steps=args.checkpoint_every or None, data_workers=args.data_workers)
    outcomes = run_grid(grid, root, results, opts, only=args.only)
    failed = [o for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(failed)} finished, {len(failed)} failed; records in {results}")
    for o in failed:
        print(f"  failed: {o.cell}: {o.message}  (log: {root / 'logs' / (o.cell + '.log')})")
    return 1 if failed else 0


def _run_slurm(args: argparse.Namespace, grid, root: Path, results: Path) -> int:
    from stdcl.experiment.runner import write_missing_records
    from stdcl.experiment.slurm import SlurmOptions, submit_grid
    from stdcl.experiment.status import plan

    write_missing_records(grid, root, results)
    todo = [r.cell.name for r in plan(grid, root, results=results) if r.status in ("new", "partial", "failed")
            and (args.only is None or r.cell.name in args.only)]
    opts = SlurmOptions(partition=args.partition, time_min=args.time, gpus_per_task=args.gpus_per_task,
                        cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, array_parallelism=args.array_parallelism,
                        account=args.account, qos=args.qos, constraint=args.constraint,
                        extra=tuple(args.slurm_option))
    jobs = submit_grid(args.grid, todo, root, results, opts)
    print(f"submitted {len(jobs)} task(s) of {grid.name}" + (f" as job {jobs[0].job_id.split('_')[0]}" if jobs else "")
          + f"; logs in {root / 'slurm'}; `stdcl experiment plan {args.grid}` shows progress")
    if args.wait:
        bad = 0
        for name, job in zip(todo, jobs):
            out = job.result()
            bad += not out.ok
            print(f"{'done' if out.ok else 'FAIL'}  {name}: {out.message}")
        return 1 if bad else 0
    return 0


def _collect(args: argparse.Namespace) -> int:
    from stdcl.experiment.runner import write_missing_records

    grid, root, results = _paths(args)
    written = write_missing_records(grid, root, results)
    print(f"{len(written)} record(s) written to {results}" + "".join(f"\n  {n}" for n in written))
    return 0


def _table(args: argparse.Namespace) -> int:
    from analysis.experiments import write_table_outputs
    from stdcl.experiment.records import read_records
    from stdcl.experiment.table import build_table, to_markdown

    grid, root, results = _paths(args)
    table = build_table(grid, read_records(results))
    fusion = None
    if args.fusion:
        from stdcl.experiment.fusion import fusion_table

        fusion = fusion_table(grid, read_records(results), results / "fusion")
    paths = write_table_outputs(table, args.out or results, fusion)
    print(to_markdown(table), end="")
    for s in table.skipped:
        print(f"left out: {s}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
