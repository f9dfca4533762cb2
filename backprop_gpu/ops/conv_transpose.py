"""Transposed 2-D convolution (``conv_transpose2d``): the adjoint of :func:`~backprop_gpu.ops.conv.conv2d`
in its input, composed from recorded ops: one matrix product spreads each input pixel over a kernel
window of output channels, and :func:`~backprop_gpu.ops.conv.col2im` sums the overlapping windows
into the output. Its gradients are a convolution (for the input) and a product with the windows
(for the weight), as every backend's matmul and im2col give them.
"""
from __future__ import annotations

from .conv import _pair, col2im
from .linalg import matmul
from .shape import reshape, transpose


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,  # noqa: A002
                     dilation=1):
    """``torch.nn.functional.conv_transpose2d`` for (N, C_in, H, W) input and a (C_in, C_out, kh, kw)
    weight: output size ``(H - 1) * stride - 2 * padding + kh + output_padding`` per axis. ``groups``
    and ``dilation`` other than 1 raise NotImplementedError."""
    if groups != 1 or _pair(dilation, "dilation") != (1, 1):
        raise NotImplementedError(f"conv_transpose2d: groups={groups!r} and dilation={dilation!r} are not "
                                  "supported (only 1)")
    if input.ndim != 4 or weight.ndim != 4 or weight.shape[0] != input.shape[1]:
        raise ValueError(f"conv_transpose2d: input {input.shape} and weight {weight.shape} do not fit "
                         "(expected (N, C_in, H, W) and (C_in, C_out, kh, kw))")
    n, c_in, h, w = input.shape
    c_out, kh, kw = weight.shape[1:]
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"conv_transpose2d: bias of shape {bias.shape} does not fit weight {weight.shape} "
                         f"(expected ({c_out},))")
    (sh, sw), (ph, pw), (oh, ow) = (_pair(stride, "stride"), _pair(padding, "padding"),
                                    _pair(output_padding, "output_padding"))
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"conv_transpose2d: stride must be >= 1 and padding >= 0, got {stride}, {padding}")
    if not (0 <= oh < sh and 0 <= ow < sw):
        raise ValueError(f"conv_transpose2d: output_padding {output_padding} must be smaller than stride {stride}")
    ho, wo = (h - 1) * sh - 2 * ph + kh + oh, (w - 1) * sw - 2 * pw + kw + ow
    if ho < 1 or wo < 1:
        raise ValueError(f"conv_transpose2d: output size {(ho, wo)} for input {input.shape} is not positive")
    # (C_out kh kw, C_in) @ (N, C_in, H W): each input pixel's window of every output channel
    cols = matmul(transpose(reshape(weight, (c_in, c_out * kh * kw)), 0, 1), reshape(input, (n, c_in, h * w)))
    out = col2im(reshape(cols, (n, c_out, kh * kw, h, w)), (n, c_out, ho, wo), (kh, kw), (sh, sw), (ph, pw))
    return out if bias is None else out + reshape(bias, (1, c_out, 1, 1))


__all__ = ["conv_transpose2d"]
