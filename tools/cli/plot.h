// SPDX-License-Identifier: MIT
// dPPL-vs-bits plots drawn by gnuplot, run without a shell: the script goes to gnuplot's stdin,
// the PNG comes back on its stdout into the output file, and every user string (model file
// name, cache names) enters the script only as an escaped single-quoted literal, so no file
// name can run a command (gnuplot's `system` and backquotes) or break the script.
#pragma once

#include <string>
#include <vector>

#include "io/output_file.h"
#include "kvq/status.h"

namespace kvq::cli {

struct PlotPoint {
  double x = 0, y = 0;
  std::string label;
};

// A set of points drawn alike: markers with their labels, or (line) a polyline in the given
// order without labels. name is the legend entry (shown when there is more than one series).
struct PlotSeries {
  std::string name;
  std::vector<PlotPoint> points;
  bool line = false;
};

// s as a gnuplot single-quoted string literal: non-printable bytes (newlines included) escaped
// as text, quotes doubled. Single quotes because gnuplot expands backquotes in double quotes.
std::string gnuplot_quote(const std::string& s);

// Errors (before any computation) when no gnuplot executable is on PATH.
Status check_gnuplot();

// Draws the series (y clamped to >= 1e-5 for the log scale) into out.
Status draw_plot(OutputFile& out, const std::vector<PlotSeries>& series, const std::string& title,
                 const std::string& xlabel, const std::string& ylabel);

}  // namespace kvq::cli
