"""Tests for tem_core.structure: readers, assemblies, hydrogens, errors, fetch cache."""

from __future__ import annotations

import gzip
import io
import math
import shutil
import urllib.request
import warnings
from pathlib import Path

import pytest
import torch

from tem_core import structure
from tem_core.structure import (
    AtomicModel,
    assembly_operators,
    expand_assembly,
    fetch_pdb,
    helical_operators,
    read_structure,
)

DATA = Path(__file__).parents[1] / "data"

# Three ATOM records of crambin (1CRN), used to build small files.
CRN_LINES = [
    "ATOM      1  N   THR A   1      17.047  14.099   3.625  1.00 13.79           N  ",
    "ATOM      2  CA  THR A   1      16.967  12.784   4.338  1.00 10.80           C  ",
    "ATOM      3  C   THR A   1      15.685  12.755   5.133  1.00  9.19           C  ",
]


def _pdb_line(
    serial,
    name,
    resname,
    seq,
    x,
    y,
    z,
    occ=1.0,
    b=20.0,
    element="C",
    altloc=" ",
    record="ATOM  ",
    chain="A",
):
    return (
        f"{record}{serial:5d} {name:<4}{altloc}{resname:>3} {chain}{seq:4d}    "
        f"{x:8.3f}{y:8.3f}{z:8.3f}{occ:6.2f}{b:6.2f}          {element:>2}  "
    )


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\nEND\n")
    return path


# ----------------------------------------------------------------------------- reading


def test_read_crambin_counts_and_values():
    assert read_structure(DATA / "1crn.pdb.gz").positions_a.dtype == torch.float32  # default
    model = read_structure(DATA / "1crn.pdb.gz", dtype=torch.float64)
    # 1CRN (RCSB): 327 atoms, C 202, N 55, O 64, S 6 (no hydrogens, no waters).
    assert len(model) == 327
    counts = {z: int((model.atomic_numbers == z).sum()) for z in (6, 7, 8, 16)}
    assert counts == {6: 202, 7: 55, 8: 64, 16: 6}
    assert model.name == "1crn"
    assert model.positions_a.dtype == torch.float64
    torch.testing.assert_close(
        model.positions_a[0], torch.tensor([17.047, 14.099, 3.625], dtype=torch.float64)
    )
    assert model.b_factors_a2[0].item() == pytest.approx(13.79)
    assert model.occupancies[0].item() == 1.0


def test_read_mmcif_4v1w():
    model = read_structure(DATA / "4v1w.cif.gz", dtype=torch.float64)
    # 4V1W horse spleen apoferritin 24-mer, mmCIF: 32,736 atoms, first atom N of SER A 2.
    assert len(model) == 32_736
    assert int(model.atomic_numbers[0]) == 7
    torch.testing.assert_close(
        model.positions_a[0], torch.tensor([106.801, 35.728, 111.280], dtype=torch.float64)
    )
    assert model.b_factors_a2[0].item() == pytest.approx(145.47)
    ops = assembly_operators(DATA / "4v1w.cif.gz")
    torch.testing.assert_close(ops, torch.eye(3, 4, dtype=torch.float64)[None])


def test_read_apoferritin_6z6u_with_ions():
    model = read_structure(DATA / "6z6u.pdb.gz")
    # 6Z6U human apoferritin 24-mer (already expanded): 32,618 atoms incl. 24 Na and 2 Mg
    assert len(model) == 32_618
    assert int((model.atomic_numbers == 11).sum()) == 24
    assert int((model.atomic_numbers == 12).sum()) == 2


def test_dtype_device_and_name_options():
    model = read_structure(DATA / "1crn.pdb.gz", dtype=torch.float32, name="crambin")
    assert model.positions_a.dtype == torch.float32 and model.name == "crambin"
    assert model.atomic_numbers.dtype == torch.int64


def test_model_index_2om3():
    first = read_structure(DATA / "2om3.pdb.gz")
    last = read_structure(DATA / "2om3.pdb.gz", model_index=4)
    assert len(first) == len(last) == 1279
    assert not torch.equal(first.positions_a, last.positions_a)
    with pytest.raises(ValueError, match="model_index 5 out of range.*5 model"):
        read_structure(DATA / "2om3.pdb.gz", model_index=5)


def test_waters_kept_or_dropped():
    # 1UBQ: 602 protein atoms + 58 water oxygens.
    assert len(read_structure(DATA / "1ubq.pdb.gz")) == 660
    assert len(read_structure(DATA / "1ubq.pdb.gz", keep_waters=False)) == 602


def test_altlocs_keep_highest_occupancy(tmp_path):
    lines = [
        _pdb_line(1, "CA", "SER", 1, 0.0, 0.0, 0.0),
        _pdb_line(2, "CB", "SER", 1, 1.0, 0.0, 0.0, occ=0.3, altloc="A"),
        _pdb_line(3, "CB", "SER", 1, 2.0, 0.0, 0.0, occ=0.7, altloc="B"),
        _pdb_line(4, "OG", "SER", 1, 3.0, 0.0, 0.0, occ=0.5, altloc="A", element="O"),
        _pdb_line(5, "OG", "SER", 1, 4.0, 0.0, 0.0, occ=0.5, altloc="B", element="O"),
        _pdb_line(6, "C", "SER", 1, 5.0, 0.0, 0.0, occ=0.6, altloc="A"),
    ]
    model = read_structure(_write(tmp_path, "alt.pdb", lines))
    assert len(model) == 4
    x = model.positions_a[:, 0].tolist()
    assert x == [0.0, 2.0, 3.0, 5.0]  # CB from B (0.7 > 0.3); OG tie -> first (A)
    # kept conformer carries the summed occupancy, so scattering mass is preserved
    assert model.occupancies.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.6])


def test_hydrogen_options(tmp_path):
    lines = [
        _pdb_line(1, "N", "ALA", 1, 0.0, 0.0, 0.0, element="N"),
        _pdb_line(2, "CA", "ALA", 1, 1.5, 0.0, 0.0),
        _pdb_line(3, "CB", "ALA", 1, 2.0, 1.4, 0.0),
        _pdb_line(4, "C", "ALA", 1, 2.0, -1.4, 0.0),
        _pdb_line(5, "O", "ALA", 1, 3.2, -1.4, 0.0, element="O"),
        _pdb_line(6, "N", "GLY", 2, 1.2, -2.6, 0.0, element="N"),
        _pdb_line(7, "CA", "GLY", 2, 1.8, -3.9, 0.0),
        _pdb_line(8, "HA2", "GLY", 2, 1.8, -4.9, 0.5, element="H"),
        _pdb_line(9, "C1", "LIG", 3, 9.0, 9.0, 9.0, record="HETATM"),
    ]
    path = _write(tmp_path, "h.pdb", lines)
    assert len(read_structure(path)) == 9
    assert len(read_structure(path, keep_hydrogens=False)) == 8
    with pytest.warns(UserWarning, match="no hydrogen template for residue types LIG"):
        model = read_structure(path, add_hydrogens=True)
    # ALA has no H: N 1 + CA 1 + CB 3 = 5 added at the heavy atoms; GLY already has H: none.
    z = model.atomic_numbers
    assert int((z == 1).sum()) == 5 + 1
    assert len(model) == 9 + 5
    h_pos = model.positions_a[z == 1]
    heavy = model.positions_a[z != 1]
    assert torch.cdist(h_pos, heavy).min(dim=1).values[:5].max() == 0.0
    # dropping deposited H and adding the template: GLY gets N 1 + CA 2
    with pytest.warns(UserWarning):
        model = read_structure(path, keep_hydrogens=False, add_hydrogens=True)
    assert int((model.atomic_numbers == 1).sum()) == 5 + 3


def test_add_hydrogens_crambin():
    model = read_structure(DATA / "1crn.pdb.gz", add_hydrogens=True)
    n_h = int((model.atomic_numbers == 1).sum())
    # 46 residues, polymer-internal template counts (no terminal/disulfide corrections)
    assert n_h == 319
    assert len(model) == 327 + n_h


# ----------------------------------------------------------------------------- assemblies


def test_zika_assembly_5ire():
    model = read_structure(DATA / "5ire.pdb.gz")
    assert len(model) == 11_024
    ops = assembly_operators(DATA / "5ire.pdb.gz")
    assert ops.shape == (60, 3, 4)
    rot = ops[:, :, :3]
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), eye.expand(60, 3, 3), atol=1e-4, rtol=0)
    virion = expand_assembly(model, ops)
    assert len(virion) == 661_440
    # mature Zika virion: about 50 nm diameter (Sirohi et al. 2016, Science 352:467)
    assert 230.0 < virion.bounding_radius_a() < 270.0


def test_tmv_assembly_2om3_and_helical_operators():
    model = read_structure(DATA / "2om3.pdb.gz")
    ops = assembly_operators(DATA / "2om3.pdb.gz")
    assert ops.shape == (49, 3, 4)
    assert len(expand_assembly(model, ops)) == 62_671
    # TMV helix: 49 subunits, rise 1.4076 Å and twist 22.03° (16.34 subunits per turn);
    # operator 24 of REMARK 350 is the identity.
    helix = helical_operators(
        rise_a=1.4076, twist_rad=math.radians(22.0318), n_subunits=49, first_index=-24
    )
    torch.testing.assert_close(helix, ops, atol=2e-3, rtol=0)


def test_helical_operators_small():
    ops = helical_operators(rise_a=2.0, twist_rad=math.pi / 2, n_subunits=3)
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    images = ops[:, :, :3] @ x + ops[:, :, 3]
    expected = torch.tensor([[1.0, 0, 0], [0, 1.0, 2.0], [-1.0, 0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(images, expected, atol=1e-12, rtol=0)
    ops_x = helical_operators(rise_a=1.0, twist_rad=math.pi / 2, n_subunits=2, axis="x")
    torch.testing.assert_close(
        ops_x[1, :, :3] @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
        torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
        atol=1e-12,
        rtol=0,
    )
    with pytest.raises(ValueError, match="n_subunits"):
        helical_operators(rise_a=1.0, twist_rad=0.1, n_subunits=0)
    with pytest.raises(ValueError, match="axis"):
        helical_operators(rise_a=1.0, twist_rad=0.1, n_subunits=2, axis="w")
    with pytest.raises(ValueError, match="rise_a must be finite"):
        helical_operators(rise_a=float("nan"), twist_rad=0.1, n_subunits=2)


def test_expand_assembly_user_operators():
    model = read_structure(DATA / "1crn.pdb.gz", dtype=torch.float64)
    shift = [[1.0, 0.0, 0.0, 10.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    ident = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    two = expand_assembly(model, [ident, shift])
    assert len(two) == 654
    torch.testing.assert_close(
        two.positions_a[327:] - two.positions_a[:327],
        torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64).expand(327, 3),
    )
    four = torch.eye(4, dtype=torch.float64)[None]
    assert len(expand_assembly(model, four)) == 327
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="not a proper rotation"):
        expand_assembly(model, torch.cat([mirror, torch.zeros(3, 1, dtype=torch.float64)], 1))
    with pytest.raises(ValueError, match=r"shape \(K, 3, 4\)"):
        expand_assembly(model, torch.zeros(2, 3, 3))


def test_expand_assembly_is_differentiable():
    pos = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    one = torch.ones(1, dtype=torch.float64)
    model = AtomicModel(
        atomic_numbers=torch.tensor([6]), positions_a=pos, b_factors_a2=one, occupancies=one
    )
    ops = helical_operators(rise_a=1.0, twist_rad=0.3, n_subunits=4)
    expand_assembly(model, ops).positions_a.sum().backward()
    # d/dx Σ_k Σ_i (R_k x + t_k)_i = Σ_k R_kᵀ 1
    expected = ops[:, :, :3].transpose(1, 2).sum(0) @ torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(pos.grad[0], expected, rtol=0, atol=1e-14)

    def expanded(p):
        moved = AtomicModel(
            atomic_numbers=torch.tensor([6]), positions_a=p, b_factors_a2=one, occupancies=one
        )
        return expand_assembly(moved, ops).positions_a

    assert torch.autograd.gradcheck(expanded, (pos.detach().clone().requires_grad_(True),))


def test_assembly_errors(tmp_path):
    path = _write(tmp_path, "noasm.pdb", CRN_LINES)
    with pytest.raises(ValueError, match="defines no biological assembly"):
        assembly_operators(path)
    with pytest.raises(ValueError, match="assembly_id '7' not found.*available"):
        assembly_operators(DATA / "5ire.pdb.gz", assembly_id="7")


MMCIF_WITH_ASSEMBLY = """data_test
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.type_symbol
_atom_site.label_atom_id
_atom_site.label_alt_id
_atom_site.label_comp_id
_atom_site.label_asym_id
_atom_site.label_entity_id
_atom_site.label_seq_id
_atom_site.pdbx_PDB_ins_code
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.occupancy
_atom_site.B_iso_or_equiv
_atom_site.auth_seq_id
_atom_site.auth_asym_id
_atom_site.pdbx_PDB_model_num
ATOM 1 N N . ALA A 1 1 ? 1.0 2.0 3.0 1.00 10.0 1 A 1
ATOM 2 C CA . ALA A 1 1 ? {x2} 2.0 3.0 1.00 10.0 1 A 1
#
_pdbx_struct_assembly.id 1
_pdbx_struct_assembly.details author_defined_assembly
_pdbx_struct_assembly.method_details ?
_pdbx_struct_assembly.oligomeric_details dimeric
_pdbx_struct_assembly.oligomeric_count 2
#
_pdbx_struct_assembly_gen.assembly_id 1
_pdbx_struct_assembly_gen.oper_expression 1,2
_pdbx_struct_assembly_gen.asym_id_list A
#
loop_
_pdbx_struct_oper_list.id
_pdbx_struct_oper_list.type
_pdbx_struct_oper_list.matrix[1][1]
_pdbx_struct_oper_list.matrix[1][2]
_pdbx_struct_oper_list.matrix[1][3]
_pdbx_struct_oper_list.vector[1]
_pdbx_struct_oper_list.matrix[2][1]
_pdbx_struct_oper_list.matrix[2][2]
_pdbx_struct_oper_list.matrix[2][3]
_pdbx_struct_oper_list.vector[2]
_pdbx_struct_oper_list.matrix[3][1]
_pdbx_struct_oper_list.matrix[3][2]
_pdbx_struct_oper_list.matrix[3][3]
_pdbx_struct_oper_list.vector[3]
1 'identity operation' 1 0 0 0 0 1 0 0 0 0 1 0
2 'point symmetry operation' -1 0 0 10 0 -1 0 0 0 0 1 5
#
"""


def test_mmcif_assembly_operators(tmp_path):
    path = tmp_path / "dimer.cif.gz"
    path.write_bytes(gzip.compress(MMCIF_WITH_ASSEMBLY.format(x2="2.5").encode()))
    model = read_structure(path, dtype=torch.float64)
    assert len(model) == 2
    ops = assembly_operators(path)
    expected = torch.tensor(
        [
            [[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]],
            [[-1.0, 0, 0, 10], [0, -1, 0, 0], [0, 0, 1, 5]],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(ops, expected)
    dimer = expand_assembly(model, ops)
    torch.testing.assert_close(
        dimer.positions_a[2], torch.tensor([9.0, -2.0, 8.0], dtype=torch.float64)
    )


# ----------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.pdb"
    with pytest.raises(FileNotFoundError, match="nope.pdb"):
        read_structure(missing)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "cut.pdb.gz"
    path.write_bytes((DATA / "1crn.pdb.gz").read_bytes()[:3000])
    with pytest.raises(ValueError, match="cut.pdb.gz: truncated or corrupt gzip"):
        read_structure(path)


def test_malformed_coordinate_names_line(tmp_path):
    bad = CRN_LINES[1][:30] + " 12a.000" + CRN_LINES[1][38:]
    path = _write(tmp_path, "bad.pdb", ["HEADER    TEST", CRN_LINES[0], bad, CRN_LINES[2]])
    with pytest.raises(ValueError, match=r"bad.pdb, line 3: malformed x field '12a.000'"):
        read_structure(path)


def test_truncated_record_names_line(tmp_path):
    path = _write(tmp_path, "short.pdb", [CRN_LINES[0], CRN_LINES[1][:40]])
    with pytest.raises(ValueError, match="short.pdb, line 2: truncated ATOM/HETATM record"):
        read_structure(path)


@pytest.mark.parametrize("text", ["", "HEADER    NOTHING\nEND\n", "hello world\nnot a structure\n"])
def test_no_atoms(tmp_path, text):
    path = tmp_path / "empty.pdb"
    path.write_text(text)
    with pytest.raises(ValueError, match="empty.pdb: no atoms found"):
        read_structure(path)


def test_unknown_element_names_atom_and_line(tmp_path):
    bad = CRN_LINES[1][:76] + "QQ"
    path = _write(tmp_path, "elem.pdb", [CRN_LINES[0], bad, CRN_LINES[2]])
    with pytest.raises(
        ValueError,
        match=r"unknown or missing element symbol for atom 'CA' \(serial 2\) of residue THR 1 "
        r"in chain 'A' \(line 2\)",
    ):
        read_structure(path)


def test_nonfinite_coordinates_mmcif(tmp_path):
    path = tmp_path / "nan.cif"
    path.write_text(MMCIF_WITH_ASSEMBLY.format(x2="nan"))
    with pytest.raises(ValueError, match=r"non-finite coordinates.*serial 2.*line 22"):
        read_structure(path)


def test_malformed_mmcif(tmp_path):
    text = MMCIF_WITH_ASSEMBLY.format(x2="2.0").replace("1.00 10.0 1 A 1\n#", "1.00 10.0\n#", 1)
    path = tmp_path / "broken.cif"
    path.write_text(text)
    with pytest.raises(ValueError, match="broken.cif: malformed or truncated mmCIF"):
        read_structure(path)


def test_bad_b_and_occupancy(tmp_path):
    neg_b = _write(tmp_path, "negb.pdb", [_pdb_line(1, "CA", "ALA", 1, 0, 0, 0, b=-5.0)])
    with pytest.raises(ValueError, match=r"B-factor must be finite and >= 0, got -5.0.*line 1"):
        read_structure(neg_b)
    big_occ = _write(tmp_path, "occ.pdb", [_pdb_line(1, "CA", "ALA", 1, 0, 0, 0, occ=1.5)])
    with pytest.raises(ValueError, match=r"occupancy must lie in \[0, 1\], got 1.5"):
        read_structure(big_occ)
    zero_b = _write(tmp_path, "zerob.pdb", [_pdb_line(1, "CA", "ALA", 1, 0, 0, 0, b=0.0)])
    assert read_structure(zero_b).b_factors_a2.item() == 0.0


def test_only_waters_dropped_is_an_error(tmp_path):
    path = _write(
        tmp_path, "w.pdb", [_pdb_line(1, "O", "HOH", 1, 0, 0, 0, element="O", record="HETATM")]
    )
    with pytest.raises(ValueError, match="no atoms left after dropping waters"):
        read_structure(path, keep_waters=False)


# ----------------------------------------------------------------------------- AtomicModel


def _tiny(n=3, dtype=torch.float64):
    return AtomicModel(
        atomic_numbers=torch.full((n,), 6, dtype=torch.int64),
        positions_a=torch.arange(3.0 * n, dtype=dtype).reshape(n, 3),
        b_factors_a2=torch.zeros(n, dtype=dtype),
        occupancies=torch.ones(n, dtype=dtype),
        name="tiny",
    )


def test_atomic_model_methods():
    m = _tiny()
    assert len(m) == 3 and "n_atoms=3" in repr(m)
    assert m.to(dtype=torch.float32).positions_a.dtype == torch.float32
    assert m.to(dtype=torch.float32).atomic_numbers.dtype == torch.int64
    c = m.centered()
    torch.testing.assert_close(c.positions_a.mean(0), torch.zeros(3, dtype=torch.float64))
    assert m.bounding_radius_a() == pytest.approx(math.sqrt(27.0))
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    t = m.transformed(rot, [1.0, 2.0, 3.0])
    torch.testing.assert_close(
        t.positions_a[1], torch.tensor([-3.0, 5.0, 8.0], dtype=torch.float64)
    )
    both = AtomicModel.concatenate([m, m.to(dtype=torch.float32)])
    assert len(both) == 6 and both.positions_a.dtype == torch.float64


def test_atomic_model_validation():
    m = _tiny()
    with pytest.raises(ValueError, match=r"atomic_numbers must lie in \[1, 98\]"):
        AtomicModel(
            atomic_numbers=torch.tensor([0, 6, 6]),
            positions_a=m.positions_a,
            b_factors_a2=m.b_factors_a2,
            occupancies=m.occupancies,
        )
    with pytest.raises(ValueError, match="positions_a must be a floating"):
        AtomicModel(
            atomic_numbers=m.atomic_numbers,
            positions_a=torch.zeros(3, 2),
            b_factors_a2=m.b_factors_a2,
            occupancies=m.occupancies,
        )
    bad = m.positions_a.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="positions_a must be finite"):
        AtomicModel(
            atomic_numbers=m.atomic_numbers,
            positions_a=bad,
            b_factors_a2=m.b_factors_a2,
            occupancies=m.occupancies,
        )
    with pytest.raises(ValueError, match=r"occupancies must lie in \[0, 1\]"):
        AtomicModel(
            atomic_numbers=m.atomic_numbers,
            positions_a=m.positions_a,
            b_factors_a2=m.b_factors_a2,
            occupancies=torch.full((3,), 2.0, dtype=torch.float64),
        )
    with pytest.raises(TypeError, match="atomic_numbers must be a torch.Tensor"):
        AtomicModel(
            atomic_numbers=[6, 6, 6],
            positions_a=m.positions_a,
            b_factors_a2=m.b_factors_a2,
            occupancies=m.occupancies,
        )
    with pytest.raises(ValueError, match="at least one AtomicModel"):
        AtomicModel.concatenate([])


# ----------------------------------------------------------------------------- fetch_pdb


def _no_network(*args, **kwargs):
    raise AssertionError("network access attempted")


def test_fetch_pdb_uses_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    shutil.copy(DATA / "1crn.pdb.gz", tmp_path / "1crn.pdb.gz")
    path = fetch_pdb("1CRN", cache_dir=tmp_path, file_format="pdb")
    assert path == tmp_path / "1crn.pdb.gz"
    assert len(read_structure(path)) == 327


def test_fetch_pdb_downloads_into_cache(tmp_path, monkeypatch):
    payload = (DATA / "1crn.pdb.gz").read_bytes()
    seen = []

    def fake_urlopen(url, timeout=None):
        seen.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    path = fetch_pdb("1crn", cache_dir=tmp_path / "cache", file_format="pdb")
    assert seen == ["https://files.rcsb.org/download/1CRN.pdb.gz"]
    assert path.read_bytes() == payload
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["1crn.pdb.gz"]
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert fetch_pdb("1crn", cache_dir=tmp_path / "cache", file_format="pdb") == path


def test_fetch_pdb_validation(tmp_path):
    with pytest.raises(ValueError, match="pdb_id must be 4 alphanumeric"):
        fetch_pdb("1cr", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="pdb_id must be 4 alphanumeric"):
        fetch_pdb("1c/n", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="file_format must be 'cif' or 'pdb'"):
        fetch_pdb("1crn", cache_dir=tmp_path, file_format="xml")


def test_public_api():
    for name in structure.__all__:
        assert hasattr(structure, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_structure(DATA / "1crn.pdb.gz")


def test_rotate_points_and_compose_rotations_equal_the_matrix_products() -> None:
    """The fixed-order forms (thread-independent bits) are the matrix products to rounding,
    batched and not, and keep autograd."""
    from tem_core.structure import compose_rotations, rotate_points, rotation_about_axis

    g = torch.Generator().manual_seed(5)
    points = torch.randn(17, 3, generator=g, dtype=torch.float64, requires_grad=True)
    axes = torch.nn.functional.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=1)
    rots = rotation_about_axis(axes, torch.rand(4, generator=g, dtype=torch.float64) * 3.0)
    batched = rotate_points(rots, points)
    assert batched.shape == (4, 17, 3)
    assert torch.allclose(batched, torch.einsum("kij,nj->kni", rots, points), atol=1e-14, rtol=0)
    assert torch.allclose(rotate_points(rots[1], points), points @ rots[1].T, atol=1e-14, rtol=0)
    assert torch.allclose(compose_rotations(rots[0], rots), rots[0] @ rots, atol=1e-14, rtol=0)
    batched.square().sum().backward()
    assert torch.allclose(points.grad, 2 * 4 * points, atol=1e-12, rtol=0)  # rotations keep |p|²


def test_rotate_points_and_compose_rotations_name_bad_shapes() -> None:
    from tem_core.structure import compose_rotations, rotate_points

    eye = torch.eye(3)
    shape = r"must be a tensor of shape \(\.\.\., "
    with pytest.raises(ValueError, match=r"rotation " + shape + r"3, 3\), got \(3, 4\)"):
        rotate_points(torch.zeros(3, 4), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"points " + shape + r"N, 3\), got \(5, 2\)"):
        rotate_points(eye, torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"points " + shape + r"N, 3\), got list"):
        rotate_points(eye, [[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"b " + shape + r"3, 3\), got \(3,\)"):
        compose_rotations(eye, torch.zeros(3))
