// SPDX-License-Identifier: MIT
#include "cli/plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>

#include "base/printable.h"

extern char** environ;

namespace kvq::cli {

namespace {

constexpr const char* kGnuplot = "gnuplot";

// An anonymous temporary file (removed when closed): gnuplot's script or its stderr.
using TempFile = std::unique_ptr<FILE, int (*)(FILE*)>;
TempFile temp_file() { return TempFile(std::tmpfile(), std::fclose); }

std::string first_line(FILE* f) {
  std::rewind(f);
  char buf[512] = {0};
  if (!std::fgets(buf, sizeof buf, f)) return "";
  std::string s(buf);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return printable(s);
}

std::string number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : printable(s)) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

Status check_gnuplot() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    const std::string exe = (d.empty() ? "." : d) + "/" + kGnuplot;
    if (::access(exe.c_str(), X_OK) == 0) return ok_status();
  }
  return unimplemented("--plot needs gnuplot with the pngcairo terminal (Debian: gnuplot-nox), "
                       "and none is on PATH");
}

Status draw_plot(OutputFile& out, const std::vector<PlotSeries>& series, const std::string& title,
                 const std::string& xlabel, const std::string& ylabel) {
  std::string script = "set terminal pngcairo size 1000,650 noenhanced\n"
                       "set output\n"  // no file: the PNG goes to stdout
                       "set title " + gnuplot_quote(title) + "\n"
                       "set xlabel " + gnuplot_quote(xlabel) + "\n"
                       "set ylabel " + gnuplot_quote(ylabel) + "\n"
                       "set logscale y\nset format y '%g'\nset grid\n";
  script += series.size() > 1 ? "set key top right\n" : "unset key\n";
  std::string data, plot;
  int n = 0, drawn = 0;
  for (size_t s = 0; s < series.size(); ++s) {
    std::string block;
    for (const PlotPoint& p : series[s].points) {
      if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
      const double y = std::max(p.y, 1e-5);
      block += number(p.x) + " " + number(y) + "\n";
      if (!series[s].line && !p.label.empty()) {
        script += "set label " + std::to_string(++n) + " " + gnuplot_quote(p.label) + " at " + number(p.x) + "," +
                  number(y) + " center offset 0,1 font ',8'\n";
      }
    }
    if (block.empty()) continue;
    const std::string name = "$s" + std::to_string(s);
    data += name + " << EOD\n" + block + "EOD\n";
    plot += std::string(drawn++ ? ", " : "plot ") + name + " using 1:2 " +
            (series[s].line ? "with lines lw 2" : "with points pt " + std::to_string(s % 2 ? 5 : 7) + " ps 1.5") +
            " title " + gnuplot_quote(series[s].name);
  }
  if (drawn == 0) return invalid_argument("--plot: no finite points to draw");
  script += data + plot + "\n";

  TempFile in = temp_file(), err = temp_file();
  if (!in || !err) return internal_error(std::string("cannot create a temporary file: ") + std::strerror(errno));
  if (std::fwrite(script.data(), 1, script.size(), in.get()) != script.size() || std::fflush(in.get()) != 0) {
    return internal_error("cannot write the gnuplot script");
  }
  std::rewind(in.get());
  return out.write([&](int fd) -> Status {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fileno(in.get()), 0);
    posix_spawn_file_actions_adddup2(&fa, fd, 1);
    posix_spawn_file_actions_adddup2(&fa, fileno(err.get()), 2);
    char* argv[] = {const_cast<char*>(kGnuplot), nullptr};
    pid_t pid = 0;
    const int rc = posix_spawnp(&pid, kGnuplot, &fa, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc == ENOENT) return unimplemented("--plot needs gnuplot (Debian: gnuplot-nox), which is not installed");
    if (rc != 0) return internal_error(std::string("cannot run gnuplot: ") + std::strerror(rc));
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) return internal_error(std::string("waiting for gnuplot: ") + std::strerror(errno));
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      const std::string why = first_line(err.get());
      return unimplemented("--plot: gnuplot failed (" +
                           (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                              : "signal " + std::to_string(WTERMSIG(status))) +
                           (why.empty() ? ")" : "): " + why) +
                           "; it needs the pngcairo terminal (Debian: gnuplot-nox)");
    }
    return ok_status();
  });
}

}  // namespace kvq::cli
