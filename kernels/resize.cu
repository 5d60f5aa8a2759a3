// Batched resize: a batch of variable-size u8 HWC regions packed in one buffer -> one
// fixed-size u8 HWC batch. Grid: x over columns*3 of a row, y over rows, z over images.
#include "resize.cuh"

// The resize weights of every image, axis and output pixel (the host uploads descriptors
// only). Grid: x over output pixels of the longer axis, y over the two axes, z over images.
extern "C" __global__ void resize_weights(const ResizeDesc* descs, int* hfirst, int* hcount,
                                          int* vfirst, int* vcount, int* weights, int out_w,
                                          int out_h) {
    const int xx = blockIdx.x * blockDim.x + threadIdx.x;
    resize_weights_value(descs, hfirst, hcount, vfirst, vcount, weights, out_w, out_h,
                         blockIdx.z, blockIdx.y, xx);
}

extern "C" __global__ void resize_horizontal_u8(const u8* src, u8* tmp, const ResizeDesc* descs,
                                                const int* hfirst, const int* hcount,
                                                const int* hweights, int out_w) {
    const int xc = blockIdx.x * blockDim.x + threadIdx.x;
    resize_h_value(src, tmp, descs, hfirst, hcount, hweights, out_w, blockIdx.z, blockIdx.y, xc);
}

extern "C" __global__ void resize_vertical_u8(const u8* tmp, u8* out, const ResizeDesc* descs,
                                              const int* vfirst, const int* vcount,
                                              const int* vweights, int out_w, int out_h) {
    const int xc = blockIdx.x * blockDim.x + threadIdx.x;
    resize_v_value(tmp, out, descs, vfirst, vcount, vweights, out_w, out_h, blockIdx.z,
                   blockIdx.y, xc);
}
