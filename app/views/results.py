"""Results: an experiment grid's table and curves; a row and seed open their runs as models A and B."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from analysis.experiments import curves_figure, open_results, row_label, run_pair
from app import state
from stdcl.experiment.table import to_csv, to_markdown, to_rows

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
OTHER = "another grid file…"
RECORDS_ONLY = "a results folder only"


def _grid_choice() -> tuple[str | None, str | None]:
    """(grid file or None, results folder or None) as the user chose them."""
    files = sorted(EXPERIMENTS.glob("*.yaml")) if EXPERIMENTS.is_dir() else []
    options = [f.name for f in files] + [OTHER, RECORDS_ONLY]
    recorded = [i for i, f in enumerate(files) if (ROOT / "results" / f.stem / "records").is_dir()]
    pick = st.selectbox("Grid", options, key="results_grid", index=recorded[0] if recorded else 0,
                        help="Grid files of `experiments/`; `stdcl experiment run GRID` writes their records.")
    grid: str | None
    if pick == OTHER:
        grid = st.text_input("Grid file", key="results_grid_path", placeholder="path/to/grid.yaml").strip() or None
        if grid is None:
            st.info("Type the path of a grid file.")
            st.stop()
    elif pick == RECORDS_ONLY:
        grid = None
    else:
        grid = str(EXPERIMENTS / pick)
    folder = st.text_input("Results folder (empty: the grid's own, `results/<grid name>`)", key="results_folder",
                           placeholder="results/<grid name>").strip() or None
    if grid is None and folder is None:
        st.info("Type the results folder (it holds `records/*.json`).")
        st.stop()
    return grid, folder


def _table(res) -> None:
    table = res.table
    st.caption(f"{len(table.rows)} row(s) from the records in `{res.results}`"
               + (f"; runs in `{res.runs}`" if res.runs else "") + ".")
    if res.note:
        st.warning(res.note)
    if not table.rows:
        st.info(f"No records yet in `{res.results}/records`: run `stdcl experiment run` on the grid first.")
        st.stop()
    shown = [{"row": row_label(r)} | {k: (round(100 * v, 2) if isinstance(v, float) else v)
                                       for k, v in flat.items() if k not in r.key}
             for r, flat in zip(table.rows, to_rows(table))]
    st.dataframe(shown, hide_index=True, width="stretch", key="results_table")
    st.caption("Test top-1 in %; gain = STD-CL minus baseline paired by seed, with its 95 % t-interval "
               "(`ci_low` / `ci_high`) and n. Final = last epoch; best = the epoch chosen on validation.")
    if table.missing:
        st.caption(f"Not finished yet: {len(table.missing)} run(s): {', '.join(table.missing[:8])}"
                   f"{' …' if len(table.missing) > 8 else ''}.")
    for s in table.skipped:
        st.caption(f"Left out: {s}")
    c1, c2 = st.columns(2)
    c1.download_button("Download table.md", to_markdown(table), file_name=f"{table.grid}.md", mime="text/markdown")
    c2.download_button("Download table.csv", to_csv(table), file_name=f"{table.grid}.csv", mime="text/csv")
    st.plotly_chart(curves_figure(table), width="stretch", key="results_curves")


def _grid_arg(res) -> str:
    """The grid file as `stdcl experiment run` takes it (relative to the repository when inside; ``GRID`` if unknown)."""
    if res.grid is None or res.grid.path is None:
        return "GRID"
    path = Path(res.grid.path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _open_pair(res) -> None:
    st.subheader("Open a cell in the analysis pages")
    rows = {row_label(r): r for r in res.table.rows if r.cells.get("on")}
    if not rows:
        st.info("No row has STD-CL runs to open.")
        return
    label = st.selectbox("Row", list(rows), key="results_row")
    row = rows[label]
    seeds = sorted(row.cells.get("on", {}), key=lambda s: (len(s), s))
    seed = st.selectbox("Seed", seeds, key="results_seed")
    pair = run_pair(row, seed, res.runs)
    cells = {arm: row.cells.get(arm, {}).get(seed) for arm in ("on", "off")}
    gone = [cells[a] for a in ("on", "off") if cells[a] and pair[a] is None]
    if cells["off"] is None:
        st.caption("This seed has no baseline run: B stays as it is.")
    if gone:
        st.info(f"Run director{'y' if len(gone) == 1 else 'ies'} deleted; only the record is kept: "
                f"{', '.join(gone)}. Rerun with `stdcl experiment run {_grid_arg(res)} --only {' '.join(gone)}`.")
    ready = pair["on"] is not None and not gone
    st.caption(f"A = STD-CL run `{cells['on']}`" + (f", B = baseline run `{cells['off']}`" if cells["off"] else ""))
    if st.button("Open in the analysis pages", key="results_open", type="primary", disabled=not ready):
        extra = dict(st.session_state.get("extra_models", {}))
        labels = {}
        for arm in ("on", "off"):
            if pair[arm] is not None:
                labels[arm] = f"results ({res.table.grid}): {cells[arm]}"
                extra[labels[arm]] = str(pair[arm])
        st.session_state["extra_models"] = extra
        st.session_state["model_a"] = labels["on"]
        if "off" in labels:
            st.session_state["model_b"] = labels["off"]
        st.switch_page("views/embeddings.py")


st.title("Results: experiment grids")
st.markdown("A grid's runs, aggregated from their results records: mean ± sd over seeds and the paired "
            "STD-CL gain with its 95 % interval, test accuracy per epoch, and any cell's runs opened as "
            "A (STD-CL) and B (its baseline).")
grid_file, folder = _grid_choice()
with state.guard():
    res = open_results(grid_file, folder)
_table(res)
_open_pair(res)
