"""Training, evaluation, export and score fusion (``stdcl train | eval | export | ensemble``).

Modules: :mod:`~stdcl.train.config` (YAML layers and overrides), :mod:`~stdcl.train.engine`
(the loop, NaN stop) with :mod:`~stdcl.train.device` (device, precision, determinism),
:mod:`~stdcl.train.model_build` (the model, ``init_from``, DDP), :mod:`~stdcl.train.objective`
(CE + contrastive), :mod:`~stdcl.train.checkpointing` (saving, resuming) and
:mod:`~stdcl.train.metering` (metrics, TensorBoard, log lines), :mod:`~stdcl.train.optim`
(optimiser, lr schedule),
:mod:`~stdcl.train.data` and :mod:`~stdcl.train.splits` (datasets, validation carving,
sampler), :mod:`~stdcl.train.state` (the resume state), :mod:`~stdcl.train.distributed`
(torchrun, synchronised BatchNorm), :mod:`~stdcl.train.run_dir` (run directory layout),
:mod:`~stdcl.train.evaluate` (``stdcl eval``), :mod:`~stdcl.train.export` (``stdcl export``),
:mod:`~stdcl.train.ensemble` (``stdcl ensemble``) and :mod:`~stdcl.train.bench`
(``stdcl bench train-step``).
"""
