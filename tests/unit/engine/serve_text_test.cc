// SPDX-License-Identifier: MIT
// What a served sequence streams (engine/serve/text_stream.h) and the chat templates
// (engine/serve/chat_template.h), without a model.
#include <gtest/gtest.h>

#include "engine/serve/chat_template.h"
#include "engine/serve/text_stream.h"

namespace kvq {
namespace {

// Feeds pieces, returning everything emitted and whether a stop string ended it.
std::pair<std::string, bool> feed(TextStream& ts, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) {
    bool stopped = false;
    out += ts.push(p, &stopped);
    if (stopped) return {out, true};
  }
  return {out + ts.finish(), false};
}

TEST(TextStream, StopStringAcrossPiecesIsCutAndNeverEmitted) {
  TextStream ts({"\n\n", "The end"});
  bool stopped = false;
  EXPECT_EQ(ts.push("Hello The", &stopped), "Hello ");  // "The" may begin "The end"
  EXPECT_EQ(ts.push(" e", &stopped), "");
  EXPECT_EQ(ts.push("nd!", &stopped), "");
  EXPECT_TRUE(stopped);
}

TEST(TextStream, FalseStartIsReleased) {
  TextStream ts({"STOP"});
  auto [out, stopped] = feed(ts, {"ST", "OP", "x"});
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "");
  TextStream ts2({"STOP"});
  auto [out2, stopped2] = feed(ts2, {"ST", "AR", "T"});
  EXPECT_FALSE(stopped2);
  EXPECT_EQ(out2, "START");
}

TEST(TextStream, HoldsBackHalfACharacter) {
  TextStream ts;
  bool stopped = false;
  const std::string euro = "\xE2\x82\xAC";
  EXPECT_EQ(ts.push(std::string("a").append(euro, 0, 2), &stopped), "a");
  EXPECT_EQ(ts.push(euro.substr(2), &stopped), euro);
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(is_valid_utf8("plain \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xFF"));
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xE2\x82"));          // truncated
  EXPECT_EQ(incomplete_utf8_tail("ab\xF0\x9F"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("ab\xF0\x9F\x98\x80"), 0u);
}

TEST(ChatTemplate, DetectsTheCommonFormats) {
  EXPECT_EQ(detect_chat_format("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}"),
            ChatFormat::kLlama3);
  EXPECT_EQ(detect_chat_format("{{'<|im_start|>' + message['role'] + '\\n'}}"), ChatFormat::kChatML);
  EXPECT_EQ(detect_chat_format("{{ bos_token + '[INST] <<SYS>>\\n' }}"), ChatFormat::kLlama2);
  EXPECT_EQ(detect_chat_format("{{ '[INST] ' + message['content'] + ' [/INST]' }}"), ChatFormat::kMistral);
  EXPECT_EQ(detect_chat_format("{{ message.content }}"), ChatFormat::kNone);
  EXPECT_EQ(detect_chat_format(""), ChatFormat::kNone);
}

TEST(ChatTemplate, Renders) {
  const std::vector<ChatMessage> msgs = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."},
                                         {"user", "Bye"}};
  EXPECT_EQ(*render_chat(ChatFormat::kLlama3, msgs),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(*render_chat(ChatFormat::kChatML, msgs),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(*render_chat(ChatFormat::kLlama2, msgs),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello.</s><s>[INST] Bye [/INST]");
  EXPECT_EQ(*render_chat(ChatFormat::kMistral, msgs), "[INST] Be brief.\n\nHi[/INST] Hello.</s>[INST] Bye[/INST]");
  EXPECT_FALSE(render_chat(ChatFormat::kNone, msgs).ok());
  EXPECT_FALSE(render_chat(ChatFormat::kChatML, {{"tool", "x"}}).ok());
  EXPECT_FALSE(render_chat(ChatFormat::kLlama2, {{"user", "a"}, {"system", "b"}}).ok());
  EXPECT_FALSE(render_chat(ChatFormat::kLlama3, {}).ok());
}

}  // namespace
}  // namespace kvq
