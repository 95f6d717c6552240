"""Experiments: grids of training runs (encoders x protocols x modalities x STD-CL on/off x seeds), run
locally, on several GPUs or on SLURM, resumable, each leaving a committed results record, and
aggregated over seeds with the paired STD-CL gain and its confidence interval."""

from stdcl.experiment.grid import Cell, Grid, cell_name, config_digest, load_grid

__all__ = ["Cell", "Grid", "cell_name", "config_digest", "load_grid"]
