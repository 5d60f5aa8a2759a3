// Brightness / contrast / saturation per pixel, the arithmetic of augserve_core::ops::color
// (apply_color_jitter) for images decoded on the GPU. Same per-sample factors, same rounding:
// the host check (tests/host_arithmetic.rs) compares it with the Rust path byte for byte.
#pragma once
#include "common.cuh"

// One image of a batch of decoded HWC u8 images in one buffer.
struct ColorDesc {
    u64 offset;       // byte offset of the region's top-left pixel in the batch buffer
    int width, height; // the region jittered
    float brightness, contrast, saturation;
    int pitch;        // row length in pixels of the image the region lies in
};

// Byte offset of the region's pixel i (row-major over width x height).
AS_HD u64 color_pixel_offset(const ColorDesc& d, u64 i) {
    const u64 y = i / (u64)d.width, x = i - y * (u64)d.width;
    return d.offset + (y * (u64)d.pitch + x) * 3;
}

// ITU-R 601 luma in 16-bit fixed point, rounded (gray_u8 in Rust).
AS_HD u8 color_gray_u8(u8 r, u8 g, u8 b) {
    return (u8)(((unsigned)r * 19595u + (unsigned)g * 38470u + (unsigned)b * 7471u + 32768u) >> 16);
}

// f32::round (half away from zero), then clamp to a byte.
AS_HD u8 color_round_clamp(float v) {
    float r = roundf(v);
    return (u8)(r < 0.0f ? 0.0f : (r > 255.0f ? 255.0f : r));
}

// The brightness LUT entry of value v.
AS_HD u8 color_brightness(int v, float brightness) { return color_round_clamp((float)v * brightness); }

// The mean luma as Rust computes it: (sum as f64 / n as f64) as f32.
AS_HD float color_mean(u64 luma_sum, u64 pixels) {
    return (float)((double)luma_sum / (double)pixels);
}

// The brightness + contrast LUT entry of value v (contrast blends with the mean luma).
AS_HD u8 color_lut(int v, float brightness, float contrast, float mean) {
    u8 b = color_brightness(v, brightness);
    if (contrast == 1.0f) return b;
    return color_round_clamp(contrast * (float)b + (1.0f - contrast) * mean);
}

// Saturation in 16-bit fixed point: s = round(saturation * 65536).
AS_HD int color_saturation_fixed(float saturation) { return (int)roundf(saturation * 65536.0f); }

// One pixel in place: LUT, then (saturation != 1) blend with its own luma.
AS_HD void color_pixel(u8* p, const u8* lut, float saturation, int s_fixed) {
    u8 r = lut[p[0]], g = lut[p[1]], b = lut[p[2]];
    if (saturation == 1.0f) {
        p[0] = r;
        p[1] = g;
        p[2] = b;
        return;
    }
    int gray = (int)color_gray_u8(r, g, b);
    u8 v[3] = {r, g, b};
    for (int c = 0; c < 3; ++c) {
        int m = ((int)v[c] * s_fixed + gray * (65536 - s_fixed) + 32768) >> 16;
        p[c] = (u8)(m < 0 ? 0 : (m > 255 ? 255 : m));
    }
}

// Whether the factors change nothing (the Rust path returns early).
AS_HD bool color_identity(const ColorDesc& d) {
    return d.brightness == 1.0f && d.contrast == 1.0f && d.saturation == 1.0f;
}
