/* Rotary position embedding for training on the CPU, float32: the forward and its transpose (the backward).
 *
 * Built on first use by core/native.py (-O3 -march=native -fopenmp) and called through ctypes from
 * modules/rotary.py; threads are PyTorch's OpenMP threads.
 *
 * x and y are [b][heads][len][d] given by element strides (batch, head, position; the last dimension
 * contiguous), cos and sin [b][len][d] by strides (batch, position). With x1, x2 the two halves of a row and
 * c, s the matching halves of cos and sin (Llama's rotate_half):
 *   forward   y1 = x1 c1 - x2 s1,  y2 = x2 c2 + x1 s2
 *   backward  y1 = x1 c1 + x2 s2,  y2 = x2 c2 - x1 s1   (x is then the output's gradient)
 * The forward is PyTorch's `x * cos + rotate_half(x) * sin` operation for operation (a product, then one
 * addition), so the values are the same.
 */
#include <stdint.h>
#include <omp.h>

void of_rotary(const float *x, const int64_t *xs, int64_t b, int64_t heads, int64_t len, int64_t d, const float *cos,
               const float *sin, const int64_t *cs, float *y, const int64_t *ys, int backward, int threads) {
    const int64_t half = d / 2, rows = b * heads * len;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t bi = r / (heads * len), h = (r / len) % heads, l = r % len;
        const float *xr = x + bi * xs[0] + h * xs[1] + l * xs[2];
        float *yr = y + bi * ys[0] + h * ys[1] + l * ys[2];
        const float *c = cos + bi * cs[0] + l * cs[1], *s = sin + bi * cs[0] + l * cs[1];
        if (!backward) {
            for (int64_t j = 0; j < half; j++) {
                const float x1 = xr[j], x2 = xr[j + half];
                yr[j] = x1 * c[j] + (-x2) * s[j];
                yr[j + half] = x2 * c[j + half] + x1 * s[j + half];
            }
        } else {
            for (int64_t j = 0; j < half; j++) {
                const float g1 = xr[j], g2 = xr[j + half];
                yr[j] = g1 * c[j] + g2 * s[j + half];
                yr[j + half] = g2 * c[j + half] - g1 * s[j];
            }
        }
    }
}
