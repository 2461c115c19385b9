"""Conv3x3: the CPU matmul backward gives nn.Conv2d's gradients (fp64 to rounding, bf16 autocast to bf16 precision)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minicream.models.conv import Conv3x3, im2col3x3
from minicream.models.unet import MoEUNet

from test_models import randomize, small_config, unet_inputs


def twin(cin=6, cout=5, bias=True, dtype=torch.float64):
    torch.manual_seed(0)
    ours = Conv3x3(cin, cout, bias=bias).to(dtype)
    ref = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=bias).to(dtype)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def grads(conv, x, g):
    x = x.detach().clone().requires_grad_()
    y = conv(x)
    y.backward(g)
    out = [y.detach(), x.grad, conv.weight.grad] + ([conv.bias.grad] if conv.bias is not None else [])
    conv.zero_grad(set_to_none=True)
    return out


def test_im2col_known_answer():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).view(2, 3, 4, 5)
    cols = im2col3x3(x)
    assert cols.shape == (2 * 4 * 5, 9 * 3)
    xp = F.pad(x, (1, 1, 1, 1))
    b, h, w = 1, 2, 3  # row of (b, h, w); column (kh, kw, c)
    row = cols[(b * 4 + h) * 5 + w].view(3, 3, 3)
    for kh in range(3):
        for kw in range(3):
            assert torch.equal(row[kh, kw], xp[b, :, h + kh, w + kw])
    assert torch.equal(im2col3x3(x.contiguous(memory_format=torch.channels_last)), cols)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_gradients_equal_nn_conv2d_fp64(bias, channels_last):
    ours, ref = twin(bias=bias)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 7, 5, generator=g, dtype=torch.float64)
    gy = torch.randn(3, 5, 7, 5, generator=g, dtype=torch.float64)
    if channels_last:
        x, gy = x.contiguous(memory_format=torch.channels_last), gy.contiguous(memory_format=torch.channels_last)
    for a, b in zip(grads(ours, x, gy), grads(ref, x, gy)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_gradients_under_bf16_autocast_match_and_land_in_fp32():
    ours, ref = twin(32, 16, dtype=torch.float32)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 32, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
    gy = torch.randn(8, 16, 8, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = grads(ours, x, gy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b = grads(ref, x, gy)
    assert a[0].dtype == torch.bfloat16 and a[2].dtype == torch.float32 and a[3].dtype == torch.float32
    for u, v in zip(a, b):  # both are bf16 computations: equal to bf16 rounding, relative to the tensor's scale
        assert (u.float() - v.float()).abs().max() <= 2e-2 * v.float().abs().max()


def test_forward_without_grad_is_nn_conv2d_bit_for_bit():
    ours, ref = twin(dtype=torch.float32)
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ours(x), ref(x))


def test_unet_gradients_equal_with_the_switch_off():
    """The whole UNet: its parameter gradients with the matmul backward equal those of plain nn.Conv2d (fp64)."""
    model = randomize(MoEUNet(small_config(moe="none"))).double()
    x, t, ctx, mask, pooled = unet_inputs()
    x, ctx, pooled = x.double(), ctx.double(), pooled.double()

    def param_grads():
        model.zero_grad(set_to_none=True)
        model(x, t, ctx, mask, pooled).pow(2).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    ours = param_grads()
    try:
        Conv3x3.matmul_backward = False
        ref = param_grads()
    finally:
        Conv3x3.matmul_backward = True
    assert ours.keys() == ref.keys()
    for n in ours:
        torch.testing.assert_close(ours[n], ref[n], rtol=1e-8, atol=1e-10, msg=n)
