// Mixup / cutmix fused with normalisation, layout and dtype conversion: one pass from the
// resized u8 batch to the output tensor. Same arithmetic as augserve_core::ops::mix.
#pragma once
#include "common.cuh"

// Per-sample mixing. Layout must match `MixDesc` in crates/augserve-cuda/src/kernels.rs.
struct MixDesc {
    int partner;  // sample mixed into this one
    float lam;    // weight of the sample's own image
    int has_cut;  // 1: cutmix with the box below; 0: mixup with lam
    int y0, y1, x0, x1;
};

// The mixed value of one channel, 0..255 (fractional under mixup). Plain a*lam + b*(1-lam),
// compiled without FMA contraction so it equals the CPU's result bit for bit.
AS_HD float mixed_value(const u8* images, const MixDesc* mix, int img, int y, int x, int c,
                        int height, int width) {
    const MixDesc m = mix[img];
    const u64 hw3 = (u64)height * width * 3;
    const u64 p = ((u64)y * width + x) * 3 + c;
    const u8 own = images[(u64)img * hw3 + p];
    const u8 other = images[(u64)m.partner * hw3 + p];
    if (m.has_cut) {
        bool inside = y >= m.y0 && y < m.y1 && x >= m.x0 && x < m.x1;
        return (float)(inside ? other : own);
    }
    if (m.lam == 1.0f || m.partner == img) return (float)own;
    return m.lam * (float)own + (1.0f - m.lam) * (float)other;
}

// f32 -> IEEE half, round to nearest even (as half::f16::from_f32), written out so host and
// device share one definition without cuda_fp16.h.
AS_HD unsigned short f32_to_f16_bits(float f) {
    const unsigned int x = f32_bits(f);
    const unsigned int sign = (x >> 16) & 0x8000u;
    const unsigned int exp = (x >> 23) & 0xffu;
    unsigned int man = x & 0x7fffffu;
    if (exp == 0xffu) {  // inf or NaN (keep NaN quiet and non-zero)
        return (unsigned short)(sign | 0x7c00u | (man ? (0x200u | (man >> 13)) : 0u));
    }
    const int half_exp = (int)exp - 127 + 15;
    if (half_exp >= 0x1f) return (unsigned short)(sign | 0x7c00u);  // overflow -> inf
    if (half_exp <= 0) {                                               // subnormal or zero
        if (14 - half_exp > 24) return (unsigned short)sign;
        man |= 0x800000u;
        const unsigned int shift = (unsigned int)(14 - half_exp);
        unsigned int half_man = man >> shift;
        const unsigned int round_bit = 1u << (shift - 1);
        if ((man & round_bit) && ((man & (3u * round_bit - 1u)) || (half_man & 1u))) ++half_man;
        return (unsigned short)(sign | half_man);
    }
    const unsigned int half_man = man >> 13;
    unsigned int h = sign | ((unsigned int)half_exp << 10) | half_man;
    const unsigned int round_bit = 0x1000u;
    if ((man & round_bit) && ((man & (3u * round_bit - 1u)) || (h & 1u))) ++h;
    return (unsigned short)h;
}

// IEEE half -> f32 (exact).
AS_HD float f16_bits_to_f32(unsigned short h) {
    const unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    const unsigned int exp = ((unsigned int)h >> 10) & 0x1fu;
    unsigned int man = (unsigned int)h & 0x3ffu;
    unsigned int bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do {
                ++e;
                man <<= 1;
            } while (!(man & 0x400u));
            bits = sign | ((unsigned int)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    return f32_from_bits(bits);
}

// Reads element idx of an output tensor as a float.
AS_HD float load_output(const u8* out, int dtype, u64 idx) {
    if (dtype == AS_DTYPE_U8) return (float)out[idx];
    if (dtype == AS_DTYPE_F16) return f16_bits_to_f32(load_u16(out + idx * 2));
    return load_f32(out + idx * 4);
}

// Writes the three channels of output pixel (img, y, x); returns the written values (as the
// output holds them) in vals[] and whether each raw value sat at 0 or 255 in clipped[].
AS_HD void mix_normalize_pixel(const u8* images, const MixDesc* mix, const float* scale,
                               const float* bias, int dtype, int layout, u8* out, int img, int y,
                               int x, int height, int width, float* vals, int* clipped) {
    const u64 hw = (u64)height * width;
    const u64 p = (u64)y * width + x;
    for (int c = 0; c < 3; ++c) {
        const float v = mixed_value(images, mix, img, y, x, c, height, width);
        const u64 idx = layout == AS_LAYOUT_NHWC ? ((u64)img * hw + p) * 3 + c
                                                 : ((u64)img * 3 + c) * hw + p;
        clipped[c] = (v <= 0.0f || v >= 255.0f) ? 1 : 0;
        if (dtype == AS_DTYPE_U8) {
            float r = roundf(v);
            r = r < 0.0f ? 0.0f : (r > 255.0f ? 255.0f : r);
            out[idx] = (u8)r;
            vals[c] = r;
        } else if (dtype == AS_DTYPE_F16) {
            const unsigned short h = f32_to_f16_bits(v * scale[c] + bias[c]);
            store_u16(out + idx * 2, h);
            vals[c] = f16_bits_to_f32(h);
        } else {
            const float o = v * scale[c] + bias[c];
            store_f32(out + idx * 4, o);
            vals[c] = o;
        }
    }
}
