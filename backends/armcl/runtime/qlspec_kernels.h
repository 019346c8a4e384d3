// qlspec runtime kernels: the integer contract of qlspec/engine/ops, in portable C++ with NEON
// fast paths. Every kernel here computes exactly what the reference engine computes; each one names
// the op whose docstring is its specification. No float on the integer path (only `quantise`, the
// input quantiser, is float by definition).
//
// Conventions: tensors are dense row-major (NCHW for 4-D) in their IR container type; shapes and
// strides are in elements; `>>` on a negative signed integer is an arithmetic shift (GCC and Clang
// define it so), i.e. floor division by a power of two.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__ARM_NEON) || defined(__ARM_NEON__)
#include <arm_neon.h>
#define QLSPEC_NEON 1
#endif

namespace qlspec {

constexpr int kMaxRank = 8;

struct Nd {
  int rank;
  int64_t shape[kMaxRank];
};

// Calls f(offset_a, offset_b, offset_c) for every index of `nd` in row-major order, each offset
// the dot product of the index with that operand's strides (0 on broadcast axes).
template <typename F>
inline void for_each_nd(const Nd& nd, const int64_t* sa, const int64_t* sb, const int64_t* sc, F f) {
  int64_t idx[kMaxRank] = {0};
  int64_t total = 1;
  for (int d = 0; d < nd.rank; ++d) total *= nd.shape[d];
  if (total == 0) return;
  int64_t oa = 0, ob = 0, oc = 0;
  for (int64_t n = 0; n < total; ++n) {
    f(oa, ob, oc);
    for (int d = nd.rank - 1; d >= 0; --d) {
      if (++idx[d] < nd.shape[d]) { oa += sa[d]; ob += sb[d]; oc += sc[d]; break; }
      oa -= sa[d] * (nd.shape[d] - 1); ob -= sb[d] * (nd.shape[d] - 1); oc -= sc[d] * (nd.shape[d] - 1);
      idx[d] = 0;
    }
  }
}

// Flatten, Reshape, Transpose, Concat (one input into its slice): y[.] = x[.] over `nd`, each with
// its own strides; values unchanged, converted to y's container.
template <typename TX, typename TY>
inline void copy_nd(const TX* x, const int64_t* sx, TY* y, const int64_t* sy, const Nd& nd) {
  static const int64_t zero[kMaxRank] = {0};
  for_each_nd(nd, sx, sy, zero, [&](int64_t a, int64_t b, int64_t) { y[b] = static_cast<TY>(x[a]); });
}

// Pad: y[i] = x[index[i]] when index[i] >= 0, else `value` (the index table spells out constant,
// edge and reflect padding alike).
template <typename TX, typename TY>
inline void gather(const TX* x, const int32_t* index, int64_t n, TY* y, int64_t value) {
  for (int64_t i = 0; i < n; ++i) y[i] = index[i] >= 0 ? static_cast<TY>(x[index[i]]) : static_cast<TY>(value);
}

// Add: y = a + b exactly (y's container holds every sum), numpy broadcasting by strides.
template <typename TA, typename TB, typename TY>
inline void add_nd(const TA* a, const int64_t* sa, const TB* b, const int64_t* sb, TY* y, const Nd& nd) {
  int64_t sy[kMaxRank];
  int64_t s = 1;
  for (int d = nd.rank - 1; d >= 0; --d) { sy[d] = s; s *= nd.shape[d]; }
  for_each_nd(nd, sa, sb, sy, [&](int64_t i, int64_t j, int64_t k) {
    y[k] = static_cast<TY>(static_cast<int64_t>(a[i]) + static_cast<int64_t>(b[j]));
  });
}

// Clip: y = min(max(x, lo), hi).
template <typename TX, typename TY>
inline void clip(const TX* x, TY* y, int64_t n, int64_t lo, int64_t hi) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<TY>(std::min<int64_t>(std::max<int64_t>(x[i], lo), hi));
}

// Quantise: y = clip(r(x / eps), lo, hi); one IEEE float32 division, r = floor (mode 0),
// floor(v + 0.5f) (mode 1, half up) or half to even (mode 2). NaN becomes lo (the reference engine
// refuses NaN; the runner never feeds it).
template <typename TY>
inline void quantise(const float* x, TY* y, int64_t n, float eps, int64_t lo, int64_t hi, int mode) {
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] / eps;
    float r = mode == 0 ? std::floor(v) : mode == 1 ? std::floor(v + 0.5f) : std::nearbyint(v);
    double q = std::isnan(r) ? static_cast<double>(lo) : std::min<double>(std::max<double>(r, lo), hi);
    y[i] = static_cast<TY>(static_cast<int64_t>(q));
  }
}

// The three-axis view every requantiser works on: `outer` x `channels` x `inner` elements, each
// operand with its own strides; mul/add vary along `channels` only (or not at all).
struct View3 {
  int64_t outer, channels, inner;
  int64_t xo, xc, xi;  // strides of x
  int64_t yo, yc, yi;  // strides of y
};

// RequantShift (and the requantising half of ConvRequant/GemmRequant/MatMulRequant):
//   y = clip((x*mul + bias) >> shift, lo, hi),  bias = add + div/2 (the generator folds the half in,
// and a Conv/Gemm bias b as b*mul), exact in int64 for every x the IR admits (the IR checks it).
// `mul32` (may be null) is mul as int32 when every multiplier fits; `bias32` (may be null) is bias as
// int32 when the generator proved |x*mul + bias| < 2^31 for every x the accumulator can hold: then
// NEON runs four int32 lanes; otherwise two int64 lanes (x and mul int32) or the scalar int64 loop.
// All three give identical results.
template <typename TX, typename TY>
inline void requant_scalar_at(const TX* x, TY* y, const View3& v, int64_t o, int64_t c, int64_t i0, int64_t i1,
                              int64_t mul, int64_t bias, int shift, int64_t lo, int64_t hi) {
  for (int64_t i = i0; i < i1; ++i) {
    int64_t acc = static_cast<int64_t>(x[o * v.xo + c * v.xc + i * v.xi]) * mul + bias;
    acc >>= shift;
    y[o * v.yo + c * v.yc + i * v.yi] = static_cast<TY>(std::min(std::max(acc, lo), hi));
  }
}

#ifdef QLSPEC_NEON
template <typename TY>
inline void store4(TY* y, int64_t stride, int32x4_t r) {
  int32_t t[4];
  vst1q_s32(t, r);
  y[0] = static_cast<TY>(t[0]); y[stride] = static_cast<TY>(t[1]);
  y[2 * stride] = static_cast<TY>(t[2]); y[3 * stride] = static_cast<TY>(t[3]);
}

// four int32 lanes: r = min(max((x*m + b) >> s, lo), hi)
inline int32x4_t rq_lanes32(int32x4_t x, int32x4_t m, int32x4_t b, int32x4_t neg_shift, int32x4_t lo, int32x4_t hi) {
  int32x4_t acc = vmlaq_s32(b, x, m);
  acc = vshlq_s32(acc, neg_shift);  // shift by a negative count: arithmetic shift right, truncating = floor
  return vminq_s32(vmaxq_s32(acc, lo), hi);
}

// two int64 lanes from int32 x and m: the same arithmetic without any bound on x*m + b
inline int32x2_t rq_lanes64(int32x2_t x, int32x2_t m, int64x2_t b, int64x2_t neg_shift, int64x2_t lo, int64x2_t hi) {
  int64x2_t acc = vaddq_s64(vmull_s32(x, m), b);
  acc = vshlq_s64(acc, neg_shift);
  acc = vbslq_s64(vcgtq_s64(acc, hi), hi, acc);
  acc = vbslq_s64(vcltq_s64(acc, lo), lo, acc);
  return vmovn_s64(acc);  // within [lo, hi], which fits int32
}
#endif

template <typename TX, typename TY>
inline void requant(const TX* x, TY* y, const View3& v, const int64_t* mul, const int64_t* bias,
                    const int32_t* mul32, const int32_t* bias32, bool per_channel, int shift, int64_t lo, int64_t hi) {
  for (int64_t o = 0; o < v.outer; ++o) {
#ifdef QLSPEC_NEON
    const bool fits64 = lo >= INT32_MIN && hi <= INT32_MAX;
    if (std::is_same<TX, int32_t>::value && fits64 && v.xi == 1 && v.inner >= 4) {
      // vectorise along `inner` (NCHW per-channel planes): mul and bias are scalars per channel
      const int32_t* xs = reinterpret_cast<const int32_t*>(x);
      const int64_t n4 = v.inner & ~int64_t(3);
      for (int64_t c = 0; c < v.channels; ++c) {
        const int64_t k = per_channel ? c : 0;
        const int32_t* xr = xs + o * v.xo + c * v.xc;
        TY* yr = y + o * v.yo + c * v.yc;
        if (bias32) {
          const int32x4_t m = vdupq_n_s32(mul32[k]), b = vdupq_n_s32(bias32[k]), s = vdupq_n_s32(-shift);
          const int32x4_t l = vdupq_n_s32(static_cast<int32_t>(lo)), h = vdupq_n_s32(static_cast<int32_t>(hi));
          for (int64_t i = 0; i < n4; i += 4) store4(yr + i * v.yi, v.yi, rq_lanes32(vld1q_s32(xr + i), m, b, s, l, h));
        } else if (mul32) {
          const int32x2_t m = vdup_n_s32(mul32[k]);
          const int64x2_t b = vdupq_n_s64(bias[k]), s = vdupq_n_s64(-shift), l = vdupq_n_s64(lo), h = vdupq_n_s64(hi);
          for (int64_t i = 0; i < n4; i += 4) {
            const int32x4_t xv = vld1q_s32(xr + i);
            store4(yr + i * v.yi, v.yi, vcombine_s32(rq_lanes64(vget_low_s32(xv), m, b, s, l, h),
                                                     rq_lanes64(vget_high_s32(xv), m, b, s, l, h)));
          }
        } else {
          requant_scalar_at(x, y, v, o, c, 0, n4, mul[k], bias[k], shift, lo, hi);
        }
        requant_scalar_at(x, y, v, o, c, n4, v.inner, mul[k], bias[k], shift, lo, hi);
      }
      continue;
    }
    if (std::is_same<TX, int32_t>::value && fits64 && per_channel && v.xc == 1 && v.channels >= 4 && mul32) {
      // vectorise along `channels` (a GEMM's rows of output channels): mul and bias are vectors
      const int32_t* xs = reinterpret_cast<const int32_t*>(x);
      const int64_t c4 = v.channels & ~int64_t(3);
      const int32x4_t s = vdupq_n_s32(-shift);
      const int32x4_t l = vdupq_n_s32(static_cast<int32_t>(lo)), h = vdupq_n_s32(static_cast<int32_t>(hi));
      const int64x2_t s64 = vdupq_n_s64(-shift), l64 = vdupq_n_s64(lo), h64 = vdupq_n_s64(hi);
      for (int64_t i = 0; i < v.inner; ++i) {
        const int32_t* xr = xs + o * v.xo + i * v.xi;
        TY* yr = y + o * v.yo + i * v.yi;
        if (bias32) {
          for (int64_t c = 0; c < c4; c += 4)
            store4(yr + c * v.yc, v.yc, rq_lanes32(vld1q_s32(xr + c), vld1q_s32(mul32 + c), vld1q_s32(bias32 + c), s, l, h));
        } else {
          for (int64_t c = 0; c < c4; c += 4) {
            const int32x4_t xv = vld1q_s32(xr + c), m = vld1q_s32(mul32 + c);
            store4(yr + c * v.yc, v.yc,
                   vcombine_s32(rq_lanes64(vget_low_s32(xv), vget_low_s32(m), vld1q_s64(bias + c), s64, l64, h64),
                                rq_lanes64(vget_high_s32(xv), vget_high_s32(m), vld1q_s64(bias + c + 2), s64, l64, h64)));
          }
        }
        for (int64_t c = c4; c < v.channels; ++c)
          requant_scalar_at(x, y, v, o, c, i, i + 1, mul[c], bias[c], shift, lo, hi);
      }
      continue;
    }
#endif
    for (int64_t c = 0; c < v.channels; ++c) {
      const int64_t k = per_channel ? c : 0;
      requant_scalar_at(x, y, v, o, c, 0, v.inner, mul[k], bias[k], shift, lo, hi);
    }
  }
}

// RequantAdd: y = clip(R_out(R_1(a) + R_2(b)), lo, hi), R(v) = (v*mul + bias) >> shift when enabled.
struct RequantTerm { bool on; int64_t mul, bias; int shift; };

inline int64_t apply_term(const RequantTerm& t, int64_t v) { return t.on ? (v * t.mul + t.bias) >> t.shift : v; }

template <typename TA, typename TB, typename TY>
inline void requant_add(const TA* a, const TB* b, TY* y, int64_t n, const RequantTerm& r1, const RequantTerm& r2,
                        const RequantTerm& ro, int64_t lo, int64_t hi) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = apply_term(ro, apply_term(r1, a[i]) + apply_term(r2, b[i]));
    y[i] = static_cast<TY>(std::min(std::max(s, lo), hi));
  }
}

// A 2-D sliding window on NCHW planes (conv, pools): sizes, strides, dilations, leading pads.
struct Window {
  int64_t h, w, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo;
};

// Output columns ox in [first, last) whose tap at column offset j*dw lands inside the input.
inline void valid_cols(const Window& k, int64_t j, int64_t* first, int64_t* last) {
  const int64_t off = j * k.dw - k.pl;  // input column = ox*sw + off
  int64_t f = off >= 0 ? 0 : (-off + k.sw - 1) / k.sw;
  int64_t l = k.w - 1 - off < 0 ? 0 : (k.w - 1 - off) / k.sw + 1;
  *first = std::min(f, k.wo);
  *last = std::max(*first, std::min(l, k.wo));
}

// Conv (direct, any group; depthwise is group = C = M): one output plane of channel m of image n,
// acc[oy*wo + ox] = sum_{c in group, i, j} x[c, oy*sh + i*dh - pt, ox*sw + j*dw - pl] * w[m, c, i, j],
// zero padding, accumulated in TACC (int32 where the generator proved |acc| < 2^31, else int64).
template <typename TX, typename TW, typename TACC>
inline void conv_plane(const TX* x /* image n, first channel of the group */, const TW* w /* filter m */,
                       int64_t cg, const Window& k, TACC* acc) {
  std::fill(acc, acc + k.ho * k.wo, TACC(0));
  if (k.kh == 1 && k.kw == 1 && k.sh == 1 && k.sw == 1 && k.pt == 0 && k.pl == 0 && k.ho == k.h && k.wo == k.w) {
    // pointwise: each input plane scales into the whole output plane, one flat loop the compiler vectorises
    const int64_t size = k.h * k.w;
    for (int64_t c = 0; c < cg; ++c) {
      const TACC wv = static_cast<TACC>(w[c]);
      if (wv == 0) continue;
      const TX* xc = x + c * size;
      for (int64_t i = 0; i < size; ++i) acc[i] += static_cast<TACC>(xc[i]) * wv;
    }
    return;
  }
  for (int64_t c = 0; c < cg; ++c) {
    const TX* xc = x + c * k.h * k.w;
    for (int64_t i = 0; i < k.kh; ++i) {
      for (int64_t j = 0; j < k.kw; ++j) {
        const TACC wv = static_cast<TACC>(w[(c * k.kh + i) * k.kw + j]);
        if (wv == 0) continue;
        int64_t f, l;
        valid_cols(k, j, &f, &l);
        const int64_t coff = j * k.dw - k.pl;
        for (int64_t oy = 0; oy < k.ho; ++oy) {
          const int64_t iy = oy * k.sh + i * k.dh - k.pt;
          if (iy < 0 || iy >= k.h) continue;
          const TX* xr = xc + iy * k.w + coff;
          TACC* ar = acc + oy * k.wo;
          if (k.sw == 1) {
            for (int64_t ox = f; ox < l; ++ox) ar[ox] += static_cast<TACC>(xr[ox]) * wv;
          } else {
            for (int64_t ox = f; ox < l; ++ox) ar[ox] += static_cast<TACC>(xr[ox * k.sw]) * wv;
          }
        }
      }
    }
  }
}

// A window fold over NCHW planes: y = combine(...combine(init, x[first position])..., x[last]) over
// the window's positions inside the input (positions in the padding are skipped).
template <typename TX, typename TY, typename TA, typename F>
inline void window_fold(const TX* x, TY* y, int64_t planes, const Window& k, TA init, F combine) {
  for (int64_t p = 0; p < planes; ++p) {
    const TX* xp = x + p * k.h * k.w;
    TY* yp = y + p * k.ho * k.wo;
    for (int64_t oy = 0; oy < k.ho; ++oy) {
      for (int64_t ox = 0; ox < k.wo; ++ox) {
        TA acc = init;
        for (int64_t i = 0; i < k.kh; ++i) {
          const int64_t iy = oy * k.sh + i * k.dh - k.pt;
          if (iy < 0 || iy >= k.h) continue;
          for (int64_t j = 0; j < k.kw; ++j) {
            const int64_t ix = ox * k.sw + j * k.dw - k.pl;
            if (ix >= 0 && ix < k.w) acc = combine(acc, xp[iy * k.w + ix]);
          }
        }
        yp[oy * k.wo + ox] = static_cast<TY>(acc);
      }
    }
  }
}

// MaxPool: y = max over the window's positions inside the input (padding never wins).
template <typename T>
inline void max_pool(const T* x, T* y, int64_t planes, const Window& k) {
  window_fold(x, y, planes, k, std::numeric_limits<T>::lowest(), [](T a, T b) { return std::max(a, b); });
}

// SumPool: y = sum of the window, zero outside the input (the 1/k lives in the next requantiser).
template <typename TX, typename TY>
inline void sum_pool(const TX* x, TY* y, int64_t planes, const Window& k) {
  window_fold(x, y, planes, k, int64_t(0), [](int64_t a, TX b) { return a + static_cast<int64_t>(b); });
}

// GlobalSumPool: y[p] = sum of plane p.
template <typename TX, typename TY>
inline void global_sum_pool(const TX* x, TY* y, int64_t planes, int64_t size) {
  for (int64_t p = 0; p < planes; ++p) {
    int64_t s = 0;
    for (int64_t i = 0; i < size; ++i) s += x[p * size + i];
    y[p] = static_cast<TY>(s);
  }
}

// Gemm/MatMul (direct): acc[m*N + n] = sum_k a[m*sam + k*sak] * b[k*sbk + n*sbn], exact in TACC.
template <typename TA, typename TB, typename TACC>
inline void gemm_direct(const TA* a, int64_t sam, int64_t sak, const TB* b, int64_t sbk, int64_t sbn,
                        int64_t M, int64_t K, int64_t N, TACC* acc) {
  std::fill(acc, acc + M * N, TACC(0));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K; ++k) {
      const TACC av = static_cast<TACC>(a[m * sam + k * sak]);
      if (av == 0) continue;
      TACC* row = acc + m * N;
      const TB* br = b + k * sbk;
      if (sbn == 1) {
        for (int64_t n = 0; n < N; ++n) row[n] += av * static_cast<TACC>(br[n]);
      } else {
        for (int64_t n = 0; n < N; ++n) row[n] += av * static_cast<TACC>(br[n * sbn]);
      }
    }
  }
}

}  // namespace qlspec
