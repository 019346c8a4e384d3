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
  const GEMMInfo info(false, false, /*reshape_b_only_on_first_run=*/true);
  const Status st = NEGEMMLowpMatrixMultiplyCore::validate(a_.info(), b_.info(), nullptr, c_.info(), info);
  if (!bool(st)) throw std::runtime_error("ACL GEMMLowp core refused the layer: " + st.error_description());
  fn_.reset(new NEGEMMLowpMatrixMultiplyCore(mm));
  fn_->configure(&a_, &b_, nullptr, &c_, info);
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
