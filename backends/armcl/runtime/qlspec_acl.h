// The ARM Compute Library half of the runtime: int32 accumulators from NEGEMMLowpMatrixMultiplyCore.
//
// ACL 20.08's quantised convolution, depthwise and fully-connected functions all end in ACL's own
// fixed-point output stage, which is not RequantShift; only the GEMMLowp core hands back raw S32
// accumulators. So a Conv is im2col (ours) + the GEMMLowp core (ACL), and the project's own
// requantiser finishes it. Operands are QASYMM8: a signed 8-bit value v is stored as v + 128 with
// the QuantizationInfo offset -128 (the core computes sum((a + offset_a)*(b + offset_b)) with the
// offsets as stored, DESIGN.md section 4), so it returns exactly
// sum(a*b) for any mix of signed and unsigned 8-bit operands (ACL 20.08 gives wrong results when A
// is QASYMM8 and B QASYMM8_SIGNED, so both sides are always QASYMM8).
#pragma once

#include <string>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "arm_compute/runtime/NEON/functions/NEGEMMLowpMatrixMultiplyCore.h"
#include "arm_compute/runtime/Tensor.h"
#include "arm_compute/runtime/IMemoryManager.h"

#include "qlspec_kernels.h"

namespace qlspec {

class AclGemm {
 public:
  // acc (M x N, S32) = A (M x K) @ B (K x N); A is written row by row before each run(); B is
  // constant: K x N stored values (v + b_shift) row-major.
  void configure(int64_t M, int64_t K, int64_t N, int a_shift, int b_shift, const uint8_t* b_stored,
                 std::shared_ptr<arm_compute::IMemoryManager> mm);
  // The optional `armcl-native` output stage: ACL's own fused fixed-point requantisation
  // (out = clamp(round(SRDHM(acc + bias, qm) >> shift) + zo)), stored as QASYMM8 with zo = 128 for a
  // signed range. Fast, not the contract: the verify stage measures how often it differs.
  void configure_native(int64_t M, int64_t K, int64_t N, int a_shift, int b_shift, const uint8_t* b_stored,
                        const int32_t* bias, const int32_t* qm, const int32_t* shifts, int zo, int lo, int hi,
                        std::shared_ptr<arm_compute::IMemoryManager> mm);
  const uint8_t* out_u8() const { return acc_base_; }
  int64_t out_row_bytes() const { return acc_row_bytes_; }
  size_t a_bytes() const { return a_.info()->total_size(); }
  size_t acc_bytes() const { return c_.info()->total_size(); }
  // A and the accumulator live in scratch shared by every layer (layers run one after another).
  void import_scratch(uint8_t* a_mem, uint8_t* acc_mem);
  void fill_b(const uint8_t* b_stored);
  uint8_t* a_row(int64_t m) { return a_base_ + m * a_row_bytes_; }
  int a_shift() const { return a_shift_; }
  void run();
  const int32_t* acc() const { return reinterpret_cast<const int32_t*>(acc_base_); }
  int64_t acc_row_stride() const { return acc_row_bytes_ / 4; }
  int64_t M() const { return M_; }

 private:
  std::unique_ptr<arm_compute::NEGEMMLowpMatrixMultiplyCore> fn_;
  void finish_configure(const arm_compute::GEMMInfo& info, const arm_compute::ITensor* bias, const uint8_t* b_stored,
                        std::shared_ptr<arm_compute::IMemoryManager> mm);
  arm_compute::Tensor a_, b_, c_, bias_;
  int64_t M_ = 0, K_ = 0, N_ = 0;
  int a_shift_ = 0;
  uint8_t* a_base_ = nullptr;
  uint8_t* acc_base_ = nullptr;
  int64_t a_row_bytes_ = 0, acc_row_bytes_ = 0;
};

// The A matrix of a convolution: row m = output pixel (oy, ox) of one image, column
// (c*kh + i)*kw + j = input x[c, oy*sh + i*dh - pt, ox*sw + j*dw - pl] + shift, zero padding
// stored as `shift` (logical 0).
template <typename TX>
inline void im2col(const TX* x, int64_t channels, const Window& k, AclGemm& g) {
  const int shift = g.a_shift();
  for (int64_t oy = 0; oy < k.ho; ++oy) {
    for (int64_t ox = 0; ox < k.wo; ++ox) {
      uint8_t* row = g.a_row(oy * k.wo + ox);
      for (int64_t c = 0; c < channels; ++c) {
        const TX* xc = x + c * k.h * k.w;
        for (int64_t i = 0; i < k.kh; ++i) {
          const int64_t iy = oy * k.sh + i * k.dh - k.pt;
          for (int64_t j = 0; j < k.kw; ++j) {
            const int64_t ix = ox * k.sw + j * k.dw - k.pl;
            const bool inside = iy >= 0 && iy < k.h && ix >= 0 && ix < k.w;
            *row++ = static_cast<uint8_t>(inside ? static_cast<int>(xc[iy * k.w + ix]) + shift : shift);
          }
        }
      }
    }
  }
}

// The native output stage's result back into the graph's layout: y[n*out_n + m*out_m] =
// out[m][n] - zo (rows m of the GEMM are pixels or batch rows, columns n output channels).
template <typename TY>
inline void from_native(const AclGemm& g, int64_t N, int zo, TY* y, int64_t out_m, int64_t out_n) {
  const uint8_t* base = g.out_u8();
  const int64_t rs = g.out_row_bytes();
  for (int64_t m = 0; m < g.M(); ++m) {
    const uint8_t* row = base + m * rs;
    for (int64_t n = 0; n < N; ++n) y[n * out_n + m * out_m] = static_cast<TY>(static_cast<int>(row[n]) - zo);
  }
}

// The A matrix of a linear layer: rows of x (M x K, dense) + shift.
template <typename TX>
inline void rows_to_a(const TX* x, int64_t M, int64_t K, AclGemm& g) {
  const int shift = g.a_shift();
  for (int64_t m = 0; m < M; ++m) {
    uint8_t* row = g.a_row(m);
    const TX* xr = x + m * K;
    for (int64_t k = 0; k < K; ++k) row[k] = static_cast<uint8_t>(static_cast<int>(xr[k]) + shift);
  }
}

}  // namespace qlspec
