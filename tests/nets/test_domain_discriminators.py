import pytest
import torch

from napari_omniseg.nets.domain_discriminators import (
    MirrorDiscriminator,
    ShapeDiscriminator,
    decoder_channels,
    encoder_channels,
)
from napari_omniseg.nets.omniseg import OmniSegPlus


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_each_feature_map_has_the_size_and_channels_the_discriminators_expect(width):
    net = OmniSegPlus(width=width).eval()
    with torch.no_grad():
        _, _, encoder, decoder = net.feature_maps(torch.rand(2, 3, 64, 64))
    assert [m.shape[1] for m in encoder] == list(encoder_channels(width))
    assert [m.shape[-1] for m in encoder] == [64, 32, 16, 8, 4]
    finest_first = decoder[::-1]
    assert [m.shape[1] for m in finest_first] == list(decoder_channels(width))
    assert [m.shape[-1] for m in finest_first] == [64, 32, 16, 8]
    for channels, maps in ((encoder_channels(width), encoder),
                           (decoder_channels(width), finest_first)):
        assert MirrorDiscriminator(channels)(maps).shape == (2,)


def test_feature_maps_give_the_same_answer_as_the_forward_pass():
    net = OmniSegPlus(width=0.5).eval()
    x = torch.rand(1, 3, 32, 32)
    t, s = torch.tensor([2]), torch.tensor([1])
    with torch.no_grad():
        head, context, _, _ = net.feature_maps(x)
        assert torch.equal(net.dynamic_head(head, net.head_params(context, t, s)), net(x, t, s))


def test_a_mirror_discriminator_refuses_maps_that_do_not_halve():
    d = MirrorDiscriminator((4, 8))
    with pytest.raises(ValueError, match="half"):
        d([torch.rand(1, 4, 16, 16), torch.rand(1, 8, 16, 16)])
    with pytest.raises(ValueError, match="2 feature maps"):
        d([torch.rand(1, 4, 16, 16)])


def test_the_shape_discriminator_depends_on_the_condition():
    torch.manual_seed(0)
    d = ShapeDiscriminator()
    p = torch.rand(3, 64, 64)
    a = d(p, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 3]))
    b = d(p, torch.tensor([5, 4, 3]), torch.tensor([3, 2, 0]))
    assert a.shape == (3,)
    assert not torch.allclose(a, b)
