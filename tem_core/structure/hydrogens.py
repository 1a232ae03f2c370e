"""Standard hydrogen counts per heavy atom, for ``read_structure(add_hydrogens=True)``.

Each entry maps a residue name to ``{heavy atom name: number of bonded hydrogens}`` for
the residue inside a polymer at neutral pH (Lys NZ and Arg guanidinium protonated, Asp
and Glu carboxylates deprotonated, His neutral with H on ND1, Cys as a free thiol).
Terminal groups (the extra N-terminal H, the C-terminal OXT) and disulfide bonds are not
treated specially: they change a protein's hydrogen count by a few atoms in hundreds.
The counts were written from the standard residue chemistry (IUPAC names as in the
wwPDB Chemical Component Dictionary), not copied from another program.
"""

from __future__ import annotations

_BACKBONE = {"N": 1, "CA": 1, "C": 0, "O": 0, "OXT": 0}


def _aa(side_chain: dict[str, int], **backbone: int) -> dict[str, int]:
    out = dict(_BACKBONE)
    out.update(backbone)
    out.update(side_chain)
    return out


_AMINO_ACIDS: dict[str, dict[str, int]] = {
    "ALA": _aa({"CB": 3}),
    "ARG": _aa({"CB": 2, "CG": 2, "CD": 2, "NE": 1, "CZ": 0, "NH1": 2, "NH2": 2}),
    "ASN": _aa({"CB": 2, "CG": 0, "OD1": 0, "ND2": 2}),
    "ASP": _aa({"CB": 2, "CG": 0, "OD1": 0, "OD2": 0}),
    "CYS": _aa({"CB": 2, "SG": 1}),
    "GLN": _aa({"CB": 2, "CG": 2, "CD": 0, "OE1": 0, "NE2": 2}),
    "GLU": _aa({"CB": 2, "CG": 2, "CD": 0, "OE1": 0, "OE2": 0}),
    "GLY": _aa({}, CA=2),
    "HIS": _aa({"CB": 2, "CG": 0, "ND1": 1, "CD2": 1, "CE1": 1, "NE2": 0}),
    "ILE": _aa({"CB": 1, "CG1": 2, "CG2": 3, "CD1": 3}),
    "LEU": _aa({"CB": 2, "CG": 1, "CD1": 3, "CD2": 3}),
    "LYS": _aa({"CB": 2, "CG": 2, "CD": 2, "CE": 2, "NZ": 3}),
    "MET": _aa({"CB": 2, "CG": 2, "SD": 0, "CE": 3}),
    "MSE": _aa({"CB": 2, "CG": 2, "SE": 0, "CE": 3}),
    "PHE": _aa({"CB": 2, "CG": 0, "CD1": 1, "CD2": 1, "CE1": 1, "CE2": 1, "CZ": 1}),
    "PRO": _aa({"CB": 2, "CG": 2, "CD": 2}, N=0),
    "SER": _aa({"CB": 2, "OG": 1}),
    "THR": _aa({"CB": 1, "OG1": 1, "CG2": 3}),
    "TRP": _aa(
        {"CB": 2, "CG": 0, "CD1": 1, "CD2": 0, "NE1": 1, "CE2": 0, "CE3": 1, "CZ2": 1,
         "CZ3": 1, "CH2": 1}
    ),
    "TYR": _aa(
        {"CB": 2, "CG": 0, "CD1": 1, "CD2": 1, "CE1": 1, "CE2": 1, "CZ": 0, "OH": 1}
    ),
    "VAL": _aa({"CB": 1, "CG1": 3, "CG2": 3}),
}

# Nucleotides: sugar-phosphate backbone plus base. RNA has the 2'-OH, DNA two H on C2'.
_PHOSPHATE = {"P": 0, "OP1": 0, "OP2": 0, "OP3": 0, "O5'": 0}
_RIBOSE = {"C5'": 2, "C4'": 1, "O4'": 0, "C3'": 1, "O3'": 0, "C2'": 1, "O2'": 1, "C1'": 1}
_DEOXYRIBOSE = {"C5'": 2, "C4'": 1, "O4'": 0, "C3'": 1, "O3'": 0, "C2'": 2, "C1'": 1}
_BASES = {
    "A": {"N9": 0, "C8": 1, "N7": 0, "C5": 0, "C6": 0, "N6": 2, "N1": 0, "C2": 1, "N3": 0,
          "C4": 0},
    "G": {"N9": 0, "C8": 1, "N7": 0, "C5": 0, "C6": 0, "O6": 0, "N1": 1, "C2": 0, "N2": 2,
          "N3": 0, "C4": 0},
    "C": {"N1": 0, "C2": 0, "O2": 0, "N3": 0, "C4": 0, "N4": 2, "C5": 1, "C6": 1},
    "U": {"N1": 0, "C2": 0, "O2": 0, "N3": 1, "C4": 0, "O4": 0, "C5": 1, "C6": 1},
    "T": {"N1": 0, "C2": 0, "O2": 0, "N3": 1, "C4": 0, "O4": 0, "C5": 0, "C7": 3, "C6": 1},
}

_NUCLEOTIDES: dict[str, dict[str, int]] = {}
for _base in ("A", "G", "C", "U"):
    _NUCLEOTIDES[_base] = {**_PHOSPHATE, **_RIBOSE, **_BASES[_base]}
for _base in ("A", "G", "C", "T"):
    _NUCLEOTIDES["D" + _base] = {**_PHOSPHATE, **_DEOXYRIBOSE, **_BASES[_base]}
_NUCLEOTIDES["DT"]["C5M"] = 3  # old (PDB v2) name of the thymine methyl carbon

_WATERS = {name: {"O": 2} for name in ("HOH", "WAT", "H2O", "DOD")}

HYDROGENS_PER_HEAVY_ATOM: dict[str, dict[str, int]] = {**_AMINO_ACIDS, **_NUCLEOTIDES, **_WATERS}


def hydrogen_count(residue_name: str, atom_name: str) -> int | None:
    """Number of hydrogens bonded to ``atom_name`` in ``residue_name``.

    Returns ``None`` when the residue type has no template (ligands, ions, modified
    residues), and 0 for template atoms that carry no hydrogen or are not in the template.
    """
    template = HYDROGENS_PER_HEAVY_ATOM.get(residue_name.strip().upper())
    if template is None:
        return None
    return template.get(atom_name.strip().upper(), 0)
