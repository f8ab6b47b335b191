import json

import pytest
import torch

from napari_omniseg.checkpoints import load_model, read_metadata, save_checkpoint
from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.nets.registry import Architecture, architecture, architecture_of, register


class TinyGenerator(torch.nn.Module):
    """Stands for a network added later (a generator): it registers itself, nothing else."""

    architecture = "tiny_generator_for_tests"

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.conv = torch.nn.Conv2d(channels, 3, 3, padding=1)


register(Architecture(
    "tiny_generator_for_tests", build=lambda meta: TinyGenerator(int(meta["channels"])),
    settings=lambda net: {"channels": net.channels}, vocabulary=lambda: {"stains": ["he"]}))


def test_a_registered_network_saves_and_loads_like_the_segmenters(tmp_path):
    net = TinyGenerator(channels=5)
    path = save_checkpoint(net, tmp_path / "g.pt", trained_on="nothing")
    meta = read_metadata(path)
    assert meta["architecture"] == "tiny_generator_for_tests" and meta["channels"] == 5
    assert meta["vocabulary"] == {"stains": ["he"]} and meta["trained_on"] == "nothing"
    loaded = load_model(path, device="cpu")
    assert isinstance(loaded, TinyGenerator) and loaded.channels == 5
    assert torch.equal(loaded.conv.weight, net.conv.weight)


def test_built_in_networks_are_found_by_name_and_by_instance():
    from napari_omniseg.nets.conemos import CoNeMOS

    assert architecture("omniseg_plus").build({"width": 0.25}).width == 0.25
    assert architecture_of(CoNeMOS(conditioned=False)).name == "conemos"


def test_an_unknown_architecture_is_one_sentence(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"state_dict": {}, "metadata": json.dumps({"architecture": "from_the_future"})},
               path)
    with pytest.raises(OmnisegInputError, match=r"future\.pt: a 'from_the_future' model cannot be "
                                                r"built by this version; update"):
        load_model(path)
    with pytest.raises(OmnisegInputError, match="not a registered network"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "x.pt")


def test_bfloat16_by_default_only_where_the_cpu_has_it(monkeypatch):
    """Emulated bfloat16 made the segmenter 8x slower than float32 (a CPU without
    AVX512-BF16 or AMX): the default follows the hardware, and an explicit choice wins."""
    import torch

    from napari_omniseg.checkpoints import default_bf16, model_and_precision
    from napari_omniseg.nets.omniseg import OmniSegPlus

    model = OmniSegPlus(width=0.25)
    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert default_bf16(torch.device("cpu")) is native
        assert default_bf16(model) is native  # a module: the device of its weights
        assert model_and_precision(model, "renal", None)[1] is native
        assert model_and_precision(model, "renal", not native)[1] is (not native)
    assert default_bf16(torch.device("cuda")) is False
