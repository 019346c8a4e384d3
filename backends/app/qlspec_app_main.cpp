// qlspec-app: the AI application. Photos in, 68 landmarks per photo out.
//
//   qlspec-app [--weights FILE] [--threads N] [--repeat R] --out DIR [--roi SX,SY,EX,EY | --roi full] IMAGE...
//
// Each IMAGE (PNG or JPEG) is cropped at the ROI in force (the last --roi before it; `full`, the
// default, is the whole photo), resized to the network input, turned into input codes, run through
// the network and post-processed (qlspec_app.h). Writes DIR/landmarks.json (per photo: its path,
// size, ROI as rounded, and 68 [x, y] in photo pixels), DIR/input_0.npy (the input codes),
// DIR/output_0.npy (the raw integer outputs) and DIR/timing.json (median milliseconds per photo of
// each step over R timed passes, after one untimed pass; R = 0: the one pass is timed).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "qlspec_app.h"
#include "qlspec_net.h"

using namespace qlspec;

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  char hex[8];
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') { out += '\\'; out += static_cast<char>(c); }
    else if (c < 0x20 || c == 0x7f) { std::snprintf(hex, sizeof hex, "\\u%04x", c); out += hex; }
    else out += static_cast<char>(c);
  }
  return out + "\"";
}

struct Job {
  std::string path;
  bool full;
  Roi roi;
};

Roi parse_roi(const std::string& v) {
  Roi r{};
  double* f[4] = {&r.sx, &r.sy, &r.ex, &r.ey};
  std::stringstream ss(v);
  std::string part;
  int k = 0;
  while (std::getline(ss, part, ',')) {
    if (k == 4) throw std::runtime_error("--roi needs four numbers SX,SY,EX,EY (got '" + v + "')");
    size_t used = 0;
    try { *f[k] = std::stod(part, &used); } catch (const std::exception&) { used = 0; }
    if (used == 0 || used != part.size() || !std::isfinite(*f[k])) throw std::runtime_error("--roi needs four numbers SX,SY,EX,EY (got '" + v + "')");
    ++k;
  }
  if (k != 4) throw std::runtime_error("--roi needs four numbers SX,SY,EX,EY (got '" + v + "')");
  return r;
}

int64_t element(const uint8_t* p, const TensorDesc& t, int64_t i) {
  const std::string d = t.descr;
  if (d == "|i1") return reinterpret_cast<const int8_t*>(p)[i];
  if (d == "|u1") return p[i];
  if (d == "<i2") return reinterpret_cast<const int16_t*>(p)[i];
  if (d == "<u2") return reinterpret_cast<const uint16_t*>(p)[i];
  if (d == "<i4") return reinterpret_cast<const int32_t*>(p)[i];
  if (d == "<i8") return reinterpret_cast<const int64_t*>(p)[i];
  throw std::runtime_error(std::string("unsupported output type ") + d);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(int argc, char** argv) {
  RunOptions opt;
  std::vector<Job> jobs;
  Job current{"", true, Roi{}};
  for (Args arg(argc, argv); arg.next();) {
    const std::string& a = arg.flag();
    if (opt.take(arg)) continue;
    if (a == "--roi") {
      const std::string v = arg.value();
      current.full = v == "full";
      if (!current.full) current.roi = parse_roi(v);
    } else {
      current.path = a;
      jobs.push_back(current);
    }
  }
  const NetInfo& info = net_info();
  const AppConfig& cfg = app_config();
  opt.check();
  if (jobs.empty()) throw std::runtime_error("no images given");
  const std::string &weights = opt.weights, &out = opt.out;
  const int threads = opt.threads, repeat = opt.repeat;
  if (info.num_inputs != 1 || info.num_outputs != 1) throw std::runtime_error("the app needs a network with one input and one output");
  const TensorDesc& tin = info.inputs[0];
  const TensorDesc& tout = info.outputs[0];
  const int64_t in_count = static_cast<int64_t>(3) * cfg.size * cfg.size;
  int64_t tin_count = 1, tout_count = 1;
  for (int d = 0; d < tin.rank; ++d) tin_count *= tin.shape[d];
  for (int d = 0; d < tout.rank; ++d) tout_count *= tout.shape[d];
  if (tin_count != in_count || tout_count != cfg.num_params) throw std::runtime_error("the network's input or output does not fit the app");
  const bool signed_in = std::string(tin.descr) == "|i1";
  if (!signed_in && std::string(tin.descr) != "|u1") throw std::runtime_error("the app needs an 8-bit network input");

  std::unique_ptr<Net> net = make_net(weights, threads);
  uint8_t* arena = net->arena();
  const size_t n = jobs.size();
  std::vector<uint8_t> codes(n * in_count);
  std::vector<int64_t> raw(n * cfg.num_params);
  std::vector<std::vector<double>> points(n);
  std::vector<Roi> used(n);
  std::vector<std::pair<int, int>> sizes(n);
  std::vector<double> t_decode, t_pre, t_net, t_post;
  using clock = std::chrono::steady_clock;
  auto ms = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  for (int pass = 0; pass <= repeat; ++pass) {
    for (size_t j = 0; j < n; ++j) {
      const auto t0 = clock::now();
      const Image img = read_image(jobs[j].path);
      const auto t1 = clock::now();
      const Roi roi = jobs[j].full ? Roi{0, 0, static_cast<double>(img.width), static_cast<double>(img.height)} : jobs[j].roi;
      std::vector<uint8_t> crop;
      try {
        crop = crop_resize(img, roi, cfg.size);
      } catch (const std::exception& e) {
        throw std::runtime_error(jobs[j].path + ": " + e.what());
      }
      uint8_t* in = arena + tin.offset;
      if (signed_in) input_codes(crop, cfg, reinterpret_cast<int8_t*>(in));
      else input_codes(crop, cfg, in);
      const auto t2 = clock::now();
      // the memory plan may reuse the input's bytes once the first layer has read them
      if (pass == 0) std::memcpy(codes.data() + j * in_count, in, static_cast<size_t>(in_count));
      net->run();
      const auto t3 = clock::now();
      std::vector<int64_t> o(cfg.num_params);
      for (int k = 0; k < cfg.num_params; ++k) o[k] = element(arena + tout.offset, tout, k);
      const Roi rounded = round_roi(roi);
      std::vector<double> lm = landmarks(o, cfg, rounded);
      const auto t4 = clock::now();
      if (pass == 0) {
        std::copy(o.begin(), o.end(), raw.begin() + static_cast<std::ptrdiff_t>(j * cfg.num_params));
        points[j] = lm;
        used[j] = rounded;
        sizes[j] = {img.width, img.height};
      }
      if (pass > 0 || repeat == 0) {
        t_decode.push_back(ms(t0, t1));
        t_pre.push_back(ms(t1, t2));
        t_net.push_back(ms(t2, t3));
        t_post.push_back(ms(t3, t4));
      }
    }
  }
  write_npy(out + "/input_0.npy", tin.descr, {static_cast<int64_t>(n), 3, cfg.size, cfg.size}, codes.data(), codes.size());
  write_npy(out + "/output_0.npy", "<i8", {static_cast<int64_t>(n), cfg.num_params}, raw.data(), raw.size() * sizeof(int64_t));
  std::ofstream lj(out + "/landmarks.json");
  lj.precision(17);
  lj << "{\"points\": " << cfg.num_points << ", \"units\": \"photo pixels (x, y), 0-based\", \"images\": [";
  for (size_t j = 0; j < n; ++j) {
    const Roi& r = used[j];
    lj << (j ? ",\n " : "\n ") << "{\"image\": " << json_string(jobs[j].path) << ", \"width\": " << sizes[j].first
       << ", \"height\": " << sizes[j].second << ", \"roi\": [" << r.sx << ", " << r.sy << ", " << r.ex << ", " << r.ey
       << "], \"landmarks\": [";
    for (int v = 0; v < cfg.num_points; ++v) lj << (v ? ", " : "") << "[" << points[j][2 * v] << ", " << points[j][2 * v + 1] << "]";
    lj << "]}";
  }
  lj << "]}\n";
  std::ofstream tj(out + "/timing.json");
  tj << "{\"images\": " << n << ", \"passes\": " << (repeat ? repeat : 1) << ", \"threads\": " << threads
     << ", \"median_ms_per_image\": {\"decode\": " << median(t_decode) << ", \"preprocess\": " << median(t_pre)
     << ", \"network\": " << median(t_net) << ", \"postprocess\": " << median(t_post) << "}}\n";
  if (!lj || !tj) throw std::runtime_error("cannot write the results into " + out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qlspec-app: %s\n", one_line(e.what()).c_str());
    return 2;
  }
}
