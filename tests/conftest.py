"""Shared fixtures: small slides written with tifffile in every supported layout."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two test workers share two cores: one thread each (set before numpy or torch load,
    # and inherited by the commands the tests run) instead of two each fighting for them
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"

import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

MPP = 0.25


def rgb_image(h: int = 1024, w: int = 1536, seed: int = 0) -> np.ndarray:
    """A smooth random RGB picture (compressible, not constant)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 64 + 1, w // 64 + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 64, 0), 64, 1)[:h, :w].copy()


def pyramid(img: np.ndarray, n: int) -> list[np.ndarray]:
    return [img[:: 2**k, :: 2**k].copy() for k in range(n)]


def write_ome_subifd(path: Path, img: np.ndarray, levels: int = 3, mpp: float = MPP) -> Path:
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as w:
        pyr = pyramid(img, levels)
        w.write(pyr[0], subifds=levels - 1, tile=(256, 256), photometric="rgb",
                metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp,
                          "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
        for lv in pyr[1:]:
            w.write(lv, subfiletype=1, tile=(256, 256), photometric="rgb")
    return path


def write_ome_series(path: Path, img: np.ndarray, levels: int = 3, mpp: float = MPP) -> Path:
    """Each level is its own OME Image (series), as some converters write them."""
    with tifffile.TiffWriter(path, ome=True) as w:
        for k, lv in enumerate(pyramid(img, levels)):
            w.write(lv, tile=(256, 256), photometric="rgb",
                    metadata={"axes": "YXS", "Name": f"level {k}",
                              "PhysicalSizeX": mpp * 2**k, "PhysicalSizeY": mpp * 2**k})
    return path


def write_svs(path: Path, img: np.ndarray, levels: int = 3, mpp: float = 0.2525,
              mag: int = 40) -> Path:
    """Aperio layout: baseline, thumbnail, then reduced levels, with the Aperio description."""
    desc = (f"Aperio Image Library v12.0.5\r\n{img.shape[1]}x{img.shape[0]} [0,0 "
            f"{img.shape[1]}x{img.shape[0]}] (256x256) JPEG/RGB Q=70|AppMag = {mag}|"
            f"MPP = {mpp}|Filename = test")
    pyr = pyramid(img, levels)
    with tifffile.TiffWriter(path, bigtiff=False) as w:
        w.write(pyr[0], tile=(256, 256), photometric="rgb", description=desc, metadata=None)
        w.write(img[::16, ::16].copy(), photometric="rgb", description="thumbnail",
                metadata=None)
        for lv in pyr[1:]:
            w.write(lv, tile=(256, 256), photometric="rgb", description=desc, metadata=None)
    return path


def write_png(path: Path, img: np.ndarray, mpp: float | None = MPP) -> Path:
    from PIL import Image

    kw = {"dpi": (25400 / mpp, 25400 / mpp)} if mpp else {}
    Image.fromarray(img).save(path, **kw)
    return path


def write_huge_pyramid(path: Path, size: int = 100_000, levels: int = 4) -> Path:
    """A size x size OME pyramid whose tiles all share one pre-compressed blank tile."""
    tile = 1024
    blank = zlib.compress(np.zeros((tile, tile, 3), np.uint8).tobytes())

    def tiles(s: int):
        return (blank for _ in range((-(-s // tile)) ** 2))

    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as w:
        w.write(tiles(size), shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile),
                subifds=levels - 1, photometric="rgb", compression="zlib",
                metadata={"axes": "YXS", "PhysicalSizeX": MPP, "PhysicalSizeY": MPP})
        for k in range(1, levels):
            s = size >> k
            w.write(tiles(s), shape=(s, s, 3), dtype=np.uint8, tile=(tile, tile),
                    subfiletype=1, photometric="rgb", compression="zlib")
    return path


@pytest.fixture
def image() -> np.ndarray:
    return rgb_image()


_SESSION = {}


def pytest_sessionfinish(session, exitstatus):
    _SESSION["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without interpreter finalization once the results are reported.

    After the viewer tests, a C extension of the Qt stack over-releases ``None`` while CPython
    tears down (``Fatal Python error: none_dealloc`` during finalization, no Python frame), which
    would turn a run whose tests all passed into an abort. Nothing of ours runs at that point.
    """
    import os
    import sys

    if "status" in _SESSION and config.pluginmanager.hasplugin("xvfb"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_SESSION["status"])


def tiny_renal_checkpoint(path: Path, seed: int = 0) -> Path:
    """An untrained narrow Omni-Seg+ saved as a product checkpoint (fast, deterministic)."""
    import torch

    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.omniseg import OmniSegPlus

    torch.manual_seed(seed)
    return save_checkpoint(OmniSegPlus(width=0.25), path, width=0.25)


def unfamiliar_renal_checkpoint(path: Path, seed: int = 0) -> Path:
    """:func:`tiny_renal_checkpoint` with a familiarity record of dark blue noise: every
    kidney slide looks unlike its "training data", so Segment warns."""
    import torch

    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.omniseg import OmniSegPlus
    from napari_omniseg.predict.familiarity import familiarity_metadata

    torch.manual_seed(seed)
    model = OmniSegPlus(width=0.25).eval()
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 90, (96, 64, 64, 3)).astype(np.uint8)
    noise[..., 2] = 200
    return save_checkpoint(model, path, width=0.25, **familiarity_metadata(model, noise))


def constant_logits_model(fn):
    """A fake Omni-Seg+ whose two-class logits come from ``fn(n, k, h, w)``.

    Tests use it where only the pipeline around the network matters (masking, pseudo-labels).
    """
    import torch

    class _Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))  # gives the device

        def forward_conditions(self, x, conditions):
            n, _, h, w = x.shape
            return fn(n, len(conditions), h, w) + self.dummy

    return _Model()


def darkness_model(thresholds=(0.62, 0.75), context: int = 9):
    """A stand-in Omni-Seg+ whose answer follows the image it is shown.

    Condition k answers "tissue" where the mean brightness of a ``context``-pixel neighbourhood
    is below ``thresholds[k]`` (stained tissue is darker than glass and lumens), so masks vary
    in space, differ between tissues, and depend on which pixels each tile sees.
    """
    import torch

    class _Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))  # gives the device

        def forward_conditions(self, x, conditions):
            grey = torch.nn.functional.avg_pool2d(x.float().mean(1, keepdim=True), context, 1,
                                                  context // 2, count_include_pad=False)
            n, _, h, w = x.shape
            logits = torch.zeros(n, len(conditions), 2, h, w, device=x.device)
            for k in range(len(conditions)):
                logits[:, k, 1] = 40 * (thresholds[k % len(thresholds)] - grey[:, 0])
            return logits + self.dummy

    return _Model().eval()


@pytest.fixture
def renal_masks_file():
    """The bundled PAS sample's six masks (0.25 µm/px, 2560 x 6144)."""
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "sample_data" / "renal_pas_masks.ome.tif"


# Median 9x9 local standard deviation (grey levels, R, G, B) inside eroded DT/PT masks: the
# smallest over the 12 ki-dev `train` tubule patches at 10x was 14.5, 18.3, 13.8 (2026-12-03,
# benchmarks/synthesis_eval.py local-sd). Synthetic tubules must not be flatter than real ones.
REAL_TUBULE_LOCAL_SD_FLOOR = 13.0


def local_sd(channel: np.ndarray, k: int = 9) -> np.ndarray:
    """Standard deviation of ``channel`` in a ``k`` x ``k`` window around each pixel."""
    from scipy import ndimage

    x = channel.astype(float)
    mean = ndimage.uniform_filter(x, k)
    return np.sqrt(np.clip(ndimage.uniform_filter(x * x, k) - mean * mean, 0, None))
