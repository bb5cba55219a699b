"""The Triton kernel body of `gpunet.deploy.depthwise` (imported only where Triton is installed).

Left undecorated: `depthwise._kernel()` wraps it with `triton.jit` for the current mode, since
Triton picks compiled or interpreted execution (`TRITON_INTERPRET`) when it wraps a function.
No `from __future__ import annotations`: Triton reads the `tl.constexpr` annotations.
"""

import triton.language as tl


def dw_conv_act(x, w, b, y, n_pixels, H, W, C, OH, OW, stride, pad,  # noqa: N803  (Triton's naming)
                K: tl.constexpr, ACT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):  # type: ignore[no-untyped-def]
    """One tile of BLOCK_P output pixels x BLOCK_C channels of an NHWC depthwise KxK convolution.

    x: [N, H, W, C] input; w: [K*K, C] filters (tap-major, so a tap's channels are contiguous);
    b: [C] bias; y: [N, OH, OW, C] output. ACT: 0 none, 1 ReLU, 2 SiLU. fp32 accumulation.
    """
    pix = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pix_ok = pix < n_pixels
    ch_ok = ch < C
    n = pix // (OH * OW)
    oh = (pix // OW) % OH
    ow = pix % OW
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for kh in tl.static_range(K):
        ih = oh * stride - pad + kh
        for kw in tl.static_range(K):
            iw = ow * stride - pad + kw
            ok = pix_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            base = ((n * H + ih) * W + iw) * C
            xv = tl.load(x + base[:, None] + ch[None, :], mask=ok[:, None] & ch_ok[None, :], other=0.0)
            wv = tl.load(w + (kh * K + kw) * C + ch, mask=ch_ok, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    acc += tl.load(b + ch, mask=ch_ok, other=0.0).to(tl.float32)[None, :]
    if ACT == 1:
        acc = tl.maximum(acc, 0.0)
    if ACT == 2:
        acc = acc * tl.sigmoid(acc)
    tl.store(y + pix[:, None] * C + ch[None, :], acc.to(y.dtype.element_ty), mask=pix_ok[:, None] & ch_ok[None, :])
