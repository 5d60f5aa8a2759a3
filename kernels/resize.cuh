// Antialiased bilinear resize of u8 pixels, Pillow's arithmetic (libImaging/Resample.c):
// weights in 22-bit fixed point, computed once per image and axis on the host by the same
// Rust code as the CPU reference (augserve_core::ops::resize::Coeffs); a horizontal pass into
// a u8 intermediate, then a vertical pass. Bytes in, bytes out, no float image.
#pragma once
#include "common.cuh"

#define AS_PRECISION_BITS 22

// Per-image descriptor of a batched resize. Layout must match `ResizeDesc` in
// crates/augserve-cuda/src/kernels.rs (#[repr(C)]).
struct ResizeDesc {
    u64 src_off;  // byte offset of the image's region (its top-left pixel) in the source buffer
    u64 tmp_off;  // byte offset of its horizontal-pass output in the scratch buffer
    u64 hw_off;   // offset (in ints) of its horizontal weights: out_w rows of hk
    u64 vw_off;   // offset (in ints) of its vertical weights: out_h rows of vk
    int src_w;    // region width in pixels
    int row_lo;   // first region row the vertical pass reads
    int tmp_rows; // rows of the horizontal-pass output
    int hk;       // horizontal weights per output pixel (row stride of the weights)
    int vk;       // vertical weights per output row
    int flip;     // 1: mirror the output left to right
    int src_pitch; // source row length in pixels: src_w for a packed region, the full
                   // image's width for a region inside a GPU-decoded image
};

// Pillow's clip8: round the fixed-point accumulator to a byte.
AS_HD u8 clip8(int acc) {
    int v = acc >> AS_PRECISION_BITS;
    return (u8)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One output sample: the weighted sum of n inputs `stride` bytes apart.
AS_HD u8 resample_u8(const u8* src, long long stride, const int* w, int n) {
    int acc = 1 << (AS_PRECISION_BITS - 1);
    for (int i = 0; i < n; ++i) acc += (int)src[i * stride] * w[i];
    return clip8(acc);
}

// Horizontal pass, one value: image `img`, scratch row `row`, column*3+channel `xc`.
AS_HD void resize_h_value(const u8* src, u8* tmp, const ResizeDesc* descs, const int* hfirst,
                          const int* hcount, const int* hweights, int out_w, int img, int row,
                          int xc) {
    const ResizeDesc d = descs[img];
    if (row >= d.tmp_rows || xc >= out_w * 3) return;
    const int x = xc / 3, c = xc - x * 3;
    const int k = img * out_w + x;
    const u8* s = src + d.src_off + ((u64)(row + d.row_lo) * d.src_pitch + hfirst[k]) * 3 + c;
    tmp[d.tmp_off + ((u64)row * out_w + x) * 3 + c] =
        resample_u8(s, 3, hweights + d.hw_off + (u64)x * d.hk, hcount[k]);
}

// Vertical pass, one value: output row `y`, column*3+channel `xc`; the flip is fused here.
AS_HD void resize_v_value(const u8* tmp, u8* out, const ResizeDesc* descs, const int* vfirst,
                          const int* vcount, const int* vweights, int out_w, int out_h, int img,
                          int y, int xc) {
    if (y >= out_h || xc >= out_w * 3) return;
    const ResizeDesc d = descs[img];
    const int x = xc / 3, c = xc - x * 3;
    const int k = img * out_h + y;
    const u8* s = tmp + d.tmp_off + ((u64)(vfirst[k] - d.row_lo) * out_w + x) * 3 + c;
    const int ox = d.flip ? out_w - 1 - x : x;
    out[(((u64)img * out_h + y) * out_w + ox) * 3 + c] =
        resample_u8(s, (long long)out_w * 3, vweights + d.vw_off + (u64)y * d.vk, vcount[k]);
}
