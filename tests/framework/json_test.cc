#include "framework/json.h"

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>

#include <catch2/catch.hpp>

namespace cqrs {
namespace {

// Shows control characters and bytes >= 0x80 in failure messages.
std::string Escaped(const std::string& text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text) {
    if (c < 0x20 || c >= 0x7F) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0x0F];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

TEST_CASE("IsJsonObject accepts JSON objects", "[framework]") {
  const std::string text = GENERATE(
      std::string("{}"), std::string("{ }"), std::string(" \t\r\n{}\n\t "),
      std::string(R"({"a":1})"), std::string(R"({"a": 1, "b": "two"})"),
      std::string(R"({"nested":{"array":[1,2.5,-3e10,true,false,null]}})"),
      std::string(R"({"empty":{},"list":[]})"),
      std::string(R"({"escaped":"quote \" backslash \\ slash \/ tab \t"})"),
      std::string(R"({"unicode":"\u00e9\u4e2d\ud83d\ude00"})"),
      std::string("{\"utf8\":\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\"}"),
      std::string(R"({"\u0001 control escaped":"\u001f"})"),
      std::string(R"({"dup":1,"dup":2})"),
      std::string(R"({"big":123456789012345678901234567890})"));
  INFO(Escaped(text));
  CHECK(IsJsonObject(text));
}

TEST_CASE("IsJsonObject rejects other top-level values", "[framework]") {
  const std::string text =
      GENERATE(std::string(""), std::string(" "), std::string("[]"),
               std::string("[{}]"), std::string("1"), std::string("\"{}\""),
               std::string("null"), std::string("true"), std::string("false"));
  INFO(Escaped(text));
  CHECK_FALSE(IsJsonObject(text));
}

TEST_CASE("IsJsonObject rejects invalid JSON", "[framework]") {
  const std::string text = GENERATE(
      std::string("{"), std::string("}"), std::string(R"({"a")"),
      std::string(R"({"a":})"), std::string(R"({"a":1,})"),
      std::string(R"({,"a":1})"), std::string(R"({a:1})"),
      std::string("{'a':1}"), std::string(R"({"a":01})"),
      std::string(R"({"a":1.})"), std::string(R"({"a":.5})"),
      std::string(R"({"a":+1})"), std::string(R"({"a":NaN})"),
      std::string(R"({"a":Infinity})"), std::string(R"({"a":undefined})"),
      std::string(R"({"a":"\x"})"), std::string(R"({"a":"\u12"})"),
      std::string("{/* comment */}"), std::string("{} // comment"),
      // Raw control characters inside strings must be escaped.
      std::string("{\"a\":\"tab\there\"}"), std::string("{\"a\":\"nl\nhere\"}"),
      std::string("{\"a\":\"x\0y\"}", 11),
      // Not UTF-8.
      std::string("{\"a\":\"\xff\"}"), std::string("{\"a\":\"\xc3\"}"),
      std::string("{\"\xfe\":1}"),
      // Whitespace that JSON does not allow.
      std::string("\v{}"), std::string("{}\f"),
      std::string("\xc2\xa0{}"));  // no-break space
  INFO(Escaped(text));
  CHECK_FALSE(IsJsonObject(text));
}

TEST_CASE("IsJsonObject rejects trailing content", "[framework]") {
  const std::string text =
      GENERATE(std::string("{} x"), std::string("{}{}"), std::string("{}[]"),
               std::string("{},"), std::string("{}}"), std::string("{} 1"),
               std::string("{}\0", 3), std::string("{} \0", 4));
  INFO(Escaped(text));
  CHECK_FALSE(IsJsonObject(text));
}

// PostgreSQL's jsonb cannot hold U+0000, so the stores must refuse it
// everywhere, in keys and values, at any depth.
TEST_CASE("IsJsonObject rejects U+0000 in strings", "[framework]") {
  const std::string text =
      GENERATE(std::string(R"({"a":"\u0000"})"),
               std::string(R"({"a":"before\u0000after"})"),
               std::string(R"({"\u0000":1})"),
               std::string(R"({"a":{"b":["x","\u0000"]}})"));
  INFO(text);
  CHECK_FALSE(IsJsonObject(text));
  // The same document without the NUL is fine, so the NUL is the reason.
  std::string without_nul = text;
  without_nul.replace(without_nul.find("\\u0000"), 6, "\\u0001");
  CHECK(IsJsonObject(without_nul));
}

TEST_CASE("IsJsonObject reads exactly the bytes of the view", "[framework]") {
  const std::string text = R"({"a":1}garbage)";
  CHECK(IsJsonObject(absl::string_view(text.data(), 7)));
  CHECK_FALSE(IsJsonObject(absl::string_view(text.data(), 6)));
  CHECK_FALSE(IsJsonObject(absl::string_view(text)));
}

// `depth` levels: an object holding depth - 1 nested arrays (or objects).
std::string NestedArrays(int depth) {
  return "{\"a\":" + std::string(depth - 1, '[') + std::string(depth - 1, ']') +
         "}";
}
std::string NestedObjects(int depth) {
  std::string text;
  for (int i = 0; i < depth; ++i) text += "{\"a\":";
  return text + "1" + std::string(depth, '}');
}

TEST_CASE("IsJsonObject accepts nesting up to kMaxJsonDepth", "[framework]") {
  CHECK(IsJsonObject(NestedArrays(2)));
  CHECK(IsJsonObject(NestedArrays(kMaxJsonDepth)));
  CHECK(IsJsonObject(NestedObjects(kMaxJsonDepth)));
  // Depth is the current nesting, not a count of containers.
  std::string siblings = "{";
  for (int i = 0; i < 3 * kMaxJsonDepth; ++i) {
    siblings += "\"k" + std::to_string(i) + "\":[{}],";
  }
  siblings += "\"end\":" + NestedArrays(kMaxJsonDepth - 1) + "}";
  CHECK(IsJsonObject(siblings));
}

TEST_CASE("IsJsonObject rejects nesting deeper than kMaxJsonDepth",
          "[framework]") {
  CHECK_FALSE(IsJsonObject(NestedArrays(kMaxJsonDepth + 1)));
  CHECK_FALSE(IsJsonObject(NestedObjects(kMaxJsonDepth + 1)));
  CHECK_FALSE(IsJsonObject(
      "{\"a\":[1,{\"b\":" + NestedArrays(kMaxJsonDepth - 1) + "}]}"));
}

// Whether IsJsonObject(text) returns false, run in a child process so that a
// crash fails this test only instead of ending the whole test run.
bool RejectedInChildProcess(const std::string& text) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::signal(SIGSEGV, SIG_DFL);  // no Catch2 report from the child
    _exit(IsJsonObject(text) ? 1 : 0);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO(
      "child " << (WIFSIGNALED(status)
                       ? "killed by signal " + std::to_string(WTERMSIG(status))
                       : "exited with " + std::to_string(WEXITSTATUS(status))));
  CHECK(WIFEXITED(status));
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Event data may be 16 MiB, enough for millions of nested brackets. Parsing
// such untrusted input must neither overflow the stack (a crash of the whole
// process) nor accept what PostgreSQL's jsonb rejects ("stack depth limit
// exceeded"), so that both event stores refuse the same input.
TEST_CASE("IsJsonObject rejects absurdly deep nesting without crashing",
          "[framework]") {
  constexpr int kDepth = 1000000;
  CHECK(RejectedInChildProcess(NestedArrays(kDepth)));
  CHECK(RejectedInChildProcess(NestedObjects(kDepth)));
}

}  // namespace
}  // namespace cqrs
