"""The product's closed choices as string enums, so a misspelt choice fails where it is written
and an IDE can list the values. Each member is its old string (a ``str`` subclass), so
checkpoints, command-line values and widget settings written before keep working."""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A choice that is also its string (``enum.StrEnum`` arrived only in Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def _missing_(cls, value: object) -> None:
        # the default "'vq' is not a valid GeneratorArchitecture" names no choice
        choices = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"{value!r} is not one of {choices}")


class ModelSource(StrEnum):
    """Where a widget takes its model from."""

    IN_USE = "in use"
    """The model the person accepted in this session (Fine-tune's "Use this model")."""
    BUNDLED = "bundled"
    """The checkpoint that ships in the package's ``weights/`` folder."""
    FILE = "file"
    """A checkpoint file the person chose."""


class ImageKind(StrEnum):
    """What a task's annotations are painted on."""

    RGB = "rgb"
    """A 2D colour image (kidney slides and patches)."""
    VOLUME = "volume"
    """A 3D grey volume (fetal MRI)."""


class GeneratorArchitecture(StrEnum):
    """The histology generator's design (docs/synthesis.md)."""

    PYRAMID = "pyramid"
    """Coarse-to-fine levels, each refining the one below (the bundled design)."""
    SINGLE = "single"
    """One pix2pix level (the ablation baseline)."""


class Perceptual(StrEnum):
    """The feature space of the synthesis perceptual loss."""

    SEGMENTER = "segmenter"
    """The bundled renal segmenter's encoder (no ImageNet network can be downloaded here)."""
    NONE = "none"
    """No perceptual loss."""


#: The name of the bundled histology generator. Synthesis is a capability, not a task of
#: :mod:`napari_omniseg.tasks`: a generator answers no condition "structure S at scale M"; it is
#: bundled, chosen and put in use under this name beside the tasks' segmenters.
GENERATOR = "synthesis"


class AdaptLevel(StrEnum):
    """Where adaptation's discriminators look (docs/adaptation.md)."""

    ENCODER = "encoder"
    """The segmenter's five encoder feature maps."""
    DECODER = "decoder"
    """Its four decoder feature maps."""
    SHAPE = "shape"
    """Its answers (masks), with the tissue and magnification asked."""


class StainNormalisation(StrEnum):
    """How an image's colours are mapped to a reference stain before segmenting."""

    NONE = "none"
    """The image as it is."""
    REINHARD = "reinhard"
    """Per-channel mean and spread matched in CIELAB (Reinhard et al. 2001)."""
    MACENKO = "macenko"
    """Stain vectors and concentrations from optical density (Macenko et al. 2009)."""


class LsrLoss(StrEnum):
    """How block statistics are matched to the block table (label super-resolution)."""

    INTRA = "intra"
    """Each block on its own (Malkin et al.'s LSR)."""
    INTER = "inter"
    """Groups of same-class blocks: the spread of their block means."""
    INTRA_INTER = "intra+inter"
    """Groups, with the mean within-block variance added (law of total variance)."""


class LsrDistance(StrEnum):
    """The statistics-matching distance of label super-resolution."""

    NLL = "nll"
    """Gaussian negative log-likelihood of the table's mean (no degenerate minimum)."""
    PAPER = "paper"
    """The paper's distance, whose mean term vanishes as the predicted variance goes to 0."""
