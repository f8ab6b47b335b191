import pytest

from napari_omniseg import vocab


def test_tissue_ids_and_optimal_magnifications():
    ids = {t.code: t.task_id for t in vocab.TISSUES}
    assert ids == {"dt": 0, "pt": 1, "cap": 2, "tuft": 3, "ves": 4, "ptc": 5}
    best = {t.code: t.optimal_magnification for t in vocab.TISSUES}
    assert best == {"dt": 10, "pt": 10, "ves": 10, "cap": 5, "tuft": 5, "ptc": 40}


def test_scales_stains_regions():
    assert [vocab.scale_id(m) for m in (5, 10, 20, 40)] == [0, 1, 2, 3]
    assert set(vocab.STAINS) == {"he", "pas", "sil", "tri"}
    assert vocab.FETAL_REGION_CODES == ("uterus", "body", "brain", "eyes", "placenta")
    assert len({t.color for t in vocab.TISSUES}) == 6


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="ptc"):
        vocab.tissue("kidney")
    with pytest.raises(ValueError, match="5x, 10x, 20x, 40x"):
        vocab.scale_id(15)
    with pytest.raises(ValueError, match="placenta"):
        vocab.fetal_region("heart")


def test_mpp_magnification_convention():
    assert vocab.magnification_of_mpp(0.25) == pytest.approx(40)
    assert vocab.mpp_of_magnification(10) == pytest.approx(1.0)


def test_only_the_tuft_and_its_capsule_share_pixels():
    assert vocab.disjoint_tissues("ves") == ("dt", "pt", "cap", "tuft", "ptc")
    assert vocab.disjoint_tissues("TUFT") == ("dt", "pt", "ves", "ptc")
    assert "tuft" not in vocab.disjoint_tissues("cap")
    for t in vocab.TISSUE_CODES:
        assert t not in vocab.disjoint_tissues(t)
        assert all(t in vocab.disjoint_tissues(o) for o in vocab.disjoint_tissues(t))
