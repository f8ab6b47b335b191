"""Writing volumes and masks back to disk with the geometry of their source."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save_nifti(data_zyx: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
               dtype: np.dtype | type = np.float32) -> Path:
    """Write a ``(Z, Y, X)`` array as NIfTI in mm with the given ``(i, j, k)`` affine.

    Parameters
    ----------
    data_zyx : numpy.ndarray
        The volume in the plugin's ``(Z, Y, X)`` order.
    affine : numpy.ndarray
        4 x 4 voxel-to-world matrix for NIfTI's ``(i, j, k) = (X, Y, Z)`` storage order, as
        :class:`~napari_omniseg.io.volumes.Volume` keeps it.
    path : path-like
        Output file (``.nii`` or ``.nii.gz``).
    dtype : numpy dtype
        Stored type.
    """
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data_zyx, dtype).transpose(2, 1, 0), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return Path(path)
