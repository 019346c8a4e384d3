#include "qlspec_acl.h"

#include <cstring>
#include <stdexcept>

using namespace arm_compute;

namespace qlspec {

void AclGemm::configure(int64_t M, int64_t K, int64_t N, int a_shift, int b_shift, const uint8_t* b_stored,
                        std::shared_ptr<IMemoryManager> mm) {
  M_ = M; K_ = K; N_ = N; a_shift_ = a_shift;
  // the core adds the offsets as stored: stored + (-shift) = the logical value
  a_.allocator()->init(TensorInfo(TensorShape(K, M), 1, DataType::QASYMM8, QuantizationInfo(1.f, -a_shift)));
  b_.allocator()->init(TensorInfo(TensorShape(N, K), 1, DataType::QASYMM8, QuantizationInfo(1.f, -b_shift)));
  c_.allocator()->init(TensorInfo(TensorShape(N, M), 1, DataType::S32));
  finish_configure(GEMMInfo(false, false, /*reshape_b_only_on_first_run=*/true), nullptr, b_stored, mm);
}

void AclGemm::configure_native(int64_t M, int64_t K, int64_t N, int a_shift, int b_shift, const uint8_t* b_stored,
                               const int32_t* bias, const int32_t* qm, const int32_t* shifts, int zo, int lo, int hi,
                               std::shared_ptr<IMemoryManager> mm) {
  M_ = M; K_ = K; N_ = N; a_shift_ = a_shift;
  a_.allocator()->init(TensorInfo(TensorShape(K, M), 1, DataType::QASYMM8, QuantizationInfo(1.f, -a_shift)));
  b_.allocator()->init(TensorInfo(TensorShape(N, K), 1, DataType::QASYMM8, QuantizationInfo(1.f, -b_shift)));
  c_.allocator()->init(TensorInfo(TensorShape(N, M), 1, DataType::QASYMM8, QuantizationInfo(1.f, zo)));
  bias_.allocator()->init(TensorInfo(TensorShape(N), 1, DataType::S32));
  GEMMLowpOutputStageInfo stage;
  stage.type = GEMMLowpOutputStageType::QUANTIZE_DOWN_FIXEDPOINT;
  stage.gemmlowp_offset = zo;
  stage.gemmlowp_min_bound = lo + zo;
  stage.gemmlowp_max_bound = hi + zo;
  stage.gemmlowp_multipliers.assign(qm, qm + N);
  stage.gemmlowp_shifts.assign(shifts, shifts + N);
  stage.gemmlowp_multiplier = qm[0];
  stage.gemmlowp_shift = shifts[0];
  stage.is_quantized_per_channel = true;
  stage.output_data_type = DataType::QASYMM8;
  finish_configure(GEMMInfo(false, false, true, 0, false, false, stage), &bias_, b_stored, mm);
  bias_.allocator()->allocate();
  std::memcpy(bias_.ptr_to_element(Coordinates(0)), bias, static_cast<size_t>(N) * 4);
}

void AclGemm::finish_configure(const GEMMInfo& info, const ITensor* bias, const uint8_t* b_stored, std::shared_ptr<IMemoryManager> mm) {
  const Status st = NEGEMMLowpMatrixMultiplyCore::validate(a_.info(), b_.info(), bias ? bias->info() : nullptr, c_.info(), info);
  if (!bool(st)) throw std::runtime_error("ACL GEMMLowp core refused the layer: " + st.error_description());
  fn_.reset(new NEGEMMLowpMatrixMultiplyCore(mm));
  fn_->configure(&a_, &b_, bias, &c_, info);
  b_.allocator()->allocate();
  fill_b(b_stored);
}

void AclGemm::fill_b(const uint8_t* b_stored) {
  for (int64_t k = 0; k < K_; ++k)
    std::memcpy(b_.ptr_to_element(Coordinates(0, k)), b_stored + k * N_, static_cast<size_t>(N_));
}

void AclGemm::import_scratch(uint8_t* a_mem, uint8_t* acc_mem) {
  if (!bool(a_.allocator()->import_memory(a_mem)) || !bool(c_.allocator()->import_memory(acc_mem)))
    throw std::runtime_error("ACL refused the shared scratch memory");
  a_base_ = a_.ptr_to_element(Coordinates(0, 0));
  acc_base_ = c_.ptr_to_element(Coordinates(0, 0));
  a_row_bytes_ = M_ > 1 ? a_.ptr_to_element(Coordinates(0, 1)) - a_base_ : static_cast<int64_t>(K_);
  acc_row_bytes_ = M_ > 1 ? c_.ptr_to_element(Coordinates(0, 1)) - acc_base_ : static_cast<int64_t>(N_ * 4);
}

void AclGemm::run() { fn_->run(); }

}  // namespace qlspec
