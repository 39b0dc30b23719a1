/* Dropout masks from a counter hash, and LoRA's dropout fused with its first (rank-r) product.
 *
 * Built on first use by core/native.py (-O3 -march=native -fopenmp) and called through ctypes from
 * modules/dropout.py; threads are PyTorch's OpenMP threads.
 *
 * The mask. A tensor is seen as rows of `w` values; a row has an id (its index, or the id the caller gives,
 * such as a packed row's position in the padded batch). Element c of row `id` is kept when
 *     (int16_t)(mix(seed, id * ceil(w / 4) + c / 4) >> (16 * (c % 4))) < t,   t = round((1 - p) * 65536) - 32768,
 * where mix is SplitMix64's output function on the counter: each 64-bit hash gives four 16-bit pieces,
 * one for each of four neighbouring elements. The same decision is computed in PyTorch where the library
 * is not there (modules/dropout.py), so a seed gives the same mask either way. Kept values are x * scale,
 * scale = 1 / (1 - p).
 *
 * The product. LoRA's `lora_A(dropout(x))` is out[i][k] = sum_c keep(i, c) * (x[i][c] * scale) * a[k][c]:
 * the forward and the backward regenerate the mask from the seed, so neither the mask nor the dropped x is
 * stored, and x is read once per pass.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define LANES 16

static inline uint64_t mix(uint64_t seed, uint64_t counter) {
    uint64_t z = seed + (counter + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* the 16-bit pieces of row `id`: pieces[4q + j] = bits 16j..16j+15 of hash q, for q < ceil(w / 4) */
static void row_pieces(uint64_t seed, int64_t id, int64_t w, int16_t *pieces) {
    const int64_t quads = (w + 3) / 4, base = id * quads;
    for (int64_t q = 0; q < quads; q++) {
        const uint64_t h = mix(seed, (uint64_t)(base + q));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(pieces + 4 * q, &h, sizeof h);
#else
        for (int j = 0; j < 4; j++) pieces[4 * q + j] = (int16_t)(uint16_t)(h >> (16 * j));
#endif
    }
}

/* dropped[c] = x[c] * scale where kept, else 0, for one row (pieces: 4 * ceil(w / 4) scratch) */
static void row_dropped(const float *x, uint64_t seed, int64_t id, int64_t w, int t, float scale, int16_t *pieces,
                        float *dropped) {
    row_pieces(seed, id, w, pieces);
    for (int64_t c = 0; c < w; c++) dropped[c] = pieces[c] < t ? x[c] * scale : 0.0f;
}

static inline float dot(const float *u, const float *v, int64_t w) {
    float lanes[LANES] = {0};
    int64_t c = 0;
    for (; c + LANES <= w; c += LANES)
        for (int l = 0; l < LANES; l++) lanes[l] += u[c + l] * v[c + l];
    float s = 0.0f;
    for (int l = 0; l < LANES; l++) s += lanes[l];
    for (; c < w; c++) s += u[c] * v[c];
    return s;
}

static inline int64_t row_id(const int64_t *ids, int64_t i) { return ids ? ids[i] : i; }

/* the bool mask [n][w] */
int of_dropout_mask(int64_t n, int64_t w, const int64_t *ids, uint64_t seed, int t, uint8_t *out, int threads) {
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        int16_t *pieces = (int16_t *)malloc(((w + 3) / 4) * 4 * sizeof(int16_t));
        if (!pieces) {
#pragma omp atomic write
            failed = 1;
        } else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; i++) {
                row_pieces(seed, row_id(ids, i), w, pieces);
                uint8_t *o = out + i * w;
                for (int64_t c = 0; c < w; c++) o[c] = pieces[c] < t;
            }
        }
        free(pieces);
    }
    return failed ? -1 : 0;
}

/* out[n][r] = dropout(x)[n][w] a[r][w]^T. Returns 0, or -1 when scratch memory could not be had. */
int of_dropout_product(const float *x, int64_t n, int64_t w, const int64_t *ids, uint64_t seed, int t, float scale,
                       const float *a, int64_t r, float *out, int threads) {
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        int16_t *pieces = (int16_t *)malloc(((w + 3) / 4) * 4 * sizeof(int16_t));
        float *dropped = (float *)malloc(w * sizeof(float));
        if (!pieces || !dropped) {
#pragma omp atomic write
            failed = 1;
        } else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; i++) {
                row_dropped(x + i * w, seed, row_id(ids, i), w, t, scale, pieces, dropped);
                for (int64_t k = 0; k < r; k++) out[i * r + k] = dot(dropped, a + k * w, w);
            }
        }
        free(pieces);
        free(dropped);
    }
    return failed ? -1 : 0;
}

/* The gradients of out = dropout(x) a^T for the incoming g[n][r]: grad_x[n][w] = ((g a) * keep) * scale and
 * grad_a[r][w] = g^T dropout(x); either pointer may be NULL (not wanted). Each thread sums its rows' share of
 * grad_a; the shares are added in thread order (the same result for the same thread count). */
int of_dropout_product_backward(const float *x, int64_t n, int64_t w, const int64_t *ids, uint64_t seed, int t,
                                float scale, const float *a, int64_t r, const float *g, float *grad_x, float *grad_a,
                                int threads) {
    if (threads < 1) threads = 1;
    float **shares = (float **)calloc(threads, sizeof(float *));
    if (!shares) return -1;
    int failed = 0, used = threads;
#pragma omp parallel num_threads(threads)
    {
        const int tid = omp_get_thread_num();
#pragma omp single
        used = omp_get_num_threads();
        int16_t *pieces = (int16_t *)malloc(((w + 3) / 4) * 4 * sizeof(int16_t));
        float *dropped = (float *)malloc(w * sizeof(float));
        float *share = grad_a ? (float *)calloc(r * w, sizeof(float)) : NULL;
        shares[tid] = share;
        if (!pieces || !dropped || (grad_a && !share)) {
#pragma omp atomic write
            failed = 1;
        } else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; i++) {
                row_dropped(x + i * w, seed, row_id(ids, i), w, t, scale, pieces, dropped);
                const float *gi = g + i * r;
                if (grad_x) {
                    float *gx = grad_x + i * w;
                    memset(gx, 0, w * sizeof(float));
                    for (int64_t k = 0; k < r; k++) {
                        const float gk = gi[k], *ak = a + k * w;
                        for (int64_t c = 0; c < w; c++) gx[c] += gk * ak[c];
                    }
                    for (int64_t c = 0; c < w; c++) gx[c] = pieces[c] < t ? gx[c] * scale : 0.0f;
                }
                if (share) {
                    for (int64_t k = 0; k < r; k++) {
                        const float gk = gi[k];
                        float *sk = share + k * w;
                        for (int64_t c = 0; c < w; c++) sk[c] += gk * dropped[c];
                    }
                }
            }
        }
        free(pieces);
        free(dropped);
    }
    if (!failed && grad_a) {
        const int64_t total = r * w;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t e = 0; e < total; e++) {
            float s = 0.0f;
            for (int s_i = 0; s_i < used; s_i++) s += shares[s_i][e];
            grad_a[e] = s;
        }
    }
    for (int s_i = 0; s_i < threads; s_i++) free(shares[s_i]);
    free(shares);
    return failed ? -1 : 0;
}
