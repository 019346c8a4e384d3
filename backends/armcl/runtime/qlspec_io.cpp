#include "qlspec_io.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

namespace qlspec {

std::string Args::value() {
  if (i_ + 1 >= argc_) throw std::runtime_error(flag_ + " needs a value");
  return argv_[++i_];
}

int Args::integer() {
  const std::string v = value();
  size_t used = 0;
  int n = 0;
  try { n = std::stoi(v, &used); } catch (const std::exception&) { used = 0; }
  if (used == 0 || used != v.size()) throw std::runtime_error(flag_ + " needs an integer (got '" + v + "')");
  return n;
}

bool RunOptions::take(Args& arg) {
  const std::string& a = arg.flag();
  if (a == "--weights") weights = arg.value();
  else if (a == "--threads") threads = arg.integer();
  else if (a == "--repeat") repeat = arg.integer();
  else if (a == "--out") out = arg.value();
  else return false;
  return true;
}

void RunOptions::check() const {
  if (out.empty()) throw std::runtime_error("--out DIR is required");
  if (threads < 1 || threads > 256) throw std::runtime_error("--threads must be 1..256");
  if (repeat < 0 || repeat > 100000) throw std::runtime_error("--repeat must be 0..100000");
}

std::string exe_dir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.find_last_of('/'));
}

std::string one_line(const std::string& s) {
  std::string out;
  char hex[8];
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) { std::snprintf(hex, sizeof hex, "\\x%02x", c); out += hex; }
    else out += static_cast<char>(c);
  }
  return out;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

static std::string field(const std::string& header, const std::string& key) {
  const size_t k = header.find("'" + key + "'");
  const size_t colon = k == std::string::npos ? k : header.find(':', k);
  if (colon == std::string::npos) throw std::runtime_error("npy header has no '" + key + "'");
  size_t p = colon + 1;
  while (p < header.size() && header[p] == ' ') ++p;
  if (p >= header.size()) throw std::runtime_error("npy header ends after '" + key + "'");
  const char open = header[p];
  const size_t close = open == '\'' ? header.find('\'', p + 1) : open == '(' ? header.find(')', p) : header.find_first_of(",}", p);
  if (close == std::string::npos) throw std::runtime_error("npy header: unterminated '" + key + "'");
  return open == '\'' || open == '(' ? header.substr(p + 1, close - p - 1) : header.substr(p, close - p);
}

// numpy writes one-byte types with '|' and little-endian wider ones with '<'
bool same_dtype(const std::string& a, const std::string& b) {
  auto norm = [](std::string s) { if (!s.empty() && (s[0] == '|' || s[0] == '<' || s[0] == '=')) s[0] = '<'; return s; };
  return norm(a) == norm(b);
}

Array read_npy(const std::string& path) {
  const std::vector<uint8_t> raw = read_file(path);
  if (raw.size() < 10 || std::memcmp(raw.data(), "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not a .npy file");
  const int major = raw[6];
  if (major != 1 && (major != 2 || raw.size() < 12)) throw std::runtime_error(path + ": unsupported .npy version");
  const size_t hlen = major == 1 ? raw[8] | (raw[9] << 8) : raw[8] | (raw[9] << 8) | (raw[10] << 16) | (size_t(raw[11]) << 24);
  const size_t start = (major == 1 ? 10 : 12) + hlen;
  if (start > raw.size()) throw std::runtime_error(path + ": truncated header");
  const std::string header(raw.begin() + (major == 1 ? 10 : 12), raw.begin() + start);
  Array a;
  a.descr = field(header, "descr");
  if (field(header, "fortran_order") != "False") throw std::runtime_error(path + ": Fortran order is not supported");
  std::stringstream ss(field(header, "shape"));
  std::string dim;
  while (std::getline(ss, dim, ','))
    if (dim.find_first_not_of(' ') != std::string::npos) {
      size_t used = 0;
      const long long v = std::stoll(dim, &used);
      if (dim.find_first_not_of(' ', used) != std::string::npos) throw std::runtime_error(path + ": bad shape in the header");
      a.shape.push_back(v);
    }
  a.data.assign(raw.begin() + start, raw.end());
  return a;
}

void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape, const void* data,
               size_t bytes) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ",";
  if (shape.size() > 1) dims.pop_back();
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::ofstream f(path + ".tmp", std::ios::binary);
  const uint8_t preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, uint8_t(header.size() & 255), uint8_t(header.size() >> 8)};
  f.write(reinterpret_cast<const char*>(preamble), 10);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  f.close();
  if (!f || std::rename((path + ".tmp").c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": cannot write");
}

}  // namespace qlspec
