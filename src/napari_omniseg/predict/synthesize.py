"""Painted masks to histology with a pyramid generator, lazily and in tiles without seams.

A large mask is generated chunk by chunk: each chunk is generated with a halo of context
around it and cropped, and the halo covers the generator's reach, so a chunk's pixels are
those the whole image would have. The noise of every pyramid level is drawn per block of a
fixed grid, from the seed and the block's place, so one seed gives one image whatever the
chunking, and another seed a variation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import OmnisegInputError

#: Side of the noise blocks (pixels of each level).
NOISE_BLOCK = 64
#: Output chunk side and the context generated around it (level-0 pixels); the halo is more
#: than the generator's reach (about 165 pixels across at four levels) on each side.
CHUNK = 512
HALO = 128
#: The generator name that means the procedural anatomy prior alone, no learned model.
ANATOMY_PRIOR = "prior"


def level_noise(seed: int, level: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """``(3, h, w)`` standard normal noise of one pyramid level at level pixels
    ``(y0, x0)``, the same for the same place whatever window asks for it."""
    out = np.empty((3, h, w), np.float32)
    b = NOISE_BLOCK
    for by in range(y0 // b, -(-(y0 + h) // b)):
        for bx in range(x0 // b, -(-(x0 + w) // b)):
            block = np.random.default_rng([seed, level, by + 2**20, bx + 2**20]
                                          ).standard_normal((3, b, b), dtype=np.float32)
            ys, xs = max(y0, by * b), max(x0, bx * b)
            ye, xe = min(y0 + h, (by + 1) * b), min(x0 + w, (bx + 1) * b)
            out[:, ys - y0:ye - y0, xs - x0:xe - x0] = block[:, ys - by * b:ye - by * b,
                                                             xs - bx * b:xe - bx * b]
    return out


def generate_window(generator: Any, masks: np.ndarray, stain: str, magnification: float,
                    seed: int, y0: int = 0, x0: int = 0, bf16: bool = False,
                    known: np.ndarray | None = None, prior_context: bool = False,
                    prior: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` for ``(6, H, W)`` tissue masks whose top-left pixel is level-0
    ``(y0, x0)``; H, W, y0 and x0 are multiples of ``generator.factor``. ``known`` (per
    tissue) says which masks are stated; default all (a painted mask).

    A generator that reads the anatomy prior gets it drawn from the known masks at the
    magnification's pixel size; ``prior_context`` says the window already holds the context
    the prior needs (a chunk with its halo), else the masks are mirrored past the window's
    edge first, as in training, so that a tubule cut by the edge is drawn open. ``prior``
    (``(H, W, 3)`` uint8) is that prior already drawn (:class:`.prior_tiles.PriorTiles`).
    """
    import torch

    from ..nets.condition import condition_planes
    from ..nets.pyramid_gan import condition_pyramid, generator_conditions

    levels, f = generator.levels, generator.factor
    if y0 % f or x0 % f or masks.shape[1] % f or masks.shape[2] % f:
        raise ValueError(f"windows must be aligned to multiples of {f} pixels")
    device = next(generator.parameters()).device
    cond = torch.from_numpy(condition_planes(masks, known, stain, magnification))[None]
    conds = condition_pyramid(cond.to(device), levels)
    prior_planes = None
    if getattr(generator, "prior", False):
        if prior is None:
            # known is per tissue (6,) or per pixel (6, H, W): a tuft row knows some capsule
            # pixels
            k = None if known is None else np.asarray(known)
            stated = masks if k is None else masks * (
                (k.reshape(-1, 1, 1) if k.ndim == 1 else k) > 0)
            prior = window_prior(stated, stain, magnification, seed, y0, x0, not prior_context)
        prior_planes = torch.from_numpy(np.ascontiguousarray(prior)).permute(2, 0, 1)[
            None].float().div(127.5).sub(1).to(device)
    conds = generator_conditions(generator, conds, prior_planes)
    noises = []
    for n, c in enumerate(conds):
        s = 2 ** (levels - 1 - n)
        noises.append(torch.from_numpy(level_noise(seed, n, y0 // s, x0 // s,
                                                   *c.shape[-2:]))[None].to(device))
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        rgb = generator.eval()(conds, noises)[-1][0].float()
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def window_prior(masks: np.ndarray, stain: str, magnification: float, seed: int, y0: int = 0,
                 x0: int = 0, mirror: bool = True) -> np.ndarray:
    """The anatomy prior of a window's ``(6, H, W)`` masks at the magnification's pixel size
    (what a prior-reading generator was trained with), ``(H, W, 3)`` uint8; ``mirror``: the
    masks continue past the window's edge as their mirror image."""
    from .. import vocab
    from ..simulate.mask_prior import prior_halo, render_prior

    mpp = vocab.mpp_of_magnification(float(magnification))
    if not mirror:
        return render_prior(masks > 0, stain, mpp, seed, y0, x0)
    halo = prior_halo(mpp)
    padded = np.pad(masks > 0, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")
    return render_prior(padded, stain, mpp, seed, y0 - halo, x0 - halo, crop=halo)


def _spread_windows(labels: Any, shape: tuple[int, ...], per_side: int = 8, side: int = 256
                    ) -> np.ndarray:
    """``per_side``² windows of ``side`` pixels spread evenly over a large label image, as one
    row of values."""
    ys = np.linspace(0, max(0, shape[0] - side), per_side).astype(int)
    xs = np.linspace(0, max(0, shape[1] - side), per_side).astype(int)
    return np.concatenate([np.asarray(labels[y:y + side, x:x + side]).ravel()
                           for y in ys for x in xs])[None]


def check_labels(labels: Any, name: str = "the mask") -> None:
    """Refuse what cannot be a painted mask, from a cheap look (one sentence): an RGB layer,
    a mask with nothing painted, values outside the vocabulary."""
    from ..nets.condition import masks_from_labels

    shape: tuple[int, ...] = tuple(getattr(labels, "shape", ()))
    if len(shape) != 2:
        raise OmnisegInputError(f"{name} is not a 2D label image (shape {tuple(shape)}); choose "
                                "a Labels layer painted with tissue values 1-6")
    dtype = np.dtype(getattr(labels, "dtype", np.uint8))
    if dtype.kind not in "iub":
        raise OmnisegInputError(f"{name} holds {dtype} values, not labels")
    # a mask of up to 16 Mpx is read whole; a larger one (a painted slide, lazily read) is
    # judged from 64 windows spread over it (a strided sample reads every tile of the file:
    # 150,000 of a sparse 200k x 200k mask), and each chunk checks its own values when made
    whole = shape[0] * shape[1] <= 16 * 1024 * 1024
    sample = np.asarray(labels) if whole else _spread_windows(labels, shape)
    masks_from_labels(sample, name)
    if whole and not sample.any():
        raise OmnisegInputError(f"{name} is empty: paint some tissue (1 DT, 2 PT, 3 CAP, "
                                "4 TUFT, 5 VES, 6 PTC) first")


def synthesize(generator: Any, labels: Any, stain: str, magnification: float, seed: int = 0,
               chunk: int = CHUNK, bf16: bool | None = None, name: str = "the mask",
               mpp: float | None = None) -> Any:
    """A lazy ``(H, W, 3)`` uint8 dask array of histology for a painted label image.

    Parameters
    ----------
    generator : PyramidGenerator or str
        A trained generator (:func:`~napari_omniseg.checkpoints.load_model`), or
        :data:`ANATOMY_PRIOR` for the simulator's anatomy drawn in the mask, no learned model.
    labels : array
        ``(H, W)`` labels (numpy, dask or zarr): the tissue's task id + 1, 0 for unpainted.
    stain : str
        Stain code of the image to make.
    magnification : float
        Objective power of the mask's pixels (5, 10, 20 or 40).
    seed : int
        One seed gives one image; another seed gives a variation.
    chunk : int
        Chunk side (a multiple of 16); memory is about one chunk and its halo per worker.
    bf16 : bool, optional
        bfloat16 autocast (default: on for a CPU generator when the CPU computes bfloat16 in
        hardware, :func:`~napari_omniseg.checkpoints.default_bf16`: 1.2-1.5x faster
        there, images within a mean 0.4 grey levels of float32's; float32 chunks agree with a
        single pass bit for bit, bfloat16 ones within a few grey levels; docs/synthesis.md).
    name : str
        How messages name the mask.
    mpp : float, optional
        The mask's own µm per pixel, when known. The anatomy prior draws in µm and uses it, so
        structures keep their size at any pixel size (a mask at 0.125 µm/px was drawn as if at
        40x's 0.25, its nuclei twice too large); the learned generator works at the
        magnification's pixel size and ignores it.

    Raises
    ------
    OmnisegInputError
        Values outside the vocabulary, an empty mask, or not a 2D label image.
    """
    from .. import vocab
    from ..checkpoints import default_bf16
    from ..nets.condition import masks_from_labels
    from ..nets.pyramid_gan import fused_for_inference
    from .prior_tiles import PriorTiles, read_window

    if isinstance(generator, str) and generator == ANATOMY_PRIOR:
        return synthesize_prior(labels, stain, magnification, seed, chunk, name, mpp)
    check_labels(labels, name)
    vocab.stain(stain)
    vocab.scale_id(magnification)
    if chunk % max(16, generator.factor):
        raise ValueError("chunk must be a multiple of 16 and of the generator's factor")
    # bfloat16 only where the CPU has it in hardware: emulated, the generator's layers ran
    # about 70x slower than float32 (AMD EPYC without AVX512-BF16, 2026-12-06)
    use_bf16 = default_bf16(generator) if bf16 is None else bf16
    # the chunks share one inference copy with the batch norms folded in: 1.2x faster on CPU,
    # images within 1 grey level (docs/synthesis.md)
    generator = fused_for_inference(generator)

    tiles = None
    if getattr(generator, "prior", False):
        # the prior is drawn once per tile with its own context and shared by the chunks
        # around it; each chunk's window is then only the generator's reach wider
        tiles = PriorTiles(labels, stain, vocab.mpp_of_magnification(float(magnification)),
                           seed, name, margin=HALO + generator.factor)

    def render(wy0: int, wx0: int, wh: int, ww: int) -> np.ndarray:
        window = read_window(labels, wy0, wx0, wh, ww)
        prior = None if tiles is None else tiles.window(wy0, wx0, wh, ww)
        return generate_window(generator, masks_from_labels(window, name), stain, magnification,
                               seed, wy0, wx0, use_bf16, prior_context=True, prior=prior)

    return _chunked(labels, chunk, HALO, generator.factor, render)


def synthesize_prior(labels: Any, stain: str, magnification: float, seed: int = 0,
                     chunk: int = CHUNK, name: str = "the mask", mpp: float | None = None
                     ) -> Any:
    """A lazy ``(H, W, 3)`` uint8 dask array of the anatomy prior alone (no learned model):
    the simulator's tissue drawn inside each painted region
    (:func:`napari_omniseg.simulate.mask_prior.render_prior`). Same arguments as
    :func:`synthesize`."""
    from .. import vocab
    from .prior_tiles import PriorTiles

    check_labels(labels, name)
    vocab.stain(stain)
    vocab.scale_id(magnification)
    if mpp is not None and not mpp > 0:
        raise OmnisegInputError(f"µm/px must be positive, got {mpp}")
    pixel = float(mpp) if mpp else vocab.mpp_of_magnification(float(magnification))
    # drawn once per prior tile (with its own context), not once per chunk in a window
    # widened by that context on every side
    tiles = PriorTiles(labels, stain, pixel, seed, name)

    return _chunked(labels, chunk, 0, 1, tiles.window)


def _chunked(labels: Any, chunk: int, halo: int, align: int, render: Any) -> Any:
    """``render(y0, x0, h, w)`` of the window of each chunk with ``halo`` pixels of context
    (its sides rounded up to multiples of ``align``; it may leave the image), cropped, as a
    dask array. ``render`` reads from ``labels`` what it needs."""
    import dask.array as da

    h, w = labels.shape

    def block(block_info=None) -> np.ndarray:
        (ys, ye), (xs, xe), _ = block_info[None]["array-location"]
        wy0, wx0 = ys - halo, xs - halo
        wh = -(-(ye - ys + 2 * halo) // align) * align
        ww = -(-(xe - xs + 2 * halo) // align) * align
        return render(wy0, wx0, wh, ww)[halo:halo + ye - ys, halo:halo + xe - xs]

    chunks = (tuple(min(chunk, h - y) for y in range(0, h, chunk)),
              tuple(min(chunk, w - x) for x in range(0, w, chunk)), (3,))
    return da.map_blocks(block, dtype=np.uint8, chunks=chunks, meta=np.empty((0, 0, 3),
                                                                              np.uint8))
