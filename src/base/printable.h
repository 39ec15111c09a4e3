// SPDX-License-Identifier: MIT
// Escaping of bytes that come from files (GGUF names, calibration text, log-prob files) before
// they reach a terminal: an ANSI escape, a control byte or a NUL in a file must not recolour the
// terminal, move the cursor or cut a message short.
#pragma once

#include <string>
#include <string_view>

namespace kvq {

// s with every byte that is not printable written as \xNN: C0 controls (newline and tab
// included, so a message stays on one line), DEL, UTF-8 C1 controls (U+0080..U+009F, which some
// terminals treat as CSI) and bytes that are not part of valid UTF-8. Printable ASCII and valid
// UTF-8 pass unchanged, backslashes included, so escaping is idempotent: a message built from
// escaped parts can be escaped again as a whole (the CLI does, as a last line of defence).
std::string printable(std::string_view s);

}  // namespace kvq
