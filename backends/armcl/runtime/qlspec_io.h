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

// Command-line reading shared by the runners: `for (Args a(argc, argv); a.next();)`, then compare
// a.flag() and take a.value() or a.integer() (each throws "FLAG needs ..." for a missing or bad value).
class Args {
 public:
  Args(int argc, char** argv) : argc_(argc), argv_(argv) {}
  bool next() { return ++i_ < argc_ && (flag_ = argv_[i_], true); }
  const std::string& flag() const { return flag_; }
  std::string value();
  int integer();

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string flag_;
};

std::string exe_dir();                      // the folder of the running binary (its default weights.bin)

// The options every runner takes: --weights FILE, --threads N, --repeat R, --out DIR.
struct RunOptions {
  std::string weights = exe_dir() + "/weights.bin";
  std::string out;
  int threads = 1;
  int repeat = 0;
  bool take(Args& arg);  // consumes one of these options (true), or leaves another flag alone (false)
  void check() const;    // --out given, threads in 1..256, repeat in 0..100000
};
std::string one_line(const std::string& s);  // control characters (a newline in a name) as \xHH

}  // namespace qlspec
