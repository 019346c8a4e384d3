// Pre- and post-processing of qlspec_app.h. Build with -ffp-contract=off: the resize's source
// coordinates and the landmark sums must round like numpy's, operation by operation.
#include "qlspec_app.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace qlspec {
namespace {

constexpr int kCoefBits = 11;  // OpenCV INTER_RESIZE_COEF_BITS
constexpr float kOne = static_cast<float>(1 << kCoefBits);

struct Taps {
  std::vector<int> i0, i1;
  std::vector<int32_t> w0, w1;
};

// qlspec.data.crop._linear_taps, step for step in the same precisions.
Taps linear_taps(int n_src, int n_dst) {
  Taps t;
  const double scale = 1.0 / (static_cast<double>(n_dst) / n_src);
  for (int d = 0; d < n_dst; ++d) {
    float f = static_cast<float>((d + 0.5) * scale - 0.5);
    int64_t i0 = static_cast<int64_t>(std::floor(f));
    f = f - static_cast<float>(i0);
    if (i0 < 0 || i0 >= n_src - 1) f = 0.0f;
    i0 = std::min<int64_t>(std::max<int64_t>(i0, 0), n_src - 1);
    t.i0.push_back(static_cast<int>(i0));
    t.i1.push_back(static_cast<int>(std::min<int64_t>(i0 + 1, n_src - 1)));
    const float a = (1.0f - f) * kOne, b = f * kOne;
    t.w0.push_back(static_cast<int32_t>(std::nearbyint(a)));  // ties to even, as numpy's rint
    t.w1.push_back(static_cast<int32_t>(std::nearbyint(b)));
  }
  return t;
}

// qlspec.data.crop.resize_bilinear for 3-channel images.
std::vector<uint8_t> resize_bilinear(const std::vector<uint8_t>& src, int h, int w, int out_h, int out_w) {
  if (h == out_h && w == out_w) return src;
  const Taps x = linear_taps(w, out_w), y = linear_taps(h, out_h);
  std::vector<int32_t> horiz(static_cast<size_t>(h) * out_w * 3);
  for (int r = 0; r < h; ++r)
    for (int d = 0; d < out_w; ++d)
      for (int c = 0; c < 3; ++c) {
        const uint8_t* row = src.data() + static_cast<size_t>(r) * w * 3;
        horiz[(static_cast<size_t>(r) * out_w + d) * 3 + c] = row[x.i0[d] * 3 + c] * x.w0[d] + row[x.i1[d] * 3 + c] * x.w1[d];
      }
  std::vector<uint8_t> out(static_cast<size_t>(out_h) * out_w * 3);
  for (int d = 0; d < out_h; ++d)
    for (int k = 0; k < out_w * 3; ++k) {
      const int64_t h0 = horiz[static_cast<size_t>(y.i0[d]) * out_w * 3 + k], h1 = horiz[static_cast<size_t>(y.i1[d]) * out_w * 3 + k];
      const int64_t top = ((h0 >> 4) * y.w0[d]) >> 16, bottom = ((h1 >> 4) * y.w1[d]) >> 16;
      out[static_cast<size_t>(d) * out_w * 3 + k] = static_cast<uint8_t>(std::min<int64_t>(std::max<int64_t>((top + bottom + 2) >> 2, 0), 255));
    }
  return out;
}

}  // namespace

Roi round_roi(const Roi& roi) {
  return {std::nearbyint(roi.sx), std::nearbyint(roi.sy), std::nearbyint(roi.ex), std::nearbyint(roi.ey)};
}

std::vector<uint8_t> crop_resize(const Image& img, const Roi& roi, int size) {
  const Roi r = round_roi(roi);
  const double limit = 1 << 16;
  for (double v : {r.sx, r.sy, r.ex, r.ey})
    if (!(std::fabs(v) <= limit)) throw std::runtime_error("crop box coordinates must lie within +-65536");
  const int sx = static_cast<int>(r.sx), sy = static_cast<int>(r.sy), ex = static_cast<int>(r.ex), ey = static_cast<int>(r.ey);
  if (ex <= sx || ey <= sy) throw std::runtime_error("empty crop box");
  const int64_t ch = ey - sy, cw = ex - sx;
  if (ch * cw > kMaxPixels) throw std::runtime_error("crop box larger than " + std::to_string(kMaxPixels) + " pixels");
  std::vector<uint8_t> cut(static_cast<size_t>(ch * cw * 3), 0);
  const int ix0 = std::max(sx, 0), iy0 = std::max(sy, 0), ix1 = std::min(ex, img.width), iy1 = std::min(ey, img.height);
  for (int yy = iy0; yy < iy1; ++yy)
    for (int xx = ix0; xx < ix1; ++xx)
      for (int c = 0; c < 3; ++c)
        cut[((static_cast<size_t>(yy - sy) * cw) + (xx - sx)) * 3 + c] = img.rgb[(static_cast<size_t>(yy) * img.width + xx) * 3 + c];
  return resize_bilinear(cut, static_cast<int>(ch), static_cast<int>(cw), size, size);
}

std::vector<double> landmarks(const std::vector<int64_t>& outputs, const AppConfig& cfg, const Roi& roi) {
  const int n = cfg.num_params;
  if (static_cast<int>(outputs.size()) != n) throw std::runtime_error("expected " + std::to_string(n) + " outputs per image");
  std::vector<double> p(n);
  for (int i = 0; i < n; ++i) p[i] = (static_cast<double>(outputs[i]) * cfg.eps[i]) * cfg.stdev[i] + cfg.mean[i];
  const int k = cfg.num_points, rows = 3 * k;
  std::vector<double> shape(rows);  // u + W_shp a_shp + W_exp a_exp, xyz interleaved per point
  for (int r = 0; r < rows; ++r) {
    double s = 0.0, e = 0.0;
    for (int j = 0; j < 40; ++j) s += p[12 + j] * cfg.w_shp[r * 40 + j];
    for (int j = 0; j < 10; ++j) e += p[52 + j] * cfg.w_exp[r * 10 + j];
    shape[r] = cfg.u[r] + s + e;
  }
  const double kx = (roi.ex - roi.sx) / cfg.size, ky = (roi.ey - roi.sy) / cfg.size;
  std::vector<double> out(2 * static_cast<size_t>(k));
  for (int v = 0; v < k; ++v) {
    double xy[2];
    for (int a = 0; a < 2; ++a) {
      const double* P = &p[4 * a];  // rows of [R | t], row-major 3 x 4
      xy[a] = P[0] * shape[3 * v] + P[1] * shape[3 * v + 1] + P[2] * shape[3 * v + 2] + P[3];
    }
    if (cfg.frame_3ddfa) {
      xy[0] = xy[0] - 1;
      xy[1] = cfg.model_size - xy[1];
    }
    out[2 * v] = xy[0] * kx + roi.sx;
    out[2 * v + 1] = xy[1] * ky + roi.sy;
  }
  return out;
}

}  // namespace qlspec
