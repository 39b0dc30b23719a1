/* Bidirectional attention of the encoder runner (runtime/encoder.py) on the CPU, float32 or bfloat16.
 *
 * Built on first use by core/native.py (-O3 -march=native -fopenmp) and called through ctypes from
 * runtime/attention_native.py; threads are PyTorch's OpenMP threads (one parallel region a call).
 *
 * Input: the output of the stacked q/k/v product, rows of [q | k | v] (each heads * dim values), one row a
 * position of a [batch, seq] batch; row_stride values from one row to the next. For each sequence b and head h:
 *
 *     out[b, i, h] = softmax_j(scale * q[b, i, h] . k[b, j, h] + bias[b, j]) v[b, j, h]    (i < q_len)
 *
 * bias: an additive float32 [batch, seq] key mask (0 kept, -FLT_MAX left out) or NULL; the keys after a
 * sequence's last kept one are skipped (right padding costs nothing). Out: contiguous
 * [batch, q_len, heads * dim] in the input's type, the layout the attention's output product reads.
 *
 * Everything is float32 inside: a head's q (times scale), k (transposed) and v are converted into a
 * thread's buffers, scores stay float32 through the softmax, and the weighted sum of v is rounded once.
 * The products are blocked for registers with GCC/Clang vector types (16 floats: one AVX-512 register,
 * two or four where vectors are shorter): 4 queries x 64 keys for the scores, 4 queries x 32 values
 * for the sum. Items (sequence, head) are shared out to the threads a few at a time as they come free (on a
 * machine shared with other work one thread may be held up). Padding of the buffers (keys to a multiple of 64, dim to a multiple of 32, queries to 4)
 * is zero in q, k and v and -inf in the bias, so it adds nothing.
 *
 * exp is a branch-free polynomial (relative error ~2e-7 in [-87, 88]); inputs below -87 give
 * exp(-87) ~ 1.6e-38, which adds nothing next to the row maximum's exp(0) = 1.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int32_t i16v __attribute__((vector_size(64)));

#define QB 4   /* queries a block */
#define KB 64  /* keys a block of scores (4 vectors) */
#define DB 32  /* values a block of the weighted sum (2 vectors) */

static inline v16 splat(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
static inline v16 load(const float *p) { return *(const v16u *)p; }
static inline void store(float *p, v16 x) { *(v16u *)p = x; }

/* where(mask, a, b) on a comparison's mask (every bit set or none) */
static inline v16 pick(i16v mask, v16 a, v16 b) { return (v16)((mask & (i16v)a) | (~mask & (i16v)b)); }

static inline v16 vexp(v16 x) {
    x = pick(x < splat(-87.0f), splat(-87.0f), x); /* NaN passes through both */
    x = pick(x > splat(88.0f), splat(88.0f), x);
    /* x = k ln2 + r, k = round(x / ln2) (the 1.5 * 2^23 shift rounds), |r| <= ln2 / 2 */
    const v16 t = x * splat(1.44269504088896341f) + splat(12582912.0f);
    const v16 k = t - splat(12582912.0f);
    v16 r = x - k * splat(0.693145751953125f);
    r = r - k * splat(1.428606765330187045e-06f);
    v16 p = splat(1.0f / 5040.0f);
    p = p * r + splat(1.0f / 720.0f);
    p = p * r + splat(1.0f / 120.0f);
    p = p * r + splat(1.0f / 24.0f);
    p = p * r + splat(1.0f / 6.0f);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    const i16v bits = (__builtin_convertvector(k, i16v) + 127) << 23; /* 2^k */
    return p * (v16)bits;
}

static inline float hmax(v16 x) {
    float m = x[0];
    for (int i = 1; i < 16; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static inline float hsum(v16 x) {
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += x[i];
    return s;
}

static inline float from_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40); /* NaN stays NaN */
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16); /* round to nearest even */
}

/* n values of a row (float32 or bfloat16) into float32, times scale */
static inline void row_in(const void *src, int64_t at, int bf16, int64_t n, float scale, float *dst) {
    if (bf16) {
        const uint16_t *s = (const uint16_t *)src + at;
        for (int64_t c = 0; c < n; c++) dst[c] = from_bf16(s[c]) * scale;
    } else {
        const float *s = (const float *)src + at;
        for (int64_t c = 0; c < n; c++) dst[c] = s[c] * scale;
    }
}

static inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

int of_encoder_attention(const void *qkv, int64_t row_stride, int64_t batch, int64_t seq, int64_t q_len,
                         int64_t heads, int64_t dim, const float *bias, float scale, void *out, int bf16,
                         int threads) {
    if (batch <= 0 || seq <= 0 || q_len <= 0 || q_len > seq || heads <= 0 || dim <= 0) return 1;
    const int64_t sp = round_up(seq, KB), dp = round_up(dim, DB), qp = round_up(q_len, QB);
    const int64_t hidden = heads * dim, items = batch * heads;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1 && items > 1)
    {
        /* this thread's buffers: kt [dp][sp], v [sp][dp], q [qp][dp], key bias [sp], scores [QB][sp] */
        float *buf = aligned_alloc(64, sizeof(float) * (size_t)(2 * dp * sp + qp * dp + sp + QB * sp + 16));
        if (buf == NULL) {
#pragma omp atomic write
            failed = 1;
        }
        else
            memset(buf, 0, sizeof(float) * (size_t)(2 * dp * sp + qp * dp)); /* the padding stays zero */
        float *kt = buf, *vb = kt + dp * sp, *qb = vb + sp * dp, *kb = qb + qp * dp, *sc = kb + sp;
        float row[dp];
#pragma omp for schedule(dynamic, 4)
        for (int64_t item = 0; item < items; item++) {
            if (buf == NULL) continue;
            const int64_t b = item / heads, h = item % heads;
            const int64_t base = b * seq * row_stride + h * dim;
            /* keys after the last one kept add nothing: the blocks stop after it (all of them where none is kept) */
            int64_t keys = seq;
            if (bias != NULL) {
                while (keys > 0 && bias[b * seq + keys - 1] == -FLT_MAX) keys--;
                if (keys == 0) keys = seq;
            }
            const int64_t kp = round_up(keys, KB);
            for (int64_t j = 0; j < kp; j++) {
                if (j < keys) {
                    row_in(qkv, base + j * row_stride + hidden, bf16, dim, 1.0f, row);
                    for (int64_t c = 0; c < dim; c++) kt[c * sp + j] = row[c];
                    row_in(qkv, base + j * row_stride + 2 * hidden, bf16, dim, 1.0f, vb + j * dp);
                    kb[j] = bias != NULL ? bias[b * seq + j] : 0.0f;
                } else { /* zero, as at first: an earlier item may have filled it */
                    for (int64_t c = 0; c < dim; c++) kt[c * sp + j] = 0.0f;
                    memset(vb + j * dp, 0, sizeof(float) * (size_t)dim);
                    kb[j] = -INFINITY;
                }
            }
            for (int64_t i = 0; i < q_len; i++) row_in(qkv, base + i * row_stride, bf16, dim, scale, qb + i * dp);

            for (int64_t i0 = 0; i0 < q_len; i0 += QB) {
                const float *q0 = qb + i0 * dp;
                /* scores: 4 queries x 64 keys in 16 registers, over the head's values */
                for (int64_t j0 = 0; j0 < kp; j0 += KB) {
                    v16 acc[QB][4];
                    for (int r = 0; r < QB; r++)
                        for (int u = 0; u < 4; u++) acc[r][u] = load(kb + j0 + 16 * u);
                    for (int64_t c = 0; c < dp; c++) {
                        const float *kc = kt + c * sp + j0;
                        const v16 k0 = load(kc), k1 = load(kc + 16), k2 = load(kc + 32), k3 = load(kc + 48);
                        for (int r = 0; r < QB; r++) {
                            const v16 qv = splat(q0[r * dp + c]);
                            acc[r][0] += qv * k0;
                            acc[r][1] += qv * k1;
                            acc[r][2] += qv * k2;
                            acc[r][3] += qv * k3;
                        }
                    }
                    for (int r = 0; r < QB; r++)
                        for (int u = 0; u < 4; u++) store(sc + r * sp + j0 + 16 * u, acc[r][u]);
                }
                /* softmax, unnormalised: exp(s - max); the sum divides the result */
                float inv[QB];
                for (int r = 0; r < QB; r++) {
                    float *s = sc + r * sp;
                    v16 m = load(s);
                    for (int64_t j = 16; j < kp; j += 16) {
                        const v16 x = load(s + j);
                        m = pick(x > m, x, m);
                    }
                    const v16 mx = splat(hmax(m));
                    v16 sum = splat(0.0f);
                    for (int64_t j = 0; j < kp; j += 16) {
                        const v16 e = vexp(load(s + j) - mx);
                        store(s + j, e);
                        sum += e;
                    }
                    inv[r] = 1.0f / hsum(sum);
                }
                /* weighted sum of v: 4 queries x 32 values in 8 registers, over the keys */
                for (int64_t c0 = 0; c0 < dp; c0 += DB) {
                    v16 acc[QB][2];
                    for (int r = 0; r < QB; r++) acc[r][0] = acc[r][1] = splat(0.0f);
                    for (int64_t j = 0; j < kp; j++) {
                        const float *vj = vb + j * dp + c0;
                        const v16 v0 = load(vj), v1 = load(vj + 16);
                        for (int r = 0; r < QB; r++) {
                            const v16 p = splat(sc[r * sp + j]);
                            acc[r][0] += p * v0;
                            acc[r][1] += p * v1;
                        }
                    }
                    for (int r = 0; r < QB && i0 + r < q_len; r++) {
                        float res[DB];
                        store(res, acc[r][0] * splat(inv[r]));
                        store(res + 16, acc[r][1] * splat(inv[r]));
                        const int64_t n = dim - c0 < DB ? dim - c0 : DB;
                        const int64_t at = (b * q_len + i0 + r) * hidden + h * dim + c0;
                        if (bf16) {
                            uint16_t *o = (uint16_t *)out + at;
                            for (int64_t c = 0; c < n; c++) o[c] = to_bf16(res[c]);
                        } else {
                            memcpy((float *)out + at, res, sizeof(float) * (size_t)n);
                        }
                    }
                }
            }
        }
        free(buf);
    }
    return failed ? 2 : 0;
}
