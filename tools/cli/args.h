// SPDX-License-Identifier: MIT
// A small declarative flag parser: each flag is declared once with its names, target, range
// and help; parse errors name the flag and say what was expected.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/status.h"

namespace kvq {

class ArgParser {
 public:
  explicit ArgParser(std::string command) : command_(std::move(command)) {}

  void add_string(std::string names, std::string* out, std::string help);
  // A file name: like add_string, but an empty value ("-f ''") is an error, not "unset".
  void add_path(std::string names, std::string* out, std::string help);
  void add_int(std::string names, int* out, int64_t lo, int64_t hi, std::string help);
  void add_u64(std::string names, uint64_t* out, std::string help);
  void add_float(std::string names, float* out, double lo, double hi, std::string help);
  void add_flag(std::string names, bool* out, std::string help);

  // args excludes the program and subcommand names. "-h"/"--help" sets help_requested().
  Status parse(const std::vector<std::string>& args);
  bool help_requested() const { return help_; }
  // True if the flag (any of its names) appeared on the command line.
  bool seen(const std::string& name) const;
  std::string usage() const;

 private:
  enum class Kind { kString, kPath, kInt, kU64, kFloat, kFlag };
  struct Flag {
    std::vector<std::string> names;
    Kind kind;
    void* out;
    double lo = 0, hi = 0;
    std::string help;
    bool seen = false;
  };
  void add(std::string names, Kind kind, void* out, double lo, double hi, std::string help);
  Status set(Flag& f, const std::string& name, const std::string& value);

  std::string command_;
  std::vector<Flag> flags_;
  bool help_ = false;
};

}  // namespace kvq
