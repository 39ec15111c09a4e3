// SPDX-License-Identifier: MIT
#include "tokenizer/tokenizer.h"
