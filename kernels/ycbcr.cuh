// Planar YCbCr (as nvJPEG decodes it, chroma at its native subsampling) -> interleaved RGB,
// with zune-jpeg's arithmetic, so GPU-decoded images match the CPU decoder: chroma upsampled
// by the triangle filter (vertical (3*near + far + 2) >> 2, then horizontal on those values,
// edges replicated; zune-jpeg's upsampler/scalar.rs), then its 14-bit fixed-point BT.601
// full-range conversion (color_convert/scalar.rs). nvJPEG's own RGB output replicates chroma
// instead, 0.5 levels off on average and up to 2.8 on colourful images (issue 9, H200 run).
// The host check (tests/host_arithmetic.rs) compares this with zune-jpeg's decoded pixels.
// One known difference: where the image size is not a multiple of the MCU, zune-jpeg
// interpolates the last chroma column/row with the decoded MCU padding, which nvJPEG's
// cropped planes do not have; here the edge sample is repeated (the last luma column/row).
#pragma once
#include "common.cuh"

// One image: where its planes lie in the planar buffer, where its RGB goes.
struct YccDesc {
    u64 y_off, cb_off, cr_off; // byte offsets of the planes in the planar buffer
    u64 dst_off;               // byte offset of the RGB image (pitch width*3) in the output
    int width, height;         // image size = luma plane size
    int y_pitch, c_pitch;      // plane row lengths in bytes
    int c_width, c_height;     // chroma plane size
    int h_shift, v_shift;      // 1 where chroma is halved in that direction, else 0
    int gray;                  // one component: R = G = B = Y
    int pad_;
};

// Chroma sample (cx, row) of a plane, vertically upsampled to luma row y when v_shift:
// the nearer chroma row weighs 3, the other 1; the first and last rows use themselves.
AS_HD int ycc_vertical(const u8* plane, const YccDesc& d, int cx, int y) {
    if (!d.v_shift) return plane[(u64)y * d.c_pitch + cx];
    const int near = y >> 1;
    int far = (y & 1) ? near + 1 : near - 1;
    far = far < 0 ? 0 : (far >= d.c_height ? d.c_height - 1 : far);
    return (3 * plane[(u64)near * d.c_pitch + cx] + 2 + plane[(u64)far * d.c_pitch + cx]) >> 2;
}

// Chroma at luma pixel (x, y). Horizontally (h_shift): output 0 and 2*c_width-1 copy the
// edge samples, the others weigh the nearer sample 3 and its other neighbour 1.
AS_HD int ycc_chroma(const u8* plane, const YccDesc& d, int x, int y) {
    if (!d.h_shift) return ycc_vertical(plane, d, x, y);
    const int cx = x >> 1;
    if (x == 0 || x == 2 * d.c_width - 1) return ycc_vertical(plane, d, cx, y);
    const int other = (x & 1) ? cx + 1 : cx - 1;
    return (3 * ycc_vertical(plane, d, cx, y) + 2 + ycc_vertical(plane, d, other, y)) >> 2;
}

AS_HD u8 ycc_clamp(int v) { return (u8)(v < 0 ? 0 : (v > 255 ? 255 : v)); }

// zune-jpeg's YCbCr -> RGB: 14-bit coefficients, rounding constant 8191.
AS_HD void ycc_to_rgb(int y, int cb, int cr, u8* rgb) {
    cb -= 128;
    cr -= 128;
    const int y0 = y * 16384 + 8191;
    rgb[0] = ycc_clamp((y0 + cr * 22970) >> 14);
    rgb[1] = ycc_clamp((y0 + cr * -11700 + cb * -5638) >> 14);
    rgb[2] = ycc_clamp((y0 + cb * 29032) >> 14);
}

// Pixel (x, y) of one image: planes -> RGB in the output.
AS_HD void ycc_pixel(const u8* planes, u8* out, const YccDesc& d, int x, int y) {
    u8* rgb = out + d.dst_off + ((u64)y * d.width + x) * 3;
    const int luma = planes[d.y_off + (u64)y * d.y_pitch + x];
    if (d.gray) {
        rgb[0] = rgb[1] = rgb[2] = (u8)luma;
        return;
    }
    ycc_to_rgb(luma, ycc_chroma(planes + d.cb_off, d, x, y), ycc_chroma(planes + d.cr_off, d, x, y),
               rgb);
}
