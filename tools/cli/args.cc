// SPDX-License-Identifier: MIT
#include "cli/args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "base/printable.h"

namespace kvq {

void ArgParser::add(std::string names, Kind kind, void* out, double lo, double hi,
                    std::string help) {
  Flag f;
  std::stringstream ss(names);
  for (std::string n; std::getline(ss, n, ',');) f.names.push_back(n);
  f.kind = kind;
  f.out = out;
  f.lo = lo;
  f.hi = hi;
  f.help = std::move(help);
  flags_.push_back(std::move(f));
}

void ArgParser::add_string(std::string n, std::string* o, std::string h) { add(std::move(n), Kind::kString, o, 0, 0, std::move(h)); }
void ArgParser::add_path(std::string n, std::string* o, std::string h) { add(std::move(n), Kind::kPath, o, 0, 0, std::move(h)); }
void ArgParser::add_int(std::string n, int* o, int64_t lo, int64_t hi, std::string h) { add(std::move(n), Kind::kInt, o, double(lo), double(hi), std::move(h)); }
void ArgParser::add_u64(std::string n, uint64_t* o, std::string h) { add(std::move(n), Kind::kU64, o, 0, 0, std::move(h)); }
void ArgParser::add_float(std::string n, float* o, double lo, double hi, std::string h) { add(std::move(n), Kind::kFloat, o, lo, hi, std::move(h)); }
void ArgParser::add_flag(std::string n, bool* o, std::string h) { add(std::move(n), Kind::kFlag, o, 0, 0, std::move(h)); }

Status ArgParser::set(Flag& f, const std::string& name, const std::string& value) {
  const std::string bad = "flag " + name + " expects ";
  char* end = nullptr;
  errno = 0;
  switch (f.kind) {
    case Kind::kString: *static_cast<std::string*>(f.out) = value; break;
    case Kind::kPath:
      if (value.empty()) return invalid_argument(bad + "a file name, got ''");
      *static_cast<std::string*>(f.out) = value;
      break;
    case Kind::kInt: {
      const long long v = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || errno == ERANGE || double(v) < f.lo || double(v) > f.hi) {
        return invalid_argument(bad + "an integer in [" + std::to_string(int64_t(f.lo)) + ", " +
                                std::to_string(int64_t(f.hi)) + "], got '" + value + "'");
      }
      *static_cast<int*>(f.out) = int(v);
      break;
    }
    case Kind::kU64: {
      const unsigned long long v = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || value[0] == '-' || *end != '\0' || errno == ERANGE) {
        return invalid_argument(bad + "a non-negative integer, got '" + value + "'");
      }
      *static_cast<uint64_t*>(f.out) = v;
      break;
    }
    case Kind::kFloat: {
      const double v = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !std::isfinite(v) || v < f.lo || v > f.hi) {
        return invalid_argument(bad + "a number in [" + std::to_string(f.lo) + ", " +
                                std::to_string(f.hi) + "], got '" + value + "'");
      }
      *static_cast<float*>(f.out) = float(v);
      break;
    }
    case Kind::kFlag: *static_cast<bool*>(f.out) = true; break;
  }
  f.seen = true;
  return ok_status();
}

Status ArgParser::parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "-h" || a == "--help") {
      help_ = true;
      continue;
    }
    std::string value;
    bool has_inline = false;
    if (a.rfind("--", 0) == 0) {
      if (const size_t eq = a.find('='); eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline = true;
      }
    }
    Flag* flag = nullptr;
    for (auto& f : flags_) {
      for (const auto& n : f.names) {
        if (n == a) flag = &f;
      }
    }
    if (!flag) {
      if (a.empty() || a[0] != '-') {
        return invalid_argument("unexpected argument '" + printable(a) + "' (see kvq " + command_ + " --help)");
      }
      return invalid_argument("unknown flag '" + printable(a) + "' (see kvq " + command_ + " --help)");
    }
    if (flag->kind == Kind::kFlag) {
      if (has_inline) return invalid_argument("flag " + a + " takes no value");
      KVQ_RETURN_IF_ERROR(set(*flag, a, ""));
      continue;
    }
    if (!has_inline) {
      if (i + 1 >= args.size()) return invalid_argument("flag " + a + " needs a value");
      value = args[++i];
    }
    KVQ_RETURN_IF_ERROR(set(*flag, a, value));
  }
  return ok_status();
}

bool ArgParser::seen(const std::string& name) const {
  for (const auto& f : flags_) {
    for (const auto& n : f.names) {
      if (n == name) return f.seen;
    }
  }
  return false;
}

std::string ArgParser::usage() const {
  std::string s = "usage: kvq " + command_ + " [flags]\n";
  for (const auto& f : flags_) {
    std::string names;
    for (const auto& n : f.names) names += (names.empty() ? "" : ", ") + n;
    s += "  " + names;
    s += std::string(names.size() < 22 ? 24 - names.size() : 2, ' ') + f.help + "\n";
  }
  return s;
}

}  // namespace kvq
