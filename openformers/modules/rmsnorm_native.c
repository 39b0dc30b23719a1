/* RMSNorm for training on the CPU, float32: the forward and the backward, each one pass over the rows.
 *
 * Built on first use by core/native.py (-O3 -march=native -fopenmp) and called through ctypes from
 * modules/rmsnorm_native.py; threads are PyTorch's OpenMP threads.
 *
 * For a row x of d values, r = 1 / sqrt(sum(x^2) / d + eps) and xn = x r:
 *   forward   y = w xn                       (r of each row kept for the backward)
 *   backward  dx = r (dy w - xn mean(dy w xn)),   dw = the sum over rows of dy xn
 * dw is summed in double, each thread over its own rows into its own row of `dw_parts` [threads][d]; the
 * caller adds the threads' rows. With `dw_parts` NULL (a frozen weight) it is not computed.
 */
#include <math.h>
#include <stdint.h>
#include <omp.h>

void of_rmsnorm(const float *x, const float *w, float *y, float *rstd, int64_t rows, int64_t d, float eps,
                int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x + i * d;
        float *yr = y + i * d;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t j = 0; j < d; j++) ss += xr[j] * xr[j];
        const float r = 1.0f / sqrtf(ss / (float)d + eps);
        rstd[i] = r;
        for (int64_t j = 0; j < d; j++) yr[j] = w[j] * (xr[j] * r);
    }
}

void of_rmsnorm_backward(const float *dy, const float *x, const float *w, const float *rstd, float *dx,
                         double *dw_parts, int64_t rows, int64_t d, int threads) {
#pragma omp parallel num_threads(threads)
    {
        double *dw = dw_parts ? dw_parts + (int64_t)omp_get_thread_num() * d : 0;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < rows; i++) {
            const float *g = dy + i * d, *xr = x + i * d;
            float *o = dx + i * d;
            const float r = rstd[i];
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t j = 0; j < d; j++) dot += g[j] * w[j] * xr[j];
            const float c = dot * r * r / (float)d;  /* mean(dy w xn) / r */
            for (int64_t j = 0; j < d; j++) o[j] = r * (g[j] * w[j] - xr[j] * c);
            if (dw)
                for (int64_t j = 0; j < d; j++) dw[j] += (double)(g[j] * (xr[j] * r));
        }
    }
}
