// What a generated network offers the runner: its input/output table, its arena, one run.
#pragma once

#include <memory>
#include <string>

#include "qlspec_io.h"

namespace qlspec {

class Net {
 public:
  virtual ~Net() = default;
  virtual void run() = 0;          // one batch: reads the inputs from the arena, writes the outputs there
  virtual uint8_t* arena() = 0;
};

struct NetInfo {
  const char* name;
  const TensorDesc* inputs;
  int num_inputs;
  const TensorDesc* outputs;
  int num_outputs;
  int64_t arena_bytes;
  const char* backend;             // "armcl" or "cpu"
};

const NetInfo& net_info();
std::unique_ptr<Net> make_net(const std::string& weights_path, int threads);

}  // namespace qlspec
