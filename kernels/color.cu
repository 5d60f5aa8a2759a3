// Colour jitter for GPU-decoded images (issue: GPU JPEG decoding). Two passes, one image per
// grid z: the luma sum of the brightness-adjusted image (for contrast), then the per-pixel
// LUT + saturation. Grids: x over pixels (blocks of 256), z over images.
#include "color.cuh"

extern "C" __global__ void color_luma_sums(const u8* images, const ColorDesc* descs,
                                           unsigned long long* sums) {
    const ColorDesc d = descs[blockIdx.z];
    if (d.contrast == 1.0f) return;
    const u64 pixels = (u64)d.width * d.height;
    unsigned long long local = 0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < pixels;
         i += (u64)gridDim.x * blockDim.x) {
        const u8* p = images + color_pixel_offset(d, i);
        local += color_gray_u8(color_brightness(p[0], d.brightness),
                               color_brightness(p[1], d.brightness),
                               color_brightness(p[2], d.brightness));
    }
    // Integer sums: the order of atomics cannot change the result.
    atomicAdd(&sums[blockIdx.z], local);
}

extern "C" __global__ void color_apply(u8* images, const ColorDesc* descs,
                                       const unsigned long long* sums) {
    const ColorDesc d = descs[blockIdx.z];
    if (color_identity(d)) return;
    const u64 pixels = (u64)d.width * d.height;
    __shared__ u8 lut[256];
    const float mean = d.contrast == 1.0f ? 0.0f : color_mean(sums[blockIdx.z], pixels);
    for (int v = threadIdx.x; v < 256; v += blockDim.x)
        lut[v] = color_lut(v, d.brightness, d.contrast, mean);
    __syncthreads();
    const int s_fixed = color_saturation_fixed(d.saturation);
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < pixels;
         i += (u64)gridDim.x * blockDim.x)
        color_pixel(images + color_pixel_offset(d, i), lut, d.saturation, s_fixed);
}
