"""A 3x3 convolution whose backward is written for the CPU's matrix units.

oneDNN's bf16 convolution runs forward at matmul speed on AMX, but its backward is 3-7x slower than its forward
at the UNet's shapes (batch 48, 128-512 channels at 8x8 and 4x4; `bench/conv_backward.py`), and the weight
gradient is most of that. Here the backward is two operations that do run at matmul speed:

    grad_input  = oneDNN's backward-data pass                              (about as fast as its forward)
    grad_weight = grad_output^T @ im2col(input)                             (one GEMM, K = batch * H * W)

`Conv3x3` is an `nn.Conv2d` (same parameters, same state_dict keys, same forward) that takes this path only where
it pays: on the CPU, with autograd recording, in bf16 (under autocast or with bf16 tensors), for its 3x3 kernel with
stride 1 and padding 1. In a whole training step it is worth 1.06-1.12x (bench/train_step.py; interleaved A/B).
Everywhere else (inference, CUDA) it is exactly `nn.Conv2d`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def im2col3x3(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B*H*W, 9*C): the 3x3 neighbourhoods (zero padding 1), columns ordered (kh, kw, c)."""
    B, C, H, W = x.shape
    xp = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).contiguous()  # (B, H+2, W+2, C); no copy for channels-last input
    sB, sH, sW, sC = xp.stride()
    return xp.as_strided((B, H, W, 3, 3, C), (sB, sH, sW, sH, sW, sC)).reshape(B * H * W, 9 * C)  # one strided copy


class _Conv3x3Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=1)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        B, C, H, W = x.shape
        O = weight.shape[0]
        grad_x = grad_w = grad_b = None
        with torch.autocast(x.device.type, enabled=False):
            grad = grad.contiguous(memory_format=torch.channels_last)
            if ctx.needs_input_grad[0]:  # oneDNN's backward-data runs at about forward speed; only its weight pass is slow
                grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                             [True, False, False])[0]
            g2 = grad.permute(0, 2, 3, 1).reshape(B * H * W, O)  # a view: channels-last is (B, H, W, O) in memory
            if ctx.needs_input_grad[1]:
                grad_w = (g2.t().contiguous() @ im2col3x3(x)).view(O, 3, 3, C).permute(0, 3, 1, 2)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_b = g2.sum(0, dtype=torch.promote_types(grad.dtype, torch.float32)).to(grad.dtype)
        return grad_x, grad_w, grad_b


class Conv3x3(nn.Conv2d):
    """`nn.Conv2d(cin, cout, 3, padding=1)` with the matmul backward above on the CPU."""

    matmul_backward = True  # class-wide switch; False = plain nn.Conv2d everywhere (for benchmarks and checks)

    def __init__(self, cin: int, cout: int, kernel_size=3, stride=1, padding=None, bias: bool = True, **kwargs):
        # nn.Conv2d's signature as well: PEFT's LoRA builds its A and B matrices as "another of the same type" (a 1x1
        # B); padding None = 1 for the 3x3 kernel, nn.Conv2d's 0 for any other
        padding = (1 if kernel_size in (3, (3, 3)) else 0) if padding is None else padding
        super().__init__(cin, cout, kernel_size, stride=stride, padding=padding, bias=bias, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.matmul_backward or x.device.type != "cpu" or not torch.is_grad_enabled() or not (self.weight.requires_grad or x.requires_grad):
            return super().forward(x)
        if self.kernel_size != (3, 3) or self.stride != (1, 1) or self.padding != (1, 1) or self.groups != 1:
            return super().forward(x)  # not the 3x3 convolution the matmul backward is written for
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled("cpu"):  # cast as autocast would, outside the Function so the casts are recorded
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        if x.dtype == torch.float32:  # oneDNN's fp32 backward is not the slow one (measured: this path loses in fp32)
            return F.conv2d(x, weight, bias, padding=1)
        with torch.autocast("cpu", enabled=False):
            return _Conv3x3Function.apply(x, weight, bias)
