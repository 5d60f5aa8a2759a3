// Mixup/cutmix + normalise + layout + dtype in one pass, and the batch statistics.
// Grids: x over the pixels of a row, y over rows, z over images; blocks of AS_BLOCK threads.
#include "mix.cuh"

#define AS_BLOCK 256

// Adds `count` per-thread values, reduced over the block, to sums[0..count] (double atomics).
__device__ void block_add(double* sums, const double* local, int count) {
    __shared__ double shared[9][AS_BLOCK / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int k = 0; k < count; ++k) {
        double v = local[k];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0) shared[k][warp] = v;
    }
    __syncthreads();
    if ((int)threadIdx.x < count) {
        double t = 0.0;
        for (int w = 0; w < (int)(blockDim.x >> 5); ++w) t += shared[threadIdx.x][w];
        atomicAdd(&sums[threadIdx.x], t);
    }
}

// Writes the output tensor; sums[0..9] += (sum[3], sum_sq[3], clipped[3]) of its values.
extern "C" __global__ void mix_normalize(const u8* images, const MixDesc* mix, const float* scale,
                                         const float* bias, int dtype, int layout, u8* out,
                                         int height, int width, double* sums) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y, img = blockIdx.z;
    double local[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (x < width) {
        float vals[3];
        int clipped[3];
        mix_normalize_pixel(images, mix, scale, bias, dtype, layout, out, img, y, x, height,
                            width, vals, clipped);
        for (int c = 0; c < 3; ++c) {
            local[c] = vals[c];
            local[3 + c] = (double)vals[c] * vals[c];
            local[6 + c] = clipped[c];
        }
    }
    block_add(sums, local, 9);
}

// Second statistics pass: absdev[c] += |x - mean_c| with mean_c = sums[c] / n.
extern "C" __global__ void abs_dev_sums(const u8* out, int dtype, int layout, int height,
                                        int width, double n, const double* sums, double* absdev) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y, img = blockIdx.z;
    double local[3] = {0, 0, 0};
    if (x < width) {
        const u64 hw = (u64)height * width, p = (u64)y * width + x;
        for (int c = 0; c < 3; ++c) {
            const u64 idx = layout == AS_LAYOUT_NHWC ? ((u64)img * hw + p) * 3 + c
                                                     : ((u64)img * 3 + c) * hw + p;
            local[c] = fabs((double)load_output(out, dtype, idx) - sums[c] / n);
        }
    }
    block_add(absdev, local, 3);
}
