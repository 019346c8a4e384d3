// What a generated network offers the runner: its input/output table, its arena, one run.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "qlspec_io.h"

namespace qlspec {

class Net {
 public:
  virtual ~Net() = default;
  virtual void run() = 0;          // one batch: reads the inputs from the arena, writes the outputs there
  virtual uint8_t* arena() = 0;
  // With a vector of one slot per node, run() adds each node's wall time (seconds) to its slot.
  void set_profile(std::vector<double>* per_node) { profile_ = per_node; }

 protected:
  std::vector<double>* profile_ = nullptr;
};

struct NetInfo {
  const char* name;
  const TensorDesc* inputs;
  int num_inputs;
  const TensorDesc* outputs;
  int num_outputs;
  int64_t arena_bytes;
  const char* backend;             // "armcl" or "cpu"
  int num_nodes;
  const char* const* node_names;   // per node, in run order
  const char* const* node_kernels; // the kernel each node runs (lowering.json's "kernels")
};

const NetInfo& net_info();
std::unique_ptr<Net> make_net(const std::string& weights_path, int threads);

}  // namespace qlspec
