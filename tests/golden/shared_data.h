// SPDX-License-Identifier: MIT
// Paths into ../shared and loaders for the llama.cpp goldens. A missing file fails the test
// loudly: the shared folder is part of every checkout's environment, never optional.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kvq::testing {

inline std::string shared_path(const std::string& rel) { return std::string(KVQ_SHARED_DIR) + "/" + rel; }

template <typename T>
std::vector<T> read_binary(const std::string& rel) {
  std::ifstream f(shared_path(rel), std::ios::binary);
  if (!f) {
    ADD_FAILURE() << "missing shared file " << shared_path(rel) << " (../shared must sit beside the repo)";
    return {};
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

inline std::string read_text(const std::string& rel) {
  std::ifstream f(shared_path(rel), std::ios::binary);
  if (!f) {
    ADD_FAILURE() << "missing shared file " << shared_path(rel);
    return {};
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace kvq::testing
