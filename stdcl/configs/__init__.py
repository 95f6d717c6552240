"""Packaged training configs (YAML): ``base.yaml``, one file per dataset protocol and an
``encoder/<name>.yaml`` overlay per encoder. Merged by :mod:`stdcl.train.config`."""
