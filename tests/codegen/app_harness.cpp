// Test harness for the AI application's pre-processing (backends/app): decode a photo, crop and
// resize it as qlspec-app does, and write the size x size x 3 RGB bytes to OUT.
//   app_harness PHOTO SX,SY,EX,EY|full SIZE OUT
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>

#include "qlspec_app.h"

int main(int argc, char** argv) {
  try {
    if (argc != 5) throw std::runtime_error("usage: app_harness PHOTO ROI SIZE OUT");
    const qlspec::Image img = qlspec::read_image(argv[1]);
    qlspec::Roi roi{0, 0, static_cast<double>(img.width), static_cast<double>(img.height)};
    if (std::string(argv[2]) != "full" && std::sscanf(argv[2], "%lf,%lf,%lf,%lf", &roi.sx, &roi.sy, &roi.ex, &roi.ey) != 4)
      throw std::runtime_error("bad ROI");
    const std::vector<uint8_t> crop = qlspec::crop_resize(img, roi, std::atoi(argv[3]));
    std::ofstream(argv[4], std::ios::binary).write(reinterpret_cast<const char*>(crop.data()), static_cast<std::streamsize>(crop.size()));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "app_harness: %s\n", e.what());
    return 2;
  }
}
