// Runner plumbing shared by every generated network: .npy files, the weights blob, the network's
// tensor table, timing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qlspec {

// One graph input or output as the generated network lays it out in its arena.
struct TensorDesc {
  const char* name;
  const char* descr;  // numpy dtype string of the container, e.g. "|i1", "<i4", "<f4"
  int itemsize;
  int rank;
  int64_t shape[8];
  int64_t offset;     // byte offset in the arena
};

struct Array {
  std::string descr;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

Array read_npy(const std::string& path);
void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape, const void* data,
               size_t bytes);
std::vector<uint8_t> read_file(const std::string& path);
bool same_dtype(const std::string& a, const std::string& b);

}  // namespace qlspec
