// qlspec-net: runs the generated network on .npy inputs and writes .npy outputs.
//
//   qlspec-net [--weights FILE] [--threads N] [--repeat R] [--profile] --out DIR INPUT.npy...
//
// One INPUT per graph input, in order, in the graph's container type, with any number of samples
// stacked on axis 0 (a multiple of the graph's batch). Writes DIR/output_<k>.npy (samples stacked
// the same way) and DIR/timing.json (median milliseconds per batch over R timed passes; with
// --profile, each node's mean milliseconds per batch and its kernel, over every pass).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include "qlspec_net.h"

using namespace qlspec;

static int64_t elements(const TensorDesc& t, int from) {
  int64_t n = 1;
  for (int d = from; d < t.rank; ++d) n *= t.shape[d];
  return n;
}

static int run(int argc, char** argv) {
  RunOptions opt;
  bool profile = false;
  std::vector<std::string> inputs;
  for (Args arg(argc, argv); arg.next();) {
    const std::string& a = arg.flag();
    if (opt.take(arg)) continue;
    if (a == "--profile") profile = true;
    else if (a == "--info") {
      const NetInfo& info = net_info();
      std::printf("%s: %d input(s), %d output(s), arena %lld bytes, backend %s\n", info.name, info.num_inputs,
                  info.num_outputs, static_cast<long long>(info.arena_bytes), info.backend);
      return 0;
    } else inputs.push_back(a);
  }
  const NetInfo& info = net_info();
  opt.check();
  const std::string &weights = opt.weights, &out = opt.out;
  const int threads = opt.threads, repeat = opt.repeat;
  if (static_cast<int>(inputs.size()) != info.num_inputs)
    throw std::runtime_error("expected " + std::to_string(info.num_inputs) + " input file(s), got " + std::to_string(inputs.size()));
  std::vector<Array> arrays;
  int64_t samples = -1;
  for (int k = 0; k < info.num_inputs; ++k) {
    const TensorDesc& t = info.inputs[k];
    arrays.push_back(read_npy(inputs[k]));
    const Array& a = arrays.back();
    if (!same_dtype(a.descr, t.descr)) throw std::runtime_error(inputs[k] + ": dtype " + a.descr + ", the network takes " + t.descr);
    const int64_t batch = t.rank ? t.shape[0] : 1;
    int64_t count = 1;
    for (int64_t d : a.shape) {
      if (d < 0 || d > (int64_t(1) << 40) || (d && count > (int64_t(1) << 40) / d)) throw std::runtime_error(inputs[k] + ": bad shape");
      count *= d;
    }
    if (static_cast<uint64_t>(count) * t.itemsize != a.data.size())
      throw std::runtime_error(inputs[k] + ": holds " + std::to_string(a.data.size()) + " data bytes, its shape needs " +
                               std::to_string(count * t.itemsize));
    bool ok = static_cast<int>(a.shape.size()) == std::max(t.rank, 1) && a.shape[0] % batch == 0;
    for (int d = 1; ok && d < t.rank; ++d) ok = a.shape[d] == t.shape[d];
    if (!ok) throw std::runtime_error(inputs[k] + ": shape does not stack the network input " + t.name);
    const int64_t s = a.shape[0] / batch;
    if (samples >= 0 && s != samples) throw std::runtime_error("inputs hold different numbers of samples");
    samples = s;
  }
  std::unique_ptr<Net> net = make_net(weights, threads);
  uint8_t* arena = net->arena();
  std::vector<double> per_node(static_cast<size_t>(info.num_nodes), 0.0);
  if (profile) net->set_profile(&per_node);
  std::vector<std::vector<uint8_t>> results(info.num_outputs);
  for (int k = 0; k < info.num_outputs; ++k) results[k].resize(samples * elements(info.outputs[k], 0) * info.outputs[k].itemsize);
  std::vector<double> times;
  for (int pass = 0; pass <= repeat; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < samples; ++s) {
      for (int k = 0; k < info.num_inputs; ++k) {
        const size_t bytes = elements(info.inputs[k], 0) * info.inputs[k].itemsize;
        std::memcpy(arena + info.inputs[k].offset, arrays[k].data.data() + s * bytes, bytes);
      }
      net->run();
      if (pass == 0)
        for (int k = 0; k < info.num_outputs; ++k) {
          const size_t bytes = elements(info.outputs[k], 0) * info.outputs[k].itemsize;
          std::memcpy(results[k].data() + s * bytes, arena + info.outputs[k].offset, bytes);
        }
    }
    const auto t1 = std::chrono::steady_clock::now();
    if (pass > 0 || repeat == 0) times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count() / std::max<int64_t>(samples, 1));
  }
  for (int k = 0; k < info.num_outputs; ++k) {
    const TensorDesc& t = info.outputs[k];
    std::vector<int64_t> shape(t.shape, t.shape + std::max(t.rank, 1));
    if (t.rank == 0) shape[0] = 1;
    shape[0] *= samples;
    write_npy(out + "/output_" + std::to_string(k) + ".npy", t.descr, shape, results[k].data(), results[k].size());
  }
  std::sort(times.begin(), times.end());
  std::ofstream tj(out + "/timing.json");
  tj << "{\"samples\": " << samples << ", \"passes\": " << times.size() << ", \"threads\": " << threads
     << ", \"median_ms_per_batch\": " << times[times.size() / 2];
  if (profile) {
    const double batches = static_cast<double>(std::max<int64_t>(samples, 1)) * (repeat + 1);
    tj << ",\n \"nodes\": [";
    for (int i = 0; i < info.num_nodes; ++i)
      tj << (i ? ",\n  " : "\n  ") << "{\"kernel\": \"" << info.node_kernels[i] << "\", \"ms_per_batch\": "
         << 1000.0 * per_node[static_cast<size_t>(i)] / batches << "}";
    tj << "]";
  }
  tj << "}\n";
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qlspec-net: %s\n", one_line(e.what()).c_str());
    return 2;
  }
}
