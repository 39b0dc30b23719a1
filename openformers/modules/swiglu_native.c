/* SwiGLU for training on the CPU, float32: h = silu(g) * u in one pass, and its backward in one pass.
 *
 * Built on first use by core/native.py (-O3 -march=native -fopenmp) and called through ctypes from
 * modules/swiglu_native.py; threads are PyTorch's OpenMP threads.
 *
 * With s = sigmoid(g) = 1 / (1 + exp(-g)):
 *   forward   h  = g s u                               (PyTorch: silu(g) = g / (1 + exp(-g)), then * u)
 *   backward  du = dh g s,   dg = dh u s (1 + g (1 - s))  (PyTorch's silu_backward formula)
 * exp is a branch-free polynomial the compiler vectorizes (relative error ~3e-7 in [-87, 88.7], infinity above); the values
 * differ from PyTorch's by float32 roundings.
 */
#include <stdint.h>
#include <string.h>
#include <omp.h>

#define BLOCK 8192

static inline float exp_poly(float x) {
    x = x < -87.0f ? -87.0f : x;  /* 2^k stays a normal float below, and is infinity (2^128) above 88.7 */
    x = x > 89.0f ? 89.0f : x;    /* NaN passes through both comparisons */
    const float t = x * 1.44269504088896341f + 12582912.0f;  /* k = round(x / ln 2) in the low bits */
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    const float k = t - 12582912.0f;
    float r = x - k * 0.693145751953125f;  /* ln 2 in two parts: r = x - k ln 2, |r| <= ln 2 / 2 */
    r = r - k * 1.428606765330187045e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t scale_bits = (bits - 0x4B400000 + 127) << 23;  /* 2^k */
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

void of_swiglu(const float *g, const float *u, float *h, int64_t n, int threads) {
    const int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t end = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
        for (int64_t i = b * BLOCK; i < end; i++) {
            const float x = g[i];
            h[i] = x / (1.0f + exp_poly(-x)) * u[i];
        }
    }
}

void of_swiglu_backward(const float *dh, const float *g, const float *u, float *dg, float *du, int64_t n, int threads) {
    const int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t end = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
        for (int64_t i = b * BLOCK; i < end; i++) {
            const float x = g[i], d = dh[i];
            const float s = 1.0f / (1.0f + exp_poly(-x));
            du[i] = d * (x * s);
            dg[i] = d * u[i] * (s * (1.0f + x * (1.0f - s)));
        }
    }
}
