// Antialiased bilinear resize of u8 pixels, Pillow's arithmetic (libImaging/Resample.c):
// weights in 22-bit fixed point, computed once per image and axis, on the device
// (resize_weights_pixel, the same double arithmetic as the CPU reference's
// augserve_core::ops::resize::Coeffs, so the same weights) or on the host by that Rust code;
// a horizontal pass into a u8 intermediate, then a vertical pass. Bytes in, bytes out, no
// float image.
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
    int src_h;     // region height in pixels
    float crop_x0, crop_x1, crop_y0, crop_y1; // the crop box in the region (Coeffs::new's
                                              // in0, in1 per axis), for resize_weights
};

#define AS_BILINEAR_SUPPORT 1.0

AS_HD double bilinear_filter(double x) {
    x = x < 0.0 ? -x : x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

// A weight in fixed point, rounded half away from zero as Pillow does.
AS_HD int weight_to_fixed(double w) {
    const double scaled = w * (double)(1 << AS_PRECISION_BITS);
    return w < 0.0 ? (int)(-0.5 + scaled) : (int)(0.5 + scaled);
}

// Taps per output pixel of an axis resampled from [in0, in1) to out_size pixels.
AS_HD int resize_ksize(float in0, float in1, int out_size) {
    const double scale = (double)(in1 - in0) / (double)out_size;
    const double support = AS_BILINEAR_SUPPORT * (scale > 1.0 ? scale : 1.0);
    return (int)ceil(support) * 2 + 1;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for output pixel xx of an axis of
// in_size pixels: the same double operations in the same order as Coeffs::new (Rust, with
// no FMA contraction; NVRTC's --fmad=false, the host build's -ffp-contract=off), so the same
// first input, count and ksize weights (0 past the count), bit for bit.
AS_HD void resize_weights_pixel(int in_size, float in0, float in1, int out_size, int ksize,
                                int xx, int* first, int* count, int* w) {
    const double scale = (double)(in1 - in0) / (double)out_size;
    const double filterscale = scale > 1.0 ? scale : 1.0;
    const double support = AS_BILINEAR_SUPPORT * filterscale;
    const double ss = 1.0 / filterscale;
    const double center = (double)in0 + ((double)xx + 0.5) * scale;
    int xmin = (int)(center - support + 0.5);
    xmin = xmin < 0 ? 0 : xmin;
    int xmax = (int)(center + support + 0.5);
    xmax = xmax > in_size ? in_size : xmax;
    int n = xmax - xmin;
    n = n < 0 ? 0 : (n > ksize ? ksize : n);
    // The taps of one pixel summed in order, as Pillow does; each weight recomputed for the
    // division rather than kept (ksize grows with the downscale).
    double ww = 0.0;
    for (int x = 0; x < n; ++x) ww += bilinear_filter(((double)(x + xmin) - center + 0.5) * ss);
    const double div = ww != 0.0 ? ww : 1.0;
    for (int x = 0; x < ksize; ++x)
        w[x] = x < n ? weight_to_fixed(bilinear_filter(((double)(x + xmin) - center + 0.5) * ss) / div)
                     : 0;
    *first = xmin;
    *count = n;
}

// One output pixel's weights: image img, axis 0 (horizontal, into hfirst/hcount and the
// weights at hw_off) or 1 (vertical), output pixel xx.
AS_HD void resize_weights_value(const ResizeDesc* descs, int* hfirst, int* hcount, int* vfirst,
                                int* vcount, int* weights, int out_w, int out_h, int img,
                                int axis, int xx) {
    const ResizeDesc d = descs[img];
    if (axis == 0) {
        if (xx >= out_w) return;
        const int k = img * out_w + xx;
        resize_weights_pixel(d.src_w, d.crop_x0, d.crop_x1, out_w, d.hk, xx, hfirst + k,
                             hcount + k, weights + d.hw_off + (u64)xx * d.hk);
    } else {
        if (xx >= out_h) return;
        const int k = img * out_h + xx;
        resize_weights_pixel(d.src_h, d.crop_y0, d.crop_y1, out_h, d.vk, xx, vfirst + k,
                             vcount + k, weights + d.vw_off + (u64)xx * d.vk);
    }
}

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
