"""Internals of the synthetic teaching set; the public entry point is :mod:`stdcl.data.synthetic`.

- :mod:`.body`: ``ntu25`` bone tree, bone lengths, forward / inverse kinematics;
- :mod:`.actions`: the 13 motions and the class table (twins and their metadata);
- :mod:`.generator`: subjects, per-sample variation, camera, noise, dropped frames, split.
"""

from stdcl.data.synth.actions import CLASSES, ActionClass, class_meta, class_names
from stdcl.data.synth.generator import DEFAULT_NUM_SAMPLES, NUM_CLASSES, default_test_subjects, synthesize

__all__ = ["CLASSES", "DEFAULT_NUM_SAMPLES", "NUM_CLASSES", "ActionClass", "class_meta", "class_names",
           "default_test_subjects", "synthesize"]
