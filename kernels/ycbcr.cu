// Planar YCbCr from nvJPEG -> interleaved RGB (the layout the resize reads). Grid: x over the
// pixels of the largest image (grid stride), z over images.
#include "ycbcr.cuh"

extern "C" __global__ void ycbcr_to_rgb_u8(const u8* planes, u8* out, const YccDesc* descs) {
    const YccDesc d = descs[blockIdx.z];
    const u64 pixels = (u64)d.width * d.height;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < pixels;
         i += (u64)gridDim.x * blockDim.x) {
        const int y = (int)(i / (u64)d.width), x = (int)(i - (u64)y * d.width);
        ycc_pixel(planes, out, d, x, y);
    }
}
