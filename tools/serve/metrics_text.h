// SPDX-License-Identifier: MIT
// GET /metrics: the scheduler's counters in Prometheus' text format (docs/SERVE.md lists them).
#pragma once

#include <string>

#include "engine/serve/scheduler.h"

namespace kvq::serve {

std::string format_metrics(const SchedulerMetrics& m, const SchedulerOptions& o);

}  // namespace kvq::serve
