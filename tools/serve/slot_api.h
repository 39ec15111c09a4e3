// SPDX-License-Identifier: MIT
// llama-server's slot endpoints: POST /slots/{id}?action=save|restore|erase with
// {"filename": "..."}, and GET /slots. Files live in one directory (--slot-save-path) and are
// named by a plain file name, checked here before anything touches the disk.
#pragma once

#include <optional>
#include <string>

#include <httplib.h>

#include "engine/serve/scheduler.h"
#include "serve/api_error.h"

namespace kvq::serve {

inline constexpr size_t kMaxSlotFilename = 200;

// A name for a file inside the slot directory: 1 to kMaxSlotFilename bytes of letters, digits,
// '.', '_' and '-', not starting with '.' and without "..": no path separator, no parent, no
// hidden file, nothing a shell or a file system reads specially.
std::optional<ApiError> check_slot_filename(const std::string& name);

// Handles POST /slots/{id}; dir: the canonical slot directory, empty when slots files are off.
void slot_action(Scheduler& sched, const std::string& dir, const httplib::Request& req, httplib::Response& res);
// GET /slots.
void slot_list(const Scheduler& sched, httplib::Response& res);

}  // namespace kvq::serve
