/* PACT's quantiser for one pair of bounds, fused: one pass over the tensor forward, one backward.
 *
 * The same arithmetic as qlspec.quant.pact.PACTQuantFunc's torch path, in the same IEEE float32
 * operations (a correctly rounded division, floor or round, comparisons, one multiplication), so the
 * forward output is bit for bit the same; the bounds' gradients are sums, accumulated here in double.
 * Built and loaded by qlspec.native (flags there: no fused multiply-add, no fast-math); called through
 * qlspec.quant.pact_native, which passes dense float32 tensors of n elements in any memory order.
 */
#include <math.h>
#include <stdint.h>

enum { RULE_FLOOR = 0, RULE_HALF_UP = 1, RULE_HALF_EVEN = 2 };

#define PARALLEL_MIN 65536 /* elements below which one thread does it all */
#define CHUNK 4096         /* elements per float-vector partial sum in the backward pass */

/* y[i] = clip(rule(x[i]/eps), qlo, qhi) * eps, with the code qhi where x[i] >= hi and qlo where
 * x[i] < lo whatever the rounding of x[i]/eps; NaN stays NaN. */
#define FORWARD_LOOP(ROUND)                                                                    \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static) if(n > PARALLEL_MIN)")   \
    for (int64_t i = 0; i < n; i++) {                                                          \
        float xi = x[i];                                                                       \
        float v = ROUND(xi / eps);                                                             \
        v = v < qlo ? qlo : v;                                                                 \
        v = v > qhi ? qhi : v;                                                                 \
        v = xi >= hi ? qhi : v;                                                                \
        v = xi < lo ? qlo : v;                                                                 \
        y[i] = v * eps;                                                                        \
    }

#define HALF_UP(v) floorf((v) + 0.5f)

void pact_forward(const float *restrict x, float *restrict y, int64_t n, float eps, float lo, float hi,
                  float qlo, float qhi, int rule, int nthreads)
{
    if (rule == RULE_FLOOR) {
        FORWARD_LOOP(floorf)
    } else if (rule == RULE_HALF_UP) {
        FORWARD_LOOP(HALF_UP)
    } else {
        FORWARD_LOOP(nearbyintf) /* half to even in the default rounding mode, as torch.round */
    }
}

/* The straight-through estimator: gx[i] = g[i] where lo <= x[i] < hi, else 0 (gx may be NULL);
 * sums[0] = sum of g where x < lo, sums[1] = sum of g where not x < hi (x >= hi, or NaN: as torch's
 * threshold_backward, which the torch path uses). */
void pact_backward(const float *restrict x, const float *restrict g, float *restrict gx, int64_t n,
                   float lo, float hi, double *sums, int nthreads)
{
    double s_lo = 0.0, s_hi = 0.0;
    int64_t chunks = (n + CHUNK - 1) / CHUNK;
    #pragma omp parallel for num_threads(nthreads) schedule(static) if(n > PARALLEL_MIN) reduction(+:s_lo, s_hi)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
        double a_lo = 0.0, a_hi = 0.0;
        #pragma omp simd reduction(+:a_lo, a_hi)
        for (int64_t i = c * CHUNK; i < end; i++) {
            float xi = x[i], gi = g[i];
            int below = xi < lo, above = !(xi < hi);
            if (gx)
                gx[i] = (below | above) ? 0.0f : gi;
            float g_lo = below ? gi : 0.0f, g_hi = above ? gi : 0.0f;
            a_lo += (double)g_lo;
            a_hi += (double)g_hi;
        }
        s_lo += a_lo;
        s_hi += a_hi;
    }
    sums[0] = s_lo;
    sums[1] = s_hi;
}
