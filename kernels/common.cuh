// Shared definitions for augserve's kernels. Everything per-pixel is written as AS_HD
// functions: compiled for the device by NVRTC, and for the host by the tests
// (crates/augserve-cuda/tests/host_arithmetic.rs), which check them against the Rust reference.
#pragma once

#if defined(__CUDACC__)
#define AS_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#define AS_HD inline
#endif

typedef unsigned char u8;
typedef unsigned long long u64;

// Output dtype and layout codes (match augserve-cuda's Rust enums).
#define AS_DTYPE_U8 0
#define AS_DTYPE_F16 1
#define AS_DTYPE_F32 2
#define AS_LAYOUT_NCHW 0
#define AS_LAYOUT_NHWC 1

// Bit casts and unaligned-free stores usable on host and device (no memcpy, no cuda_fp16.h).
AS_HD unsigned int f32_bits(float f) {
    union { float f; unsigned int u; } v;
    v.f = f;
    return v.u;
}
AS_HD float f32_from_bits(unsigned int u) {
    union { float f; unsigned int u; } v;
    v.u = u;
    return v.f;
}
AS_HD void store_f32(u8* p, float v) { *reinterpret_cast<float*>(p) = v; }
AS_HD void store_u16(u8* p, unsigned short v) { *reinterpret_cast<unsigned short*>(p) = v; }
AS_HD float load_f32(const u8* p) { return *reinterpret_cast<const float*>(p); }
AS_HD unsigned short load_u16(const u8* p) { return *reinterpret_cast<const unsigned short*>(p); }
