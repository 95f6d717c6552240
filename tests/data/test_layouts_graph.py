from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stdcl.data.graph import hop_distance, spatial_adjacency
from stdcl.data.layouts import (COCO17, NTU25, UCLA20, available_layouts, get_layout, layout_from_mapping,
                                load_layout_file)
from stdcl.errors import ConfigError


def reference_adjacency(inward_1based, v):
    """Independent re-derivation of the CTR-GCN graph (edge (i, j) -> A[j, i] = 1, A @ D^-1)."""
    def mat(edges):
        a = np.zeros((v, v))
        for i, j in edges:
            a[j, i] = 1
        d = a.sum(0)
        return a / np.where(d > 0, d, 1)[None, :]

    inward = [(i - 1, j - 1) for i, j in inward_1based]
    outward = [(j, i) for i, j in inward]
    return np.stack([np.eye(v), mat(inward), mat(outward)])


NTU_EDGES = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
             (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23),
             (23, 8), (24, 25), (25, 12)]


def test_ntu_adjacency_sums_and_centre_column():
    a = spatial_adjacency("ntu25")
    assert a.shape == (3, 25, 25) and a.dtype == np.float64
    np.testing.assert_array_equal(a[0], np.eye(25))
    assert a[1].sum() == pytest.approx(24.0)
    assert a[2].sum() == pytest.approx(20.0)
    # centre = joint 21 (spine shoulder): no parent, so an empty inward column;
    # its four children (2, 3, 5, 9) share its outward column equally.
    assert NTU25.center == 20
    np.testing.assert_array_equal(a[1][:, 20], np.zeros(25))
    expected = np.zeros(25)
    expected[[1, 2, 4, 8]] = 0.25
    np.testing.assert_array_equal(a[2][:, 20], expected)
    np.testing.assert_allclose(a, reference_adjacency(NTU_EDGES, 25))


def test_ucla_adjacency_sums_and_centre_column():
    a = spatial_adjacency(UCLA20)
    assert a.shape == (3, 20, 20)
    assert a[1].sum() == pytest.approx(19.0)
    assert a[2].sum() == pytest.approx(15.0)
    # centre = joint 3 (shoulder centre): children 2, 4, 5, 9 (1-based)
    expected = np.zeros(20)
    expected[[1, 3, 4, 8]] = 0.25
    np.testing.assert_array_equal(a[2][:, 2], expected)
    np.testing.assert_array_equal(a[1][:, 2], np.zeros(20))


def test_bone_pairs_match_reference_feeders():
    ntu_pairs = {(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
                 (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
                 (20, 19), (22, 23), (21, 21), (23, 8), (24, 25), (25, 12)}
    assert {(a + 1, b + 1) for a, b in NTU25.bone_pairs} == ntu_pairs
    assert (3 - 1, 3 - 1) in UCLA20.bone_pairs and len(UCLA20.bone_pairs) == 20


def test_layout_trees_and_groups():
    for lay in (NTU25, UCLA20, get_layout("coco17")):
        par = lay.parents
        assert par[lay.center] == -1 and (par >= 0).sum() == lay.num_joints - 1
    assert NTU25.groups == (0, 4, 2, 2, 2, 2, 1, 1, 2, 2, 1, 1, 2, 3, 3, 3, 2, 3, 3, 3, 1, 0, 1, 0, 1)
    assert UCLA20.groups == (0,) * 4 + (1,) * 8 + (2,) * 8


def test_hop_distance():
    d = hop_distance("ntu25")
    assert d[0, 0] == 0 and d[0, 1] == 1 and d[0, 20] == 2
    assert d[3, 7] == d[7, 3] == 6  # head-neck-spine shoulder-L shoulder-elbow-wrist-hand
    assert np.isinf(hop_distance("ntu25", max_hop=2)[0, 3])


def test_custom_layout_yaml(tmp_path):
    p = tmp_path / "mini.yaml"
    p.write_text("name: mini\njoints: [pelvis, spine, head, l_hand, r_hand]\n"
                 "edges: [[spine, pelvis], [head, spine], [l_hand, spine], [r_hand, spine]]\n"
                 "center: pelvis\norigin: spine\ngroups: {trunk: [pelvis, spine, head], arms: [l_hand, r_hand]}\n")
    lay = get_layout(str(p))
    assert lay.num_joints == 5 and lay.center == 0 and lay.origin == 1
    assert lay.groups == (0, 0, 0, 1, 1)
    assert lay.bone_pairs[-1] == (0, 0)
    a = spatial_adjacency(lay)
    assert a[1].sum() == pytest.approx(4.0) and a[2].sum() == pytest.approx(2.0)
    assert layout_from_mapping(lay.to_mapping()) == lay


@pytest.mark.parametrize("text, message", [
    ("name: x\njoints: [a, b]\nedges: [[a, c]]\ncenter: a\n", "unknown joint 'c'"),
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\n", "'center'"),
    ("name: x\njoints: [a, a]\nedges: []\ncenter: a\n", "joint name 'a' appears twice"),
    # the bone tree: one tree rooted at the centre
    ("name: x\njoints: [a, b, c]\nedges: [[b, a]]\ncenter: a\n", "not connected: 'c' has no parent"),
    ("name: x\njoints: [a, b, c]\nedges: [[b, c], [c, b]]\ncenter: a\n", "cycle (b -> c -> b)"),
    ("name: x\njoints: [a, b, c]\nedges: [[b, a], [c, a], [a, b]]\ncenter: a\n", "cannot have a parent"),
    ("name: x\njoints: [a, b, c]\nedges: [[b, a], [b, c], [c, a]]\ncenter: a\n", "'b' has two parents"),
    ("name: x\njoints: [a, b]\nedges: [[b, a, a]]\ncenter: a\n", "list of [child, parent] pairs"),
    ("name: x\njoints: [a, b]\nedges: 5\ncenter: a\n", "list of [child, parent] pairs"),
    # groups
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\ncenter: a\ngroups: {g: 3}\n", "group 'g' must list its joints"),
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\ncenter: a\ngroups: {g: [a, b], h: [b]}\n", "'b' is in two groups"),
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\ncenter: a\ngroups: {g: [a]}\n", "'b' is in no group"),
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\ncenter: a\ngroups: [0, x]\n", "'groups' must map"),
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\ncenter: a\ngroups: [0, -1]\n", "'groups' must map"),
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\ncenter: a\ngroups: [0]\n", "'groups' must map"),
    # other fields
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\ncenter: a\nnum_person: two\n", "'num_person' must be an integer"),
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\ncenter: a\nnum_person: 0\n", "num_person 0 is outside"),
    ("name: x\njoints: [a, {b: 1}]\nedges: []\ncenter: a\n", "'joints' must be a non-empty list of names"),
    ("name: [x]\njoints: [a, b]\nedges: [[b, a]]\ncenter: a\n", "'name' must be a non-empty string"),
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\ncenter: true\n", "True is not a joint name"),
    ("name: x\njoints: [a, b]\nedges: [[b, a]]\ncenter: a\nbone_pairs: [[a, 7]]\n", "7 is not a joint name"),
    ("[1, 2", "not valid YAML"),
    ("name: x\njoints: [a, b]\nbones: [[b, a]]\ncenter: a\n", "unknown key(s) bones; known: bone_pairs, center, edges"),
])
def test_bad_layout_files(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_layout_file(p)
    assert message in str(e.value) and "bad.yaml" in str(e.value)
    assert "\n" not in str(e.value)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.data())
def test_layout_mutations_give_a_layout_or_a_config_error(data):
    """Random field deletions, type swaps and edits of a valid layout: a checked Layout or ConfigError."""
    spec = NTU25.to_mapping() if data.draw(st.booleans()) else COCO17.to_mapping()
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 30), st.floats(allow_nan=True),
                        st.text(max_size=3), st.sampled_from(list(spec["joints"])))
    values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=2), inner, max_size=3)),
                          max_leaves=8)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(spec)))
        action = data.draw(st.sampled_from(["delete", "replace", "edit"]))
        if action == "delete":
            spec.pop(key, None)
        elif action == "replace" or not isinstance(spec.get(key), list) or not spec[key]:
            spec[key] = data.draw(values)
        else:
            items = list(spec[key])
            items[data.draw(st.integers(0, len(items) - 1))] = data.draw(values)
            spec[key] = items
    try:
        lay = layout_from_mapping(spec)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    par = lay.parents  # a valid layout is a tree rooted at its centre
    assert par[lay.center] == -1 and (par >= 0).sum() == lay.num_joints - 1
    assert layout_from_mapping(lay.to_mapping()) == lay


def test_shipped_and_experiment_layouts_are_trees():
    for name in available_layouts():
        lay = get_layout(name)
        assert (lay.parents >= 0).sum() == lay.num_joints - 1
    for path in sorted(Path("experiments/layouts").glob("*.yaml")):
        assert load_layout_file(path).num_joints >= 2


def test_unknown_layout_name():
    with pytest.raises(ConfigError, match="unknown layout 'nope'"):
        get_layout("nope")
