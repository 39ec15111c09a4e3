// SPDX-License-Identifier: MIT
#pragma once

#include <string>
#include <vector>

namespace kvq::cli {
int cmd_run(const std::vector<std::string>& argv);
int cmd_ppl(const std::vector<std::string>& argv);
int cmd_info(const std::vector<std::string>& argv);
int cmd_bench(const std::vector<std::string>& argv);
int cmd_bench_attention(const std::vector<std::string>& argv);
int cmd_bench_session(const std::vector<std::string>& argv);
int cmd_calibrate(const std::vector<std::string>& argv);
int cmd_synth(const std::vector<std::string>& argv);
int cmd_serve(const std::vector<std::string>& argv);
int cmd_bench_serve(const std::vector<std::string>& argv);
int cmd_frontier(const std::vector<std::string>& argv);
}  // namespace kvq::cli
