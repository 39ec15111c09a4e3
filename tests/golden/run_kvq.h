// SPDX-License-Identifier: MIT
// Runs the kvq binary with an argument vector (no shell, so file names with quotes, spaces or
// control bytes arrive as given), capturing stdout + stderr, killed after a timeout so that a
// command blocking on a FIFO fails the test instead of hanging it.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace kvq::testing {

struct KvqResult {
  int exit_code = -1;  // 128 + signal when killed; 124 on timeout
  std::string output;  // stdout + stderr
};

// cwd: the directory kvq runs in (empty: this process's).
inline KvqResult run_kvq(const std::vector<std::string>& args, int timeout_s = 120, const std::string& cwd = "") {
  KvqResult r;
  int pipe_fd[2];
  if (::pipe(pipe_fd) != 0) return r;
  const std::string bin = std::string(KVQ_BIN_DIR) + "/kvq";
  std::vector<char*> argv{const_cast<char*>(bin.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipe_fd[1], 1);
    ::dup2(pipe_fd[1], 2);
    ::close(pipe_fd[0]);
    ::close(pipe_fd[1]);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(pipe_fd[1]);
  bool timed_out = false;
  std::thread killer([&] {
    for (int i = 0; i < timeout_s * 10; ++i) {
      siginfo_t info{};
      // Exited (left for the waitpid below to reap)?
      if (::waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    timed_out = true;
    ::kill(pid, SIGKILL);
  });
  char buf[4096];
  for (ssize_t n; (n = ::read(pipe_fd[0], buf, sizeof buf)) > 0;) r.output.append(buf, size_t(n));
  ::close(pipe_fd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  killer.join();
  r.exit_code = timed_out ? 124 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace kvq::testing
