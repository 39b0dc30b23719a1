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
#define CHUNK 32  /* the backward's columns a step: eight hashes */

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

/* One column chunk [c0, c0 + cw) of the backward, over all rows: grad_x's columns there, and grad_a's, whose
 * r x CHUNK sums stay in registers (R constant) while the rows go by. */
static inline __attribute__((always_inline)) void backward_chunk(const float *x, int64_t n, int64_t w,
                                                                 const int64_t *ids, uint64_t seed, int t,
                                                                 float scale, const float *a, const int R,
                                                                 const float *g, float *grad_x, float *grad_a,
                                                                 int64_t c0, const int64_t cw) {
    const int64_t quads = (w + 3) / 4, hashes = (cw + 3) / 4;
    float acc[R][CHUNK];
    memset(acc, 0, sizeof acc);
    for (int64_t i = 0; i < n; i++) {
        int16_t pieces[CHUNK];
        const uint64_t base = (uint64_t)(row_id(ids, i) * quads + c0 / 4);
        for (int64_t q = 0; q < hashes; q++) {
            const uint64_t h = mix(seed, base + q);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(pieces + 4 * q, &h, sizeof h);
#else
            for (int j = 0; j < 4; j++) pieces[4 * q + j] = (int16_t)(uint16_t)(h >> (16 * j));
#endif
        }
        const float *gi = g + i * R;
        if (grad_x) {
            float s[CHUNK] = {0};
            for (int k = 0; k < R; k++)
                for (int64_t c = 0; c < cw; c++) s[c] += gi[k] * a[k * w + c0 + c];
            float *gx = grad_x + i * w + c0;
            for (int64_t c = 0; c < cw; c++) gx[c] = pieces[c] < t ? s[c] * scale : 0.0f;
        }
        if (grad_a) {
            const float *xi = x + i * w + c0;
            float d[CHUNK];
            for (int64_t c = 0; c < cw; c++) d[c] = pieces[c] < t ? xi[c] * scale : 0.0f;
            for (int k = 0; k < R; k++)
                for (int64_t c = 0; c < cw; c++) acc[k][c] += gi[k] * d[c];
        }
    }
    if (grad_a)
        for (int k = 0; k < R; k++)
            for (int64_t c = 0; c < cw; c++) grad_a[k * w + c0 + c] = acc[k][c];
}

static inline __attribute__((always_inline)) void backward_chunks(const float *x, int64_t n, int64_t w,
                                                                  const int64_t *ids, uint64_t seed, int t,
                                                                  float scale, const float *a, const int R,
                                                                  const float *g, float *grad_x, float *grad_a) {
    const int64_t chunks = (w + CHUNK - 1) / CHUNK;
#pragma omp for schedule(static)
    for (int64_t j = 0; j < chunks; j++) {
        if ((j + 1) * CHUNK <= w)
            backward_chunk(x, n, w, ids, seed, t, scale, a, R, g, grad_x, grad_a, j * CHUNK, CHUNK);
        else
            backward_chunk(x, n, w, ids, seed, t, scale, a, R, g, grad_x, grad_a, j * CHUNK, w - j * CHUNK);
    }
}

/* The gradients of out = dropout(x) a^T for the incoming g[n][r]: grad_x[n][w] = ((g a) * keep) * scale and
 * grad_a[r][w] = g^T dropout(x); either pointer may be NULL (not wanted). The threads take columns, not rows:
 * each element of grad_a is one sum over the rows in order, whatever the thread count. */
int of_dropout_product_backward(const float *x, int64_t n, int64_t w, const int64_t *ids, uint64_t seed, int t,
                                float scale, const float *a, int64_t r, const float *g, float *grad_x, float *grad_a,
                                int threads) {
#pragma omp parallel num_threads(threads)
    switch (r) {
        case 4: backward_chunks(x, n, w, ids, seed, t, scale, a, 4, g, grad_x, grad_a); break;
        case 8: backward_chunks(x, n, w, ids, seed, t, scale, a, 8, g, grad_x, grad_a); break;
        case 16: backward_chunks(x, n, w, ids, seed, t, scale, a, 16, g, grad_x, grad_a); break;
        default: backward_chunks(x, n, w, ids, seed, t, scale, a, (int)r, g, grad_x, grad_a); break;
    }
    return 0;
}
