// Host build of the kernels' per-pixel arithmetic, for tests only: each function loops over
// what a kernel's grid would cover and calls the same AS_HD functions the device runs.
// Compiled by crates/augserve-cuda/tests/host_arithmetic.rs with the system C++ compiler.
#include "color.cuh"
#include "mix.cuh"
#include "resize.cuh"
#include "ycbcr.cuh"

extern "C" {

unsigned short host_f32_to_f16(float f) { return f32_to_f16_bits(f); }
float host_f16_to_f32(unsigned short h) { return f16_bits_to_f32(h); }

// Both resize passes over a whole batch, as resize_horizontal_u8 + resize_vertical_u8.
void host_resize_batch(const u8* src, u8* tmp, u8* out, const ResizeDesc* descs, int batch,
                       const int* hfirst, const int* hcount, const int* hweights,
                       const int* vfirst, const int* vcount, const int* vweights, int out_w,
                       int out_h) {
    for (int img = 0; img < batch; ++img)
        for (int row = 0; row < descs[img].tmp_rows; ++row)
            for (int xc = 0; xc < out_w * 3; ++xc)
                resize_h_value(src, tmp, descs, hfirst, hcount, hweights, out_w, img, row, xc);
    for (int img = 0; img < batch; ++img)
        for (int y = 0; y < out_h; ++y)
            for (int xc = 0; xc < out_w * 3; ++xc)
                resize_v_value(tmp, out, descs, vfirst, vcount, vweights, out_w, out_h, img, y,
                               xc);
}

// resize_weights over a whole batch.
void host_resize_weights(const ResizeDesc* descs, int batch, int* hfirst, int* hcount,
                         int* vfirst, int* vcount, int* weights, int out_w, int out_h) {
    const int longer = out_w > out_h ? out_w : out_h;
    for (int img = 0; img < batch; ++img)
        for (int axis = 0; axis < 2; ++axis)
            for (int xx = 0; xx < longer; ++xx)
                resize_weights_value(descs, hfirst, hcount, vfirst, vcount, weights, out_w,
                                     out_h, img, axis, xx);
}

// mix_normalize over a whole batch; sums as the kernel accumulates them (double).
void host_mix_normalize(const u8* images, const MixDesc* mix, const float* scale,
                        const float* bias, int dtype, int layout, u8* out, int batch, int height,
                        int width, double* sums) {
    for (int img = 0; img < batch; ++img)
        for (int y = 0; y < height; ++y)
            for (int x = 0; x < width; ++x) {
                float vals[3];
                int clipped[3];
                mix_normalize_pixel(images, mix, scale, bias, dtype, layout, out, img, y, x,
                                    height, width, vals, clipped);
                for (int c = 0; c < 3; ++c) {
                    sums[c] += vals[c];
                    sums[3 + c] += (double)vals[c] * vals[c];
                    sums[6 + c] += clipped[c];
                }
            }
}

float host_load_output(const u8* out, int dtype, unsigned long long idx) {
    return load_output(out, dtype, idx);
}

// color_luma_sums + color_apply over one HWC image, as the kernels do it.
void host_color_jitter(u8* img, int width, int height, float brightness, float contrast,
                       float saturation) {
    ColorDesc d = {0, width, height, brightness, contrast, saturation, width};
    if (color_identity(d)) return;
    const u64 pixels = (u64)width * height;
    u64 sum = 0;
    if (contrast != 1.0f)
        for (u64 i = 0; i < pixels; ++i)
            sum += color_gray_u8(color_brightness(img[i * 3], brightness),
                                 color_brightness(img[i * 3 + 1], brightness),
                                 color_brightness(img[i * 3 + 2], brightness));
    const float mean = contrast == 1.0f ? 0.0f : color_mean(sum, pixels);
    u8 lut[256];
    for (int v = 0; v < 256; ++v) lut[v] = color_lut(v, brightness, contrast, mean);
    const int s_fixed = color_saturation_fixed(saturation);
    for (u64 i = 0; i < pixels; ++i) color_pixel(img + i * 3, lut, saturation, s_fixed);
}

// ycbcr_to_rgb_u8 over a batch of images.
void host_ycbcr_to_rgb(const u8* planes, u8* out, const YccDesc* descs, int count) {
    for (int k = 0; k < count; ++k)
        for (int y = 0; y < descs[k].height; ++y)
            for (int x = 0; x < descs[k].width; ++x) ycc_pixel(planes, out, descs[k], x, y);
}

unsigned long long host_sizeof_color_desc() { return sizeof(ColorDesc); }
unsigned long long host_sizeof_resize_desc() { return sizeof(ResizeDesc); }
unsigned long long host_sizeof_mix_desc() { return sizeof(MixDesc); }
unsigned long long host_sizeof_ycc_desc() { return sizeof(YccDesc); }
}
