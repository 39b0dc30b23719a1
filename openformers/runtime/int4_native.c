/* 4-bit weight-only matrix-vector products and the small operators of a decode step.
 *
 * Built on first use by int4_native.py (gcc or cc, -O3 -march=native -fopenmp) and called through
 * ctypes. Threads come from the OpenMP runtime PyTorch already loaded (the same libgomp.so.1), so the
 * products and PyTorch's own operators share one pool of threads.
 *
 * Weight layout (one linear, `out` rows (a multiple of 4) of `in` values (a multiple of 64), groups of 32).
 * Rows go in tiles of 4, and each tile is read as two forward streams:
 *   q   [out / 4][in / 64][4][32] bytes: per tile and pair of groups (g0, g1), 32 bytes for each of the
 *       tile's 4 rows. Byte j of a group (j = 0..15) holds value j of the group in its low nibble and value
 *       j + 16 in its high nibble, and sits at position 4 * (j / 2) + 2 * g + (j % 2) of the row's 32 bytes
 *       (g = 0 or 1): read as 16-bit lanes, the two groups alternate every other 32-bit lane.
 *   sz  [out / 4][in / 64][4][2][2] bfloat16: per tile, pair and row, (scale, zero) of g0, then of g1, where
 *       a value is (q - 8) * scale + zero, that is (128 + q) * scale + (zero - 136 * scale); 128 + q is
 *       the bfloat16 0x4300 | q.
 * Activations are rounded to bfloat16 (as PyTorch's int4 kernel does with its default compute dtype);
 * products accumulate in float32. With AVX-512 BF16 the products are bfloat16 dot products; without it,
 * float32 products of the unpacked nibbles and the rounded activations (AVX-512F/BW or AVX2 + FMA), which
 * differ from the dot products only in summation order; elsewhere, portable loops (of_simd says which).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
#define OF_BF16_DOT 1
#else
#define OF_BF16_DOT 0
#endif
/* Without the bfloat16 dot product, the 4-bit products unpack the nibbles to float32 and multiply them with
 * the bfloat16-rounded activations widened to float32 (held as float32 in the arranged order): 16 lanes
 * with AVX-512F/BW (Intel Skylake-X to Ice Lake), 8 with AVX2 and FMA (AMD Zen 2/3, Intel Haswell on). */
#if !OF_BF16_DOT && defined(__AVX512F__) && defined(__AVX512BW__)
#define OF_F32_LANES 16
#elif !OF_BF16_DOT && defined(__AVX2__) && defined(__FMA__)
#define OF_F32_LANES 8
#else
#define OF_F32_LANES 0
#endif
/* the dense float32 / bfloat16 weight rows of the step: 16 lanes with AVX-512F, 8 with AVX2 and FMA */
#if defined(__AVX512F__)
#define OF_DENSE_LANES 16
#elif defined(__AVX2__) && defined(__FMA__)
#define OF_DENSE_LANES 8
#else
#define OF_DENSE_LANES 0
#endif

/* an arranged activation of a 4-bit product: bfloat16 bits for the dot product (and the portable loop), the
 * same bfloat16 value as a float32 for the float32 products */
#if OF_F32_LANES
typedef float of_act;
#else
typedef uint16_t of_act;
#endif

typedef struct {
    const uint8_t *q;
    const uint16_t *sz;
    int64_t out, in;
    /* of_llama_step only: a plain weight in the activation dtype (q, sz unused), rows [0, split1) at dense,
     * [split1, split2) at dense1 and [split2, out) at dense2 (each part [rows][in], splits multiples of 4), so
     * the parameters of q/k/v or gate/up are read where they lie, with no fused copy */
    const void *dense, *dense1, *dense2;
    int64_t split1, split2;
} of_int4_weight;

/* row r of a dense weight of `size`-byte elements */
static inline const void *dense_row(const of_int4_weight *w, int64_t r, int64_t size) {
    if (r < w->split1) return (const char *)w->dense + r * w->in * size;
    if (r < w->split2) return (const char *)w->dense1 + (r - w->split1) * w->in * size;
    return (const char *)w->dense2 + (r - w->split2) * w->in * size;
}

/* sizes and offsets of the structures, for the ctypes mirror's check */
int64_t of_layout(int what) {
    switch (what) {
        case 0: return (int64_t)sizeof(of_int4_weight);
        case 1: return (int64_t)offsetof(of_int4_weight, dense);
        case 2: return (int64_t)offsetof(of_int4_weight, split2);
        default: return -1;
    }
}

int of_has_bf16_dot(void) { return OF_BF16_DOT; }

/* which products this build runs: 3 the AVX-512 bfloat16 dot products, 2 float32 with AVX-512F/BW, 1 float32
 * with AVX2 and FMA, 0 the portable loops only */
int of_simd(void) { return OF_BF16_DOT ? 3 : OF_F32_LANES == 16 ? 2 : OF_F32_LANES == 8 ? 1 : 0; }

static inline uint16_t to_bf16(float f) {  /* round to nearest even, as PyTorch's casts do */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return (uint16_t)((u >> 16) | ((u & 0xffff) ? 0x40 : 0));
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* an arranged activation's value */
static inline float act_value(of_act a) {
#if OF_F32_LANES
    return a;
#else
    return from_bf16(a);
#endif
}

/* x (float32 when x_bf16 == 0, else bfloat16 bits) -> the pair-interleaved activations rounded to bfloat16
 * `arranged` [in] (of_act: per pair of groups, 32 low-nibble partners, then 32 high-nibble partners) and the
 * float sums of the rounded activations per group, `sums` [in / 32]. */
static void arrange(const void *x, int x_bf16, int64_t in, of_act *arranged, float *sums) {
    int64_t pairs = in / 64;
    for (int64_t p = 0; p < pairs; p++) {
        of_act *lo = arranged + p * 64, *hi = lo + 32;
        for (int g = 0; g < 2; g++) {
            float s = 0.f;
            for (int j = 0; j < 32; j++) {
                int64_t i = p * 64 + g * 32 + j;
                uint16_t b = x_bf16 ? ((const uint16_t *)x)[i] : to_bf16(((const float *)x)[i]);
                s += from_bf16(b);
                int jj = j & 15;
                int pos = 4 * (jj / 2) + 2 * g + (jj % 2);
#if OF_F32_LANES
                if (j < 16) lo[pos] = from_bf16(b); else hi[pos] = from_bf16(b);
#else
                if (j < 16) lo[pos] = b; else hi[pos] = b;
#endif
            }
            sums[p * 2 + g] = s;
        }
    }
}

#if OF_F32_LANES
/* The float32 products: a row's 32 bytes of a pair of groups in chunks of L = OF_F32_LANES bytes; lane i of
 * chunk c is byte c * L + i, its low nibble multiplies lo[c * L + i] and its high nibble hi[c * L + i], and
 * it belongs to group (i / 2) % 2 (L is a multiple of 4). Per row and pair, t = sum over the chunks of
 * q * x in float32, then acc += scales * t; per group sum (q - 8) * s * x + z * x = s * sum q x + (z - 8 s) sum x. */
#define OF_CHUNKS (32 / OF_F32_LANES)
#if OF_F32_LANES == 16
typedef __m512 vf;
typedef __m512i vi;
static inline vf vf_zero(void) { return _mm512_setzero_ps(); }
static inline vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
static inline vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline float vf_sum(vf v) { return _mm512_reduce_add_ps(v); }
static inline vi vi_bytes(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }
static inline vf vf_low(vi v) { return _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15))); }
static inline vf vf_high(vi v) { return _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)); }
/* (scale, zero) of g0 and g1 as bfloat16 -> lanes s0, s0, s1, s1, ... */
static inline vf vf_scales(const uint16_t *z) {
    int64_t b;
    memcpy(&b, z, 8);
    return _mm512_permute_ps(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_set1_epi64(b), 16)), 0x50);
}
#else
typedef __m256 vf;
typedef __m256i vi;
static inline vf vf_zero(void) { return _mm256_setzero_ps(); }
static inline vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
static inline vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline float vf_sum(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
static inline vi vi_bytes(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
static inline vf vf_low(vi v) { return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15))); }
static inline vf vf_high(vi v) { return _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)); }
static inline vf vf_scales(const uint16_t *z) {
    int64_t b;
    memcpy(&b, z, 8);
    return _mm256_permute_ps(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_set1_epi64x(b), 16)), 0x50);
}
#endif

/* the offset terms of a tile's 4 rows for one pair: lanes 2k, 2k + 1 of the result are row k's (z - 8 s) * sum x
 * of groups g0, g1, added to offs */
static inline __m256 tile_offsets(const uint16_t *zt, const float *sums, __m256 offs) {
    __m256i sz = _mm256_loadu_si256((const __m256i *)zt);  /* 32-bit lane 2k + g: zero << 16 | scale */
    __m256 sc = _mm256_castsi256_ps(_mm256_slli_epi32(sz, 16));
    __m256 ze = _mm256_castsi256_ps(_mm256_and_si256(sz, _mm256_set1_epi32((int)0xffff0000u)));
    __m256 xs = _mm256_castpd_ps(_mm256_broadcast_sd((const double *)sums));
    return _mm256_fmadd_ps(_mm256_fnmadd_ps(_mm256_set1_ps(8.f), sc, ze), xs, offs);
}

/* t of unpacked nibbles (lo, hi) for one pair of arranged activations x (lo) and x + 32 (hi) */
static inline vf row_dot(const vf *lo, const vf *hi, const float *x) {
    vf t = vf_zero();
    for (int c = 0; c < OF_CHUNKS; c++) {
        t = vf_fma(lo[c], vf_load(x + c * OF_F32_LANES), t);
        t = vf_fma(hi[c], vf_load(x + 32 + c * OF_F32_LANES), t);
    }
    return t;
}

/* one row's t for one pair: its 32 bytes at q, the pair's arranged activations at x (lo) and x + 32 (hi), in
 * row_dot's order */
static inline vf row_pair(const uint8_t *q, const float *x) {
    vf t = vf_zero();
    for (int c = 0; c < OF_CHUNKS; c++) {
        vi v = vi_bytes(q + c * OF_F32_LANES);
        t = vf_fma(vf_low(v), vf_load(x + c * OF_F32_LANES), t);
        t = vf_fma(vf_high(v), vf_load(x + 32 + c * OF_F32_LANES), t);
    }
    return t;
}
#endif

/* rows [r0, r1) of y = W x (r0 and r1 multiples of 4), written as float32 into y32 or as bfloat16 into y16
 * (one is NULL). Per group, sum (q - 8) * s * x + z * x = s * sum (128 + q) x + (z - 136 s) * sum x. */
static void rows_product(const of_int4_weight *w, const of_act *xa, const float *sums, int64_t r0, int64_t r1,
                         float *y32, uint16_t *y16) {
    const int64_t in = w->in, pairs = in / 64, rowbytes = in / 2;
#if OF_F32_LANES
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        vf acc0 = vf_zero(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
        __m256 offs = _mm256_setzero_ps();
        const uint8_t *qt = w->q + r * rowbytes;
        const uint16_t *zt = w->sz + r * in / 16;
        for (int64_t p = 0; p < pairs; p++, qt += 128, zt += 16) {
            const float *x = xa + p * 64;
            _mm_prefetch((const char *)(qt + 1024), _MM_HINT_T0);
            _mm_prefetch((const char *)(qt + 1088), _MM_HINT_T0);
            offs = tile_offsets(zt, sums + 2 * p, offs);
            acc0 = vf_fma(vf_scales(zt), row_pair(qt, x), acc0);
            acc1 = vf_fma(vf_scales(zt + 4), row_pair(qt + 32, x), acc1);
            acc2 = vf_fma(vf_scales(zt + 8), row_pair(qt + 64, x), acc2);
            acc3 = vf_fma(vf_scales(zt + 12), row_pair(qt + 96, x), acc3);
        }
        float off[8];
        _mm256_storeu_ps(off, offs);
        float res[4] = {vf_sum(acc0), vf_sum(acc1), vf_sum(acc2), vf_sum(acc3)};
        for (int k = 0; k < 4; k++) {
            float v = res[k] + off[2 * k] + off[2 * k + 1];
            if (y32) y32[r + k] = v; else y16[r + k] = to_bf16(v);
        }
    }
    r0 = r;
#elif OF_BF16_DOT
    const __m512i nib = _mm512_set1_epi16(0x0f), bias = _mm512_set1_epi16(0x4300);
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    const __m256 k136 = _mm256_set1_ps(136.f);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
        __m256 offs = _mm256_setzero_ps();  /* lanes 2k, 2k + 1: row k's offset terms of groups g0, g1 */
        const uint8_t *qt = w->q + r * rowbytes;   /* the tile's bytes and its (scale, zero) pairs: two streams */
        const uint16_t *zt = w->sz + r * in / 16;
        for (int64_t p = 0; p < pairs; p++, qt += 128, zt += 16) {
            __m512bh xl = (__m512bh)_mm512_loadu_si512(xa + p * 64);
            __m512bh xh = (__m512bh)_mm512_loadu_si512(xa + p * 64 + 32);
            _mm_prefetch((const char *)(qt + 1024), _MM_HINT_T0);
            _mm_prefetch((const char *)(qt + 1088), _MM_HINT_T0);
            __m256i sz = _mm256_loadu_si256((const __m256i *)zt);  /* 32-bit lane 2k + g: zero << 16 | scale */
            __m256 sc = _mm256_castsi256_ps(_mm256_slli_epi32(sz, 16)), ze = _mm256_castsi256_ps(_mm256_and_si256(sz, high));
            __m256 xs = _mm256_castpd_ps(_mm256_broadcast_sd((const double *)(sums + 2 * p)));
            offs = _mm256_fmadd_ps(_mm256_fnmadd_ps(k136, sc, ze), xs, offs);
#define OF_ROW(k, acc)                                                                                         \
    {                                                                                                          \
        __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(qt + (k) * 32)));                \
        __m512i lo = _mm512_ternarylogic_epi32(v, nib, bias, 0xea); /* (v & nib) | bias */                     \
        __m512i hi = _mm512_or_si512(_mm512_srli_epi16(v, 4), bias);                                           \
        __m512 t = _mm512_dpbf16_ps(_mm512_setzero_ps(), (__m512bh)lo, xl);                                    \
        t = _mm512_dpbf16_ps(t, (__m512bh)hi, xh);                                                             \
        __m512 s = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_set1_epi64(*(const int64_t *)(zt + (k) * 4)), 16)); \
        acc = _mm512_fmadd_ps(s, t, acc);                                                                      \
    }
            OF_ROW(0, acc0) OF_ROW(1, acc1) OF_ROW(2, acc2) OF_ROW(3, acc3)
#undef OF_ROW
        }
        float off[8];
        _mm256_storeu_ps(off, offs);
        float res[4] = {_mm512_reduce_add_ps(acc0), _mm512_reduce_add_ps(acc1), _mm512_reduce_add_ps(acc2),
                        _mm512_reduce_add_ps(acc3)};
        for (int k = 0; k < 4; k++) {
            float v = res[k] + off[2 * k] + off[2 * k + 1];
            if (y32) y32[r + k] = v; else y16[r + k] = to_bf16(v);
        }
    }
    r0 = r;
#endif
    for (int64_t r = r0; r < r1; r++) {  /* portable path */
        const uint8_t *qt = w->q + (r / 4) * 4 * rowbytes + (r % 4) * 32;
        const uint16_t *zt = w->sz + (r / 4) * 4 * in / 16 + (r % 4) * 4;
        float acc = 0.f;
        for (int64_t p = 0; p < pairs; p++) {
            const of_act *lo = xa + p * 64, *hi = lo + 32;
            for (int g = 0; g < 2; g++) {
                float t = 0.f;
                for (int jj = 0; jj < 16; jj++) {
                    int pos = 4 * (jj / 2) + 2 * g + (jj % 2);
                    uint8_t b = qt[p * 128 + pos];
                    t += (float)(128 + (b & 15)) * act_value(lo[pos]) + (float)(128 + (b >> 4)) * act_value(hi[pos]);
                }
                float sc = from_bf16(zt[p * 16 + 2 * g]), ze = from_bf16(zt[p * 16 + 2 * g + 1]);
                acc += sc * t + (ze - 136.f * sc) * sums[2 * p + g];
            }
        }
        if (y32) y32[r] = acc; else y16[r] = to_bf16(acc);
    }
}

/* the body of rows_product_x4 (below) */
static inline __attribute__((always_inline)) void x4_body(const of_int4_weight *w, const of_act *const *xa,
                                                          const float *const *sums, const int nx, int64_t r0,
                                                          int64_t r1, float *const *y32, uint16_t *const *y16) {
    /* nx is a constant where this is inlined (rows_product_x4): the sums of rows that are not written are not
     * computed (a block of 2 rows costs 2, not 4) */
#if OF_F32_LANES
    /* the sums of rows_product in the same order (the same bits for a row alone or in a block of 4); 4 weight
     * rows a pass with 16 lanes (16 accumulators), 1 with 8 (AVX2 has 16 registers). Named accumulators: an
     * array of them would be kept in memory. */
    enum { ROWS = OF_F32_LANES == 16 ? 4 : 1 };
    const int64_t in = w->in, pairs = in / 64, rowbytes = in / 2;
    for (int64_t r = r0; r < r1; r += 4) {
        float o[4][8];
        for (int kh = 0; kh < 4; kh += ROWS) {
            vf a00 = vf_zero(), a01 = a00, a02 = a00, a03 = a00;
#if OF_F32_LANES == 16
            vf a10 = a00, a11 = a00, a12 = a00, a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00;
            vf a30 = a00, a31 = a00, a32 = a00, a33 = a00;
#endif
            __m256 f0 = _mm256_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;
            const uint8_t *qt = w->q + r * rowbytes;
            const uint16_t *zt = w->sz + r * in / 16;
            for (int64_t p = 0; p < pairs; p++, qt += 128, zt += 16) {
                const float *x0 = xa[0] + p * 64, *x1 = xa[1] + p * 64, *x2 = xa[2] + p * 64, *x3 = xa[3] + p * 64;
                if (kh == 0) {
                    f0 = tile_offsets(zt, sums[0] + 2 * p, f0);
                    if (nx > 1) f1 = tile_offsets(zt, sums[1] + 2 * p, f1);
                    if (nx > 2) f2 = tile_offsets(zt, sums[2] + 2 * p, f2);
                    if (nx > 3) f3 = tile_offsets(zt, sums[3] + 2 * p, f3);
                }
#define OF_X4_ROW(k, c0, c1, c2, c3)                                                   \
    {                                                                                  \
        const uint8_t *q = qt + (kh + (k)) * 32;                                       \
        vf s = vf_scales(zt + (kh + (k)) * 4), lo[OF_CHUNKS], hi[OF_CHUNKS];           \
        for (int c = 0; c < OF_CHUNKS; c++) {                                          \
            vi v = vi_bytes(q + c * OF_F32_LANES);                                     \
            lo[c] = vf_low(v);                                                         \
            hi[c] = vf_high(v);                                                        \
        }                                                                              \
        c0 = vf_fma(s, row_dot(lo, hi, x0), c0);                                       \
        if (nx > 1) c1 = vf_fma(s, row_dot(lo, hi, x1), c1);                           \
        if (nx > 2) c2 = vf_fma(s, row_dot(lo, hi, x2), c2);                           \
        if (nx > 3) c3 = vf_fma(s, row_dot(lo, hi, x3), c3);                           \
    }
                OF_X4_ROW(0, a00, a01, a02, a03)
#if OF_F32_LANES == 16
                OF_X4_ROW(1, a10, a11, a12, a13)
                OF_X4_ROW(2, a20, a21, a22, a23)
                OF_X4_ROW(3, a30, a31, a32, a33)
#endif
#undef OF_X4_ROW
            }
            if (kh == 0) {
                _mm256_storeu_ps(o[0], f0);
                _mm256_storeu_ps(o[1], f1);
                _mm256_storeu_ps(o[2], f2);
                _mm256_storeu_ps(o[3], f3);
            }
            float sum[ROWS][4] = {
                {vf_sum(a00), vf_sum(a01), vf_sum(a02), vf_sum(a03)},
#if OF_F32_LANES == 16
                {vf_sum(a10), vf_sum(a11), vf_sum(a12), vf_sum(a13)},
                {vf_sum(a20), vf_sum(a21), vf_sum(a22), vf_sum(a23)},
                {vf_sum(a30), vf_sum(a31), vf_sum(a32), vf_sum(a33)},
#endif
            };
            for (int j = 0; j < nx; j++)
                for (int k = 0; k < ROWS; k++) {
                    int row = kh + k;
                    float v = sum[k][j] + o[j][2 * row] + o[j][2 * row + 1];
                    if (y32) y32[j][r + row] = v; else y16[j][r + row] = to_bf16(v);
                }
        }
    }
#elif OF_BF16_DOT
    const int64_t in = w->in, pairs = in / 64, rowbytes = in / 2;
    const __m512i nib = _mm512_set1_epi16(0x0f), bias = _mm512_set1_epi16(0x4300);
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    const __m256 k136 = _mm256_set1_ps(136.f);
    for (int64_t r = r0; r < r1; r += 4) {
        float o[4][8];
        for (int kh = 0; kh < 4; kh += 2) {  /* two weight rows at a time: the accumulators stay in registers */
            __m512 acc[2][4];
            __m256 offs[4];
            for (int j = 0; j < 4; j++) {
                offs[j] = _mm256_setzero_ps();
                acc[0][j] = acc[1][j] = _mm512_setzero_ps();
            }
            const uint8_t *qt = w->q + r * rowbytes;
            const uint16_t *zt = w->sz + r * in / 16;
            for (int64_t p = 0; p < pairs; p++, qt += 128, zt += 16) {
                __m512bh xl[4], xh[4];
                for (int j = 0; j < nx; j++) {
                    xl[j] = (__m512bh)_mm512_loadu_si512(xa[j] + p * 64);
                    xh[j] = (__m512bh)_mm512_loadu_si512(xa[j] + p * 64 + 32);
                }
                if (kh == 0) {  /* the offset terms of all 4 rows */
                    __m256i sz = _mm256_loadu_si256((const __m256i *)zt);
                    __m256 sc = _mm256_castsi256_ps(_mm256_slli_epi32(sz, 16));
                    __m256 off = _mm256_fnmadd_ps(k136, sc, _mm256_castsi256_ps(_mm256_and_si256(sz, high)));
                    for (int j = 0; j < nx; j++)
                        offs[j] = _mm256_fmadd_ps(off, _mm256_castpd_ps(_mm256_broadcast_sd((const double *)(sums[j] + 2 * p))), offs[j]);
                }
                for (int k = 0; k < 2; k++) {
                    __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(qt + (kh + k) * 32)));
                    __m512i lo = _mm512_ternarylogic_epi32(v, nib, bias, 0xea);
                    __m512i hi = _mm512_or_si512(_mm512_srli_epi16(v, 4), bias);
                    __m512 s = _mm512_castsi512_ps(
                        _mm512_slli_epi32(_mm512_set1_epi64(*(const int64_t *)(zt + (kh + k) * 4)), 16));
                    for (int j = 0; j < nx; j++) {
                        __m512 t = _mm512_dpbf16_ps(_mm512_setzero_ps(), (__m512bh)lo, xl[j]);
                        t = _mm512_dpbf16_ps(t, (__m512bh)hi, xh[j]);
                        acc[k][j] = _mm512_fmadd_ps(s, t, acc[k][j]);
                    }
                }
            }
            if (kh == 0)
                for (int j = 0; j < nx; j++) _mm256_storeu_ps(o[j], offs[j]);
            for (int j = 0; j < nx; j++)
                for (int k = 0; k < 2; k++) {
                    int row = kh + k;
                    float v = _mm512_reduce_add_ps(acc[k][j]) + o[j][2 * row] + o[j][2 * row + 1];
                    if (y32) y32[j][r + row] = v; else y16[j][r + row] = to_bf16(v);
                }
        }
    }
#else
    for (int j = 0; j < nx; j++)
        rows_product(w, xa[j], sums[j], r0, r1, y32 ? y32[j] : NULL, y16 ? y16[j] : NULL);
#endif
}

/* tiles [r0, r1) of Y = X W^T for up to 4 prepared rows of X at once (nx of them; the pointers of the others
 * are not read): each weight tile is unpacked once for all of them. y32 / y16: output row pointers. */
static void rows_product_x4(const of_int4_weight *w, const of_act *const *xa, const float *const *sums, int nx,
                            int64_t r0, int64_t r1, float *const *y32, uint16_t *const *y16) {
    switch (nx) {
        case 1: x4_body(w, xa, sums, 1, r0, r1, y32, y16); break;
        case 2: x4_body(w, xa, sums, 2, r0, r1, y32, y16); break;
        case 3: x4_body(w, xa, sums, 3, r0, r1, y32, y16); break;
        default: x4_body(w, xa, sums, 4, r0, r1, y32, y16); break;
    }
}

/* Y = X W^T for `rows` prepared rows (xa: rows * in, sums: rows * in / 32), tiles split over the threads;
 * each thread runs its tiles for every block of 4 rows while they are in its cache. */
static void product(const of_int4_weight *w, const of_act *xa, const float *sums, int64_t rows, char *y, int y_bf16,
                    int threads) {
    const int64_t tiles = w->out / 4, in = w->in, groups = in / 32, ysize = y_bf16 ? 2 : 4;
    if (tiles < 8) threads = 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t t0 = tiles * t / n, t1 = tiles * (t + 1) / n;
        for (int64_t c0 = t0; c0 < t1; c0 += 16) {  /* 16 tiles (64 weight rows) at a time, all x rows */
            int64_t c1 = c0 + 16 < t1 ? c0 + 16 : t1;
            if (rows == 1) {
                rows_product(w, xa, sums, c0 * 4, c1 * 4, y_bf16 ? NULL : (float *)y, y_bf16 ? (uint16_t *)y : NULL);
                continue;
            }
            for (int64_t i = 0; i < rows; i += 4) {
                int nx = rows - i < 4 ? (int)(rows - i) : 4;
                const of_act *xs[4];
                const float *ss[4];
                float *y32[4];
                uint16_t *y16[4];
                for (int j = 0; j < 4; j++) {
                    int64_t row = i + (j < nx ? j : 0);
                    xs[j] = xa + row * in;
                    ss[j] = sums + row * groups;
                    y32[j] = (float *)(y + row * w->out * ysize);
                    y16[j] = (uint16_t *)(y + row * w->out * ysize);
                }
                rows_product_x4(w, xs, ss, nx, c0 * 4, c1 * 4, y_bf16 ? NULL : y32, y_bf16 ? y16 : NULL);
            }
        }
    }
}

/* y[rows][out] = x[rows][in] W^T, x and y float32 (x_bf16 / y_bf16 == 0) or bfloat16. Returns 0, -1 when the
 * scratch memory could not be had, -2 for sizes the weight's layout cannot have (out a positive multiple of 4,
 * in of 64) or rows < 0. The arranged activations start on a 64-byte boundary, and so does each row of them
 * (in is a multiple of 64): a vector load never spans two cache lines, whatever address malloc gives. */
int of_int4_matmul(const of_int4_weight *w, const void *x, int x_bf16, int64_t rows, void *y, int y_bf16,
                   int threads) {
    if (!w || w->out <= 0 || w->out % 4 || w->in <= 0 || w->in % 64 || w->in > ((int64_t)1 << 40) || rows < 0)
        return -2;
    if (rows == 0) return 0;
    const int64_t in = w->in, groups = in / 32, per_row = in * (int64_t)sizeof(of_act) + groups * 4;
    if (rows > (INT64_MAX / 2) / per_row) return -2;
    size_t bytes = (size_t)((rows * per_row + 63) / 64 * 64);
    of_act *xa = (of_act *)aligned_alloc(64, bytes);
    if (!xa) return -1;
    float *sums = (float *)(xa + rows * in);
    for (int64_t i = 0; i < rows; i++)
        arrange((const char *)x + i * in * (x_bf16 ? 2 : 4), x_bf16, in, xa + i * in, sums + i * groups);
    product(w, xa, sums, rows, (char *)y, y_bf16, threads < 1 ? 1 : threads);
    free(xa);
    return 0;
}

/* ---- one decode step of a Llama-family model (4-bit or plain projections) ----------------------------------
 * The layers of LlamaDecoderLayer for one sequence and one new position, in one call: norm, the fused
 * q/k/v product, per-head q/k RMSNorms where the layer has them, rotary embedding, the new key and value written into the cache, attention over the
 * cache, the output product and residual, norm, the fused gate/up product, act(gate) * up, the down
 * product and residual (act: SiLU or tanh-GELU; norm_mode: plain or offset RMSNorms or LayerNorms; mlp 1:
 * the plain MLP, act(c_fc) in gate/up's place, c_proj in down's). A product with a bias adds it in float32
 * before the product's one rounding, as F.linear does. With bf16 set,
 * activations are bfloat16 and every operator rounds its result to bfloat16 where PyTorch's bfloat16
 * operators do; the arithmetic inside each one is float32.
 */
typedef struct {
    const void *norm1, *norm2;   /* [hidden] RMSNorm weights: the activation dtype, or float32 with norm_mode 1 */
    of_int4_weight qkv, o, gate_up, down;
    void *k_cache, *v_cache;     /* [kv_heads][capacity][head_dim] (activation dtype) */
    int64_t capacity;
    const void *q_norm, *k_norm; /* [head_dim] RMSNorm weights over each query and key head (the qk_norm block),
                                    applied before the rotary embedding, as norm1; NULL: none */
    const float *qkv_bias, *o_bias, *gate_up_bias, *down_bias; /* float32 biases of the products (the values of
                                    the activation dtype); NULL: none */
    const void *norm1_bias, *norm2_bias; /* [hidden] LayerNorm biases (norm_mode 2, activation dtype) */
} of_llama_layer;

typedef struct {
    int64_t layers, hidden, heads, kv_heads, head_dim, inter;
    float eps, scaling;
    int bf16;
    int norm_mode;  /* 0: weight * normed rounded to the activation dtype (RMSNorm); 1: float32 normed times the
                       float32 weights the caller holds (offset + weight), rounded once (OffsetRMSNorm) */
    int act;        /* the gate's activation: 0 SiLU, 1 GELU with the tanh approximation */
    of_llama_layer *layer;
    int mlp;        /* 0: gated, act(gate) * up; 1: plain, act(c_fc) (gate_up holds c_fc's inter rows) */
} of_llama;

/* sizes and offsets of the step's structures, for the ctypes mirror's check (native_step.py) */
int64_t of_step_layout(int what) {
    switch (what) {
        case 0: return (int64_t)sizeof(of_llama_layer);
        case 1: return (int64_t)offsetof(of_llama_layer, capacity);
        case 2: return (int64_t)offsetof(of_llama_layer, q_norm);
        case 3: return (int64_t)sizeof(of_llama);
        case 4: return (int64_t)offsetof(of_llama, layer);
        case 5: return (int64_t)offsetof(of_llama, norm_mode);
        case 6: return (int64_t)offsetof(of_llama, act);
        case 7: return (int64_t)offsetof(of_llama_layer, qkv_bias);
        case 8: return (int64_t)offsetof(of_llama_layer, norm1_bias);
        case 9: return (int64_t)offsetof(of_llama, mlp);
        default: return -1;
    }
}

static inline float rnd(float v, int bf16) { return bf16 ? from_bf16(to_bf16(v)) : v; }
static inline float get(const void *p, int64_t i, int bf16) {
    return bf16 ? from_bf16(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
static inline void put(void *p, int64_t i, float v, int bf16) {
    if (bf16) ((uint16_t *)p)[i] = to_bf16(v); else ((float *)p)[i] = v;
}

/* RMSNorm as norms.py computes it: statistics in float32; mode 0 (RMSNorm): the normalised value cast to the
 * activation dtype, then times the weight (activation dtype); mode 1 (OffsetRMSNorm): the float32 normalised
 * value times the float32 weight (offset + weight), cast once. */
static void rms_norm(const float *x, const void *weight, int64_t n, float eps, int bf16, int mode, float *out) {
    float ss = 0.f;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.f / sqrtf(ss / (float)n + eps);
    if (mode == 1)
        for (int64_t i = 0; i < n; i++) out[i] = rnd(x[i] * r * ((const float *)weight)[i], bf16);
    else
        for (int64_t i = 0; i < n; i++) out[i] = rnd(get(weight, i, bf16) * rnd(x[i] * r, bf16), bf16);
}

/* LayerNorm as nn.LayerNorm computes it: mean and (biased) variance in float32, then
 * (x - mean) / sqrt(var + eps) * weight + bias in float32 (weight and bias of the activation dtype), rounded once */
static void layer_norm(const float *x, const void *weight, const void *bias, int64_t n, float eps, int bf16,
                       float *out) {
    float sum = 0.f, ss = 0.f;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    const float mean = sum / (float)n;
    for (int64_t i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
    const float r = 1.f / sqrtf(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++) out[i] = rnd((x[i] - mean) * r * get(weight, i, bf16) + get(bias, i, bf16), bf16);
}

/* one of a layer's two norms (norm_mode 2: LayerNorm with its bias; else RMSNorm) */
static void layer_input_norm(const of_llama *m, const float *x, const void *weight, const void *bias, float *out) {
    if (m->norm_mode == 2) layer_norm(x, weight, bias, m->hidden, m->eps, m->bf16, out);
    else rms_norm(x, weight, m->hidden, m->eps, m->bf16, m->norm_mode, out);
}

/* a product's output value i with its bias (if any) added, rounded once */
static inline float biased(float y, const float *bias, int64_t i, int bf16) {
    return rnd(bias ? y + bias[i] : y, bf16);
}

/* the gate's activation in float32: SiLU, or GELU with the tanh approximation, 0.5 g (1 + tanh(u)) with
 * u = sqrt(2 / pi) (g + 0.044715 g^3), written as g / (1 + exp(-2u)) (the same value; one exp, as SiLU) */
static inline float gate_act(float g, int act) {
    if (act == 1) {
        const float two_beta = 2.f * 0.7978845608028654f, kappa = 0.044715f;
        return g / (1.f + expf(-two_beta * (g + kappa * (g * g * g))));
    }
    return g / (1.f + expf(-g));
}

#if OF_DENSE_LANES == 8
static inline float sum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#endif

/* Y = X W^T of a dense [out][in] weight for `rows` activation rows, weight rows [r0, r1): float32 (x: rows of
 * float32, stride in) or bfloat16 (xb: rows of bfloat16, stride xstride); y rows of stride ystride. Each
 * block of weight rows is read once for all activation rows. */
static void dense_rows(const of_int4_weight *w, const float *x, const uint16_t *xb, int64_t xstride, int64_t rows,
                       int bf, int64_t r0, int64_t r1, float *y, int64_t ystride) {
    const int64_t in = w->in;
#if OF_DENSE_LANES == 16
    if (!bf) {  /* 4 weight rows x 4 activation rows of float32 products in registers */
        const __mmask16 tail = (__mmask16)((1u << (in % 16)) - 1);
        if (rows == 1) {  /* one activation row: 8 weight rows at a time, each read once as it lies */
            for (; r0 + 8 <= r1; r0 += 8) {
                const float *wr[8];
                __m512 acc[8];
                for (int k = 0; k < 8; k++) {
                    wr[k] = (const float *)dense_row(w, r0 + k, 4);
                    acc[k] = _mm512_setzero_ps();
                }
                for (int64_t i = 0; i < in; i += 16) {
                    __mmask16 m = in - i >= 16 ? (__mmask16)0xffff : tail;
                    __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
                    for (int k = 0; k < 8; k++) acc[k] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, wr[k] + i), xv, acc[k]);
                }
                for (int k = 0; k < 8; k++) y[r0 + k] = _mm512_reduce_add_ps(acc[k]);
            }
        }
        for (; r0 + 4 <= r1; r0 += 4) {
            const float *w0 = (const float *)dense_row(w, r0, 4);
            for (int64_t b0 = 0; b0 < rows; b0 += 4) {
                int nb = rows - b0 < 4 ? (int)(rows - b0) : 4;
                const float *xr[4];
                for (int j = 0; j < 4; j++) xr[j] = x + (b0 + (j < nb ? j : 0)) * in;
                /* named accumulators (a<weight row><activation row>): the weight vectors stay in registers */
                __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00,
                       a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
                const float *w1 = w0 + in, *w2 = w0 + 2 * in, *w3 = w0 + 3 * in;
#define OF_COL(j, xv) a0##j = _mm512_fmadd_ps(v0, xv, a0##j); a1##j = _mm512_fmadd_ps(v1, xv, a1##j); \
                      a2##j = _mm512_fmadd_ps(v2, xv, a2##j); a3##j = _mm512_fmadd_ps(v3, xv, a3##j);
                for (int64_t i = 0; i < in; i += 16) {
                    __mmask16 m = in - i >= 16 ? (__mmask16)0xffff : tail;
                    __m512 v0 = _mm512_maskz_loadu_ps(m, w0 + i), v1 = _mm512_maskz_loadu_ps(m, w1 + i);
                    __m512 v2 = _mm512_maskz_loadu_ps(m, w2 + i), v3 = _mm512_maskz_loadu_ps(m, w3 + i);
                    __m512 x0 = _mm512_maskz_loadu_ps(m, xr[0] + i);
                    OF_COL(0, x0)
                    __m512 x1 = _mm512_maskz_loadu_ps(m, xr[1] + i);
                    OF_COL(1, x1)
                    __m512 x2 = _mm512_maskz_loadu_ps(m, xr[2] + i);
                    OF_COL(2, x2)
                    __m512 x3 = _mm512_maskz_loadu_ps(m, xr[3] + i);
                    OF_COL(3, x3)
                }
#undef OF_COL
                __m512 acc[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
                for (int j = 0; j < nb; j++)
                    for (int k = 0; k < 4; k++) y[(b0 + j) * ystride + r0 + k] = _mm512_reduce_add_ps(acc[k][j]);
            }
        }
    }
#elif OF_DENSE_LANES == 8
    if (!bf) {  /* 2 weight rows x 4 activation rows of float32 products in registers (AVX2 has 16) */
        static const int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
        const __m256i tail = _mm256_loadu_si256((const __m256i *)(ones + 8 - in % 8));  /* the first in % 8 lanes */
        const int64_t body = in - in % 8;
        if (rows == 1) {  /* one activation row: 8 weight rows at a time, each read once as it lies */
            for (; r0 + 8 <= r1; r0 += 8) {
                const float *wr[8];
                __m256 acc[8];
                for (int k = 0; k < 8; k++) {
                    wr[k] = (const float *)dense_row(w, r0 + k, 4);
                    acc[k] = _mm256_setzero_ps();
                }
                for (int64_t i = 0; i < body; i += 8) {
                    __m256 xv = _mm256_loadu_ps(x + i);
                    for (int k = 0; k < 8; k++) acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(wr[k] + i), xv, acc[k]);
                }
                if (body < in) {
                    __m256 xv = _mm256_maskload_ps(x + body, tail);
                    for (int k = 0; k < 8; k++)
                        acc[k] = _mm256_fmadd_ps(_mm256_maskload_ps(wr[k] + body, tail), xv, acc[k]);
                }
                for (int k = 0; k < 8; k++) y[r0 + k] = sum8(acc[k]);
            }
        }
        for (; r0 + 2 <= r1; r0 += 2) {
            const float *w0 = (const float *)dense_row(w, r0, 4), *w1 = (const float *)dense_row(w, r0 + 1, 4);
            for (int64_t b0 = 0; b0 < rows; b0 += 4) {
                int nb = rows - b0 < 4 ? (int)(rows - b0) : 4;
                const float *xr[4];
                for (int j = 0; j < 4; j++) xr[j] = x + (b0 + (j < nb ? j : 0)) * in;
                __m256 acc[2][4];
                for (int j = 0; j < 4; j++) acc[0][j] = acc[1][j] = _mm256_setzero_ps();
                for (int64_t i = 0; i < in; i += 8) {
                    int full = i < body;
                    __m256 v0 = full ? _mm256_loadu_ps(w0 + i) : _mm256_maskload_ps(w0 + i, tail);
                    __m256 v1 = full ? _mm256_loadu_ps(w1 + i) : _mm256_maskload_ps(w1 + i, tail);
                    for (int j = 0; j < 4; j++) {
                        __m256 xv = full ? _mm256_loadu_ps(xr[j] + i) : _mm256_maskload_ps(xr[j] + i, tail);
                        acc[0][j] = _mm256_fmadd_ps(v0, xv, acc[0][j]);
                        acc[1][j] = _mm256_fmadd_ps(v1, xv, acc[1][j]);
                    }
                }
                for (int j = 0; j < nb; j++) {
                    y[(b0 + j) * ystride + r0] = sum8(acc[0][j]);
                    y[(b0 + j) * ystride + r0 + 1] = sum8(acc[1][j]);
                }
            }
        }
    }
#endif
    if (!bf) {
        for (int64_t r = r0; r < r1; r++) {
            const float *wr = (const float *)dense_row(w, r, 4);
            for (int64_t b = 0; b < rows; b++) {
                const float *xr = x + b * in;
                float s = 0.f;
#pragma omp simd reduction(+ : s)
                for (int64_t i = 0; i < in; i++) s += wr[i] * xr[i];
                y[b * ystride + r] = s;
            }
        }
        return;
    }
    int64_t r = r0;
#if OF_BF16_DOT
    for (; r + 4 <= r1; r += 4) {
        const uint16_t *w0 = (const uint16_t *)dense_row(w, r, 2);
        for (int64_t b = 0; b < rows; b++) {
            const uint16_t *xr = xb + b * xstride;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            int64_t i = 0;
            for (; i + 32 <= in; i += 32) {
                __m512bh xv = (__m512bh)_mm512_loadu_si512(xr + i);
                a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(w0 + i), xv);
                a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(w0 + in + i), xv);
                a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(w0 + 2 * in + i), xv);
                a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(w0 + 3 * in + i), xv);
            }
            float s[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2),
                          _mm512_reduce_add_ps(a3)};
            for (; i < in; i++)
                for (int k = 0; k < 4; k++) s[k] += from_bf16(w0[k * in + i]) * from_bf16(xr[i]);
            for (int k = 0; k < 4; k++) y[b * ystride + r + k] = s[k];
        }
    }
#elif OF_DENSE_LANES
    /* no bfloat16 dot product: the weights and activations widened to float32 (exact), float32 products */
    for (; r + 4 <= r1; r += 4) {
        const uint16_t *w0 = (const uint16_t *)dense_row(w, r, 2);
        for (int64_t b = 0; b < rows; b++) {
            const uint16_t *xr = xb + b * xstride;
            float s[4];
            int64_t i = 0;
#if OF_DENSE_LANES == 16
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
#define OF_WIDEN(p) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
            for (; i + 16 <= in; i += 16) {
                __m512 xv = OF_WIDEN(xr + i);
                a0 = _mm512_fmadd_ps(OF_WIDEN(w0 + i), xv, a0);
                a1 = _mm512_fmadd_ps(OF_WIDEN(w0 + in + i), xv, a1);
                a2 = _mm512_fmadd_ps(OF_WIDEN(w0 + 2 * in + i), xv, a2);
                a3 = _mm512_fmadd_ps(OF_WIDEN(w0 + 3 * in + i), xv, a3);
            }
#undef OF_WIDEN
            s[0] = _mm512_reduce_add_ps(a0), s[1] = _mm512_reduce_add_ps(a1);
            s[2] = _mm512_reduce_add_ps(a2), s[3] = _mm512_reduce_add_ps(a3);
#else
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
#define OF_WIDEN(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
            for (; i + 8 <= in; i += 8) {
                __m256 xv = OF_WIDEN(xr + i);
                a0 = _mm256_fmadd_ps(OF_WIDEN(w0 + i), xv, a0);
                a1 = _mm256_fmadd_ps(OF_WIDEN(w0 + in + i), xv, a1);
                a2 = _mm256_fmadd_ps(OF_WIDEN(w0 + 2 * in + i), xv, a2);
                a3 = _mm256_fmadd_ps(OF_WIDEN(w0 + 3 * in + i), xv, a3);
            }
#undef OF_WIDEN
            s[0] = sum8(a0), s[1] = sum8(a1), s[2] = sum8(a2), s[3] = sum8(a3);
#endif
            for (; i < in; i++)
                for (int k = 0; k < 4; k++) s[k] += from_bf16(w0[k * in + i]) * from_bf16(xr[i]);
            for (int k = 0; k < 4; k++) y[b * ystride + r + k] = s[k];
        }
    }
#endif
    for (; r < r1; r++) {
        const uint16_t *wr = (const uint16_t *)dense_row(w, r, 2);
        for (int64_t b = 0; b < rows; b++) {
            const uint16_t *xr = xb + b * xstride;
            float s = 0.f;
            for (int64_t i = 0; i < in; i++) s += from_bf16(wr[i]) * from_bf16(xr[i]);
            y[b * ystride + r] = s;
        }
    }
}

/* y [out] = W x for a row-major float32 W [out][in] and one float32 row x [in], the rows split over the threads:
 * PyTorch's one-thread product of one row reads a row-major weight at about half the speed */
int of_dense_matvec(const float *w, int64_t out, int64_t in, const float *x, float *y, int threads) {
    of_int4_weight d;
    memset(&d, 0, sizeof d);
    d.out = out;
    d.in = in;
    d.dense = w;
    d.split1 = d.split2 = out;
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t tiles = (out + 3) / 4, r0 = tiles * t / n * 4, r1 = tiles * (t + 1) / n * 4;
        if (r1 > out) r1 = out;
        if (r0 < r1) dense_rows(&d, x, NULL, in, 1, 0, r0, r1, y, out);
    }
    return 0;
}

/* before a product (one thread): row b of the activations (x, stride `in`) in the form the weight wants,
 * at xa + b * xstride and sums + b * sstride */
static void prepare(const of_int4_weight *w, const float *x, int64_t rows, int bf, void *xa, int64_t xstride,
                    float *sums, int64_t sstride) {
    for (int64_t b = 0; b < rows; b++) {
        const float *xr = x + b * w->in;
        if (!w->dense) arrange(xr, 0, w->in, (of_act *)xa + b * xstride, sums + b * sstride);
        else if (bf) for (int64_t i = 0; i < w->in; i++) ((uint16_t *)xa)[b * xstride + i] = to_bf16(xr[i]);
    }
}

/* this thread's share of Y = X W^T (whole tiles of 4 weight rows), y rows of stride w->out */
static void share(const of_int4_weight *w, const float *x, int64_t rows, int bf, const void *xa, int64_t xstride,
                  const float *sums, int64_t sstride, float *y, int t, int n) {
    int64_t tiles = w->out / 4, t0 = tiles * t / n, t1 = tiles * (t + 1) / n;
    if (t == n - 1 && w->dense) t1 = (w->out + 3) / 4;  /* a dense weight's last rows need not fill a tile */
    int64_t r1 = t1 * 4 < w->out ? t1 * 4 : w->out;
    if (t0 * 4 >= r1) return;
    if (w->dense) {
        dense_rows(w, x, (const uint16_t *)xa, xstride, rows, bf, t0 * 4, r1, y, w->out);
        return;
    }
    if (rows == 1) {
        rows_product(w, (const of_act *)xa, sums, t0 * 4, r1, y, NULL);
        return;
    }
    for (int64_t c0 = t0 * 4; c0 < r1; c0 += 64)  /* 64 weight rows at a time, all activation rows */
        for (int64_t i = 0; i < rows; i += 4) {
            int nx = rows - i < 4 ? (int)(rows - i) : 4;
            const of_act *xs[4];
            const float *ss[4];
            float *ys[4];
            for (int j = 0; j < 4; j++) {
                int64_t row = i + (j < nx ? j : 0);
                xs[j] = (const of_act *)xa + row * xstride;
                ss[j] = sums + row * sstride;
                ys[j] = y + row * w->out;
            }
            rows_product_x4(w, xs, ss, nx, c0, c0 + 64 < r1 ? c0 + 64 : r1, ys, NULL);
        }
}

/* one head's attention output over the cache's first T positions of kv head g: softmax(q k^T * scaling) v */
static void attend(const float *q, const of_llama_layer *L, int64_t base, int64_t g, int64_t T, int64_t d,
                   float scaling, int bf, float *score, float *out) {
    float top = -INFINITY;
    for (int64_t p = 0; p < T; p++) {
        float s = 0.f;
        if (bf) {
            const uint16_t *k = (const uint16_t *)L->k_cache + base + (g * L->capacity + p) * d;
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < d; i++) s += q[i] * from_bf16(k[i]);
        } else {
            const float *k = (const float *)L->k_cache + base + (g * L->capacity + p) * d;
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < d; i++) s += q[i] * k[i];
        }
        score[p] = s * scaling;
        if (score[p] > top) top = score[p];
    }
    float total = 0.f;
    for (int64_t p = 0; p < T; p++) { score[p] = expf(score[p] - top); total += score[p]; }
    for (int64_t i = 0; i < d; i++) out[i] = 0.f;
    for (int64_t p = 0; p < T; p++) {
        float w = score[p] / total;
        if (bf) {
            const uint16_t *v = (const uint16_t *)L->v_cache + base + (g * L->capacity + p) * d;
#pragma omp simd
            for (int64_t i = 0; i < d; i++) out[i] += w * from_bf16(v[i]);
        } else {
            const float *v = (const float *)L->v_cache + base + (g * L->capacity + p) * d;
#pragma omp simd
            for (int64_t i = 0; i < d; i++) out[i] += w * v[i];
        }
    }
    for (int64_t i = 0; i < d; i++) out[i] = rnd(out[i], bf);
}

/* hidden [batch][hidden] (activation dtype) is updated in place, one new position per sequence. Sequence b
 * reads and writes cache row slot[b] (b when slot is NULL) of every layer's buffers [rows][kv_heads][capacity]
 * [head_dim]: it holds pos[b] positions before the call (n_past for every sequence when pos is NULL), its new
 * key and value go at position pos[b], and its attention reads positions [0, pos[b]]; cos and sin hold the
 * rotary values of sequence b at cos + b * cs_stride (cs_stride 0: one [head_dim] row for all). Returns 0, or
 * -1 when the scratch memory could not be had. */
static int llama_step(const of_llama *m, void *hidden, int64_t batch, const float *cos, const float *sin,
                      int64_t cs_stride, const int64_t *slot, const int64_t *pos, int64_t n_past, int threads) {
    const int64_t H = m->hidden, h = m->heads, kv = m->kv_heads, d = m->head_dim, I = m->inter, B = batch;
    int64_t T = n_past + 1;
    if (pos) {
        T = 1;
        for (int64_t b = 0; b < B; b++) if (pos[b] + 1 > T) T = pos[b] + 1;
    }
    const int64_t qkv_n = (h + 2 * kv) * d;
    const int64_t widest = (I > H ? (I > h * d ? I : h * d) : (H > h * d ? H : h * d)) + 64, G = widest / 32;
    const int bf = m->bf16;
    if (threads < 1) threads = 1;
    float *x = malloc(sizeof(float) * (B * (3 * H + qkv_n + h * d + 3 * I + G) + (T + 16) * threads + 64));
    void *xa = malloc(sizeof(of_act) * B * widest);  /* arranged 4-bit activations, or bfloat16 ones */
    if (!x || !xa) { free(x); free(xa); return -1; }
    float *xn = x + B * H, *tmp = xn + B * H, *qkv = tmp + B * H, *att = qkv + B * qkv_n, *gu = att + B * h * d;
    float *act = gu + B * 2 * I, *sums = act + B * I, *score = sums + B * G;
    for (int64_t i = 0; i < B * H; i++) x[i] = get(hidden, i, bf);
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        for (int64_t l = 0; l < m->layers; l++) {
            const of_llama_layer *L = &m->layer[l];
            const int64_t seq = kv * L->capacity * d;  /* one sequence's part of the cache */
            if (t == 0) {
                for (int64_t b = 0; b < B; b++) layer_input_norm(m, x + b * H, L->norm1, L->norm1_bias, xn + b * H);
                prepare(&L->qkv, xn, B, bf, xa, widest, sums, G);
            }
#pragma omp barrier
            share(&L->qkv, xn, B, bf, xa, widest, sums, G, qkv, t, n);
#pragma omp barrier
            if (t == 0) {
                const int64_t half = d / 2;
                for (int64_t b = 0; b < B; b++) {
                    float *row = qkv + b * qkv_n;
                    const float *cb = cos + b * cs_stride, *sb = sin + b * cs_stride;
                    const int64_t at = pos ? pos[b] : n_past, base = (slot ? slot[b] : b) * seq;
                    for (int64_t i = 0; i < qkv_n; i++) row[i] = biased(row[i], L->qkv_bias, i, bf);
                    for (int64_t head = 0; head < h + kv; head++) {  /* rotary: x * cos + rotate_half(x) * sin */
                        float *v = row + head * d, r[512];
                        const void *head_norm = head < h ? L->q_norm : L->k_norm;
                        if (head_norm) {  /* the per-head RMSNorm first */
                            rms_norm(v, head_norm, d, m->eps, bf, m->norm_mode, r);
                            memcpy(v, r, sizeof(float) * d);
                        }
                        for (int64_t i = 0; i < d; i++) {
                            float rot = i < half ? -v[i + half] : v[i - half];
                            r[i] = rnd(rnd(v[i] * cb[i], bf) + rnd(rot * sb[i], bf), bf);
                        }
                        memcpy(v, r, sizeof(float) * d);
                    }
                    for (int64_t g = 0; g < kv; g++)  /* the new key and value at the sequence's position */
                        for (int64_t i = 0; i < d; i++) {
                            put(L->k_cache, base + (g * L->capacity + at) * d + i, row[(h + g) * d + i], bf);
                            put(L->v_cache, base + (g * L->capacity + at) * d + i, row[(h + kv + g) * d + i], bf);
                        }
                }
            }
#pragma omp barrier
            for (int64_t job = t; job < B * h; job += n) {  /* attention, (sequence, head) split over the threads */
                int64_t b = job / h, head = job % h;
                attend(qkv + b * qkv_n + head * d, L, (slot ? slot[b] : b) * seq, head / (h / kv), pos ? pos[b] + 1 : T,
                       d, m->scaling, bf,
                       score + t * (T + 16), att + b * h * d + head * d);
            }
#pragma omp barrier
            if (t == 0) prepare(&L->o, att, B, bf, xa, widest, sums, G);
#pragma omp barrier
            share(&L->o, att, B, bf, xa, widest, sums, G, tmp, t, n);
#pragma omp barrier
            if (t == 0) {
                for (int64_t i = 0; i < B * H; i++) x[i] = rnd(x[i] + biased(tmp[i], L->o_bias, i % H, bf), bf);
                for (int64_t b = 0; b < B; b++) layer_input_norm(m, x + b * H, L->norm2, L->norm2_bias, xn + b * H);
                prepare(&L->gate_up, xn, B, bf, xa, widest, sums, G);
            }
#pragma omp barrier
            share(&L->gate_up, xn, B, bf, xa, widest, sums, G, gu, t, n);
#pragma omp barrier
            {  /* act(gate) * up and its preparation, pairs of groups split over the threads */
                int64_t pairs = I / 64, p0 = pairs * t / n, p1 = pairs * (t + 1) / n;
                int64_t i1 = t == n - 1 ? I : p1 * 64;  /* a dense down weight's inputs need not fill a pair */
                const int64_t gu_n = m->mlp ? I : 2 * I;  /* the gate/up product's width (plain: c_fc's) */
                for (int64_t b = 0; b < B; b++) {
                    const float *g2 = gu + b * gu_n;
                    float *a = act + b * I;
                    for (int64_t i = p0 * 64; i < i1; i++) {
                        float g = biased(g2[i], L->gate_up_bias, i, bf);
                        if (m->mlp) {
                            a[i] = rnd(gate_act(g, m->act), bf);
                        } else {
                            float u = biased(g2[I + i], L->gate_up_bias, I + i, bf);
                            a[i] = rnd(rnd(gate_act(g, m->act), bf) * u, bf);
                        }
                    }
                    if (!L->down.dense) {
                        if (p1 > p0)
                            arrange(a + p0 * 64, 0, (p1 - p0) * 64, (of_act *)xa + b * widest + p0 * 64, sums + b * G + p0 * 2);
                    } else if (bf) {
                        for (int64_t i = p0 * 64; i < i1; i++) ((uint16_t *)xa)[b * widest + i] = to_bf16(a[i]);
                    }
                }
            }
#pragma omp barrier
            share(&L->down, act, B, bf, xa, widest, sums, G, tmp, t, n);
#pragma omp barrier
            if (t == 0)
                for (int64_t i = 0; i < B * H; i++) x[i] = rnd(x[i] + biased(tmp[i], L->down_bias, i % H, bf), bf);
        }
    }
    for (int64_t i = 0; i < B * H; i++) put(hidden, i, x[i], bf);
    free(x);
    free(xa);
    return 0;
}

/* every sequence at position n_past, sequence b in cache row b, one cos/sin row for all */
int of_llama_step(const of_llama *m, void *hidden, int64_t batch, const float *cos, const float *sin, int64_t n_past,
                  int threads) {
    return llama_step(m, hidden, batch, cos, sin, 0, NULL, NULL, n_past, threads);
}

/* sequences at their own positions (the serving engine's slot cache): sequence b in cache row slot[b], holding
 * pos[b] positions, with its own cos/sin row ([batch][head_dim] each) */
int of_llama_step_rows(const of_llama *m, void *hidden, int64_t batch, const float *cos, const float *sin,
                       const int64_t *slot, const int64_t *pos, int threads) {
    return llama_step(m, hidden, batch, cos, sin, m->head_dim, slot, pos, 0, threads);
}
