// SPDX-License-Identifier: MIT
#include "base/printable.h"

#include <gtest/gtest.h>

namespace kvq {
namespace {

// Bytes from files must not drive the terminal or cut a message (issue 12, item 9).
TEST(Printable, EscapesControlBytesKeepsText) {
  EXPECT_EQ(printable("plain ASCII, with 'quotes' and \\ backslash"), "plain ASCII, with 'quotes' and \\ backslash");
  EXPECT_EQ(printable("\x1b[31mred"), "\\x1b[31mred");
  EXPECT_EQ(printable(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(printable("line\nbreak\ttab\r\x7f"), "line\\x0abreak\\x09tab\\x0d\\x7f");
  EXPECT_EQ(printable("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(printable("\xc2\x9b"), "\\xc2\\x9b");       // U+009B: a one-character CSI
  EXPECT_EQ(printable("\xff\xc3"), "\\xff\\xc3");        // not UTF-8 / truncated sequence
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");        // overlong
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // surrogate
}

TEST(Printable, IsIdempotent) {
  for (std::string s : {std::string("\x1b]0;title\x07"), std::string("a\0\n\xff", 4), std::string("ok")}) {
    EXPECT_EQ(printable(printable(s)), printable(s));
  }
}

}  // namespace
}  // namespace kvq
