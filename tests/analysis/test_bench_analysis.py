"""The table ``stdcl bench analysis`` prints: every measured figure in its column, '-' where a step did
not run, and the verdicts against the targets."""

from __future__ import annotations

from analysis.bench import TARGETS, format_table


def _row(size: int, **extra) -> dict:
    row = {"size": size, "samples": size + 2, "embed_s": 1.5, "embed_cached_s": 0.01, "umap_spatial_s": 2.0,
           "umap_temporal_s": 6.25, "umap_cached_s": 0.02, "pca_s": 0.05, "metrics_s": 2.5, "figure_s": 0.4,
           "figure_mb": 6.4}
    return row | extra


def test_table_columns_and_verdicts():
    rows = [_row(2000, umap_cold_s=11.0), _row(10000),
            _row(50000, paint_first_s=9.0, paint_warm_s=2.5, highlight_s=0.75, select_s=1.75, selected=900,
                 runs=1)]
    text = format_table(rows)
    lines = text.splitlines()
    head = lines[1].split()
    assert head[:4] == ["samples", "embed", "cached", "UMAP"]
    first, second, third = (line.split() for line in lines[2:5])
    assert first[0] == "2,002" and first[3] == "11.00" and second[3] == "-"  # the JIT fit: once
    assert third[-4:] == ["9.00", "2.50", "0.75", "1.75"] and second[-4:] == ["-", "-", "-", "-"]
    assert "6.4" in third
    assert (f"UMAP at 10,002: 6.25 s for the slower space (target < {TARGETS['umap_warm_10k_s']:.0f} s: MISSED); "
            "all metrics 2.50 s (target < 3 s: met)") in text
    assert "the page at 50,002 points: paints in 2.50 s warm (target < 3 s: met), a box selection is shown in " \
           "both views in 0.75 s (target < 1 s: met; the page's rerun done at 1.75 s)" in text


def test_table_without_the_large_sizes_has_no_verdict():
    text = format_table([_row(500)])
    assert "target" not in text and len(text.splitlines()) == 3
