"""The Synthesize dock widget: paint tissues on a mask layer, get histology images from it.

"New mask layer" makes a Labels layer over the current image (or the view) with its scale and
the vocabulary's colours; the user paints tissues with label values 1 DT, 2 PT, 3 CAP, 4 TUFT,
5 VES, 6 PTC. Synthesize generates one Image layer per variation (seeds seed, seed+1, ...),
aligned with the mask, in a helper thread with progress and Stop; a layer is added only when
its image is complete, and running again replaces it. The mask is only read.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, PushButton, SpinBox

from .. import vocab
from ..checkpoints import check_generator
from ..choices import GENERATOR, ImageKind, ModelSource
from ..errors import OmnisegInputError
from .dock import DockWidget
from .layers import give_pixel_size, image_layers, layer_mpp, layers_of_type
from .model_in_use import MODELS_IN_USE

#: Masks up to this many pixels are synthesised whole; a larger one, only where it is seen.
WHOLE_MASK_PIXELS = 16 * 1024 * 1024
_CHUNK = 512


#: What each painted value means.
LEGEND = ", ".join(f"{t.task_id + 1} {t.label}" for t in vocab.TISSUES)


def mask_colours() -> dict:
    """The vocabulary's colours by painted value (0 and unknown values transparent)."""
    return {None: (0, 0, 0, 0), **{t.task_id + 1: t.color for t in vocab.TISSUES}}


class SynthesizeWidget(DockWidget):
    """Mask layer, stain, magnification, seed, variations and generator; Synthesize; Stop."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.mask = ComboBox(label="mask", choices=self._mask_layers,
                             tooltip="a Labels layer painted with 1 DT, 2 PT, 3 CAP, 4 TUFT, "
                                     "5 VES, 6 PTC")
        self.new_mask_button = PushButton(text="New mask layer")
        self.stain = ComboBox(label="stain", value="pas", choices=[
            (name, code) for code, name in vocab.STAINS.items()])
        self.magnification = ComboBox(label="magnification", value="auto", choices=[
            ("from the mask's pixel size", "auto"),
            *[(f"{m}x", str(m)) for m in vocab.MAGNIFICATIONS]])
        self.mpp = FloatSpinBox(label="mask µm/px", value=0.0, min=0.0, max=50.0, step=0.01,
                                tooltip="the painted mask's pixel size, for a mask in pixels "
                                        "(0 = from the layer); the magnification follows it")
        self.mpp.native.setDecimals(4)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.variations = SpinBox(label="variations", value=1, min=1, max=8)
        self.prior_only = CheckBox(text="anatomy prior only (no learned model)", value=False,
                                   tooltip="draw the simulator's tissue inside the painted "
                                           "regions: nuclei, epithelium, lumens, capillary "
                                           "loops; sharper structure, simulator colours")
        model = self._model_choice(GENERATOR, "bundled generator", "generator file",
                                   "your generator in use")
        self.extend([self.mask, self.new_mask_button, self.stain, self.magnification, self.mpp,
                     self.seed,
                     self.variations, self.prior_only, *model,
                     *self._run_controls("Synthesize")])
        self.new_mask_button.changed.connect(self.new_mask_layer)
        self._on_layers_changed(lambda *_: self.mask.reset_choices())
        self._generator_cache: dict[str, Any] = {}

    def _mask_layers(self, _=None) -> list:
        # painted masks and RGB colour masks, told apart later
        return layers_of_type(self.viewer, "Labels", ndim=2) + [
            (name, lyr) for name, lyr in image_layers(self.viewer, ImageKind.RGB)]

    # -- the mask ------------------------------------------------------------------------------

    def new_mask_layer(self) -> Any:
        """A Labels layer to paint on: over the selected image (its size, scale and place), else
        over the current view at 0.25 µm/px (40x)."""
        from napari.layers import Image, Labels

        ref = next((lyr for lyr in list(self.viewer.layers.selection)
                    if isinstance(lyr, Image)), None) or next(
            (lyr for lyr in reversed(list(self.viewer.layers)) if isinstance(lyr, Image)), None)
        if ref is not None:
            level0 = ref.data[0] if ref.multiscale else ref.data
            shape = tuple(level0.shape[:2])
            kw = {"scale": tuple(ref.scale[-2:]), "translate": tuple(ref.translate[-2:]),
                      "units": tuple(ref.units[-2:])}
        else:
            mpp = vocab.MPP_AT_40X
            shape = (1024, 1024)
            kw = {"scale": (mpp, mpp), "units": ("µm", "µm")}
        if shape[0] * shape[1] > WHOLE_MASK_PIXELS * 4:
            import zarr  # a whole-slide mask lives in chunks, not in one array

            data = zarr.create_array(store=zarr.storage.MemoryStore(), shape=shape,
                                     chunks=(1024, 1024), dtype=np.uint8, fill_value=0)
        else:
            data = np.zeros(shape, np.uint8)
        from ..io.labels import label_names

        layer = Labels(data, name="painted mask", colormap=mask_colours(), opacity=0.6,
                       features=label_names(), metadata={"omniseg_mask": True}, **kw)
        self.viewer.add_layer(layer)
        # a bound method: napari's events hold it weakly, so a closed widget is not called
        layer.events.selected_label.connect(self._say_painting)
        layer.selected_label = vocab.tissue("pt").task_id + 1
        layer.mode = "paint"
        self.mask.reset_choices()
        self.mask.value = layer
        return layer

    def _say_painting(self, event: Any) -> None:
        """Name the label being painted: napari's label box shows only its number."""
        from ..io.labels import label_class

        value = int(event.source.selected_label)
        self.status.value = (f"painting {value} = {label_class(value).name} "
                             f"({LEGEND}; the label box of the layer controls)")

    def _magnification(self, layer: Any) -> float:
        if self.magnification.value != "auto":
            return float(self.magnification.value)
        mpp = layer_mpp(layer)
        if mpp is None:
            raise OmnisegInputError(f"{layer.name} is in pixels: give the mask's µm/px, or "
                                    "choose the magnification")
        return min(vocab.MAGNIFICATIONS,
                   key=lambda m: abs(vocab.magnification_of_mpp(mpp) / m - 1))

    def _generator(self, source: str, path: str):
        """The chosen generator (called in the worker: loading takes up to seconds)."""
        if source == ModelSource.IN_USE:
            return MODELS_IN_USE.chosen(GENERATOR, source)[0]
        key = path if source == ModelSource.FILE else source
        if key not in self._generator_cache:
            g = check_generator(MODELS_IN_USE.chosen(GENERATOR, source, path)[0], path)
            self._generator_cache = {key: g.cpu()}
        return self._generator_cache[key]

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Check the choices, then synthesise every variation in a helper thread."""
        from napari.layers import Labels

        from ..predict.synthesize import ANATOMY_PRIOR, check_labels, synthesize

        if self.worker is not None:
            return
        try:
            layer = self.mask.value
            if layer is None:
                raise OmnisegInputError("make a mask layer (New mask layer) and paint on it")
            if not isinstance(layer, Labels):
                raise OmnisegInputError(f"{layer.name} is an image, not a mask: choose a "
                                        "Labels layer painted with tissues")
            labels = layer.data[0] if layer.multiscale else layer.data
            h, w = labels.shape[-2:]
            y0, y1, x0, x1 = 0, h, 0, w
            if h * w > WHOLE_MASK_PIXELS:
                y0, y1, x0, x1 = self._visible_box(layer, h, w)
            region = labels[y0:y1, x0:x1]
            check_labels(region, layer.name)  # a cheap look, before anything loads
            if self.mpp.value:
                give_pixel_size(self.viewer, layer, float(self.mpp.value))
            mag = self._magnification(layer)
            # the prior draws at the mask's own pixel size unless a magnification was chosen
            own_mpp = layer_mpp(layer) if self.magnification.value == "auto" else None
            stain, seed, n = self.stain.value, int(self.seed.value), int(self.variations.value)
            source, path = self.model_source.value, str(self.model_file.value)
            prior_only = bool(self.prior_only.value)
            if source != ModelSource.BUNDLED and not prior_only:
                MODELS_IN_USE.check_choice(GENERATOR, source, path)
        except OmnisegInputError as e:
            self._report(str(e))
            return

        def job(progress, should_stop, emit):
            from ..run import check_stop

            progress(0, 0, "loading the generator...")
            generator = ANATOMY_PRIOR if prior_only else self._generator(source, path)
            lazy = [synthesize(generator, region, stain, mag, seed=seed + k, chunk=_CHUNK,
                               name=layer.name, mpp=own_mpp) for k in range(n)]
            per = [-(-(y1 - y0) // _CHUNK) * -(-(x1 - x0) // _CHUNK)] * n
            total, done = sum(per), 0
            for k, image in enumerate(lazy):
                out = np.empty(image.shape, np.uint8)
                for (ys, xs), block in _blocks(image):
                    check_stop(should_stop)
                    out[ys, xs] = block.compute(scheduler="synchronous")
                    done += 1
                    progress(done, total, f"variation {k + 1} of {n}")
                check_stop(should_stop)  # Stop pressed during the last block: no layer either
                emit((k, out))

        # each variation becomes a layer when it is complete: a stop leaves no partial image
        self._launch(job, status="synthesising...", failure="synthesis failed",
                     on_event=lambda ev: self._add_image(layer, ev, (y0, x0), stain, seed))

    def _visible_box(self, layer, h: int, w: int) -> tuple[int, int, int, int]:
        corners = self._visible_world_corners()
        data = np.asarray([layer.world_to_data(c) for c in corners])[:, -2:]
        f = 16
        y0, x0 = (np.floor(data.min(0)) // f * f).astype(int)
        y1, x1 = np.ceil(data.max(0)).astype(int)
        y0, x0, y1, x1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
        if y1 <= y0 or x1 <= x0:
            raise OmnisegInputError("the view does not show the mask; pan to where you painted")
        return y0, y1, x0, x1

    def _add_image(self, mask_layer, event, origin, stain: str, seed: int) -> None:
        from napari.layers import Image

        k, rgb = event
        name = f"synthetic {vocab.STAINS[stain]} (seed {seed + k})"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)  # synthesising again replaces it
        scale = np.asarray(mask_layer.scale[-2:], float)
        translate = np.asarray(mask_layer.translate[-2:], float) + np.asarray(origin) * scale
        layer = Image(rgb, name=name, rgb=True, scale=tuple(scale), translate=tuple(translate),
                      units=mask_layer.units, metadata={"mpp": layer_mpp(mask_layer),
                                                        "seed": seed + k,
                                                        "stain": stain,
                                                        "mask": mask_layer.name})
        self.viewer.layers.insert(self.viewer.layers.index(mask_layer), layer)
        self.status.value = f"added {name}"


def _blocks(image):
    """``((row slice, column slice), dask block)`` of every chunk of a dask image."""
    y = 0
    for i, ch in enumerate(image.chunks[0]):
        x = 0
        for j, cw in enumerate(image.chunks[1]):
            yield (slice(y, y + ch), slice(x, x + cw)), image.blocks[i, j]
            x += cw
        y += ch
