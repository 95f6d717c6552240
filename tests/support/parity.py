"""What the four encoder test files share: fixtures, official weights, parity and interface checks.

- ``load_fixture`` / ``fixture_input`` / ``seeded_official``: the recorded official outputs
  (``tests/fixtures/encoders``), their seeded inputs, and seeded official-format weights
  (``tests.support.official_weights``) loaded through ``from_official``;
- checks that are the same for every encoder but for its name: names/shapes after loading,
  parameter counts, seeded-init statistics, one-line input errors, no device calls;
- ``GcnCase`` and ``GraphEncoderSuite``: 2s-AGCN and CTR-GCN share their fixture format and
  backbone, so the tests that differ only in the encoder are written once here, and each of
  their test files subclasses the suite (``class TestAGCN(GraphEncoderSuite): case = ...``).

``one_thread`` is an autouse, module-scoped fixture: a test module uses it by importing it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import pytest
import torch

from stdcl.data.graph import spatial_adjacency
from stdcl.data.layouts import layout_from_mapping
from stdcl.encoders import build_encoder
from stdcl.encoders.base import Encoder
from stdcl.encoders.official import from_official
from stdcl.errors import ConfigError
from tests.support.official_weights import seeded_input, seeded_state_dict, with_bn_stats
from tests.support.paths import FIXTURES as ALL_FIXTURES
from tests.support.paths import ROOT

FIXTURES = ALL_FIXTURES / "encoders"
ENCODER_SOURCES = ROOT / "stdcl" / "encoders"

#: (input shape, what its one-line error names) for an NW-UCLA model (ucla20, 1 person, window 52)
UCLA_BAD_INPUTS = [((2, 3, 52, 20), "rank 5"), ((2, 2, 52, 20, 1), "C=3"), ((2, 3, 52, 25, 1), "V=20"),
                   ((2, 3, 52, 20, 2), "M=1")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread for the module: tiny batches gain nothing from a second thread, and on a
    shared, oversubscribed machine OpenMP barriers made these files 3-5x slower with two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.cache
def load_fixture(name: str) -> dict:
    """``tests/fixtures/encoders/<name>.json``, read once per process (callers must not modify it)."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def fixture_input(fx: Mapping, seed: int | None = None) -> torch.Tensor:
    """The seeded input of shape ``fx["input_shape"]`` (seed ``fx["input_seed"]`` unless given)."""
    return seeded_input(tuple(fx["input_shape"]), fx["input_seed"] if seed is None else seed)


def seeded_official(kind: str, shapes: Mapping[str, Sequence[int]], weight_seed: int, prefix: str = "",
                    bn_stats: Mapping[str, str] | None = None, num_batches_tracked: int | None = None,
                    **build) -> Encoder:
    """Encoder ``kind`` from ``from_official`` with the seeded official weights for ``shapes``.

    Every key gets ``prefix`` (``"module."``: as DataParallel saves them); ``bn_stats`` (fixture
    format, see ``with_bn_stats``) replaces the seeded BatchNorm running statistics.
    """
    sd = seeded_state_dict(shapes, weight_seed)
    if bn_stats is not None:
        sd = with_bn_stats(sd, bn_stats, num_batches_tracked)
    return from_official(kind, {prefix + k: v for k, v in sd.items()}, **build)


def max_abs_error(out: torch.Tensor, ref) -> float:
    """``max |out - ref|``, ``ref`` (a tensor or a fixture's nested list) taken in ``out``'s dtype."""
    return (out - torch.as_tensor(ref, dtype=out.dtype)).abs().max().item()


class Fp32Fp64Parity(NamedTuple):
    y32: torch.Tensor  #: the fp32 logits
    ref32: torch.Tensor  #: the official fp32 logits
    err32: float  #: max |y32 - ref32|
    err64: float  #: max |y64 - official fp64 logits|
    scale: float  #: max |official fp64 logit|


def fp32_fp64_parity(model: torch.nn.Module, x: torch.Tensor, fx: Mapping) -> Fp32Fp64Parity:
    """Runs ``model`` on ``x`` in fp32, then in fp64 (the model stays fp64), without gradients, and
    compares with ``fx["logits_fp32"]`` / ``fx["logits_fp64"]``."""
    with torch.no_grad():
        y32 = model(x)
        y64 = model.double()(x.double())
    ref32, ref64 = torch.tensor(fx["logits_fp32"]), torch.tensor(fx["logits_fp64"], dtype=torch.float64)
    return Fp32Fp64Parity(y32, ref32, max_abs_error(y32, ref32), max_abs_error(y64, ref64), ref64.abs().max().item())


def assert_loaded_official(model: torch.nn.Module, shapes: Mapping[str, list[int]]) -> None:
    """``from_official`` left the model in eval mode with exactly the official names and shapes."""
    assert not model.training
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == shapes


def assert_parameter_count(model: torch.nn.Module, label: str, *expected: int) -> None:
    """The model has exactly as many parameters as each of ``expected`` says."""
    n = sum(p.numel() for p in model.parameters())
    print(f"{label}: {n:,} parameters (expected {', '.join(f'{e:,}' for e in expected)})")
    assert all(n == e for e in expected), (n, expected)


def assert_init_stats(model: torch.nn.Module, expected: Mapping[str, Sequence[float]], second: str,
                      rel: float) -> None:
    """Each state-dict tensor's fp64 ``[sum, sum of |x|]`` (``second="abs"``) or ``[sum, sum of x^2]``
    (``second="sq"``) equals ``expected[name]`` to ``rel`` (absolute 1e-9)."""
    for k, v in model.state_dict().items():
        v = v.double()
        got = [v.sum().item(), (v.abs() if second == "abs" else v.pow(2)).sum().item()]
        assert got == pytest.approx(expected[k], rel=rel, abs=1e-9), k


def assert_one_line_input_error(model: torch.nn.Module, shape: tuple[int, ...], needle: str) -> None:
    """A zero input of ``shape`` is refused by a one-line ``ConfigError`` naming ``needle`` and the shape."""
    with pytest.raises(ConfigError) as e:
        model(torch.zeros(shape))
    msg = str(e.value)
    assert "\n" not in msg and needle in msg and str(tuple(shape)) in msg, msg


def assert_no_device_calls(*files: str, needles: Sequence[str] = (".cuda(",)) -> None:
    """None of ``needles`` occurs in the named ``stdcl/encoders`` sources."""
    for name in files:
        src = (ENCODER_SOURCES / name).read_text()
        for needle in needles:
            assert needle not in src, (name, needle)


# --- 2s-AGCN and CTR-GCN ----------------------------------------------------------------------

#: a small custom layout for the GCN encoders (6 joints, used with 2-D input)
GCN_MINI = layout_from_mapping({
    "name": "mini6", "joints": ["pelvis", "spine", "head", "l_hand", "r_hand", "foot"],
    "edges": [["spine", "pelvis"], ["head", "spine"], ["l_hand", "spine"], ["r_hand", "spine"],
              ["foot", "pelvis"]], "center": "pelvis"})
GCN_SETTINGS = ["ntu60", "ucla"]


@dataclass(frozen=True)
class GcnCase:
    """A GCN encoder and its fixtures ``<kind>_official.json`` (seeded weights, logits, init) and
    ``<kind>_official_calibrated.json`` (the same weights with calibrated BN statistics)."""

    kind: str
    other: str  #: the other GCN encoder, whose official weights must not load into this one
    official_params: Mapping[str, int]  #: per setting, measured on the official model

    LAYOUT = {"ntu60": ("ntu25", 64), "ucla": ("ucla20", 52)}  # (layout, window) per setting

    @property
    def fx(self) -> dict:
        return load_fixture(f"{self.kind}_official")

    @property
    def cal(self) -> dict:
        """The same seeded weights with the official model's BN running statistics calibrated on data."""
        return load_fixture(f"{self.kind}_official_calibrated")

    def build(self, setting: str, **kw) -> Encoder:
        s = self.fx["settings"][setting]
        layout, window = self.LAYOUT[setting]
        return build_encoder(self.kind, s["num_class"], layout=layout, num_person=s["num_person"], window=window,
                             **kw)

    def official(self, setting: str, prefix: str = "", calibrated: bool = False) -> Encoder:
        s = self.fx["settings"][setting]
        layout, window = self.LAYOUT[setting]
        stats = dict(bn_stats=self.cal["settings"][setting]["bn_stats"],
                     num_batches_tracked=len(self.cal["calibration"]["input_seeds"])) if calibrated else {}
        return seeded_official(self.kind, s["state_dict"], self.fx["weight_seed"], prefix, **stats,
                               num_classes=s["num_class"], layout=layout, num_person=s["num_person"], window=window)

    def seeded_init(self) -> Encoder:
        """The NTU model built after ``torch.manual_seed(0)``; its state dict's names (in order) and
        per-tensor [sum, sum of squares] are checked against the official init."""
        init = self.fx["settings"]["ntu60"]["init_seed0"]
        torch.manual_seed(0)
        model = self.build("ntu60")
        assert list(model.state_dict()) == list(init["stats"])
        assert_init_stats(model, init["stats"], "sq", rel=1e-8)
        return model

    def init_logit_error(self, model: Encoder) -> tuple[float, float]:
        """(max |logits - official| in eval mode, max |official logit|) for the seeded-init model."""
        init = self.fx["settings"]["ntu60"]["init_seed0"]
        model.eval()
        x = fixture_input(self.fx["settings"]["ntu60"], self.fx["input_seed"])
        ref = torch.tensor(init["logits_fp32"])
        with torch.no_grad():
            err = max_abs_error(model(x), ref)
        return err, ref.abs().max().item()


def gcn_mini_model(kind: str) -> tuple[Encoder, torch.Tensor]:
    """``kind`` on ``GCN_MINI`` with 2-D input (seed 0, eval mode) and the layout's (3, V, V) adjacency."""
    torch.manual_seed(0)
    model = build_encoder(kind, 4, layout=GCN_MINI, in_channels=2, num_person=1, window=20).eval()
    return model, torch.from_numpy(spatial_adjacency(GCN_MINI)).float()


def assert_mini_model_runs(model: Encoder) -> None:
    """The ``gcn_mini_model`` classifies a batch and its feature shape follows the window."""
    with torch.no_grad():
        out = model(torch.randn(2, 2, 20, 6, 1))
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    assert model.feature_shape(21) == (256, 6, 6)


def gcn_relations(kind: str) -> tuple[Encoder, torch.Tensor, list[torch.Tensor]]:
    """An NTU ``kind`` model (seed 0, train mode), a batch whose sample 1 has one actor, and its
    ``joint_relations``: checked to keep the training flag and BN statistics, one finite (25, 25)
    map per block."""
    torch.manual_seed(0)
    model = build_encoder(kind, 60, window=16)
    model.train()
    x = torch.randn(2, 3, 16, 25, 2)
    x[1, ..., 1] = 0  # sample 1 has one actor
    bn_before = model.l3.gcn1.bn.running_mean.clone()
    rel = model.joint_relations(x)
    assert model.training and torch.equal(model.l3.gcn1.bn.running_mean, bn_before)
    assert len(rel) == 10 and all(r.shape == (25, 25) and torch.isfinite(r).all() for r in rel)
    return model, x, rel


def assert_absent_actor_left_out(model: Encoder, x: torch.Tensor, rel: list[torch.Tensor]) -> None:
    """The batch average of the first block's map covers the three present persons of four."""
    model.eval()
    with torch.no_grad():
        per = model._block_relation(model.l1, model._embed(x))  # (N*M, V, V), n-major
    torch.testing.assert_close(rel[0], per[[0, 1, 2]].mean(0))


class GraphEncoderSuite:
    """The 2s-AGCN / CTR-GCN tests that differ only in the encoder.

    Not collected here (no ``Test`` prefix): each encoder's test file subclasses it as
    ``Test<Name>`` with ``case`` set to its :class:`GcnCase`.
    """

    case: GcnCase

    @pytest.mark.parametrize("setting", GCN_SETTINGS)
    def test_state_dict_and_parameter_count_match_official(self, setting: str) -> None:
        model = self.case.build(setting)
        fx = self.case.fx["settings"][setting]
        assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == list(fx["state_dict"].items())
        assert_parameter_count(model, f"{self.case.kind} {setting}", fx["param_count"],
                               self.case.official_params[setting])

    @pytest.mark.parametrize("setting", GCN_SETTINGS)
    def test_official_parity(self, setting: str) -> None:
        """Seeded official weights: fp64 logits agree to < 1e-4; fp32 to 1e-4 of the logit scale.

        These weights are not trained, so activations grow to ~1e4 by ``l10`` and the logits
        to ~3e3-4e3, where one fp32 ulp is 2.4e-4: an absolute 1e-4 bound is only meaningful
        in fp64.
        """
        kind, fx = self.case.kind, self.case.fx["settings"][setting]
        model = self.case.official(setting)
        prefixed = self.case.official(setting, prefix="module.")
        assert not model.training
        for (k, a), (k2, b) in zip(model.state_dict().items(), prefixed.state_dict().items()):
            assert k == k2 and torch.equal(a, b)
        r = fp32_fp64_parity(model, fixture_input(fx, self.case.fx["input_seed"]), fx)
        print(f"{kind} {setting}: max |logits - official| fp64 {r.err64:.2e}, fp32 {r.err32:.2e} "
              f"(logit scale {r.scale:.0f})")
        assert r.y32.dtype == torch.float32 and r.y32.shape == r.ref32.shape
        assert r.err64 < 1e-4
        assert r.err32 < 1e-4 * max(1.0, r.scale)

    @pytest.mark.parametrize("setting", GCN_SETTINGS)
    def test_official_parity_fp32_calibrated_bn(self, setting: str) -> None:
        """fp32 logits equal the official model's within an absolute 1e-4 at a trained model's scale.

        Same seeded weights, but every BatchNorm's running statistics are the official model's,
        calibrated on seeded data (``calibrate_batchnorm``), so activations stay O(1) and the
        logits are of order 1-10 as for a trained model.
        """
        kind, fx, cal = self.case.kind, self.case.fx["settings"][setting], self.case.cal["settings"][setting]
        assert self.case.cal["weight_seed"] == self.case.fx["weight_seed"]
        model = self.case.official(setting, calibrated=True)
        assert not model.training
        r = fp32_fp64_parity(model, fixture_input(cal, self.case.cal["input_seed"]), cal)
        print(f"{kind} {setting} calibrated BN: max |logits - official| fp32 {r.err32:.2e}, fp64 {r.err64:.2e} "
              f"(max |logit| {r.scale:.2f})")
        assert r.y32.dtype == torch.float32 and r.y32.shape == r.ref32.shape == (2, fx["num_class"])
        assert 1.0 < r.scale < 30.0  # a realistic scale, not the seeded statistics' 1e3
        assert r.err32 < 1e-4
        assert r.err64 < 1e-8

    @pytest.mark.parametrize("layout, persons, window, t_out", [("ntu25", 2, 64, 16), ("ntu25", 2, 300, 75),
                                                               ("ntu25", 2, 20, 5), ("ucla20", 1, 52, 13)])
    def test_feature_map_shape(self, layout: str, persons: int, window: int, t_out: int) -> None:
        torch.manual_seed(0)
        model = build_encoder(self.case.kind, 7, layout=layout, num_person=persons, window=window).eval()
        v = 25 if layout == "ntu25" else 20
        assert model.feature_shape() == (256, t_out, v) == model.feature_shape(window)
        with torch.no_grad():
            f = model.features(torch.randn(1, 3, window, v, persons))
            logits = model.classify(f)
        assert f.map.shape == (1, persons, 256, t_out, v) and logits.shape == (1, 7)

    def test_bad_inputs_are_one_line_errors(self) -> None:
        model = build_encoder(self.case.kind, 10, layout="ucla20", num_person=1, window=52)
        for shape, expected in UCLA_BAD_INPUTS:
            assert_one_line_input_error(model, shape, expected)
        with pytest.raises(ConfigError, match="unknown option"):
            build_encoder(self.case.kind, 10, dropout=0.5)

    def test_wrong_official_state_dicts_are_one_line_errors(self) -> None:
        kind = self.case.kind
        other = seeded_state_dict(load_fixture(f"{self.case.other}_official")["settings"]["ntu60"]["state_dict"])
        with pytest.raises(ConfigError) as e:
            from_official(kind, other, num_classes=60)
        assert "\n" not in str(e.value) and "keys (e.g. 'l1.gcn1." in str(e.value)
        sd = seeded_state_dict(self.case.fx["settings"]["ntu60"]["state_dict"])
        with pytest.raises(ConfigError) as e:
            from_official(kind, sd, num_classes=120)
        assert "\n" not in str(e.value) and "'fc.weight' has shape (60, 256), expected (120, 256)" in str(e.value)
        with pytest.raises(ConfigError, match=r"'data_bn.weight' has shape \(150,\), expected \(60,\)"):
            from_official(kind, sd, num_classes=60, layout="ucla20", num_person=1)

    def test_trains_and_runs_under_bf16_autocast(self) -> None:
        torch.manual_seed(0)
        model = build_encoder(self.case.kind, 10, layout="ucla20", num_person=1, window=16)
        x = torch.randn(2, 3, 16, 20, 1)
        model(x).logsumexp(1).sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        model.eval()
        with torch.no_grad():
            ref = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = model(x)
        err = (low.float() - ref).abs().max().item()
        print(f"{self.case.kind} bf16 autocast: max |diff| {err:.3f}, logit scale {ref.abs().max().item():.2f}")
        assert low.dtype == torch.bfloat16 and torch.isfinite(low).all() and err < 0.05 * ref.abs().max().item() + 0.05
        model.train()
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x[:, :, :8]).float().logsumexp(1).sum()
        loss.backward()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
                   for p in model.parameters())

    def test_blocks_compile_without_graph_breaks(self) -> None:
        """Whole-model tracing takes too long for a unit test; each kind of block is traced instead."""
        torch.manual_seed(0)
        model = build_encoder(self.case.kind, 10, layout="ucla20", num_person=1, window=8).eval()
        with torch.no_grad():
            for block, c_in in ((model.l2, 64), (model.l5, 64)):  # identity / strided conv residual (+ ``down``)
                h = torch.randn(2, c_in, 8, 20)
                compiled = torch.compile(block, backend="eager", fullgraph=True)
                torch.testing.assert_close(compiled(h), block(h), rtol=0, atol=0)
        torch._dynamo.reset()

    def test_no_device_calls_in_source(self) -> None:
        assert_no_device_calls(f"{self.case.kind}.py", "gcn_blocks.py")
