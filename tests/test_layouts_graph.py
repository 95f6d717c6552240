import numpy as np
import pytest

from stdcl.data.graph import hop_distance, spatial_adjacency
from stdcl.data.layouts import NTU25, UCLA20, get_layout, layout_from_mapping, load_layout_file
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
    ("name: x\njoints: [a, a]\nedges: []\ncenter: a\n", "not unique"),
    ("[1, 2", "not valid YAML"),
])
def test_bad_layout_files(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_layout_file(p)
    assert message in str(e.value) and "bad.yaml" in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_layout_name():
    with pytest.raises(ConfigError, match="unknown layout 'nope'"):
        get_layout("nope")
